"""RAM's tagging head (models/ram_tagging.py): RAM's key layout, the decoder's arithmetic,
per-class thresholds, OSEDiff's prompt format and every bad tag file."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from osdhuman.models import WeightsError
from osdhuman.models.config import RAM_TAGGING, TINY_RAM_TAGGING
from osdhuman.models.loading import seeded
from osdhuman.models.ram_tagging import (
    RamTaggingHead,
    TagVocabulary,
    find_tag_files,
    load_ram_tagging,
    osediff_prompt,
    read_tag_files,
    select_tags,
)


def _files(tmp_path, tags, thresholds):
    tl, th = tmp_path / "ram_tag_list.txt", tmp_path / "ram_tag_list_threshold.txt"
    tl.write_text("\n".join(tags))
    th.write_text("\n".join(str(t) for t in thresholds))
    return tl, th


def test_real_size_head_has_rams_key_names_and_shapes():
    head = RamTaggingHead(4585, **RAM_TAGGING)
    sd = head.state_dict()
    assert sd["label_embed"].shape == (4585, 512)
    assert sd["wordvec_proj.weight"].shape == (768, 512)
    assert sd["fc.weight"].shape == (1, 768)
    for i in range(2):
        p = f"tagging_head.encoder.layer.{i}."
        assert sd[p + "crossattention.self.query.weight"].shape == (768, 768)
        assert sd[p + "crossattention.self.key.weight"].shape == (768, 512)  # from the 512-wide image tokens
        assert sd[p + "crossattention.self.value.weight"].shape == (768, 512)
        assert sd[p + "crossattention.output.dense.weight"].shape == (768, 768)
        assert sd[p + "crossattention.output.LayerNorm.weight"].shape == (768,)
        assert sd[p + "intermediate.dense.weight"].shape == (3072, 768)
        assert sd[p + "output.dense.weight"].shape == (768, 3072)
        assert sd[p + "output.LayerNorm.bias"].shape == (768,)
    assert not any("attention.self" in k and "crossattention" not in k for k in sd)  # no self-attention
    assert not any("embeddings" in k for k in sd)
    assert head.tagging_head.encoder.layer[0].output.LayerNorm.eps == 1e-12


def _reference_logits(head: RamTaggingHead, tokens: torch.Tensor, heads: int) -> torch.Tensor:
    """The decoder written out: relu(W label) queries, per-head softmax(qk/sqrt d) v, post-LN."""
    sd = {k: v.double() for k, v in head.state_dict().items()}
    x = torch.relu(sd["label_embed"] @ sd["wordvec_proj.weight"].T + sd["wordvec_proj.bias"])
    x = x.unsqueeze(0).expand(tokens.shape[0], -1, -1)
    img = tokens.double()
    lin = lambda t, p: t @ sd[p + ".weight"].T + sd[p + ".bias"]
    ln = lambda t, p: F.layer_norm(t, t.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], 1e-12)
    for i in range(2):
        p = f"tagging_head.encoder.layer.{i}."
        q, k, v = lin(x, p + "crossattention.self.query"), lin(img, p + "crossattention.self.key"), lin(img, p + "crossattention.self.value")
        d = q.shape[-1] // heads
        split = lambda t, d=d: t.view(t.shape[0], t.shape[1], heads, d).transpose(1, 2)
        att = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(d), -1) @ split(v)
        a = ln(lin(att.transpose(1, 2).flatten(2), p + "crossattention.output.dense") + x, p + "crossattention.output.LayerNorm")
        h = F.gelu(lin(a, p + "intermediate.dense"))
        x = ln(lin(h, p + "output.dense") + a, p + "output.LayerNorm")
    return lin(x, "fc").squeeze(-1)


def test_tiny_head_computes_rams_cross_attention_decoder():
    with seeded(3):
        head = RamTaggingHead(9, **TINY_RAM_TAGGING).eval()
        tokens = torch.randn(2, 5, TINY_RAM_TAGGING["width"])
    with torch.no_grad():
        ours = head(tokens)
    assert ours.shape == (2, 9)
    ref = _reference_logits(head, tokens, TINY_RAM_TAGGING["heads"])
    assert (ours.double() - ref).abs().max() < 1e-5
    # the image matters: other tokens, other logits
    with torch.no_grad():
        assert (head(tokens.flip(0)) - ours).abs().max() > 1e-4


def test_thresholds_apply_per_class_strictly_and_deleted_tags_never_appear():
    vocab = TagVocabulary(["person", "shirt", "tree", "sky"], torch.tensor([0.3, 0.6, 0.9, 0.5]))
    probs = torch.tensor([[0.5, 0.5, 0.95, 0.5], [0.2, 0.7, 0.85, 0.51]])
    logits = torch.logit(probs)
    # 0.5 passes 0.3 but not 0.6; 0.95 passes 0.9, 0.85 does not; 0.5 == 0.5 is not above it
    assert select_tags(logits, vocab) == [["person", "tree"], ["shirt", "sky"]]
    assert select_tags(logits, vocab, delete=[2]) == [["person"], ["shirt", "sky"]]


def test_prompt_text_is_osediffs_format():
    assert osediff_prompt(["man", "white shirt", "street"]) == "man, white shirt, street, ,"
    assert osediff_prompt(["man"], "clean, high-resolution") == "man, clean, high-resolution,"
    assert osediff_prompt([]) == ", ,"


def test_tag_files_are_found_beside_the_checkpoint_or_given(tmp_path):
    tl, th = _files(tmp_path, ["a", "b", "c"], [0.65, 0.7, 0.9])
    ckpt = tmp_path / "ram_swin_large_14m.pth"
    assert find_tag_files(None, None, str(ckpt)) == (tl, th)
    vocab = read_tag_files(*find_tag_files(str(tl), None, None))
    assert vocab.tags == ["a", "b", "c"]
    assert torch.allclose(vocab.thresholds, torch.tensor([0.65, 0.7, 0.9]))
    other = tmp_path / "mine.txt"
    other.write_text("0.1\n0.2\n0.3")
    assert read_tag_files(tl, other).thresholds[0].item() == pytest.approx(0.1)


@pytest.mark.parametrize("case, expect", [
    ("no_list", "ram_tag_list.txt: RAM tag list not found"),
    ("no_thresholds", "ram_tag_list_threshold.txt: RAM tag thresholds file not found"),
    ("short", "2 thresholds for 3 tags"),
    ("word", "line 2 is not a number"),
    ("range", "outside [0, 1]"),
])
def test_bad_tag_files_name_the_file_and_the_problem(tmp_path, case, expect):
    tl, th = _files(tmp_path, ["a", "b", "c"], [0.65, 0.7, 0.9])
    if case == "no_list":
        tl.unlink()
    elif case == "no_thresholds":
        th.unlink()
    elif case == "short":
        th.write_text("0.6\n0.7")
    elif case == "word":
        th.write_text("0.6\nhigh\n0.7")
    elif case == "range":
        th.write_text("0.6\n1.5\n0.7")
    with pytest.raises(WeightsError) as exc:
        read_tag_files(*find_tag_files(str(tl), None, None))
    msg = str(exc.value)
    assert expect in msg and "\n" not in msg
    if case.startswith("no_"):
        assert "github.com/xinyu1205/recognize-anything" in msg  # where to get them


def test_loading_checks_the_tag_count_and_renames_vision_multi(tmp_path):
    with seeded(1):
        src = RamTaggingHead(6, **TINY_RAM_TAGGING)
    sd = {("vision_multi." + k[len("tagging_head."):] if k.startswith("tagging_head.") else k): v
          for k, v in src.state_dict().items()}
    sd["visual_encoder.patch_embed.proj.weight"] = torch.zeros(1)  # the rest of RAM is not ours to load here
    dst = RamTaggingHead(6, **TINY_RAM_TAGGING)
    load_ram_tagging(dst, {"model": sd}, "ram.pth")
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    with pytest.raises(WeightsError, match="label_embed has 6 tags but the tag list has 7 lines"):
        load_ram_tagging(RamTaggingHead(7, **TINY_RAM_TAGGING), {"model": sd}, "ram.pth")
    encoder_only = {k: v for k, v in sd.items() if k.startswith("visual_encoder.")}
    with pytest.raises(WeightsError, match="no RAM tagging head.*export-encoder"):
        load_ram_tagging(dst, encoder_only, "encoder.safetensors")
