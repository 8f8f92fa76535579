"""RestorationPipeline on the tiny preset: any size, tiling without seams, colour fix,
precision, input types, save/load."""

import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from osdhuman.pipelines import (
    PipelineConfig,
    RestorationPipeline,
    adain_color_fix,
    blend_profile,
    tile_starts,
    tiled_map,
    wavelet_color_fix,
)

TILED = {"tile_size": 128, "tile_overlap": 32}
E2E_TILED = {"tile_size": 192, "tile_overlap": 32}  # 2 x 4 latent tiles on 333 x 517


def test_end_to_end_on_real_photo_with_tiling(tiny_pipe, astronaut):
    calls = []
    hook = tiny_pipe.model.unet.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape))
    try:
        out = tiny_pipe(astronaut, output_type="pt", **E2E_TILED)
    finally:
        hook.remove()
    assert len(calls) == 8 and all(c[-2:] == (24, 24) for c in calls)  # 2 x 4 latent tiles of 24
    assert out.untrained is True
    img = out.images
    assert img.shape == (1, 3, 517, 333)
    assert torch.isfinite(img).all() and img.min() >= 0 and img.max() <= 1
    again = tiny_pipe(Image.fromarray(astronaut), output_type="pt", **E2E_TILED).images
    assert torch.equal(img, again)


def test_same_seed_same_output_when_sampling_the_latent(astronaut):
    from osdhuman.models import OSDHumanConfig, build_osdhuman

    m = build_osdhuman(OSDHumanConfig(base_model="tiny", latent_mode_infer="sample"))
    small = astronaut[:130, :100]
    outs = [RestorationPipeline(m, PipelineConfig(seed=s, device="cpu"))(small, output_type="pt").images for s in (5, 5, 6)]
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


