"""The released one-step human restorers (HAODiff, OSDFace): small-width encoders built here,
saved in the exact file layouts their authors publish, loaded through ``--weights`` and run
through the command line. docs/reference.md §released."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from osdhuman.cli import main
from osdhuman.models.haodiff_prompt import HAODiffPrompt, PoolHeadConfig
from osdhuman.models.osdface_prompt import distinct_nearest_codes
from osdhuman.models.performer import Performer
from osdhuman.models.swinir_features import SwinIRFeaturesConfig

CROSS = 32  # the tiny preset's cross-attention width
SWINIR_KWARGS = dict(img_size=512, patch_size=1, in_chans=3, embed_dim=16, depths=[2, 2], num_heads=[2, 2],
                     window_size=8, mlp_ratio=2.0, upscale=4, img_range=1.0, resi_connection="1conv",
                     downsample=True, branch_num=3, ape=True, pretrained_swinir="/data/swinir.pth")
PERFORMER_KWARGS = dict(dim_head=8, embed_dim=CROSS, mid_tokens=256, out_tokens=77, num_layers=1,
                        num_heads_performer=2, num_heads_pool=2, light_changer=False)
# a few tensors of HAODiff's layout at these widths (name -> shape), written out by hand
HAODIFF_LAYOUT = {
    "feature_extractor.conv_first.conv_before_downsample.0.weight": (16, 3, 3, 3),
    "feature_extractor.conv_first.conv_down2.weight": (16, 16, 3, 3),
    "feature_extractor.patch_embed.norm.weight": (16,),
    "feature_extractor.absolute_pos_embed": (1, 128 * 128, 16),
    "feature_extractor.layers.0.residual_group.blocks.0.attn.relative_position_bias_table": (15 * 15, 2),
    "feature_extractor.layers.0.residual_group.blocks.0.attn.relative_position_index": (64, 64),
    "feature_extractor.layers.0.residual_group.blocks.1.attn_mask": (256, 64, 64),
    "feature_extractor.layers.0.conv.weight": (16, 16, 3, 3),
    "feature_extractor.branches.1.0.residual_group.blocks.1.mlp.fc1.weight": (32, 16),
    "feature_extractor.norm.bias": (16,),
    "main_performer.proj1.weight": (16, 16),
    "main_performer.pos_embed": (1, 16384, 16),
    "main_performer.encoder.net.layers.0.0.fn.fast_attention.projection_matrix": (16, 8),
    "main_performer.encoder.net.layers.0.0.fn.to_q.bias": (16,),
    "main_performer.encoder.net.layers.0.1.fn.fn.w1.weight": (64, 16),
    "main_performer.linear_embed.weight": (CROSS, 16 * 64),
    "main_performer.query_tokens": (1, 77, CROSS),
    "main_performer.attn_pool.in_proj_weight": (3 * CROSS, CROSS),
    "aux_performer.proj1.weight": (16, 32),
}


def haodiff_folder(path, seed=0, edit=None):
    """weights/ as HAODiff publishes it: pytorch_lora_weights.safetensors (rank 16, no metadata)
    and img_encoder_weights.pth = torch.save({model_state_dict, swinir_kwargs, performer_kwargs})
    including what their training-mode save also holds (SDXL heads, Performer back-references)."""
    g = torch.Generator().manual_seed(seed)
    enc = HAODiffPrompt(SwinIRFeaturesConfig(**{k: v for k, v in SWINIR_KWARGS.items() if k != "pretrained_swinir"}),
                        PoolHeadConfig(**{k: v for k, v in PERFORMER_KWARGS.items()
                                          if k not in ("mid_tokens", "light_changer")}),
                        nb_features=int(8 * math.log(8)))
    sd = {}
    for k, v in enc.state_dict().items():
        sd[k] = v if not v.is_floating_point() or k.endswith("attn_mask") else 0.1 * torch.randn(v.shape, generator=g)
    for head in ("main_performer", "aux_performer"):
        for k in [k for k in sd if k.startswith(f"{head}.encoder.net.")]:
            sd[k.replace(".encoder.net.", ".encoder.proj_updater.instance.")] = sd[k]
        sd[f"{head}.encoder.proj_updater.calls_since_last_redraw"] = torch.tensor(0)
    sd["embedding_changer1.linear1.weight"] = torch.randn(512, CROSS, generator=g)
    if edit:
        edit(sd)
    path.mkdir(parents=True)
    torch.save({"model_state_dict": sd, "swinir_kwargs": dict(SWINIR_KWARGS),
                "performer_kwargs": dict(PERFORMER_KWARGS)}, path / "img_encoder_weights.pth")
    _lora(path, g)
    return path, sd


def _lora(path, g):
    """UNet LoRA in diffusers' peft layout (unet.<module>.lora_A/B.weight) on the tiny preset."""
    from osdhuman.models.loading import build_sd_components

    unet, _, _, _ = build_sd_components("tiny", seed=0)
    lora = {}
    for name, mod in unet.named_modules():
        if name.endswith(("attn2.to_k", "attn1.to_q", "ff.net.2")):
            lora[f"unet.{name}.lora_A.weight"] = 0.05 * torch.randn(16, mod.in_features, generator=g)
            lora[f"unet.{name}.lora_B.weight"] = 0.05 * torch.randn(mod.out_features, 16, generator=g)
    save_file(lora, str(path / "pytorch_lora_weights.safetensors"))


