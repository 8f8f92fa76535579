"""DAPE (models/dape.py): OSEDiff's loralib LoRA translated into peft, the DAPE prompt, and the
OSEDiff baseline end to end (tiny RAM / DAPE / osediff.pkl files built here in the real layouts):
restore with dape_lq, a training run with dape_hq, and every bad input (exit 2, one line)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from osdhuman.cli import main
from osdhuman.models import OSDHumanConfig, WeightsError, build_osdhuman
from osdhuman.models.config import TINY_RAM_TAGGING, TINY_SWIN
from osdhuman.models.dape import _build_tagger, apply_dape
from osdhuman.models.hfie import SwinEncoder
from osdhuman.models.loading import build_sd_components, seeded
from osdhuman.models.ram_tagging import RamTaggingHead, find_tag_files, read_tag_files

N_TAGS = 12
R = 2  # loralib rank of the crafted DAPE file


# ------------------------------------------------------------------ files in the real layouts
def _to_microsoft(sd: dict) -> dict:
    """timm key layout -> RAM's (patch merging at the END of stages 0-2, prefix visual_encoder.)."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^swin\.layers\.(\d+)\.downsample", lambda m: f"swin.layers.{int(m.group(1)) - 1}.downsample", k)
        out[k.replace("swin.", "visual_encoder.", 1) if k.startswith("swin.") else k] = v
    return out


