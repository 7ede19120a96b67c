"""Evaluation metrics of Sec. 5 with the conventions of anomalib / the MVTec AD evaluation code.

Image level (:func:`image_metrics`): AUROC and average precision (AUPR) from scikit-learn, and
F1-max, the largest ``2PR / (P + R)`` over the precision-recall curve.

Pixel level (:func:`pixel_metrics`): AUROC and F1-max over all pixels of all test images, and
PRO, the normalised area under the per-region-overlap curve up to a false-positive rate of
``fpr_limit`` (0.3), computed as in the MVTec (3D-)AD reference evaluation code that anomalib's
AUPRO follows:

1. each ground-truth mask is split into connected components (8-connectivity,
   ``scipy.ndimage.label`` with a 3x3 structure); with ``R`` regions in the whole test set;
2. for a threshold ``t``, ``FPR(t)`` = fraction of ALL normal (gt = 0) pixels of all images with
   score ``>= t``, and ``PRO(t)`` = mean over the ``R`` regions of the fraction of the region's
   pixels with score ``>= t``;
3. the curve over every distinct score (plus the end points ``(0, 0)`` and ``(1, 1)``) is
   integrated with the trapezoidal rule up to ``fpr_limit``, linearly interpolated at the cut,
   and divided by ``fpr_limit``.

Because ``PRO(t)`` is a sum of per-pixel weights ``1 / (R * |region|)``, one sort of all pixels
and three cumulative sums give AUROC, F1-max and PRO together (:func:`pixel_metrics` with
``bins=None``: exact, about 50 bytes of memory per pixel, e.g. 13 GB for 1,000 images at
512 px).

For large test sets the binned/streaming version (:class:`BinnedPixelMetrics`, or
``pixel_metrics(..., bins=1000)``) keeps three histograms over ``bins`` equal-width score bins
spanning ``[min, max]`` of the maps. It is the exact computation applied to scores quantised to
the bins' lower edges, so its only error comes from reordering pixels inside a bin; memory is
``O(bins)`` plus one image. The tests measure its error against the exact version.

Some papers compute PRO differently (fixed threshold grids over min-max rescaled scores, per-image
FPR); the numbers here follow the reference definition above.
"""
from __future__ import annotations

import warnings
from typing import Iterable

import numpy as np
from scipy import ndimage

_STRUCTURE = np.ones((3, 3), dtype=int)  # 8-connectivity


# --------------------------------------------------------------------------------------------
# image level
# --------------------------------------------------------------------------------------------
def f1_max_from_pr(precision: np.ndarray, recall: np.ndarray) -> float:
    """max of ``2PR / (P + R)`` over a precision-recall curve; ``0/0`` counts as 0."""
    p = np.asarray(precision, dtype=np.float64)
    r = np.asarray(recall, dtype=np.float64)
    den = p + r
    f1 = np.divide(2 * p * r, den, out=np.zeros_like(den), where=den > 0)
    return float(f1.max()) if f1.size else float("nan")


def image_metrics(labels, scores) -> dict:
    """Image-level ``auroc``, ``aupr`` (average precision) and ``f1_max`` (anomalous = 1).

    When only one class is present the three values are NaN and a warning is issued.
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    y = np.asarray(labels).astype(int).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape} vs {s.shape}")
    if np.unique(y).size < 2:
        warnings.warn("image_metrics: only one class present in labels; returning NaN",
                      RuntimeWarning, stacklevel=2)
        return {"auroc": float("nan"), "aupr": float("nan"), "f1_max": float("nan")}
    p, r, _ = precision_recall_curve(y, s)
    return {"auroc": float(roc_auc_score(y, s)), "aupr": float(average_precision_score(y, s)),
            "f1_max": f1_max_from_pr(p, r)}


# --------------------------------------------------------------------------------------------
# curve helpers
# --------------------------------------------------------------------------------------------
def trapezoid_limited(x: np.ndarray, y: np.ndarray, x_max: float | None = None) -> float:
    """Trapezoidal area under ``y(x)`` (``x`` non-decreasing) up to ``x_max``.

    When ``x_max`` falls between two points, ``y`` is interpolated linearly there and the last
    partial trapezoid added (as in the MVTec AD reference ``trapezoid``). Repeated ``x`` values
    (vertical steps) are allowed.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    correction = 0.0
    if x_max is not None:
        if not np.any(x == x_max):
            ins = int(np.searchsorted(x, x_max, side="right"))
            if 0 < ins < len(x):
                y_int = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
                correction = 0.5 * (y_int + y[ins - 1]) * (x_max - x[ins - 1])
        keep = x <= x_max
        x, y = x[keep], y[keep]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x)) + correction)


