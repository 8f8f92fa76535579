"""LPIPS(VGG) on the lpips package's network: same numbers as the package, our weight loading, clear errors."""

from __future__ import annotations

import pytest
import torch

from osdhuman.training.lpips import LPIPS, LPIPSConfig, LPIPSWeightsError, build_lpips, default_linear_path


@pytest.fixture(scope="module")
def random_lpips():
    return build_lpips(LPIPSConfig(random_backbone=True))


def test_matches_reference_lpips_package(random_lpips):
    lpips_ref = pytest.importorskip("lpips")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = lpips_ref.LPIPS(net="vgg", pnet_rand=True, verbose=False)  # random trunk, real linear layers
    ours = random_lpips
    trunk = {}
    for s in range(1, 6):
        for name, m in getattr(ref.net, f"slice{s}").named_children():
            if isinstance(m, torch.nn.Conv2d):
                trunk[f"{name}.weight"], trunk[f"{name}.bias"] = m.weight, m.bias
    ours.features.load_state_dict(trunk)  # same indices as torchvision's vgg16().features
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 48, 40, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(2, 3, 48, 40, generator=g)).clamp(-1, 1)
    torch.testing.assert_close(ours(x, y), ref(x, y).flatten(), rtol=1e-5, atol=1e-6)


def test_distance_properties_and_gradient(random_lpips):
    m = random_lpips
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    assert torch.allclose(m(x, x), torch.zeros(2), atol=1e-7)
    near = (x + 0.05 * torch.randn(2, 3, 32, 32, generator=g)).clamp(-1, 1)
    far = (x + 0.5 * torch.randn(2, 3, 32, 32, generator=g)).clamp(-1, 1)
    assert (m(x, near) < m(x, far)).all()
    y = near.clone().requires_grad_(True)
    m(x, y).sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in m.parameters())


def test_missing_vgg_weights_stop_with_a_message_naming_the_file(tmp_path):
    missing = tmp_path / "nowhere" / "vgg16-397923af.pth"
    with pytest.raises(LPIPSWeightsError) as exc:
        build_lpips(LPIPSConfig(vgg_weights=str(missing)))
    msg = str(exc.value)
    assert "vgg16-397923af.pth" in msg and str(missing) in msg and "lpips.vgg_weights" in msg


def test_loads_torchvision_vgg_layout(tmp_path):
    src = LPIPS()
    g = torch.Generator().manual_seed(2)
    sd = {f"features.{k}": torch.randn(v.shape, generator=g) * 0.01 for k, v in src.features.state_dict().items()}
    sd["classifier.0.weight"] = torch.zeros(2, 2)  # other torchvision keys are ignored
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(sd, path)
    lin = default_linear_path()
    if lin is None:
        pytest.skip("the lpips package (linear weights) is not installed")
    m = build_lpips(LPIPSConfig(vgg_weights=str(path)))
    for k, v in m.features.state_dict().items():
        assert torch.equal(v, sd[f"features.{k}"])
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(LPIPSWeightsError, match="not torchvision's VGG16 layout"):
        build_lpips(LPIPSConfig(vgg_weights=str(bad)))
