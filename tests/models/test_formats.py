"""Weights in and out (docs/reference.md §weights): export to diffusers, import of diffusers / peft LoRA files,
the authors' group layout and OSEDiff's osediff.pkl, all built in the test in the real
layouts on the tiny preset (random values)."""

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from osdhuman.models import OSDHumanConfig, WeightsError, build_osdhuman
from osdhuman.models.export import exact_conv_lora, export_diffusers
from osdhuman.models.formats import classify, read_weights
from osdhuman.models.loading import build_sd_components, seeded
from osdhuman.models.pretrained import load_pretrained


def _perturbed(**kw):
    m = build_osdhuman(OSDHumanConfig(base_model="tiny", compute_null_prompt=False, **kw))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for q in m.generator_parameters():
            q.add_(0.05 * torch.randn(q.shape, generator=g))
    return m.eval()


def _inputs(cross=32):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(2, 4, 8, 8, generator=g), torch.tensor([999, 400]),
            torch.randn(2, 77, cross, generator=g))


def _peft_unet(targets, rank=4, alpha=8.0, adapter="default", seed=5):
    """A tiny diffusers UNet with a peft LoRA made independently of osdhuman, B moved off zero."""
    from peft import LoraConfig

    unet, _, _, _ = build_sd_components("tiny", seed=0)
    with seeded(seed):
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights="gaussian"),
                         adapter_name=adapter)
        with torch.no_grad():
            for n, p in unet.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05)
    return unet.eval()


ATTN = ["to_q", "to_k", "to_v", "to_out.0"]


def test_exact_conv_lora_reconstructs_the_weight_change_bit_for_bit():
    delta = torch.randn(16, 4, 3, 3)
    a, b = exact_conv_lora(delta)
    assert a.shape == (36, 4, 3, 3) and b.shape == (16, 36, 1, 1)
    assert torch.equal(torch.einsum("or,rikl->oikl", b[:, :, 0, 0], a), delta)


