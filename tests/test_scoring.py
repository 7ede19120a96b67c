"""Fusion of distance maps into anomaly maps and scores, eq (18)-(21)."""
import numpy as np
import pytest

from anomalysd_core.method import scoring as sc
from anomalysd_core.config import get_config
from anomalysd_core.method.masks import grid_masks

SIZE, SCALES = 16, (1, 2, 4)


@pytest.fixture(scope="module")
def grid():
    g, index = grid_masks(SIZE, SCALES)
    return g[:, 0].numpy().astype(np.float32), index


def _inter(index, seed=0, proto=True):
    rng = np.random.default_rng(seed)
    D = rng.uniform(0.1, 1.0, (len(index), SIZE, SIZE)).astype(np.float32)
    inter = sc.Intermediates(D_grid=D, index=index)
    if proto:
        inter.D_proto = rng.uniform(0.1, 1.0, (SIZE, SIZE)).astype(np.float32)
        inter.proto_mask = np.zeros((SIZE, SIZE), bool)
        inter.proto_mask[4:9, 2:7] = True
    return inter


def test_per_scale_maps_equals_brute_force(grid):
    g, index = grid
    inter = _inter(index)
    per = sc.per_scale_maps(inter.D_grid, g, index)
    assert sorted(per) == list(SCALES)
    for k in SCALES:
        ref = np.zeros((SIZE, SIZE), np.float32)
        for y in range(SIZE):
            for x in range(SIZE):
                i, j = y * k // SIZE, x * k // SIZE  # the patch of scale k that holds (y, x)
                ref[y, x] = inter.D_grid[index.index((k, i, j)), y, x]
        np.testing.assert_array_equal(per[k], ref)


def test_harmonic_mean_by_hand():
    a, b, c = np.full((2, 2), 2.0), np.full((2, 2), 4.0), np.full((2, 2), 4.0)
    np.testing.assert_allclose(sc.harmonic_mean([a, b]), 2 / (1 / 2 + 1 / 4), rtol=1e-6)  # 8/3
    np.testing.assert_allclose(sc.harmonic_mean([a, b, c]), 3 / (1 / 2 + 2 / 4), rtol=1e-6)
    # high only where every scale agrees: one small scale pulls the mean down
    assert sc.harmonic_mean([np.array([10.0]), np.array([0.1])])[0] < 0.2
    assert np.isfinite(sc.harmonic_mean([np.zeros(3), np.ones(3)])).all()  # EPS guards zeros


def test_fuse_variants(grid):
    g, index = grid
    inter = _inter(index)
    sigma = 1.5
    full = sc.fuse(inter, g, "full", sigma=sigma)
    np.testing.assert_allclose(full.S_map, sc.blur(inter.D_grid[0], sigma), rtol=1e-6)  # k=1 map
    assert full.score == pytest.approx(float(full.S_map.max()))

    ms = sc.fuse(inter, g, "ms", sigma=sigma)
    per = sc.per_scale_maps(inter.D_grid, g, index)
    np.testing.assert_allclose(ms.S_ms, sc.harmonic_mean([per[k] for k in SCALES]), rtol=1e-6)
    np.testing.assert_allclose(ms.S_map, sc.blur(ms.S_ms.astype(np.float32), sigma), rtol=1e-6)

    a0 = sc.fuse(inter, g, "ms+proto", alpha=0.0, sigma=sigma)
    np.testing.assert_allclose(a0.S_map, ms.S_map, rtol=1e-6)

    alpha = 0.3
    mp = sc.fuse(inter, g, "ms+proto", alpha=alpha, sigma=sigma)
    np.testing.assert_allclose(mp.S_pg, inter.proto_mask * inter.D_proto)  # eq 20
    ref = sc.blur(((1 - alpha) * ms.S_ms + alpha * inter.proto_mask * inter.D_proto).astype(np.float32), sigma)
    np.testing.assert_allclose(mp.S_map, ref, rtol=1e-6)  # eq 21
    assert mp.score == pytest.approx(float(ref.max()))

    # zero-shot: no prototype mask, ms+proto falls back to ms
    zs = sc.fuse(_inter(index, proto=False), g, "ms+proto", alpha=alpha, sigma=sigma)
    np.testing.assert_allclose(zs.S_map, sc.fuse(_inter(index, proto=False), g, "ms", sigma=sigma).S_map)
    assert zs.S_pg is None

    # a subset of scales K
    sub = sc.fuse(inter, g, "ms", sigma=0, scales=(1, 4))
    np.testing.assert_allclose(sub.S_map, sc.harmonic_mean([per[1], per[4]]), rtol=1e-6)
    assert sorted(sub.per_scale) == [1, 4]


