import numpy as np
import pytest
import torch

from anomalysd_core.method.masks import (_rect_iou, downsample_mask, foreground_mask, full_mask,
                                  grid_masks, sample_training_masks, training_mask,
                                  training_masks_torch, upsample_mask)


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def _object_image(h=96, w=96, bg=(0.1, 0.1, 0.1), fg=(0.8, 0.6, 0.3), seed=0):
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3))
    img[:] = bg
    yy, xx = np.mgrid[:h, :w]
    disk = (yy - h / 2) ** 2 + (xx - w / 2.2) ** 2 < (0.3 * h) ** 2
    img[disk] = fg
    img += rng.normal(0, 0.02, img.shape)
    return np.clip(img, 0, 1), disk


def test_foreground_texture_is_all_true():
    img = np.random.default_rng(0).random((40, 50, 3))
    fg = foreground_mask(img, "texture")
    assert fg.shape == (40, 50) and fg.dtype == bool and fg.all()


def test_foreground_object_recovers_disk():
    img, disk = _object_image()
    fg = foreground_mask(img, "object")
    assert fg.dtype == bool and fg.shape == disk.shape
    assert _iou(fg, disk) > 0.95


def test_foreground_dark_object_on_bright_background_with_hole_and_speck():
    img, disk = _object_image(bg=(0.9, 0.9, 0.9), fg=(0.2, 0.3, 0.2))
    img[46:50, 40:44] = 0.9          # a hole inside the object -> filled
    img[5:7, 5:7] = 0.2              # a tiny speck outside -> removed (not the largest component)
    fg = foreground_mask(img, "object")
    assert fg[47, 41]
    assert not fg[5, 5]
    assert _iou(fg, disk) > 0.95


def test_foreground_grayscale_and_degenerate_fallback():
    flat = np.full((32, 32), 0.5)
    assert foreground_mask(flat, "object").all()          # no contrast -> all True
    tiny = np.zeros((64, 64, 3))
    tiny[30:31, 30:31] = 1.0                              # < 2% of the image -> all True
    assert foreground_mask(tiny, "object").all()
    with pytest.raises(ValueError):
        foreground_mask(flat, "blob")


def test_training_mask_iou_filter_respected():
    _, disk = _object_image()
    rng = np.random.default_rng(1)
    for gamma in (0.0, 0.2, 0.5):
        for _ in range(20):
            m = training_mask(disk, gamma, rng)
            assert m.shape == disk.shape and m.dtype == bool
            assert _iou(m, disk) > gamma
            ys, xs = np.nonzero(m)                    # it is a filled axis-aligned rectangle
            assert m.sum() == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)


def test_training_mask_fallback_returns_best_rectangle():
    fg = np.ones((64, 64), dtype=bool)                # texture: IoU = area fraction <= 0.5
    rng = np.random.default_rng(2)
    m = training_mask(fg, 0.5, rng, max_tries=50)
    assert m.any() and _iou(m, fg) <= 0.5
    assert m.mean() > 0.4                             # the best of 50 is near max_frac


def test_training_mask_random_design_unfiltered_and_fractions():
    _, disk = _object_image()
    rng = np.random.default_rng(3)
    ious, fracs = [], []
    for _ in range(200):
        m = training_mask(disk, 0.5, rng, design="random")
        ious.append(_iou(m, disk))
        fracs.append(m.mean())
    assert min(ious) <= 0.5                           # no filter applied
    assert 0.04 <= min(fracs) and max(fracs) <= 0.52
    with pytest.raises(ValueError):
        training_mask(disk, 0.0, rng, design="nope")


def test_rect_iou_matches_direct():
    rng = np.random.default_rng(4)
    fg = rng.random((30, 40)) > 0.6
    rects = np.array([[0, 10, 0, 10], [5, 30, 7, 40], [3, 4, 3, 4]])
    for r, v in zip(rects, _rect_iou(fg, rects)):
        m = np.zeros_like(fg)
        m[r[0]:r[1], r[2]:r[3]] = True
        assert v == pytest.approx(_iou(m, fg))


def test_sample_training_masks_and_torch_batch():
    _, disk = _object_image(64, 64)
    ms = sample_training_masks(disk, 6, np.random.default_rng(5))
    assert ms.shape == (6, 64, 64) and all(_iou(m, disk) > 0 for m in ms)
    fgs = torch.from_numpy(np.stack([disk, np.ones_like(disk)]))[:, None]
    t = training_masks_torch(fgs, rng=0)
    assert t.shape == (2, 1, 64, 64) and t.dtype == torch.float32
    assert set(torch.unique(t).tolist()) <= {0.0, 1.0}
    # reproducible from the seed
    assert np.array_equal(sample_training_masks(disk, 3, 7), sample_training_masks(disk, 3, 7))


@pytest.mark.parametrize("size", [64, 30, 37])
def test_grid_masks_tile_exactly(size):
    masks, index = grid_masks(size)
    assert masks.shape == (85, 1, size, size) and masks.dtype == torch.bool
    assert len(index) == 85 and index[0] == (1, 0, 0) and index[-1] == (8, 7, 7)
    start = 0
    for k in (1, 2, 4, 8):
        block = masks[start:start + k * k, 0]
        assert torch.equal(block.sum(0), torch.ones(size, size, dtype=torch.long))
        start += k * k
    assert full_mask(size).all() and full_mask(size).shape == (1, 1, size, size)


def test_grid_masks_positions_and_custom_scales():
    masks, index = grid_masks(16, scales=(2,))
    assert index == [(2, 0, 0), (2, 0, 1), (2, 1, 0), (2, 1, 1)]
    assert masks[1, 0, :8, 8:].all() and masks[1].sum() == 64
    with pytest.raises(ValueError):
        grid_masks(4, scales=(8,))


def test_downsample_mask_max_and_nearest():
    m = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    m[0, 0, 3, 5] = True                              # one pixel
    d = downsample_mask(m, 2)
    assert d.shape == (1, 1, 2, 2) and d.dtype == torch.float32
    assert d[0, 0, 0, 0] == 1 and d.sum() == 1        # any pixel in cell
    assert downsample_mask(m, 2, mode="nearest").sum() == 0
    masks, _ = grid_masks(64)
    d = downsample_mask(masks, 8)
    assert d.shape == (85, 1, 8, 8)
    assert torch.equal(d, downsample_mask(masks, 8, mode="nearest"))  # aligned grid: same
    assert torch.equal(d[-1, 0], torch.eye(8)[-1:].T @ torch.eye(8)[-1:])


def test_upsample_mask_numpy_and_torch():
    m = np.array([[1, 0], [0, 1]], dtype=bool)
    u = upsample_mask(m, 4)
    assert u.shape == (4, 4) and u[:2, :2].all() and not u[:2, 2:].any()
    ut = upsample_mask(torch.from_numpy(m)[None, None], 6)
    assert ut.shape == (1, 1, 6, 6) and ut.dtype == torch.bool