def _curves_from_counts(tp: np.ndarray, fp: np.ndarray, pro: np.ndarray, n_pos: int, n_neg: int,
                        n_regions: int, fpr_limit: float) -> dict:
    """Metrics from cumulative counts at decreasing thresholds (one entry per threshold).

    ``tp``/``fp``: anomalous/normal pixels with score ``>=`` threshold; ``pro``: cumulative sum of
    the per-pixel weights ``1/|region|`` (divided by ``n_regions`` here).
    """
    out = {}
    tp = tp.astype(np.float64)
    fp = fp.astype(np.float64)
    if n_pos == 0 or n_neg == 0:
        warnings.warn("pixel_metrics: the masks contain "
                      + ("no anomalous pixel" if n_pos == 0 else "no normal pixel")
                      + "; AUROC, F1-max and PRO are NaN", RuntimeWarning, stacklevel=3)
        return {"auroc": float("nan"), "f1_max": float("nan"), "pro": float("nan")}
    fpr = np.concatenate([[0.0], fp / n_neg])
    tpr = np.concatenate([[0.0], tp / n_pos])
    out["auroc"] = trapezoid_limited(fpr, tpr)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    out["f1_max"] = f1_max_from_pr(precision, tp / n_pos)
    pros = np.minimum(pro / n_regions, 1.0)
    x = np.concatenate([[0.0], np.minimum(fp / n_neg, 1.0), [1.0]])
    y = np.concatenate([[0.0], pros, [1.0]])
    out["pro"] = trapezoid_limited(x, y, fpr_limit) / fpr_limit
    return out


def _regions(mask: np.ndarray):
    """Per-pixel PRO weights ``1/|region|`` (0 on normal pixels) and the number of regions."""
    lab, n = ndimage.label(mask, structure=_STRUCTURE)
    if n == 0:
        return np.zeros(mask.shape, dtype=np.float64), 0
    sizes = np.bincount(lab.ravel()).astype(np.float64)
    inv = np.zeros_like(sizes)
    inv[1:] = 1.0 / sizes[1:]
    return inv[lab], n


def _check_shapes(masks, maps):
    masks = np.asarray(masks)
    maps = np.asarray(maps)
    if masks.ndim == 2:
        masks, maps = masks[None], maps[None]
    if masks.shape != maps.shape or masks.ndim != 3:
        raise ValueError(f"masks and maps must both be (N, H, W); got {masks.shape} and {maps.shape}")
    return masks.astype(bool), maps


# --------------------------------------------------------------------------------------------
# exact pixel metrics
# --------------------------------------------------------------------------------------------
def _valid(valid, masks):
    """The pixels that count, (N, H, W) bool; None (every pixel) stays None, so that the common
    case copies nothing."""
    if valid is None:
        return None
    v = np.asarray(valid).astype(bool)
    v = v[None] if v.ndim == 2 else v
    if v.shape != masks.shape:
        raise ValueError(f"valid must match the masks' shape {masks.shape}; got {v.shape}")
    return v


def pixel_metrics_exact(masks, maps, fpr_limit: float = 0.3, valid=None) -> dict:
    """Exact pixel AUROC, F1-max and PRO (one sort over every pixel; thresholds = distinct scores).
    Pixels where ``valid`` is False (e.g. outside a warped image) count neither as normal nor as
    anomalous, and a region's PRO overlap is measured on its valid pixels."""
    masks, maps = _check_shapes(masks, maps)
    valid = _valid(valid, masks)
    if valid is not None:
        masks = masks & valid
    weights = np.empty(masks.shape, dtype=np.float64)
    n_regions = 0
    for i, m in enumerate(masks):
        weights[i], n = _regions(m)
        n_regions += n
    pick = (lambda a: a.ravel()) if valid is None else (lambda a: a[valid])
    s = pick(maps)
    order = np.argsort(s, kind="stable")[::-1]
    s_sorted = s[order]
    pos = pick(masks)[order]
    tp = np.cumsum(pos, dtype=np.int64)
    fp = np.cumsum(~pos, dtype=np.int64)
    pro = np.cumsum(pick(weights)[order])
    last = np.append(s_sorted[1:] != s_sorted[:-1], True)  # end of each group of tied scores
    n_pos = int(tp[-1])
    return _curves_from_counts(tp[last], fp[last], pro[last], n_pos, s.size - n_pos, n_regions,
                               fpr_limit)


