import warnings

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from anomalysd_core.method.metrics import (BinnedPixelMetrics, image_metrics, pixel_metrics,
                                    pixel_metrics_streaming, trapezoid_limited)


# ------------------------------------------------------------------ independent slow references
def slow_f1_max(labels, scores):
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    best = 0.0
    for t in np.unique(s):
        pred = s >= t
        tp = np.sum(pred & y)
        if tp == 0:
            continue
        p, r = tp / pred.sum(), tp / y.sum()
        best = max(best, 2 * p * r / (p + r))
    return best


def slow_pro(masks, maps, fpr_limit=0.3):
    """Per-region overlap by a loop over thresholds and regions (no cumulative-sum trick)."""
    masks = np.asarray(masks).astype(bool)
    maps = np.asarray(maps, dtype=float)
    regions = []
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m, structure=np.ones((3, 3)))
        regions += [(i, lab == k) for k in range(1, n + 1)]
    normal = ~masks
    xs, ys = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        pred = maps >= t
        xs.append(pred[normal].mean())
        ys.append(np.mean([pred[i][r].mean() for i, r in regions]))
    xs.append(1.0)
    ys.append(1.0)
    xs, ys = np.array(xs), np.array(ys)
    # cut at fpr_limit with linear interpolation, then trapezoids
    k = np.searchsorted(xs, fpr_limit, side="right")
    y_cut = ys[k - 1] + (ys[k] - ys[k - 1]) * (fpr_limit - xs[k - 1]) / (xs[k] - xs[k - 1]) \
        if xs[k - 1] < fpr_limit else ys[k - 1]
    xc = np.r_[xs[:k], fpr_limit]
    yc = np.r_[ys[:k], y_cut]
    return float(np.sum((xc[1:] - xc[:-1]) * (yc[1:] + yc[:-1]) / 2) / fpr_limit)