def _ram_files(folder: Path, n_tags: int = N_TAGS) -> Path:
    """ram_swin_large_14m.pth ({"model": ...}, tiny Swin) + its two tag files beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    with seeded(21):
        enc = SwinEncoder(**TINY_SWIN)
        head = RamTaggingHead(N_TAGS, **TINY_RAM_TAGGING)
    sd = {**_to_microsoft(enc.state_dict()), **head.state_dict()}
    sd["visual_encoder.layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(4, 4, dtype=torch.long)
    torch.save({"model": sd}, folder / "ram_swin_large_14m.pth")
    (folder / "ram_tag_list.txt").write_text("\n".join(f"tag{i}" for i in range(n_tags)))
    (folder / "ram_tag_list_threshold.txt").write_text("\n".join(["0.5"] * n_tags))
    return folder / "ram_swin_large_14m.pth"


def _qkv_blocks() -> list[tuple[str, int]]:
    enc = SwinEncoder(**TINY_SWIN)
    return [(n[len("swin."):], m.in_features) for n, m in enc.named_modules() if n.endswith("attn.qkv")]


def _dape_state(scale: float = 0.3) -> dict[str, torch.Tensor]:
    """OSEDiff's DAPE.pth: loralib MergedLinear qkv LoRA (q, v) + Linear LoRA on the head's query,
    the tied tag_encoder layer 0 and an unrelated tag_encoder layer 7."""
    g = torch.Generator().manual_seed(5)
    st = {}
    for name, dim in _qkv_blocks():
        st[f"visual_encoder.{name}.lora_A"] = torch.randn(2 * R, dim, generator=g)
        st[f"visual_encoder.{name}.lora_B"] = torch.randn(2 * dim, R, generator=g) * scale
    h = TINY_RAM_TAGGING["hidden"]
    for prefix in ("tagging_head.encoder.layer.0", "tag_encoder.encoder.layer.0", "tag_encoder.encoder.layer.7"):
        st[f"{prefix}.crossattention.self.query.lora_A"] = torch.randn(R, h, generator=g)
        st[f"{prefix}.crossattention.self.query.lora_B"] = torch.randn(h, R, generator=g) * scale
    return st


def _tagger(ram: Path):
    cfg = OSDHumanConfig(base_model="tiny", hfie_encoder_path=str(ram))
    return _build_tagger(cfg, read_tag_files(*find_tag_files(None, None, str(ram))))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("dape")
    ram = _ram_files(root / "ram")
    torch.save(_dape_state(), root / "DAPE.pth")
    rng = np.random.default_rng(0)
    (root / "in").mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(root / "in" / f"p{i}.png")
    return {"root": root, "ram": ram, "dape": root / "DAPE.pth", "in": root / "in"}


# ------------------------------------------------------------------ the LoRA translation
def _loralib_qkv_delta(A: torch.Tensor, B: torch.Tensor, out: int) -> torch.Tensor:
    """loralib MergedLinear(enable_lora=[True, False, True]).merge_AB() * scaling, written out."""
    delta = F.conv1d(A.unsqueeze(0), B.unsqueeze(-1), groups=2).squeeze(0)  # (2 dim, in)
    full = torch.zeros(out, A.shape[1])
    dim = out // 3
    full[:dim], full[2 * dim:] = delta[:dim], delta[dim:]
    return full * (1.0 / R)  # lora_alpha 1 / r


def test_dape_lora_changes_the_logits_and_nothing_else(files):
    tagger = _tagger(files["ram"])
    before = {k: v.clone() for k, v in tagger.state_dict().items()}
    x = torch.rand(2, 3, 40, 48) * 2 - 1
    logits0 = tagger.logits(x)
    report = apply_dape(tagger, files["dape"])
    after = tagger.state_dict()
    assert set(after) == set(before)  # merged and unwrapped: the same tensors, no peft leftovers
    st = _dape_state()
    changed = set()
    for name, _dim in _qkv_blocks():
        k = f"encoder.swin.{name}.weight"
        want = before[k] + _loralib_qkv_delta(st[f"visual_encoder.{name}.lora_A"], st[f"visual_encoder.{name}.lora_B"],
                                              before[k].shape[0])
        assert (after[k] - want).abs().max() < 1e-5
        d = before[k].shape[0] // 3
        assert torch.equal(after[k][d:2 * d], before[k][d:2 * d])  # k rows untouched
        changed.add(k)
    # the head's query gets its own LoRA AND the tied tag_encoder layer's (loralib merges both)
    q = "head.tagging_head.encoder.layer.0.crossattention.self.query.weight"
    delta = sum(st[f"{p}.crossattention.self.query.lora_B"] @ st[f"{p}.crossattention.self.query.lora_A"]
                for p in ("tagging_head.encoder.layer.0", "tag_encoder.encoder.layer.0")) / R
    assert (after[q] - before[q] - delta).abs().max() < 1e-5
    changed.add(q)
    for k in set(before) - changed:
        assert torch.equal(after[k], before[k]), k
    assert len(report.lora_modules) == len(_qkv_blocks()) + 1
    assert (tagger.logits(x) - logits0).abs().max() > 1e-3


def test_an_all_zero_dape_lora_gives_rams_own_logits(files, tmp_path):
    zero = {k: (torch.zeros_like(v) if k.endswith("lora_B") else v) for k, v in _dape_state().items()}
    torch.save(zero, tmp_path / "DAPE.pth")
    ram, dape = _tagger(files["ram"]), _tagger(files["ram"])
    apply_dape(dape, tmp_path / "DAPE.pth")
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    assert torch.allclose(ram.logits(x), dape.logits(x), atol=1e-6)


@pytest.mark.parametrize("case, expect", [
    ("nolora", "no LoRA keys for RAM's Swin"),
    ("block", "has no such layer"),
    ("shape", "do not fit"),
    ("unpaired", "but not its pair"),
])
def test_dape_files_that_do_not_match_the_swin_are_refused(files, tmp_path, case, expect):
    st = _dape_state()
    name, dim = _qkv_blocks()[0]
    if case == "nolora":
        st = {"visual_encoder.norm.weight": torch.ones(128)}
    elif case == "block":
        st["visual_encoder.layers.3.blocks.9.attn.qkv.lora_A"] = torch.zeros(2 * R, 128)
        st["visual_encoder.layers.3.blocks.9.attn.qkv.lora_B"] = torch.zeros(256, R)
    elif case == "shape":
        st[f"visual_encoder.{name}.lora_A"] = torch.zeros(2 * R, dim + 3)
    elif case == "unpaired":
        del st[f"visual_encoder.{name}.lora_B"]
    torch.save(st, tmp_path / "DAPE.pth")
    tagger = _tagger(files["ram"])
    before = {k: v.clone() for k, v in tagger.state_dict().items()}
    with pytest.raises(WeightsError, match=expect):
        apply_dape(tagger, tmp_path / "DAPE.pth")
    assert all(torch.equal(before[k], v) for k, v in tagger.state_dict().items())  # nothing half-applied


# ------------------------------------------------------------------ the prompt
def test_dape_prompts_are_77_by_cross_dim_from_the_right_image(files):
    m = build_osdhuman(OSDHumanConfig(base_model="tiny", prompt_source="dape_hq", hfie_encoder_path=str(files["ram"]),
                                      dape_path=str(files["dape"]), dape_prompt_suffix="clean"))
    pe = m.prompt_extractor
    assert pe.source == "hq"
    lq, hq = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    p = pe(lq, hq=hq)
    assert p.shape == (2, 77, m.cross_attention_dim)
    assert torch.equal(p, pe(hq)) and pe.last_prompts == pe.texts(hq)  # dape_hq tags the HQ
    assert torch.equal(pe(lq), pe.encode(pe.texts(lq)))  # ... and the LQ when no HQ is given (validation)
    assert all(t.endswith(", clean,") for t in pe.last_prompts)
    pe.source = "lq"  # what dape_lq builds
    assert torch.equal(pe(lq, hq=hq), pe(lq))  # dape_lq tags the LQ even when HQ is given
    assert not torch.equal(pe.encode(["tag1, ,"]), pe.encode(["tag2, ,"]))  # the text decides the prompt
    assert "DAPE DAPE.pth: LoRA on" in m.prompt_summary
    assert not any(k.startswith("prompt_extractor.") for k in m.trainable_state_dict())  # nothing of DAPE is saved
    assert not any(q.requires_grad for q in pe.parameters())


# ------------------------------------------------------------------ OSEDiff end to end
def _osediff_pkl(path: Path) -> None:
    """OSEDiff's osediff.pkl for the tiny UNet / VAE: three UNet adapters, full conv_in, VAE 'default_encoder'."""
    from peft import LoraConfig

    unet, vae, _, _ = build_sd_components("tiny", seed=0)
    grep = ("to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut", "conv_out",
            "proj_in", "proj_out", "ff.net.2", "ff.net.0.proj")
    lists = {"enc": [], "dec": [], "oth": []}
    for n, _ in unet.named_parameters():
        if "bias" in n or "norm" in n or not any(g in n for g in grep):
            continue
        key = "enc" if ("down_blocks" in n or "conv_in" in n) else "dec" if ("up_blocks" in n or "conv_out" in n) else "oth"
        lists[key].append(n.replace(".weight", ""))
    with seeded(7):
        for key, adapter in (("enc", "default_encoder"), ("dec", "default_decoder"), ("oth", "default_others")):
            unet.add_adapter(LoraConfig(r=4, target_modules=lists[key], init_lora_weights="gaussian"), adapter_name=adapter)
        vae_targets = [n.replace(".weight", "") for n, _ in vae.named_parameters()
                       if n.startswith("encoder.") and n.endswith(".weight") and "norm" not in n]
        vae.add_adapter(LoraConfig(r=4, target_modules=vae_targets, init_lora_weights="gaussian"),
                        adapter_name="default_encoder")  # as OSEDiff's osediff.py names it
        with torch.no_grad():
            for n, p in list(unet.named_parameters()) + list(vae.named_parameters()):
                if "lora_B" in n:
                    p.normal_(0, 0.05)
    torch.save({"state_dict_unet": {k: v for k, v in unet.state_dict().items() if "lora" in k or "conv_in" in k},
                "state_dict_vae": {k: v for k, v in vae.state_dict().items() if "lora" in k},
                "unet_lora_encoder_modules": lists["enc"], "unet_lora_decoder_modules": lists["dec"],
                "unet_lora_others_modules": lists["oth"], "vae_lora_encoder_modules": vae_targets,
                "rank_unet": 4, "rank_vae": 4}, path)