def test_export_loads_into_plain_diffusers_with_the_same_eps(tmp_path):
    m = _perturbed()
    out = export_diffusers(m, tmp_path / "exp", card={"training_data": "persona/manifest.parquet",
                                                      "metrics": {"val/psnr_y": 21.5}})
    names = sorted(p.name for p in out.iterdir())
    assert names == ["README.md", "hfie_head.safetensors", "osdhuman_config.json", "pytorch_lora_weights.safetensors",
                     "unet_conv_in.safetensors", "vae_encoder_lora.safetensors"]
    lora = load_file(str(out / "pytorch_lora_weights.safetensors"))
    assert all(k.startswith("unet.") and (".lora_A." in k or ".lora_B." in k) for k in lora)
    assert lora["unet.conv_in.lora_A.weight"].shape == (36, 4, 3, 3)  # the exact rank in*k*k LoRA
    # plain diffusers, no osdhuman code: load_lora_adapter (no metadata read: scale baked in)
    unet, vae, _, _ = build_sd_components("tiny", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every key applied, nothing dropped with a warning
        unet.load_lora_adapter(str(out / "pytorch_lora_weights.safetensors"), prefix="unet")
    unet.conv_in.bias.data.copy_(load_file(str(out / "unet_conv_in.safetensors"))["conv_in.bias"])  # the card's line
    z, t, p = _inputs()
    with torch.no_grad():
        assert (m.unet_eps(z, t, p) - unet(z, t, encoder_hidden_states=p).sample).abs().max() < 1e-5
        vae.load_lora_adapter(str(out / "vae_encoder_lora.safetensors"), prefix="vae")
        x = torch.rand(1, 3, 64, 64) * 2 - 1
        assert (m.vae.encode(x).latent_dist.mode() - vae.encode(x).latent_dist.mode()).abs().max() < 1e-5
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "pipeline_tag: image-to-image" in card
    assert "base_model:" not in card and "NOT Stable Diffusion" in card  # a tiny export claims no SD base
    assert "persona/manifest.parquet" in card and "val/psnr_y" in card and "load_lora_adapter" in card
    assert "saved at scale 1" in card and "trained at alpha 8" in card and "alpha 8 " not in card.split("trained")[0]
    for fact in ("latent_dist.mode()", "mean FIRST", "Linear 1536 -> 512", "384x384", "antialias=True",
                 "attn.q_proj_weight", "(1 - a).sqrt() * eps"):
        assert fact in card, fact
    cfg = json.loads((out / "osdhuman_config.json").read_text())
    assert cfg["format"] == "osdhuman-export" and cfg["timestep"] == 999 and cfg["lora_rank"] == 4
    assert cfg["lora_alpha"] == 4 and cfg["lora_scale"] == 1.0 and cfg["trained_lora_alpha"] == 8
    # the card's arithmetic: B as saved at scale 1 reproduces the model; alpha 8 on top would not
    from peft.tuners.lora import LoraLayer

    for layer in (mod for mod in unet.modules() if isinstance(mod, LoraLayer)):
        assert all(v == 1.0 for v in layer.scaling.values())


def test_export_round_trip_is_bit_exact(tmp_path):
    m = _perturbed()
    export_diffusers(m, tmp_path / "exp")
    back, summary = load_pretrained(tmp_path / "exp")
    assert "osdhuman-export" in summary and "conv_in trained" in summary
    lq = torch.rand(1, 3, 64, 48, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        assert torch.equal(m(lq).image, back.eval()(lq).image)
        m.merge_generator_lora()
        back.merge_generator_lora()
        assert torch.equal(m(lq).image, back(lq).image)


def test_merge_export_writes_fused_diffusers_folders(tmp_path):
    from diffusers import UNet2DConditionModel

    m = _perturbed()
    z, t, p = _inputs()
    with torch.no_grad():
        ref = m.unet_eps(z, t, p)
    export_diffusers(m, tmp_path / "exp", merge=True)
    fused = UNet2DConditionModel.from_pretrained(str(tmp_path / "exp" / "merged" / "unet")).eval()
    with torch.no_grad():
        assert (fused(z, t, encoder_hidden_states=p).sample - ref).abs().max() < 1e-5


def test_diffusers_saved_peft_lora_imports_with_diffusers_eps(tmp_path):
    from diffusers import StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict

    targets = ATTN + ["conv1", "conv2", "proj_in", "proj_out"]
    unet = _peft_unet(targets, rank=4, alpha=8.0)  # alpha != rank: only the metadata says so
    sd = get_peft_model_state_dict(unet, adapter_name="default")
    meta = unet.peft_config["default"].to_dict()
    StableDiffusionPipeline.save_lora_weights(str(tmp_path), unet_lora_layers=sd, unet_lora_adapter_metadata=meta)
    assert classify(tmp_path) == "diffusers-lora"
    model, summary = load_pretrained(tmp_path, prompt_source="null", base_model="tiny")
    assert "alpha 8" in summary and f"unet {len(sd) // 2} LoRA" in summary
    z, t, p = _inputs()
    with torch.no_grad():
        assert (model.unet_eps(z, t, p) - unet(z, t, encoder_hidden_states=p).sample).abs().max() < 1e-5


def test_legacy_lora_down_up_and_processor_keys_import(tmp_path):
    from peft.utils import get_peft_model_state_dict

    unet = _peft_unet(ATTN + ["conv1"], rank=2, alpha=2.0)
    legacy = {}
    for k, v in get_peft_model_state_dict(unet, adapter_name="default").items():
        k = k.replace(".lora_A.", ".lora.down.").replace(".lora_B.", ".lora.up.")
        for proj in ("to_q", "to_k", "to_v"):  # attention processor names, as older diffusers wrote
            k = k.replace(f".{proj}.lora.", f".processor.{proj}_lora.")
        k = k.replace(".to_out.0.lora.", ".processor.to_out_lora.")
        legacy[f"unet.{k}"] = v
    assert any(".processor.to_q_lora.down." in k for k in legacy)
    save_file(legacy, str(tmp_path / "old_lora.safetensors"))
    model, _ = load_pretrained(tmp_path / "old_lora.safetensors", prompt_source="null", base_model="tiny")
    z, t, p = _inputs()
    with torch.no_grad():
        assert (model.unet_eps(z, t, p) - unet(z, t, encoder_hidden_states=p).sample).abs().max() < 1e-5


def test_group_house_style_hfie_head_imports_every_tensor(tmp_path):
    """The group's house style for an HFIE release: pytorch_lora_weights.safetensors (rank 16 =
    alpha, no metadata) + img_encoder_weights.pth = {"model_state_dict": head, "*_kwargs": ...}."""
    from peft.utils import get_peft_model_state_dict

    unet = _peft_unet(ATTN, rank=16, alpha=16.0)
    lora = {f"unet.{k}": v for k, v in get_peft_model_state_dict(unet, adapter_name="default").items()}
    save_file(lora, str(tmp_path / "pytorch_lora_weights.safetensors"))
    ref = build_osdhuman(OSDHumanConfig(base_model="tiny", compute_null_prompt=False))
    g = torch.Generator().manual_seed(3)
    head = {"query": torch.randn(1, 77, 32, generator=g)}  # (1, L, D) is taken as (L, D)
    for k, v in ref.prompt_extractor.attn.state_dict().items():
        head[f"attn.{k}"] = torch.randn(v.shape, generator=g)
    head["norm.weight"], head["norm.bias"] = torch.rand(32, generator=g), torch.rand(32, generator=g)
    torch.save({"model_state_dict": head, "hfie_kwargs": {"heads": 8, "timestep": 999}},
               tmp_path / "img_encoder_weights.pth")
    assert classify(tmp_path) == "group-release"
    model, summary = load_pretrained(tmp_path, base_model="tiny")
    assert model.config.timestep == 999 and model.config.lora_rank == 16 and model.config.lora_alpha == 16
    assert "HFIE head 9 tensors" in summary and "timestep 999" in summary
    pe = model.prompt_extractor
    assert torch.equal(pe.query, head["query"][0])
    assert torch.equal(pe.attn.k_proj_weight, head["attn.k_proj_weight"])
    assert torch.equal(pe.norm.bias, head["norm.bias"])
    z, t, p = _inputs()
    with torch.no_grad():
        assert (model.unet_eps(z, t, p) - unet(z, t, encoder_hidden_states=p).sample).abs().max() < 1e-5
    # a guessed alias (a DDP prefix, another attention name) is not a layout any release uses
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in head.items()}, "hfie_kwargs": {}},
               tmp_path / "img_encoder_weights.pth")
    with pytest.raises(WeightsError, match="embedder not understood.*module.query"):
        load_pretrained(tmp_path)


