"""Feature extractors (eq 12) and perceptual distances (eq 16-17)."""
import contextlib
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anomalysd_core.method import features as feat
from anomalysd_core.method.features import build_backbone, build_distance


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Small CPU convolutions run 10x faster with one intra-op thread on a busy 2-core machine;
    the previous setting is restored after this module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def lite0():
    return build_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def b6():
    return build_backbone("efficientnet_b6", pretrained=False)


@pytest.fixture(scope="module")
def dist_lite0():
    return build_distance("lite0")


@pytest.fixture(scope="module")
def dist_lpips():
    return build_distance("lpips_alex", pretrained=False)


def _img(b=2, s=64, seed=0):
    return torch.rand(b, 3, s, s, generator=torch.Generator().manual_seed(seed))


def test_lite0_shapes(lite0):
    x = _img(2, 64)
    layers = lite0.layers(x)
    assert [tuple(f.shape) for f in layers] == [(2, 24, 16, 16), (2, 40, 8, 8), (2, 112, 4, 4)]
    psi = lite0.psi(x)
    assert psi.shape == (2, 64, 16, 16) and lite0.psi_channels == 64 and lite0.psi_reduction == 4
    assert not psi.requires_grad
    # eq 12: [phi2 ; Upsample(phi3)]
    up = F.interpolate(layers[1], size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(psi, torch.cat([layers[0], up], 1))
    # local 3x3 aggregation
    sm = lite0.layers(x, smooth=True)[0]
    torch.testing.assert_close(sm, F.avg_pool2d(layers[0], 3, 1, 1, count_include_pad=False))
    # max_batch chunking gives the same features
    lite0.max_batch = 1
    try:
        torch.testing.assert_close(lite0.psi(x), psi, atol=1e-4, rtol=1e-3)
    finally:
        lite0.max_batch = 32


def test_b6_shapes(b6):
    x = _img(2, 64)
    assert [tuple(f.shape) for f in b6.layers(x)] == [(2, 40, 16, 16), (2, 72, 8, 8), (2, 200, 4, 4)]
    assert b6.psi(x).shape == (2, 112, 16, 16)
    b6.train()
    assert not b6.trunk.training
    assert all(not p.requires_grad for p in b6.parameters())


def test_lite0_real_imagenet_weights(lite0):
    skimage_data = pytest.importorskip("skimage.data")
    img = torch.tensor(skimage_data.chelsea()).permute(2, 0, 1)[None].float() / 255.0
    img = F.interpolate(img, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        logits = lite0.trunk(feat._imagenet_normalise(img))
    assert 281 <= int(logits.argmax()) <= 285  # ImageNet cat classes


def test_b6_pretrained_missing_weights_error(monkeypatch):
    monkeypatch.setattr(feat, "_hf_cached_file", lambda repo_id: None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="hf download timm/tf_efficientnet_b6"):
        build_backbone("efficientnet_b6", pretrained=True)


def test_lpips_pretrained_missing_weights_error(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(RuntimeError, match="alexnet-owt"):
        build_distance("lpips_alex", pretrained=True)


def test_unknown_names():
    with pytest.raises(ValueError):
        build_backbone("resnet")
    with pytest.raises(ValueError):
        build_distance("vgg")


@pytest.mark.parametrize("which", ["lite0", "lpips"])
def test_distance_properties(which, dist_lite0, dist_lpips):
    d = dist_lite0 if which == "lite0" else dist_lpips
    x = _img(1, 64, seed=1)
    noise = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    x_hat = torch.cat([x, (x + 0.05 * noise).clamp(0, 1), (x + 0.3 * noise).clamp(0, 1)])
    m = d(x, x_hat)
    assert m.shape == (3, 1, 64, 64)
    assert m[0].abs().max() < 1e-6                       # identical images
    assert (m[1:] >= 0).all() and m[1].mean() > 0
    assert m[2].mean() > m[1].mean()                     # bigger perturbation, larger distance
    # a batch-1 x broadcast against N inpaintings == x repeated N times; chunking changes nothing
    rep = d(x.expand(3, -1, -1, -1), x_hat)
    torch.testing.assert_close(m, rep, atol=1e-6, rtol=1e-5)
    old = d.chunk
    d.chunk = 2
    try:
        torch.testing.assert_close(d(x, x_hat), m, atol=1e-6, rtol=1e-5)
    finally:
        d.chunk = old


@pytest.mark.parametrize("which", ["lite0", "lpips"])
def test_distance_gradient(which, dist_lite0, dist_lpips):
    d = dist_lite0 if which == "lite0" else dist_lpips
    x = _img(1, 64, seed=3)
    x_hat = _img(2, 64, seed=4).requires_grad_(True)
    loss = d.loss(x, x_hat)
    assert loss.ndim == 0
    loss.backward()
    assert x_hat.grad is not None and torch.isfinite(x_hat.grad).all() and x_hat.grad.abs().sum() > 0
    assert all(p.grad is None for p in d.parameters())   # frozen network
    # a zero image (ReLU6 stem outputs all zero somewhere) must not give NaN gradients
    z = torch.zeros(1, 3, 64, 64, requires_grad=True)
    d.loss(x, z).backward()
    assert torch.isfinite(z.grad).all()


def test_lpips_matches_package(dist_lpips):
    x, y = _img(1, 64, seed=5), _img(3, 64, seed=6)
    ref = dist_lpips.lp(x.expand(3, -1, -1, -1), y, normalize=True)
    torch.testing.assert_close(dist_lpips(x, y), ref, atol=1e-5, rtol=1e-4)


def test_lite0_distance_by_hand(dist_lite0):
    """Eq 16-17 written out: unit-normalise, mean squared difference over channels, upsample, sum."""
    x, y = _img(1, 64, seed=7), _img(1, 64, seed=8)
    fx = feat.lite0_points(dist_lite0.trunk, feat._imagenet_normalise(x), feat.LITE0_DISTANCE_POINTS)
    fy = feat.lite0_points(dist_lite0.trunk, feat._imagenet_normalise(y), feat.LITE0_DISTANCE_POINTS)
    total = 0
    for a, b in zip(fx, fy):
        a = a / a.norm(dim=1, keepdim=True)
        b = b / b.norm(dim=1, keepdim=True)
        dl = ((a - b) ** 2).mean(dim=1, keepdim=True)
        total = total + F.interpolate(dl, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(dist_lite0(x, y), total, atol=1e-5, rtol=1e-4)
    assert np.isfinite(float(total.mean()))


def test_pixel_distance_is_blurred_colour_difference():
    from anomalysd_core.method.features import PixelDistance, build_distance

    d = build_distance("pixel", pretrained=False)
    assert isinstance(d, PixelDistance) and d.sigma == 1.0
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 32, 32, generator=g)
    y = x.clone()
    y[:, :, 10:14, 20:24] = 1 - y[:, :, 10:14, 20:24]  # a local colour change
    m = d(x, torch.cat([x, y]))
    assert m.shape == (2, 1, 32, 32) and float(m[0].abs().max()) < 1e-10
    peak = np.unravel_index(int(m[1, 0].argmax()), (32, 32))
    assert 9 <= peak[0] <= 14 and 19 <= peak[1] <= 24  # at the change
    assert float(m[1, 0, 0, 0]) < 1e-6  # far from it: nothing
    # the decoder's perceptual term (eq 10) is the perceptual network's, not the colour distance
    assert torch.allclose(d.loss(x, y), d.perceptual.loss(x, y))