def _seam_ratio(out: np.ndarray, tile_px: int, ov_px: int, reduce=np.mean) -> float:
    """Jump across tile boundaries relative to the jumps next to them (1 = no seam)."""
    o = out.astype(np.float64)
    ratios = []
    for ax in (0, 1):
        n = o.shape[ax]
        d = np.abs(np.diff(o, axis=ax)).mean(axis=(1 - ax, 2))  # d[c]: jump between c and c+1
        starts = [s * 8 for s in tile_starts(n // 8, tile_px // 8, ov_px // 8)]
        bounds = sorted({s for s in starts if s > 0} | {s + tile_px for s in starts if s + tile_px < n})
        assert bounds, "the image must be tiled"
        for b in bounds:
            near = np.concatenate([d[b - 9:b - 2], d[b + 1:b + 7]])
            ratios.append(d[b - 1] / (np.median(near) + 0.5))
    return float(reduce(ratios))


def _flat_and_gradient(n=256):
    flat = np.full((n, n, 3), (180, 120, 90), np.uint8)
    grad = np.zeros((n, n, 3), np.uint8)
    grad[..., 0] = np.linspace(30, 220, n)[None, :]
    grad[..., 1] = np.linspace(200, 40, n)[:, None]
    grad[..., 2] = 128
    return flat, grad


@pytest.mark.parametrize("kind", ["flat", "gradient"])
def test_tiles_leave_no_seams(tiny_pipe, kind):
    img = dict(zip(("flat", "gradient"), _flat_and_gradient()))[kind]
    blended = tiny_pipe(img, output_type="np", color_fix="none", **TILED).images[0]
    hard = tiny_pipe(img, output_type="np", color_fix="none", tile_size=128, tile_overlap=0).images[0]
    assert _seam_ratio(hard, 128, 0) > 1.5  # the metric sees seams when tiles are not blended
    assert _seam_ratio(blended, 128, 32) < 1.3


def test_tiled_map_is_seamless_for_local_maps():
    """A padded convolution (edge artefacts in every tile) tiled with blending equals the
    untiled result away from the image border."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)
    x = torch.rand(1, 3, 96, 80)
    with torch.no_grad():
        full = conv(x)
        tiled = tiled_map(conv, x, (96, 80), tile=32, overlap=8, in_scale=1, out_scale=1)
    inner = (tiled - full)[..., 1:-1, 1:-1].abs()
    assert inner.max() < 0.05 * full.abs().max()
    # identity map: blending weights sum to one everywhere
    assert torch.allclose(tiled_map(lambda t: t, x, (96, 80), 32, 8, 1, 1), x, atol=1e-6)
    # starts cover the grid with full tiles
    s = tile_starts(100, 32, 8)
    assert s[0] == 0 and s[-1] == 68 and all(b - a <= 24 for a, b in itertools.pairwise(s))
    w = blend_profile(32, 8, True, True)
    assert w.min() > 0 and w[8:24].eq(1).all() and torch.all(w[:8].diff() > 0)


def test_color_fixes():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(1, 3, 64, 64, generator=g) * 1.2 - 0.6
    out = torch.rand(1, 3, 64, 64, generator=g) * 0.5 + 0.4  # colour-shifted
    a = adain_color_fix(out, ref)
    assert torch.allclose(a.mean((2, 3)), ref.mean((2, 3)), atol=1e-4)
    assert torch.allclose(a.std((2, 3)), ref.std((2, 3)), atol=1e-3)
    w = wavelet_color_fix(out, ref)
    lowpass = lambda t: torch.nn.functional.avg_pool2d(t, 16)
    assert (lowpass(w) - lowpass(ref)).abs().mean() < 0.2 * (lowpass(out) - lowpass(ref)).abs().mean()
    assert (w - lowpass(w).repeat_interleave(16, 2).repeat_interleave(16, 3)).std() > 0.05  # detail kept


def test_inputs_any_type_and_batched(tiny_pipe, astronaut):
    a = astronaut[:96, :80]
    ref = tiny_pipe(a, output_type="np").images[0]
    assert ref.shape == a.shape and ref.dtype == np.uint8
    t = torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255
    assert np.array_equal(tiny_pipe(t, output_type="np").images[0], ref)
    assert np.array_equal(tiny_pipe(a.astype(np.float32) / 255, output_type="np").images[0], ref)
    batch = tiny_pipe(torch.stack([t, t.flip(-1)]), batch_size=2, output_type="np").images
    assert len(batch) == 2 and np.abs(batch[0].astype(int) - ref).max() <= 1
    pil = tiny_pipe([Image.fromarray(a), Image.fromarray(astronaut[:64, :72])]).images
    assert [p.size for p in pil] == [(80, 96), (72, 64)]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tiny_pipe(t * 2)


def test_precisions_and_fp16_vae_safety(astronaut):
    from osdhuman.models import OSDHumanConfig, build_osdhuman

    m = build_osdhuman(OSDHumanConfig(base_model="tiny"))
    pipe = RestorationPipeline(m, PipelineConfig(device="cpu", precision="fp16"))
    assert m.merged  # LoRA fused at load by default: conv_out is a plain Conv2d again
    assert m.unet.conv_out.weight.dtype == torch.float16
    assert all(p.dtype == torch.float32 for p in m.vae.parameters())  # VAE kept fp32
    pipe.to(precision="bf16")
    assert m.unet.conv_out.weight.dtype == torch.bfloat16
    assert m.alphas_cumprod.dtype == torch.float32
    out = pipe(astronaut[:64, :64], output_type="pt").images
    pipe.to(precision="fp32")
    ref = pipe(astronaut[:64, :64], output_type="pt").images
    assert torch.isfinite(out).all() and (out - ref).abs().mean() < 0.1


def test_save_and_from_pretrained(tmp_path, astronaut):
    from osdhuman.models import OSDHumanConfig, build_osdhuman

    m = build_osdhuman(OSDHumanConfig(base_model="tiny"))
    with torch.no_grad():
        for q in m.generator_parameters():
            q.add_(0.02 * torch.randn_like(q))
    pipe = RestorationPipeline(m, PipelineConfig(device="cpu", color_fix="wavelet", tile_size=256), fuse=False)
    pipe.save_pretrained(tmp_path)
    pipe2 = RestorationPipeline.from_pretrained(tmp_path, device="cpu", fuse=False)
    assert pipe2.config.color_fix == "wavelet" and pipe2.config.tile_size == 256
    a = astronaut[:80, :72]
    assert np.array_equal(pipe(a, output_type="np").images[0], pipe2(a, output_type="np").images[0])


def test_a_fused_pipeline_refuses_to_save(tmp_path, tiny_pipe):
    assert tiny_pipe.model.merged
    with pytest.raises(ValueError, match="fuse=False"):
        tiny_pipe.save_pretrained(tmp_path)


def test_bad_pipeline_settings():
    with pytest.raises(ValueError, match="tile_overlap"):
        PipelineConfig(tile_size=128, tile_overlap=128)
    with pytest.raises(ValueError, match="tile_size"):
        PipelineConfig(tile_size=100)