def _restore(files, out: Path, *extra: str, capsys) -> tuple[int, str]:
    rc = main(["restore", str(files["in"]), "-o", str(out), "--base-model", "tiny", "--no-progress", *extra])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def test_osediff_restores_with_dape_lq_prompts(files, capsys):
    pkl = files["root"] / "osediff.pkl"
    _osediff_pkl(pkl)
    base = ["--weights", str(pkl), "--hfie-encoder", str(files["ram"])]
    rc, err = _restore(files, files["root"] / "out", *base, "--dape", str(files["dape"]), capsys=capsys)
    assert rc == 0, err
    assert "osediff" in err and "prompt dape_lq" in err and "DAPE DAPE.pth: LoRA on" in err
    saved = (files["root"] / "out" / "restore_config.yaml").read_text()
    assert "dape:" in saved and "DAPE.pth" in saved
    a = np.asarray(Image.open(files["root"] / "out" / "p0.png"))
    assert a.shape == (48, 40, 3)
    rc, _ = _restore(files, files["root"] / "null", *base, "--prompt-source", "null", capsys=capsys)
    assert rc == 0
    assert not np.array_equal(a, np.asarray(Image.open(files["root"] / "null" / "p0.png")))  # the prompt matters
    # OSEDiff samples the latent: a seeded sample, the same on a second run
    rc, _ = _restore(files, files["root"] / "out2", *base, "--dape", str(files["dape"]), capsys=capsys)
    assert np.array_equal(a, np.asarray(Image.open(files["root"] / "out2" / "p0.png")))


def _no_text_base(root: Path) -> Path:
    base = root / "sd_no_text"
    for sub in ("unet", "vae"):
        (base / sub).mkdir(parents=True, exist_ok=True)
        (base / sub / "config.json").write_text("{}")
    return base