def _osediff_pkl(path):
    """OSEDiff's osediff.pkl: three UNet adapters by block, full conv_in, VAE adapter 'default'."""
    from peft import LoraConfig

    unet, vae, _, _ = build_sd_components("tiny", seed=0)
    grep = ["to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut", "conv_out",
            "proj_in", "proj_out", "ff.net.2", "ff.net.0.proj"]
    lists = {"enc": [], "dec": [], "oth": []}
    for n, _ in unet.named_parameters():
        if "bias" in n or "norm" in n or not any(g in n for g in grep):
            continue
        name = n.replace(".weight", "")
        key = "enc" if ("down_blocks" in n or "conv_in" in n) else "dec" if ("up_blocks" in n or "conv_out" in n) else "oth"
        lists[key].append(name)
    with seeded(7):
        for key, adapter in (("enc", "default_encoder"), ("dec", "default_decoder"), ("oth", "default_others")):
            unet.add_adapter(LoraConfig(r=4, target_modules=lists[key], init_lora_weights="gaussian"), adapter_name=adapter)
        unet.set_adapter(["default_encoder", "default_decoder", "default_others"])
        vae_targets = [n.replace(".weight", "") for n, _ in vae.named_parameters()
                       if n.startswith("encoder.") and n.endswith(".weight") and "norm" not in n]
        vae.add_adapter(LoraConfig(r=4, target_modules=vae_targets, init_lora_weights="gaussian"), adapter_name="default")
        with torch.no_grad():
            for n, p in list(unet.named_parameters()) + list(vae.named_parameters()):
                if "lora_B" in n:
                    p.normal_(0, 0.05)
            unet.conv_in.base_layer.weight.add_(0.05)
    sd_unet = {k: v for k, v in unet.state_dict().items() if "lora" in k or "conv_in" in k}
    sd_vae = {k: v for k, v in vae.state_dict().items() if "lora" in k}
    torch.save({"state_dict_unet": sd_unet, "state_dict_vae": sd_vae, "unet_lora_encoder_modules": lists["enc"],
                "unet_lora_decoder_modules": lists["dec"], "unet_lora_others_modules": lists["oth"],
                "vae_lora_encoder_modules": vae_targets, "rank_unet": 4, "rank_vae": 4}, path)
    return unet.eval(), sd_unet, sd_vae