def test_fuse_errors(grid):
    g, index = grid
    inter = _inter(index)
    with pytest.raises(ValueError, match="unknown inference-mask variant"):
        sc.fuse(inter, g, "proto-only")
    with pytest.raises(ValueError, match="not computed"):
        sc.fuse(inter, g, "ms", scales=(1, 8))
    g2, idx2 = grid_masks(SIZE, (2, 4))
    with pytest.raises(ValueError, match="k=1"):
        sc.fuse(_inter(idx2), g2[:, 0].numpy().astype(np.float32), "full")


def test_blur_sigma_scales_with_image_size(grid):
    assert get_config("paper").blur_sigma == pytest.approx(4.0)  # the paper: sigma 4 at 512 px
    cfg = get_config("smoke", image_size=SIZE, grid_scales=SCALES)
    assert cfg.blur_sigma == pytest.approx(4.0 * SIZE / 512)
    # mini: sigma 1 px at its 64 px (blur_sigma_512 = 8, chosen on the validation build)
    assert get_config("mini").blur_sigma == pytest.approx(1.0)
    assert get_config("mini", image_size=128).blur_sigma == pytest.approx(2.0)
    det = sc.AnomalySD(cfg, comp=None, backbone=None, distance=None)  # fusion needs no models
    inter = _inter(grid[1])
    got = det.fuse(inter, variant="ms+proto", alpha=0.2)
    ref = sc.fuse(inter, grid[0], "ms+proto", alpha=0.2, sigma=cfg.blur_sigma)
    np.testing.assert_allclose(got.S_map, ref.S_map)
    assert not np.allclose(got.S_map, sc.fuse(inter, grid[0], "ms+proto", alpha=0.2, sigma=4.0).S_map)
    # the blur itself: sigma 0 is the identity, a larger sigma smooths more
    m = np.zeros((SIZE, SIZE), np.float32)
    m[8, 8] = 1
    assert np.array_equal(sc.blur(m, 0), m)
    assert sc.blur(m, 2.0).max() < sc.blur(m, 0.5).max() < 1


def test_to_tensor_layouts():
    hwc = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    t = sc.to_tensor(hwc)
    assert t.shape == (1, 3, 8, 8)
    np.testing.assert_array_equal(t[0].permute(1, 2, 0).numpy(), hwc)
    assert sc.to_tensor(t[0]).shape == (1, 3, 8, 8) and sc.to_tensor(t).shape == (1, 3, 8, 8)


def test_image_score_is_the_max_or_the_mean_of_the_top_fraction(grid):
    rng = np.random.default_rng(0)
    m = rng.random((SIZE, SIZE)).astype(np.float32)
    assert sc.image_score(m) == pytest.approx(m.max()) == pytest.approx(sc.image_score(m, 0.0))
    top = np.sort(m.ravel())[::-1]
    k = round(0.05 * m.size)
    assert sc.image_score(m, 0.05) == pytest.approx(top[:k].mean())
    assert sc.image_score(m, 1e-9) == pytest.approx(m.max())  # at least one pixel
    assert sc.image_score(m, 1.0) == pytest.approx(m.mean())
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=f"top must be a fraction.*{bad}"):
            sc.image_score(m, bad)
    # one hot pixel sets the max but hardly a top-5 % mean; a hot region sets both
    spot, region = np.zeros_like(m), np.zeros_like(m)
    spot[3, 3] = 1.0
    region[:8, :8] = 0.5
    assert sc.image_score(spot) > sc.image_score(region)
    assert sc.image_score(spot, 0.05) < sc.image_score(region, 0.05)
    # the detector reduces its map with the config's fraction
    cfg = get_config("smoke", image_size=SIZE, grid_scales=SCALES, image_score_top=0.05)
    det = sc.AnomalySD(cfg, comp=None, backbone=None, distance=None)
    got = det.fuse(_inter(grid[1]))
    assert got.score == pytest.approx(sc.image_score(got.S_map, 0.05))
    assert got.score < got.S_map.max()
    assert get_config("paper").image_score_top == 0 and get_config("mini").image_score_top == 0.02
