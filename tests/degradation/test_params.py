"""Per-image parameter draws: ranges, probabilities, sizes, config loading."""

import json
from pathlib import Path

import pytest
from scipy import stats

from osdhuman.config import ConfigError, load_config
from osdhuman.degradation import DegradationConfig, sample_params

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def draws():
    cfg = DegradationConfig()
    return cfg, [sample_params(cfg, s, (512, 512)) for s in range(4000)]


def test_noise_and_jpeg_ranges(draws):
    cfg, ps = draws
    for p in ps:
        for st, sc in ((p.stage1, cfg.stage1), (p.stage2, cfg.stage2)):
            n = st.noise
            lo, hi = sc.noise.gaussian_sigma if n.type == "gaussian" else sc.noise.poisson_scale
            assert lo <= n.level <= hi
        assert isinstance(p.stage1.jpeg_quality, int) and 30 <= p.stage1.jpeg_quality <= 95
        assert p.stage2.jpeg_quality is None
        assert 30 <= p.final_jpeg_quality <= 95
    q = [p.stage1.jpeg_quality for p in ps]
    assert min(q) == 30 and max(q) == 95
    gauss = sum(p.stage1.noise.type == "gaussian" for p in ps)
    gray = sum(p.stage2.noise.gray for p in ps)
    assert stats.binomtest(gauss, len(ps), 0.5).pvalue > 1e-3
    assert stats.binomtest(gray, len(ps), 0.4).pvalue > 1e-3


def test_resize_and_final_draws(draws):
    _cfg, ps = draws
    dirs = [p.stage1.resize.direction for p in ps]
    obs = [dirs.count(d) for d in ("up", "down", "keep")]
    assert stats.chisquare(obs, [0.2 * len(ps), 0.7 * len(ps), 0.1 * len(ps)]).pvalue > 1e-3
    for p in ps:
        r1, r2 = p.stage1.resize, p.stage2.resize
        assert 0.15 <= r1.scale <= 1.5
        assert r1.size[0] == int(512 * r1.scale)  # F.interpolate(scale_factor=s): floor
        assert 0.3 <= r2.scale <= 1.2 and r2.size[0] == int(128 * r2.scale)  # towards 512 / 4
        assert p.final_resize.size == (128, 128) and p.back_resize.size == (512, 512)
        assert r1.mode in ("area", "bilinear", "bicubic")
    blur2 = sum(p.stage2.blur is not None for p in ps)
    assert stats.binomtest(blur2, len(ps), 0.8).pvalue > 1e-3
    first = sum(p.final_order == "resize_first" for p in ps)
    assert stats.binomtest(first, len(ps), 0.5).pvalue > 1e-3
    sinc = sum(p.final_sinc is not None for p in ps)
    assert stats.binomtest(sinc, len(ps), 0.8).pvalue > 1e-3


def test_draws_depend_on_the_seed_only():
    cfg = DegradationConfig()
    a = sample_params(cfg, 123, (256, 256)).to_dict()
    assert a == sample_params(cfg, 123, (256, 256)).to_dict()
    assert a != sample_params(cfg, 124, (256, 256)).to_dict()
    json.dumps(a)  # a JSON-ready record


def test_yaml_config_is_the_default_and_overridable(tmp_path):
    cfg = load_config(DegradationConfig, ROOT / "configs" / "degradation.yaml")
    assert cfg == DegradationConfig()
    cfg = load_config(DegradationConfig, None, ["stage2.blur_prob=0.5", "stage1.noise.gray_prob=0"])
    assert cfg.stage2.blur_prob == 0.5 and cfg.stage1.noise.gray_prob == 0
    with pytest.raises(ConfigError, match="unknown"):
        load_config(DegradationConfig, None, ["stage1.blurr_prob=0.5"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage1:\n  kernel:\n    sizes: [8]\n")
    with pytest.raises(ConfigError, match="odd"):
        load_config(DegradationConfig, bad)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("stage2.blur_prob=5", "stage2.blur_prob: must be <= 1"),
        ("stage1.noise.gray_prob=-0.1", "stage1.noise.gray_prob: must be >= 0"),
        ("final.sinc_prob=1.5", "final.sinc_prob: must be <= 1"),
        ("final.jpeg_quality=[95, 30]", "lo <= hi"),
        ("stage1.jpeg_quality=[0, 95]", "stage1.jpeg_quality: must be >= 1"),
        ("stage1.noise.gaussian_sigma=[-1, 3]", "gaussian_sigma"),
        ("stage1.resize.down=[1.0, 0.5]", r"stage1.resize.down: must be \(lo, hi\) with lo <= hi"),
    ],
)
def test_out_of_range_config_values_are_refused(override, fragment):
    from osdhuman.config import ConfigError, apply_overrides
    from osdhuman.degradation import DegradationConfig

    with pytest.raises(ConfigError, match=fragment):
        apply_overrides(DegradationConfig(), [override])