# --------------------------------------------------------------------------------------------
# binned / streaming pixel metrics
# --------------------------------------------------------------------------------------------
class BinnedPixelMetrics:
    """Streaming pixel AUROC, F1-max and PRO over ``bins`` equal-width score bins in ``[lo, hi]``.

    ``update(masks, maps)`` takes one image ``(H, W)`` or a batch ``(N, H, W)``; ``compute()``
    returns the metrics. Memory: three ``bins``-long histograms, whatever the number of images.
    Scores outside ``[lo, hi]`` go to the end bins. Threshold ``j`` is the lower edge of bin ``j``
    (a pixel counts as positive at threshold ``j`` iff its bin is ``>= j``); the curves are the
    exact ones for scores rounded down to bin edges.
    """

    def __init__(self, lo: float, hi: float, bins: int = 1000, fpr_limit: float = 0.3):
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError("score range must be finite")
        self.lo, self.hi, self.bins, self.fpr_limit = float(lo), float(hi), int(bins), fpr_limit
        self.pos = np.zeros(self.bins, dtype=np.int64)
        self.neg = np.zeros(self.bins, dtype=np.int64)
        self.pro = np.zeros(self.bins, dtype=np.float64)
        self.n_regions = 0

    def _bin(self, s: np.ndarray) -> np.ndarray:
        if self.hi <= self.lo:
            return np.zeros(s.shape, dtype=np.int64)
        b = np.floor((s.astype(np.float64) - self.lo) * (self.bins / (self.hi - self.lo)))
        return np.clip(b, 0, self.bins - 1).astype(np.int64)

    def update(self, masks, maps, valid=None) -> "BinnedPixelMetrics":
        masks, maps = _check_shapes(masks, maps)
        valid = _valid(valid, masks)
        for i, (m, s) in enumerate(zip(masks, maps)):
            v = np.ones(m.shape, bool) if valid is None else valid[i]  # one image at a time
            m = m & v
            b = self._bin(s[v])
            mf = m[v]
            self.pos += np.bincount(b[mf], minlength=self.bins)
            self.neg += np.bincount(b[~mf], minlength=self.bins)
            w, n = _regions(m)
            if n:
                self.pro += np.bincount(b[mf], weights=w[v][mf], minlength=self.bins)
                self.n_regions += n
        return self

    def compute(self) -> dict:
        # thresholds from the highest bin down: cumulative counts of bins >= j
        tp = np.cumsum(self.pos[::-1])
        fp = np.cumsum(self.neg[::-1])
        pro = np.cumsum(self.pro[::-1])
        keep = (self.pos[::-1] + self.neg[::-1]) > 0  # empty bins add no new curve point
        return _curves_from_counts(tp[keep], fp[keep], pro[keep], int(self.pos.sum()),
                                   int(self.neg.sum()), self.n_regions, self.fpr_limit)


def pixel_metrics(masks, maps, fpr_limit: float = 0.3, bins: int | None = None,
                  score_range: tuple[float, float] | None = None, valid=None) -> dict:
    """Pixel-level ``auroc``, ``f1_max`` and ``pro`` (AUPRO up to ``fpr_limit``, normalised).

    ``masks``: ``(N, H, W)`` ground truth (non-zero = anomalous); ``maps``: ``(N, H, W)`` scores.
    ``bins=None``: exact (sort-based). ``bins=B``: binned over ``B`` equal-width bins spanning the
    global min/max of ``maps`` (or ``score_range``; scores outside it fall in the end bins; see
    :class:`BinnedPixelMetrics`), processed image by image. The binned error grows when a few
    extreme outliers stretch the min/max range (measured: one pixel at 100x the maximum raises the
    PRO error at 1,000 bins from ~5e-5 to ~9e-3); use more bins or a ``score_range`` such as
    robust quantiles in that case.
    ``valid``: ``(N, H, W)`` bool, the pixels that count (default all): the others are left out
    of both classes, as the border pixels of a rotated test image must be.
    Without any anomalous (or any normal) pixel the values are NaN, with a warning.
    """
    if bins is None:
        return pixel_metrics_exact(masks, maps, fpr_limit, valid)
    masks, maps = _check_shapes(masks, maps)
    valid = _valid(valid, masks)
    counted = maps if valid is None else maps[valid]
    lo, hi = (float(np.min(counted)), float(np.max(counted))) if score_range is None else score_range
    acc = BinnedPixelMetrics(lo, hi, bins=bins, fpr_limit=fpr_limit)
    for i, (m, s) in enumerate(zip(masks, maps)):
        acc.update(m, s, None if valid is None else valid[i])
    return acc.compute()