@pytest.mark.parametrize("case, expect", [
    ("no_tag_list", ["nope/ram_tag_list.txt", "RAM tag list not found", "recognize-anything"]),
    ("no_thresholds", ["ram_tag_list_threshold.txt", "thresholds file not found"]),
    ("tag_count", ["label_embed has 12 tags but the tag list has 13 lines"]),
    ("dape_keys", ["DAPE.pth", "has no such layer"]),
    ("dape_missing", ["missing.pth", "DAPE file not found"]),
    ("no_text_encoder", ["sd_no_text/text_encoder", "CLIP text encoder"]),
])
def test_bad_dape_inputs_stop_before_work_with_one_line(files, tmp_path, capsys, case, expect):
    args = ["--prompt-source", "dape_lq", "--hfie-encoder", str(files["ram"])]
    if case == "no_tag_list":
        args += ["--ram-tag-list", str(tmp_path / "nope" / "ram_tag_list.txt")]
    elif case == "no_thresholds":
        (tmp_path / "ram_tag_list.txt").write_text("a\nb")
        args += ["--ram-tag-list", str(tmp_path / "ram_tag_list.txt")]
    elif case == "tag_count":
        (tmp_path / "ram_tag_list.txt").write_text("\n".join(f"t{i}" for i in range(N_TAGS + 1)))
        (tmp_path / "ram_tag_list_threshold.txt").write_text("\n".join(["0.6"] * (N_TAGS + 1)))
        args += ["--ram-tag-list", str(tmp_path / "ram_tag_list.txt")]
    elif case == "dape_keys":
        st = _dape_state()
        st["visual_encoder.layers.2.blocks.7.attn.qkv.lora_A"] = torch.zeros(2 * R, 64)
        st["visual_encoder.layers.2.blocks.7.attn.qkv.lora_B"] = torch.zeros(128, R)
        torch.save(st, tmp_path / "DAPE.pth")
        args += ["--dape", str(tmp_path / "DAPE.pth")]
    elif case == "dape_missing":
        args += ["--dape", str(tmp_path / "missing.pth")]
    out = tmp_path / "out"
    if case == "no_text_encoder":
        rc = main(["restore", str(files["in"]), "-o", str(out), "--base-model", str(_no_text_base(tmp_path)),
                   "--no-progress", *args])
        err = capsys.readouterr().err
    else:
        rc, err = _restore(files, out, *args, capsys=capsys)
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for s in expect:
        assert s in lines[0], lines[0]
    assert not list(out.glob("*.png"))


# ------------------------------------------------------------------ training with dape_hq
def test_tiny_training_with_dape_hq_prompts(files, tmp_path, monkeypatch):
    from osdhuman.config import load_config
    from osdhuman.models.dape import DAPEPrompt
    from osdhuman.training import TrainConfig, train

    seen = []
    forward = DAPEPrompt.forward

    def spy(self, lq, hq=None):
        seen.append(hq is not None and self.source == "hq")
        return forward(self, lq, hq)

    monkeypatch.setattr(DAPEPrompt, "forward", spy)
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(photos / f"h{i}.png")
    configs = Path(__file__).resolve().parents[2] / "configs"
    cfg = load_config(TrainConfig, configs / "tiny.yaml", [
        f"data.source={photos}", "data.size=32", "device=cpu", "mixed_precision=no", "frozen_dtype=float32",
        "lpips.random_backbone=true", "logging.progress=false", "data.num_workers=0", "data.val_source=null",
        "data.num_val=1", "batch_size=1", "max_steps=1", "grad_accum_steps=1", "logging.val_at_start=false",
        "logging.val_every=0", "checkpoint.every=0", 'model.prompt_source="dape_hq"',
        f"model.hfie_encoder_path={files['ram']}", f"model.dape_path={files['dape']}"])
    res = train(cfg, tmp_path / "run")
    assert res.step == 1
    assert seen and all(seen)  # every generator step tagged the HQ crop
    saved = json.loads((tmp_path / "run" / "final" / "osdhuman_config.json").read_text())
    assert saved["config"]["prompt_source"] == "dape_hq" and saved["config"]["dape_path"] == str(files["dape"])
    from safetensors import safe_open

    with safe_open(str(tmp_path / "run" / "final" / "osdhuman_weights.safetensors"), "pt") as f:
        assert not any(k.startswith("prompt_extractor.") for k in f.keys())
    # the trained run restores with LQ tags (the paper's DAPE row: HQ in training, LQ at test)
    from osdhuman.models.pretrained import load_pretrained

    model, summary = load_pretrained(tmp_path / "run" / "final", prompt_source="dape_lq")
    assert model.prompt_extractor.source == "lq" and "prompt dape_lq" in summary and "DAPE DAPE.pth" in summary
    out = model.eval()(torch.rand(1, 3, 32, 32) * 2 - 1)
    assert out.image.shape == (1, 3, 32, 32) and torch.isfinite(out.image).all()
