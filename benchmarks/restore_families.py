"""OSEDiff, OSDHuman and HAODiff side by side: seconds per 512x512 image, one process, one base.

    python benchmarks/restore.py --families --base-model sd21-random --precision fp32 --device cpu

Random weights at the released sizes on one shared base UNet / VAE (SD-2.1-base sized with
``sd21-random``): the cost of each family's one step, not its quality. Rows:
  OSEDiff   t=999, null prompt (its DAPE prompt is timed by ``--prompt-source dape_lq``), AdaIN;
  OSDHuman  t=999, HFIE (Swin-L + one attention layer), AdaIN;
  HAODiff   t=199, dual SwinIR + Performer prompt, CFG 3.5 (two UNet passes in one batch),
            wavelet colour fix. Its encoder sizes are not published: SwinIR's x4 setting is
            assumed (embed 180, 6 stages of 6 blocks, window 8, mlp 2, 3 branches, absolute
            position embedding) with the Performer heads' defaults (4 layers, 6 heads of 128).
Each row: the prompt alone and the whole restore, min of ``--repeats`` interleaved rounds after
one warm-up each.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import torch


def _haodiff_encoder(tiny: bool, cross: int):
    from osdhuman.models.haodiff_prompt import HAODiffPrompt, PoolHeadConfig
    from osdhuman.models.swinir_features import SwinIRFeaturesConfig

    if tiny:
        swin = SwinIRFeaturesConfig(img_size=512, embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=8,
                                    mlp_ratio=2.0, upscale=4, ape=True)
        head, dim_head = PoolHeadConfig(dim_head=8, embed_dim=cross, num_layers=1, num_heads_performer=2,
                                        num_heads_pool=2), 8
    else:
        swin = SwinIRFeaturesConfig(img_size=512, embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, window_size=8,
                                    mlp_ratio=2.0, upscale=4, ape=True)
        head, dim_head = PoolHeadConfig(embed_dim=cross), 128
    g = torch.Generator().manual_seed(0)
    enc = HAODiffPrompt(swin, head, nb_features=int(dim_head * math.log(dim_head)))
    with torch.no_grad():
        for p in enc.parameters():
            p.normal_(0, 0.02, generator=g)
        for name, b in enc.named_buffers():
            if name.endswith("projection_matrix"):
                b.normal_(generator=g)
    return enc.eval()


def _hfie(tiny: bool, cross: int):
    from osdhuman.models import SWIN_L_RAM, TINY_SWIN
    from osdhuman.models.hfie import HFIE, SwinEncoder

    return HFIE(SwinEncoder(**dict(TINY_SWIN if tiny else SWIN_L_RAM)), cross_dim=cross).eval()


def families_compare(args) -> int:
    from osdhuman.models import OSDHumanConfig, build_osdhuman
    from osdhuman.pipelines import PipelineConfig, RestorationPipeline

    cfg = OSDHumanConfig(base_model=args.base_model, prompt_source="null", compute_null_prompt=False)
    model = build_osdhuman(cfg, text_encoder=False)
    pipe = RestorationPipeline(model, PipelineConfig(device=args.device, precision=args.precision, tile_size=512))
    tiny, cross = args.base_model == "tiny", model.cross_attention_dim
    null = model.prompt_extractor
    x = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0)) * 2 - 1
    families = [
        ("OSEDiff (null prompt)", null, "osediff", 999, 1.0, "adain", "smooth"),
        ("OSDHuman (HFIE)", _hfie(tiny, cross), "osdhuman", 999, 1.0, "adain", "smooth"),
        ("HAODiff (dual prompt, CFG 3.5)", _haodiff_encoder(tiny, cross), "haodiff", 199, 3.5, "wavelet", "gaussian")]

    def use(entry) -> None:
        _, enc, family, t, guidance, fix, blend = entry
        model.prompt_extractor = enc.to(pipe.device, pipe.dtype)
        model.family, model.guidance_scale = family, guidance
        model.config = replace(model.config, timestep=t)
        pipe.config = replace(pipe.config, color_fix=fix, latent_blend=blend)

    def timed(fn) -> float:
        t = time.perf_counter()
        with torch.no_grad():
            fn()
        return time.perf_counter() - t

    best = {e[0]: [math.inf, math.inf] for e in families}
    for e in families:  # warm-up
        use(e)
        pipe.restore_tensor(x)
    for r in range(args.repeats):  # interleaved rounds: a busy machine slows every family alike
        for e in families:
            use(e)
            best[e[0]][0] = min(best[e[0]][0], timed(lambda: model.prompt_extractor(x.to(pipe.device, pipe.dtype))))
            best[e[0]][1] = min(best[e[0]][1], timed(lambda: pipe.restore_tensor(x)))
        print(f"  round {r + 1} done", flush=True)
    rows = [(e[0], f"{e[3]}", f"{2 if e[4] > 1 else 1}", f"{best[e[0]][0]:.2f}", f"{best[e[0]][1]:.2f}")
            for e in families]
    head = ("family", "timestep", "UNet passes", "prompt s", "s / 512 image")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = lambda r: " | ".join(c.ljust(w) for c, w in zip(r, widths))
    print(f"{args.base_model}, random weights, {pipe.device}, {args.precision}, min of {args.repeats}")
    print(line(head))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(line(r))
    return 0