def test_osediff_pkl_imports_every_tensor_with_its_eps(tmp_path):
    unet, sd_unet, sd_vae = _osediff_pkl(tmp_path / "osediff.pkl")
    fw = read_weights(tmp_path / "osediff.pkl")
    n_lora = sum(1 for k in sd_unet if "lora_B" in k)
    assert len(fw.unet) == n_lora and len(fw.vae) == sum(1 for k in sd_vae if "lora_B" in k)
    assert set(fw.conv_in) == {"weight", "bias"}
    model, summary = load_pretrained(tmp_path / "osediff.pkl", base_model="tiny")
    assert model.config.prompt_source == "null" and model.config.lora_alpha == 8.0  # peft's old default
    assert model.config.train_conv_in and "osediff" in summary
    z, t, p = _inputs()
    with torch.no_grad():
        assert (model.unet_eps(z, t, p) - unet(z, t, encoder_hidden_states=p).sample).abs().max() < 1e-5


def test_format_1_files_are_still_read(tmp_path):
    m = _perturbed()
    m.save_weights(tmp_path)
    wfile = tmp_path / "osdhuman_weights.safetensors"
    old = {}
    for k, v in load_file(str(wfile)).items():  # today's names -> the names format 1 wrote
        k = k.replace(".lora_A.", ".lora_down.").replace(".lora_B.", ".lora_up.")
        old[k.replace("unet.conv_in.base_layer.", "unet.conv_in.base.")] = v
    save_file(old, str(wfile), metadata={"format": "osdhuman-weights", "version": "1"})
    back, _ = load_pretrained(tmp_path)
    lq = torch.rand(1, 3, 48, 48) * 2 - 1
    with torch.no_grad():
        assert torch.equal(m(lq).image, back.eval()(lq).image)


@pytest.mark.parametrize("case", ["wrong_shape", "unknown_key", "pickle_class", "empty", "no_lora"])
def test_bad_weight_files_name_the_file_and_tensor(tmp_path, case):
    unet = _peft_unet(ATTN)
    from peft.utils import get_peft_model_state_dict

    sd = {f"unet.{k}": v for k, v in get_peft_model_state_dict(unet, adapter_name="default").items()}
    f = tmp_path / "lora.safetensors"
    key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"
    if case == "wrong_shape":
        sd[key] = torch.zeros(4, 7)
        save_file(sd, str(f))
        expect = ["wrong-shape", "attn1.to_q.lora_A"]
    elif case == "unknown_key":
        sd["unet.mystery_block.weight"] = torch.zeros(3)
        save_file(sd, str(f))
        expect = ["not understood", "unet.mystery_block.weight"]
    elif case == "pickle_class":
        f = tmp_path / "lora.pth"
        torch.save({"cfg": OSDHumanConfig()}, f)  # a pickle that needs a class to load
        expect = ["refused", "OSDHumanConfig"]
    elif case == "empty":
        f.write_bytes(b"")
        expect = ["empty file"]
    else:
        save_file({"something.weight": torch.zeros(2)}, str(f))
        expect = ["not understood", "something.weight"]
    with pytest.raises(WeightsError) as err:
        load_pretrained(f, prompt_source="null", base_model="tiny")
    msg = str(err.value)
    assert str(f) in msg and "\n" not in msg
    for word in expect:
        assert word in msg