def pixel_metrics_streaming(pairs: Iterable, lo: float, hi: float, bins: int = 1000,
                            fpr_limit: float = 0.3) -> dict:
    """Binned metrics from an iterable of ``(mask, map)`` pairs (images or batches), given the score
    range ``[lo, hi]`` in advance; nothing but the histograms is kept in memory."""
    acc = BinnedPixelMetrics(lo, hi, bins=bins, fpr_limit=fpr_limit)
    for m, s in pairs:
        acc.update(m, s)
    return acc.compute()


def bootstrap_gain(scores, key: str, ref, n: int = 1000, seed: int = 0):
    """How sure is a difference in image AUROC on a few test images per class?

    ``scores`` has one row per seed, ``key`` value, class and image (columns ``seed``, ``key``,
    ``class``, ``file``, ``label``, ``score``), and every seed and value scores the same images.
    For each value of ``key`` the gain is its class-mean image AUROC (averaged over the seeds)
    minus that of ``ref``. The images of each class are drawn again with replacement ``n`` times,
    the same draw for every seed and value (a paired bootstrap); a class whose draw lacks normals
    or anomalies is left out of that draw's mean. Returns a frame with ``key``, ``gain``, ``sd``,
    ``lo`` and ``hi`` (the 2.5 and 97.5 percentiles of the drawn gains).

    A drawn image set is a count per image, and AUROC is the Mann-Whitney statistic, so each
    class's AUROC over all draws is one product with its matrix of (anomalous, normal) pairs.

    Examples:
        >>> import pandas as pd
        >>> rows = [dict(seed=0, method=m, cls_=0, file=f"{i}.png", label=i % 2,
        ...              score=float(i % 2) if m == "good" else 0.5) for m in ("good", "flat") for i in range(8)]
        >>> df = pd.DataFrame(rows).rename(columns={"cls_": "class"})
        >>> out = bootstrap_gain(df, "method", "flat", n=100).set_index("method")
        >>> float(out.loc["good", "gain"]), float(out.loc["good", "lo"])  # every anomaly ranked first
        (0.5, 0.5)
    """
    import pandas as pd

    scores = scores.sort_values(["seed", key, "class", "file"])
    groups = {k: g for k, g in scores.groupby(["seed", key, "class"])}
    seeds, values, classes = (sorted(scores[c].unique()) for c in ("seed", key, "class"))
    if ref not in values:
        raise ValueError(f"bootstrap_gain: the reference {key} {ref!r} has no scores (have {values})")
    missing = [(s, v, c) for s in seeds for v in values for c in classes if (s, v, c) not in groups]
    if missing:
        raise ValueError(f"bootstrap_gain: no scores for (seed, {key}, class) {missing[:3]}")
    files = {c: list(groups[(seeds[0], values[0], c)]["file"]) for c in classes}
    sizes = {c: len(f) for c, f in files.items()}
    for (s, v, c), g in groups.items():
        if list(g["file"]) != files[c] or len(set(files[c])) != len(files[c]):
            raise ValueError(f"bootstrap_gain: seed {s}, {key} {v!r}, class {c!r} does not score each image "
                             f"of the others once (a paired bootstrap needs the same images everywhere)")
    rng = np.random.default_rng(seed)
    draws = [[rng.integers(0, sizes[c], sizes[c]) for c in classes] for _ in range(n)]
    counts = {c: np.vstack([np.ones(sizes[c])] + [np.bincount(d[i], minlength=sizes[c]) for d in draws])
              for i, c in enumerate(classes)}  # row 0: the images as they are

    def class_aurocs(g, w) -> np.ndarray:
        y, x = g["label"].to_numpy().astype(bool), g["score"].to_numpy(float)
        pairs = (x[y][:, None] > x[~y][None, :]) + 0.5 * (x[y][:, None] == x[~y][None, :])
        wp, wn = w[:, y], w[:, ~y]
        den = wp.sum(1) * wn.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, np.einsum("di,ij,dj->d", wp, pairs, wn) / den, np.nan)

    curve = {v: np.mean([np.nanmean([class_aurocs(groups[(s, v, c)], counts[c]) for c in classes], axis=0)
                         for s in seeds], axis=0) for v in values}
    rows = []
    for v in values:
        d = curve[v][1:] - curve[ref][1:]
        rows.append({key: v, "gain": float(curve[v][0] - curve[ref][0]), "sd": float(d.std()),
                     "lo": float(np.percentile(d, 2.5)), "hi": float(np.percentile(d, 97.5))})
    return pd.DataFrame(rows)