def realistic(n=12, size=64, seed=0, quant=None):
    """Smooth noisy maps with blob-shaped defects, partly detected, in about half the images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), dtype=bool)
    maps = np.zeros((n, size, size))
    for i in range(n):
        noise = ndimage.gaussian_filter(rng.normal(size=(size, size)), 2) * 4
        bump = np.zeros((size, size))
        if i % 2 == 0:
            for _ in range(rng.integers(1, 4)):
                cy, cx = rng.uniform(8, size - 8, 2)
                a, b = rng.uniform(2, 9, 2)
                ell = ((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2 <= 1
                masks[i] |= ell
                bump += ndimage.gaussian_filter(ell.astype(float), 2) * rng.uniform(0.3, 2.0)
        maps[i] = noise + bump
    if quant:
        maps = np.round(maps * quant) / quant     # introduces ties
    return masks, maps


# ------------------------------------------------------------------ image level
def test_image_metrics_against_sklearn_and_brute_force():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = y * 0.8 + rng.normal(size=200)
    s = np.round(s, 1)                              # ties
    m = image_metrics(y, s)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s))
    assert m["aupr"] == pytest.approx(average_precision_score(y, s))
    assert m["f1_max"] == pytest.approx(slow_f1_max(y, s))


def test_image_metrics_perfect_and_single_class():
    m = image_metrics([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert m == pytest.approx({"auroc": 1.0, "aupr": 1.0, "f1_max": 1.0})
    with pytest.warns(RuntimeWarning, match="one class"):
        m = image_metrics([0, 0, 0], [0.1, 0.5, 0.2])
    assert all(np.isnan(v) for v in m.values())


# ------------------------------------------------------------------ pixel level, exact
@pytest.mark.parametrize("quant", [None, 4])
def test_pixel_metrics_exact_against_references(quant):
    masks, maps = realistic(n=6, size=32, seed=1, quant=quant)
    m = pixel_metrics(masks, maps)
    y, s = masks.ravel(), maps.ravel()
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-10)
    assert m["f1_max"] == pytest.approx(slow_f1_max(y, s), abs=1e-10)
    assert m["pro"] == pytest.approx(slow_pro(masks, maps), abs=1e-10)


def test_pro_hand_built_two_regions():
    # image 0: two regions; image 1: normal. Region A detected fully at t=0.9, region B half at 0.5.
    masks = np.zeros((2, 6, 6), dtype=bool)
    maps = np.zeros((2, 6, 6))
    masks[0, 0:2, 0:2] = True                      # region A, 4 px
    masks[0, 4:6, 2:6] = True                      # region B, 8 px
    maps[0, 0:2, 0:2] = 0.9
    maps[0, 4, 2:6] = 0.5
    maps[1, 0, 0:3] = 0.7                          # three false positives
    m = pixel_metrics(masks, maps, fpr_limit=0.3)
    assert m["pro"] == pytest.approx(slow_pro(masks, maps, 0.3), abs=1e-12)
    # by hand: curve (0,0) -> (0, .5) @0.9 -> (3/60, .5) @0.7 -> (3/60, .75) @0.5
    #          -> (1, 1) @0 -> (1, 1); cut at 0.3 on the segment to (1, 1)
    n_neg = 72 - 12
    x1 = 3 / n_neg
    y_cut = 0.75 + 0.25 * (0.3 - x1) / (1 - x1)
    area = 0.5 * x1 + (0.3 - x1) * (0.75 + y_cut) / 2
    assert m["pro"] == pytest.approx(area / 0.3, abs=1e-12)


def test_pixel_one_region_perfect_and_constant():
    masks = np.zeros((3, 16, 16), dtype=bool)
    masks[1, 4:9, 5:12] = True
    perfect = masks.astype(float)
    m = pixel_metrics(masks, perfect)
    assert m == pytest.approx({"auroc": 1.0, "f1_max": 1.0, "pro": 1.0})
    const = np.full(masks.shape, 0.3)
    m = pixel_metrics(masks, const)
    # one tie group: curve (0,0)->(1,1): AUROC 0.5, PRO area to 0.3 = 0.045 -> 0.15
    assert m["auroc"] == pytest.approx(0.5)
    assert m["pro"] == pytest.approx(0.15)
    assert m["f1_max"] == pytest.approx(2 * masks.mean() / (1 + masks.mean()))
    for bins in (None, 100):
        b = pixel_metrics(masks, const, bins=bins)
        assert b == pytest.approx(m)
        assert pixel_metrics(masks, perfect, bins=bins) == pytest.approx({"auroc": 1, "f1_max": 1, "pro": 1})


def test_pixel_no_anomalous_pixel_gives_nan_with_warning():
    masks = np.zeros((2, 8, 8), dtype=bool)
    maps = np.random.default_rng(0).random((2, 8, 8))
    for bins in (None, 50):
        with pytest.warns(RuntimeWarning, match="no anomalous pixel"):
            m = pixel_metrics(masks, maps, bins=bins)
        assert all(np.isnan(v) for v in m.values())


def test_eight_connectivity():
    masks = np.zeros((1, 6, 6), dtype=bool)
    masks[0, 1, 1] = masks[0, 2, 2] = True          # diagonal neighbours: ONE region (8-conn.)
    masks[0, 4, 4] = True                           # a second, separate region
    maps = np.zeros((1, 6, 6))
    maps[0, 1, 1] = 1.0
    # 8-conn.: PRO(t=1) = (1/2 + 0) / 2 = 0.25 at FPR 0, then (1, 1): y(0.3) = 0.475
    # (4-connectivity would give three regions and PRO(t=1) = 1/3)
    m = pixel_metrics(masks, maps)
    assert m["pro"] == pytest.approx(0.3 * (0.25 + 0.475) / 2 / 0.3)
    assert m["pro"] == pytest.approx(slow_pro(masks, maps))


def test_trapezoid_limited():
    x = np.array([0.0, 0.1, 0.1, 0.5, 1.0])
    y = np.array([0.0, 0.2, 0.6, 1.0, 1.0])
    area = 0.1 * 0.1 + (0.3 - 0.1) * (0.6 + 0.8) / 2
    assert trapezoid_limited(x, y, 0.3) == pytest.approx(area)
    assert trapezoid_limited(x, y, 0.5) == pytest.approx(0.01 + 0.4 * 0.8)
    assert trapezoid_limited(x, y) == pytest.approx(0.01 + 0.32 + 0.5)


# ------------------------------------------------------------------ binned vs exact
def test_binned_close_to_exact_on_realistic_data():
    masks, maps = realistic(n=16, size=96, seed=3)
    exact = pixel_metrics(masks, maps)
    for bins, tol in ((1000, 0.005), (10000, 0.001)):
        binned = pixel_metrics(masks, maps, bins=bins)
        for k in exact:
            assert abs(binned[k] - exact[k]) < tol, (bins, k, binned[k], exact[k])


def test_binned_with_outlier_and_score_range():
    masks, maps = realistic(n=16, size=96, seed=0)
    maps[1, 0, 0] = maps.max() * 100                  # one extreme normal pixel
    exact = pixel_metrics(masks, maps)
    lo, hi = np.quantile(maps, [0.0, 0.9999])
    binned = pixel_metrics(masks, maps, bins=1000, score_range=(lo, hi))
    for k in exact:
        assert abs(binned[k] - exact[k]) < 0.005, (k, binned[k], exact[k])


def test_binned_exact_when_scores_on_bin_edges():
    # integer scores in [0, 10] with bins=10 over [0, 10]: every score is a bin's lower edge
    # (except 10, which shares the top bin with 9 -> use range [0, 11)); binned == exact.
    rng = np.random.default_rng(4)
    masks, _ = realistic(n=6, size=32, seed=4)
    maps = rng.integers(0, 11, masks.shape).astype(float) + 3 * masks
    exact = pixel_metrics(masks, maps)
    acc = BinnedPixelMetrics(0, 14, bins=14)
    for m, s in zip(masks, maps):
        acc.update(m, s)
    assert acc.compute() == pytest.approx(exact, abs=1e-12)


def test_streaming_matches_pixel_metrics_binned():
    masks, maps = realistic(n=8, size=48, seed=5)
    lo, hi = maps.min(), maps.max()
    a = pixel_metrics(masks, maps, bins=500)
    b = pixel_metrics_streaming(((masks[i:i + 3], maps[i:i + 3]) for i in range(0, 8, 3)),
                                lo, hi, bins=500)
    assert a == pytest.approx(b, abs=1e-12)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        pixel_metrics(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = pixel_metrics(np.eye(4, dtype=bool), np.eye(4))   # a single (H, W) image is accepted
    assert m["pro"] == pytest.approx(1.0)


def test_bootstrap_gain_equals_resampling_the_images_with_scikit_learn():
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from anomalysd_core.method.metrics import bootstrap_gain

    rng = np.random.default_rng(3)
    rows = [dict(seed=s, method=m, file=f"{i:02d}.png", label=int(i % 3 == 0), score=round(float(rng.normal(
        (i % 3 == 0) * (0.6 if m == "a" else 0.2))), 1), **{"class": c})  # rounded: ties count half
        for s in (0, 1) for m in ("a", "b") for c in ("x", "y") for i in range(10 if c == "x" else 7)]
    df = pd.DataFrame(rows)
    got = bootstrap_gain(df, "method", "b", n=40, seed=5).set_index("method")
    # the same draws, resampled explicitly: per class one index draw shared by seeds and methods
    draw_rng = np.random.default_rng(5)
    sizes = {"x": 10, "y": 7}
    gains = []
    for _ in range(40):
        idx = {c: draw_rng.integers(0, k, k) for c, k in sizes.items()}
        mean = {}
        for m in ("a", "b"):
            per_seed = []
            for s in (0, 1):
                aucs = []
                for c in ("x", "y"):
                    g = df[(df.seed == s) & (df.method == m) & (df["class"] == c)].sort_values("file")
                    y, x = g.label.to_numpy()[idx[c]], g.score.to_numpy()[idx[c]]
                    if 0 < y.sum() < len(y):
                        aucs.append(roc_auc_score(y, x))
                per_seed.append(np.mean(aucs))
            mean[m] = np.mean(per_seed)
        gains.append(mean["a"] - mean["b"])
    assert got.loc["a", "sd"] == pytest.approx(np.std(gains), abs=1e-12)
    assert got.loc["a", "lo"] == pytest.approx(np.percentile(gains, 2.5), abs=1e-12)
    assert got.loc["b", "gain"] == 0 and got.loc["b", "sd"] == 0


def test_bootstrap_gain_refuses_unpaired_scores():
    import pandas as pd

    from anomalysd_core.method.metrics import bootstrap_gain

    rows = [dict(seed=0, method=m, file=f"{i}.png", label=i % 2, score=float(i), **{"class": "x"})
            for m in ("a", "b") for i in range(6)]
    twice = pd.DataFrame(rows + [dict(rows[0], score=9.0)])  # one image of "a" scored twice
    with pytest.raises(ValueError, match="method 'a', class 'x' does not score each image"):
        bootstrap_gain(twice, "method", "b", n=5)
    with pytest.raises(ValueError, match="no scores"):
        bootstrap_gain(pd.DataFrame(rows + [dict(r, seed=1) for r in rows[:6]]), "method", "b", n=5)  # no "b" at seed 1
    with pytest.raises(ValueError, match="no scores"):
        bootstrap_gain(pd.DataFrame(rows[6:] + [dict(r, seed=1) for r in rows]), "method", "b", n=5)  # no "a" at seed 0
    with pytest.raises(ValueError, match="reference method 'c' has no scores"):
        bootstrap_gain(pd.DataFrame(rows), "method", "c", n=5)
