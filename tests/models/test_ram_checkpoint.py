"""Loading RAM's ram_swin_large_14m.pth layout (crafted, tiny Swin) into HFIE's encoder."""

import re

import pytest
import torch

from osdhuman.models import (
    SWIN_L_RAM,
    TINY_SWIN,
    SwinEncoder,
    WeightsError,
    load_ram_encoder,
    remap_ram_swin_keys,
)
from osdhuman.models.loading import seeded


def _to_microsoft(sd: dict) -> dict:
    """timm key layout -> RAM / Microsoft layout (downsample at the END of stages 0-2)."""
    out = {}
    for k, v in sd.items():
        k2 = re.sub(r"^swin\.layers\.(\d+)\.downsample", lambda m: f"swin.layers.{int(m.group(1)) - 1}.downsample", k)
        out[k2.replace("swin.", "visual_encoder.", 1) if k2.startswith("swin.") else k2] = v
    return out


def _crafted(tmp_path, drop=None, window_rows=None):
    with seeded(123):
        src = SwinEncoder(**TINY_SWIN)
    sd = _to_microsoft(src.state_dict())
    assert "visual_encoder.layers.0.downsample.reduction.weight" in sd
    assert "image_proj.weight" in sd
    # buffers RAM's checkpoint carries, and keys of the rest of RAM
    sd["visual_encoder.layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(4, 4, dtype=torch.long)
    sd["visual_encoder.layers.0.blocks.0.attn_mask"] = torch.zeros(1, 4, 4)
    sd["tagging_head.embeddings.weight"] = torch.zeros(3, 3)
    sd["label_embed"] = torch.zeros(5, 2)
    if window_rows is not None:  # a checkpoint trained with a larger window: 5x5 -> 9x9 table
        k = "visual_encoder.layers.0.blocks.0.attn.relative_position_bias_table"
        sd[k] = torch.randn(window_rows, sd[k].shape[1])
    if drop:
        del sd[drop]
    path = tmp_path / "ram_swin_large_14m.pth"
    torch.save({"model": sd}, path)
    return src, path


def test_loads_every_encoder_tensor_and_reports_unexpected(tmp_path):
    src, path = _crafted(tmp_path)
    with seeded(999):
        dst = SwinEncoder(**TINY_SWIN)
    assert not torch.equal(dst.image_proj.weight, src.image_proj.weight)
    report = load_ram_encoder(dst, path)
    own = dst.state_dict()
    assert sorted(report.loaded) == sorted(own)
    for k, v in src.state_dict().items():
        assert torch.equal(own[k], v), k
    assert {"tagging_head.embeddings.weight", "label_embed"} <= set(report.unexpected)
    x = torch.randn(1, 3, TINY_SWIN["img_size"], TINY_SWIN["img_size"])
    src.eval(), dst.eval()
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))


def test_bias_table_resized(tmp_path):
    _, path = _crafted(tmp_path, window_rows=25)
    with seeded(1):
        dst = SwinEncoder(**TINY_SWIN)
    report = load_ram_encoder(dst, path)
    assert report.resized == ["swin.layers.0.blocks.0.attn.relative_position_bias_table"]
    assert dst.swin.layers[0].blocks[0].attn.relative_position_bias_table.shape[0] == 9


def test_missing_tensor_is_an_error_naming_file_and_source(tmp_path):
    _, path = _crafted(tmp_path, drop="image_proj.weight")
    with seeded(1):
        dst = SwinEncoder(**TINY_SWIN)
    with pytest.raises(WeightsError) as exc:
        load_ram_encoder(dst, path)
    msg = str(exc.value)
    assert str(path) in msg and "image_proj.weight" in msg and "recognize_anything" in msg
    with pytest.raises(WeightsError, match="not found"):
        load_ram_encoder(dst, tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pth"):
        load_ram_encoder(dst, tmp_path / "junk.pth")


def test_remap_covers_real_swin_l_key_names():
    with torch.device("meta"):
        enc = SwinEncoder(**SWIN_L_RAM)
    own = set(enc.state_dict())
    mapped, ignored = remap_ram_swin_keys({"model": _to_microsoft({k: 0 for k in own})})
    assert set(mapped) == own and ignored == []


def test_build_osdhuman_uses_the_ram_checkpoint(tmp_path):
    from osdhuman.models import OSDHumanConfig, build_osdhuman

    src, path = _crafted(tmp_path)
    m = build_osdhuman(OSDHumanConfig(base_model="tiny", hfie_encoder_path=str(path), compute_null_prompt=False))
    assert torch.equal(m.prompt_extractor.encoder.image_proj.weight, src.image_proj.weight)