def osdface_folder(path, seed=0, width=CROSS, skip=()):
    """pretrained/ as OSDFace publishes it: the LoRA, embedding_change_weights.pth (two Conv1d,
    e -> e/2 -> width) and associate_2.ckpt ({"state_dict": {"vqvae_LQ.*", ...}})."""
    g = torch.Generator().manual_seed(seed)
    ch, mults, e, z, n = 32, (1, 2, 2, 2, 4, 8), 64, 64, 128
    sd = {"encoder.conv_in.weight": (ch, 3, 3, 3), "encoder.conv_in.bias": (ch,)}
    cin = ch
    for i, m in enumerate(mults):
        c = ch * m
        for j in range(2):
            a = cin if j == 0 else c
            sd.update({f"encoder.down.{i}.block.{j}.norm1.weight": (a,), f"encoder.down.{i}.block.{j}.norm1.bias": (a,),
                       f"encoder.down.{i}.block.{j}.conv1.weight": (c, a, 3, 3), f"encoder.down.{i}.block.{j}.conv1.bias": (c,),
                       f"encoder.down.{i}.block.{j}.norm2.weight": (c,), f"encoder.down.{i}.block.{j}.norm2.bias": (c,),
                       f"encoder.down.{i}.block.{j}.conv2.weight": (c, c, 3, 3), f"encoder.down.{i}.block.{j}.conv2.bias": (c,)})
            if a != c:
                sd.update({f"encoder.down.{i}.block.{j}.nin_shortcut.weight": (c, a, 1, 1),
                           f"encoder.down.{i}.block.{j}.nin_shortcut.bias": (c,)})
            if i == len(mults) - 1:  # attention at the 16x16 level
                sd.update(_attn(f"encoder.down.{i}.attn.{j}", c))
        if i != len(mults) - 1:
            sd.update({f"encoder.down.{i}.downsample.conv.weight": (c, c, 3, 3), f"encoder.down.{i}.downsample.conv.bias": (c,)})
        cin = c
    for b in ("block_1", "block_2"):
        sd.update({f"encoder.mid.{b}.{k}": s for k, s in (("norm1.weight", (cin,)), ("norm1.bias", (cin,)),
                   ("conv1.weight", (cin, cin, 3, 3)), ("conv1.bias", (cin,)), ("norm2.weight", (cin,)),
                   ("norm2.bias", (cin,)), ("conv2.weight", (cin, cin, 3, 3)), ("conv2.bias", (cin,)))})
    sd.update(_attn("encoder.mid.attn_1", cin))
    sd.update({"encoder.norm_out.weight": (cin,), "encoder.norm_out.bias": (cin,),
               "encoder.conv_out.weight": (z, cin, 3, 3), "encoder.conv_out.bias": (z,),
               "quant_conv.weight": (e, z, 1, 1), "quant_conv.bias": (e,), "quantize.embedding.weight": (n, e)})
    state = {}
    for k, shape in sd.items():
        t = torch.randn(shape, generator=g)
        state[f"vqvae_LQ.{k}"] = 1 + 0.1 * t if "norm" in k and k.endswith("weight") else 0.1 * t
    state["vqvae_LQ.decoder.conv_in.weight"] = torch.randn(8, 8, 3, 3, generator=g)  # the decoder is not used
    state["vqvae_HQ.encoder.conv_in.weight"] = torch.randn(8, 3, 3, 3, generator=g)  # nor the HQ model
    path.mkdir(parents=True)
    if "ckpt" not in skip:
        torch.save({"state_dict": state, "epoch": 3}, path / "associate_2.ckpt")
    emb = {"conv1.weight": 0.1 * torch.randn(e // 2, e, 1, generator=g), "conv1.bias": torch.zeros(e // 2),
           "conv2.weight": 0.1 * torch.randn(width, e // 2, 1, generator=g), "conv2.bias": torch.zeros(width)}
    torch.save(emb, path / "embedding_change_weights.pth")
    _lora(path, g)
    return path


def _attn(prefix, c):
    out = {f"{prefix}.{n}.weight": (c,) for n in ("norm1", "norm2")} | {f"{prefix}.{n}.bias": (c,) for n in ("norm1", "norm2")}
    for n in ("q", "k", "v", "proj_out"):
        out[f"{prefix}.{n}.weight"], out[f"{prefix}.{n}.bias"] = (c, c, 1, 1), (c,)
    return out


pytestmark = pytest.mark.usefixtures("no_weights_env")


@pytest.fixture()
def photo(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(d / "p.png")
    return d / "p.png"


# ------------------------------------------------------------------------------ encoders
def test_haodiff_file_layout_loads_strictly_and_gives_two_prompts(tmp_path):
    from osdhuman.models.pretrained import load_pretrained

    folder, sd = haodiff_folder(tmp_path / "weights")
    for k, shape in HAODIFF_LAYOUT.items():
        assert tuple(sd[k].shape) == shape, k
    model, summary = load_pretrained(folder, base_model="tiny")
    assert model.family == "haodiff" and model.config.timestep == 199 and model.guidance_scale == 3.5
    assert model.config.latent_mode_infer == "sample" and model.config.lora_rank == 16 and model.config.lora_alpha == 16
    enc = model.prompt_extractor
    own = enc.state_dict()
    assert torch.equal(own["main_performer.encoder.net.layers.0.0.fn.fast_attention.projection_matrix"],
                       sd["main_performer.encoder.net.layers.0.0.fn.fast_attention.projection_matrix"])
    assert torch.equal(own["aux_performer.query_tokens"], sd["aux_performer.query_tokens"])
    assert "ignored as haodiff's own loader does" in summary
    lq = torch.rand(1, 3, 40, 56) * 2 - 1
    with torch.no_grad():
        pos, neg = enc(lq)
    assert pos.shape == neg.shape == (1, 77, CROSS)
    assert (pos - neg).abs().max() > 1e-3  # two different heads


def test_performer_attention_is_favor_plus_with_the_saved_projection():
    """One Performer layer against FAVOR+ written out from its formulas."""
    torch.manual_seed(0)
    p = Performer(dim=8, depth=1, heads=2, dim_head=4, nb_features=6, ff_mult=2).eval()
    with torch.no_grad():
        for prm in p.parameters():
            prm.normal_(0, 0.3)
        proj = torch.randn(6, 4)
        p.net.layers[0][0].fn.fast_attention.projection_matrix.copy_(proj)
    x = torch.randn(1, 5, 8)
    attn = p.net.layers[0][0]
    h = attn.norm(x)
    q, k, v = (f(h).view(1, 5, 2, 4).transpose(1, 2) for f in (attn.fn.to_q, attn.fn.to_k, attn.fn.to_v))

    def phi(t, per_token):
        w = (t * 4 ** -0.25) @ proj.t()
        stab = w.amax(-1, keepdim=True) if per_token else w.amax((-1, -2), keepdim=True)
        return 6 ** -0.5 * (torch.exp(w - (t ** 2).sum(-1, keepdim=True) / 2 * 4 ** -0.5 - stab) + 1e-4)

    qf, kf = phi(q, True), phi(k, False)
    num = qf @ (kf.transpose(-1, -2) @ v)  # (1,2,5,4)
    den = qf @ kf.sum(-2, keepdim=True).transpose(-1, -2)  # (1,2,5,1)
    ref = x + attn.fn.to_out((num / den).transpose(1, 2).reshape(1, 5, 8))
    ff = p.net.layers[0][1]
    ref = ref + ff.fn.fn.w2(torch.nn.functional.gelu(ff.fn.fn.w1(ff.norm(ref))))
    with torch.no_grad():
        assert (p(x) - ref).abs().max() < 1e-5


def test_osdface_keeps_the_first_77_distinct_nearest_codes_in_distance_order():
    book = torch.eye(4) * torch.tensor([1.0, 2.0, 3.0, 4.0])[:, None]  # (4 codes, 4 dims)
    # 2x2 positions: two near code 2 (one exact), one near code 0, one near code 2 again
    h = torch.stack([book[2] + 0.3, book[0] + 0.1, book[2], book[2] + 0.2]).t().reshape(1, 4, 2, 2)
    out = distinct_nearest_codes(h, book, n=3)
    assert torch.equal(out[0, 0], book[2]) and torch.equal(out[0, 1], book[0])
    assert torch.equal(out[0, 2], torch.zeros(4))  # only two distinct codes: the rest stays zero


def test_osdface_folder_loads_only_the_lq_encoder(tmp_path):
    from osdhuman.models.pretrained import load_pretrained

    model, summary = load_pretrained(osdface_folder(tmp_path / "pretrained"), base_model="tiny")
    assert model.family == "osdface" and model.config.timestep == 399 and model.guidance_scale == 1.0
    assert "2 tensor(s) ignored" in summary  # the decoder and the HQ model
    with torch.no_grad():
        p = model.prompt_extractor(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert p.shape == (1, 77, CROSS)


# ------------------------------------------------------------------------------ command line
def test_restore_haodiff_folder_through_the_cli_16_bit(photo, tmp_path, capsys):
    from osdhuman.pipelines.pipeline_restoration import RestorationPipeline

    folder, _ = haodiff_folder(tmp_path / "weights")
    out = tmp_path / "out"
    rc = main(["restore", str(photo), "-o", str(out), "--weights", str(folder), "--base-model", "tiny",
               "--latent", "mode", "--bit-depth", "16", "--no-progress", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "--latent mode overrides the haodiff weights' sample" in err
    import cv2

    arr = cv2.imread(str(out / "p.png"), cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert arr.dtype == np.uint16 and arr.shape == (48, 40, 3)
    rep = json.loads((out / "restore_report.json").read_text())
    assert rep["model"]["family"] == "haodiff" and rep["model"]["timestep"] == 199
    assert rep["model"]["guidance_scale"] == 3.5 and rep["model"]["color_fix"] == "wavelet"
    assert rep["model"]["overrides"] == ["--latent mode overrides the haodiff weights' sample"]
    assert rep["untrained_model"] is True  # the tiny base is random
    # the same forward in Python, in float: the PNG holds it to 1/65535
    pipe = RestorationPipeline.from_pretrained(str(folder), base_model="tiny", device="cpu",
                                               model_overrides={"latent_mode_infer": "mode"})
    ref = pipe([np.asarray(Image.open(photo))], output_type="pt").images[0].permute(1, 2, 0).double().numpy()
    assert np.abs(arr / 65535.0 - ref).max() <= 0.5 / 65535 + 1e-6
    # guidance and timestep matter: the override changes the pixels
    rc = main(["restore", str(photo), "-o", str(tmp_path / "o2"), "--weights", str(folder), "--base-model", "tiny",
               "--latent", "mode", "--bit-depth", "16", "--guidance-scale", "1", "--color-fix", "none",
               "--no-progress", "--device", "cpu"])
    assert rc == 0
    rep2 = json.loads((tmp_path / "o2" / "restore_report.json").read_text())
    assert "--color-fix none overrides the haodiff weights' wavelet" in rep2["model"]["overrides"]
    arr2 = cv2.imread(str(tmp_path / "o2" / "p.png"), cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert np.abs(arr2.astype(float) - arr.astype(float)).max() > 100
    assert "--guidance-scale 1 overrides the haodiff weights' 3.5" in capsys.readouterr().err


def test_restore_osdface_folder_through_the_cli(photo, tmp_path, capsys):
    folder = osdface_folder(tmp_path / "pretrained")
    out = tmp_path / "out"
    rc = main(["restore", str(photo), "-o", str(out), "--weights", str(folder), "--base-model", "tiny",
               "--no-progress", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads((out / "restore_report.json").read_text())
    assert rep["model"]["family"] == "osdface" and rep["model"]["timestep"] == 399
    assert rep["model"]["color_fix"] == "none" and rep["model"]["overrides"] == []
    assert np.asarray(Image.open(out / "p.png")).dtype == np.uint8  # 8 bits stays the default


def _no_encoder(tmp_path):
    folder, _ = haodiff_folder(tmp_path / "w")
    (folder / "img_encoder_weights.pth").unlink()
    return folder, folder


def _bad_kwargs(tmp_path):
    folder, sd = haodiff_folder(tmp_path / "w")
    data = torch.load(folder / "img_encoder_weights.pth", weights_only=True)
    data["swinir_kwargs"]["embed_dim"] = 24  # the tensors are 16 wide
    torch.save(data, folder / "img_encoder_weights.pth")
    return folder, "embed_dim: 24"


class CodeInPickle:
    """Stands for a class the embedder file would need imported to unpickle."""


def _code_pickle(tmp_path):
    folder, _ = haodiff_folder(tmp_path / "w")
    torch.save({"model_state_dict": {}, "swinir_kwargs": CodeInPickle()}, folder / "img_encoder_weights.pth")
    return folder, "needs code"


def _no_codebook(tmp_path):
    folder = osdface_folder(tmp_path / "p", skip=("ckpt",))
    return folder, folder / "associate_2.ckpt"


def _wide_release(tmp_path):
    folder = osdface_folder(tmp_path / "p", width=1024)
    return folder, "embedding_change_weights.pth"


def _unknown_embedder(tmp_path):
    folder, _ = haodiff_folder(tmp_path / "w")
    torch.save({"model_state_dict": {"mystery.weight": torch.zeros(3)}, "head_kwargs": {}},
               folder / "img_encoder_weights.pth")
    return folder, "mystery.weight"


@pytest.mark.parametrize("make, words", [
    (_no_encoder, ["img_encoder_weights.pth", "no prompt encoder"]),
    (_bad_kwargs, ["img_encoder_weights.pth", "do not fit the recorded kwargs"]),
    (_code_pickle, ["img_encoder_weights.pth", "refused"]),
    (_no_codebook, ["not found", "OSDFace"]),
    (_wide_release, ["1024 wide", "cross-attention width 32"]),
    (_unknown_embedder, ["embedder not understood", "model_state_dict", "head_kwargs"]),
])
def test_bad_release_folders_are_one_line_exit_2_before_any_image(photo, tmp_path, capsys, make, words):
    folder, where = make(tmp_path)
    out = tmp_path / "out"
    rc = main(["restore", str(photo), "-o", str(out), "--weights", str(folder), "--base-model", "tiny",
               "--no-progress", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    line = [ln for ln in err.splitlines() if "error" in ln][0]
    for w in [str(where), *words]:
        assert w in line, (w, line)
    assert not (out / "p.png").exists()


def test_inspect_names_family_parts_settings_and_needs(tmp_path, capsys):
    folder, _ = haodiff_folder(tmp_path / "weights")
    assert main(["inspect", str(folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["family"] == "haodiff" and info["timestep"] == 199 and info["guidance_scale"] == 3.5
    assert info["parts"]["unet_lora"]["ranks"] == [16] and info["lora_scale"] == 1.0
    assert info["parts"]["prompt_encoder"] == "HAODiffPrompt" and info["prompt_width"] == CROSS
    assert info["files"] == [str(folder / "pytorch_lora_weights.safetensors"), str(folder / "img_encoder_weights.pth")]
    assert any(n.startswith("--base-model") for n in info["needs"])
    assert main(["inspect", str(osdface_folder(tmp_path / "pretrained"))]) == 0
    out = capsys.readouterr().out
    assert "osdface" in out and "399" in out and "associate_2.ckpt" in out
    (folder / "img_encoder_weights.pth").write_bytes(b"garbage")
    assert main(["inspect", str(folder)]) == 2
    assert "img_encoder_weights.pth" in capsys.readouterr().err


def test_haodiff_tiling_offsets_weights_and_blend():
    from osdhuman.pipelines.gaussian_tiles import (
        gaussian_tile_weights,
        gaussian_tiled_eps,
        haodiff_offsets,
    )

    assert haodiff_offsets(128, 64, 5) == [0, 59, 64]  # every 59, the last flush with the edge
    assert haodiff_offsets(96, 64, 5) == [0, 32]
    w = gaussian_tile_weights(8)
    assert w.dtype == torch.float64 and torch.equal(w[:, 3], w[:, 4])  # across: centred at 3.5
    assert w[4, 0] > w[3, 0] and torch.allclose(w[3], w[5])  # down: centred at 4
    z = torch.randn(1, 4, 96, 128)
    # a per-pixel map blends back to itself; a map that sees tile borders does not
    assert torch.allclose(gaussian_tiled_eps(lambda t: 2 * t, z), 2 * z, atol=1e-5)
    assert torch.equal(gaussian_tiled_eps(lambda t: 2 * t, z[..., :40, :100]), 2 * z[..., :40, :100])  # area <= 64^2: whole


def test_house_style_hfie_release_may_ship_its_encoder(tmp_path):
    """{"model_state_dict": whole HFIE (encoder.swin.*, encoder.image_proj.*, query, attn.*, norm.*),
    "hfie_kwargs"}: the shipped encoder is used, no --hfie-encoder needed."""
    from osdhuman.models import OSDHumanConfig, WeightsError, build_osdhuman
    from osdhuman.models.pretrained import load_pretrained

    ref = build_osdhuman(OSDHumanConfig(base_model="tiny", compute_null_prompt=False, seed=7))
    sd = {k: v + 0.01 for k, v in ref.prompt_extractor.state_dict().items()}
    folder = tmp_path / "release"
    folder.mkdir()
    _lora(folder, torch.Generator().manual_seed(1))
    torch.save({"model_state_dict": sd, "hfie_kwargs": {"timestep": 999}}, folder / "img_encoder_weights.pth")
    model, summary = load_pretrained(folder, base_model="tiny")
    assert "HFIE encoder from" in summary and model.config.prompt_source == "hfie_lq"
    got = model.prompt_extractor.state_dict()
    assert all(torch.equal(got[k], sd[k]) for k in sd)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert model.prompt_extractor(x).shape == (1, 77, CROSS)
    sd["encoder.image_proj.weight"] = torch.zeros(3, 3)
    torch.save({"model_state_dict": sd, "hfie_kwargs": {}}, folder / "img_encoder_weights.pth")
    with pytest.raises(WeightsError, match="encoder.image_proj.weight"):
        load_pretrained(folder, base_model="tiny")


def test_overriding_what_our_own_weights_record_is_said(tmp_path):
    from osdhuman.models import OSDHumanConfig, build_osdhuman
    from osdhuman.models.pretrained import load_pretrained

    build_osdhuman(OSDHumanConfig(base_model="tiny", compute_null_prompt=False)).save_weights(tmp_path / "w")
    model, _ = load_pretrained(tmp_path / "w", timestep=500)
    assert model.config.timestep == 500 and model.overrides == ["--timestep 500 overrides the osdhuman weights' 999"]
    model, _ = load_pretrained(tmp_path / "w", timestep=999)
    assert model.overrides == []