def test_unknown_module_in_a_lora_file_is_unmatched(tmp_path):
    save_file({"unet.no_such.proj.lora_A.weight": torch.zeros(4, 8), "unet.no_such.proj.lora_B.weight": torch.zeros(8, 4)},
              str(tmp_path / "x.safetensors"))
    with pytest.raises(WeightsError, match="no_such.proj"):
        load_pretrained(tmp_path / "x.safetensors", prompt_source="null", base_model="tiny")


def test_hfie_model_from_a_lora_only_file_asks_for_the_head(tmp_path):
    from peft.utils import get_peft_model_state_dict

    unet = _peft_unet(ATTN)
    save_file({f"unet.{k}": v for k, v in get_peft_model_state_dict(unet, adapter_name="default").items()},
              str(tmp_path / "pytorch_lora_weights.safetensors"))
    with pytest.raises(WeightsError, match="no HFIE head"):
        load_pretrained(tmp_path)


def test_unclassifiable_folder_lists_what_it_holds(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(WeightsError, match="notes.txt"):
        load_pretrained(tmp_path)


def test_hub_id_resolves_from_the_local_cache(tmp_path, monkeypatch):
    m = _perturbed()
    snap = tmp_path / "hub" / "models--someone--osdhuman-tiny" / "snapshots" / ("a" * 40)
    export_diffusers(m, snap)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model, summary = load_pretrained("someone/osdhuman-tiny")
    assert str(snap) in summary
    with pytest.raises(WeightsError, match="HF_HUB_OFFLINE"):
        load_pretrained("someone/not-cached")


def test_ram_encoder_export_is_read_back(tmp_path):
    from osdhuman.models import TINY_SWIN, SwinEncoder, load_ram_encoder
    from osdhuman.models.hfie import export_ram_encoder

    with seeded(11):
        src = SwinEncoder(**TINY_SWIN)
    sd = {("visual_encoder." + k[5:] if k.startswith("swin.") else k): v for k, v in src.state_dict().items()}
    sd["tagging_head.x"] = torch.zeros(3)
    torch.save({"model": sd}, tmp_path / "ram.pth")
    path, n = export_ram_encoder(tmp_path / "ram.pth", tmp_path / "enc.safetensors")
    assert n == len(src.state_dict()) and "tagging_head.x" not in load_file(str(path))
    with seeded(12):
        dst = SwinEncoder(**TINY_SWIN)
    load_ram_encoder(dst, path)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))


def test_export_loads_with_stable_diffusion_pipeline_load_lora_weights(tmp_path):
    """The folder form: StableDiffusionPipeline.load_lora_weights(folder) applies every tensor."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    m = _perturbed()
    export_diffusers(m, tmp_path / "exp")
    unet, vae, te, tok = build_sd_components("tiny", seed=0, with_text=True)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=DDPMScheduler(),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe.load_lora_weights(str(tmp_path / "exp"))
    n_file = len(load_file(str(tmp_path / "exp" / "pytorch_lora_weights.safetensors"))) // 2
    from osdhuman.models import lora_layers

    assert len(lora_layers(pipe.unet)) == n_file  # every LoRA module of the file is applied
    pipe.unet.conv_in.bias.data.copy_(load_file(str(tmp_path / "exp" / "unet_conv_in.safetensors"))["conv_in.bias"])
    z, t, p = _inputs()
    with torch.no_grad():
        assert (m.unet_eps(z, t, p) - pipe.unet(z, t, encoder_hidden_states=p).sample).abs().max() < 1e-5


def test_base_model_hub_id_resolves_from_the_local_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    unet, vae, _, _ = build_sd_components("tiny", seed=3)
    snap = tmp_path / "hub" / "models--someone--tiny-sd" / "snapshots" / ("b" * 40)
    unet.save_pretrained(snap / "unet")
    vae.save_pretrained(snap / "vae")
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("b" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    m = build_osdhuman(OSDHumanConfig(base_model="someone/tiny-sd", prompt_source="null"), text_encoder=False)
    assert torch.equal(m.unet.conv_out.get_base_layer().weight, unet.conv_out.weight)
    assert m.untrained and not m.random_base
