"""Prototype-guided mask (Sec. 4.2, eq 12-15), independent of the feature backbone.

* eq (12): ``psi(x) = [phi2(x) ; Upsample(phi3(x))]`` is computed by the backbone module; here we
  only take its output, a feature map ``(C, h, w)``.
* eq (13): the prototype bank ``P_c`` holds every spatial feature vector of the rotation-augmented
  few-shot normals of class ``c``: :func:`rotations` and :func:`build_bank`.
* eq (14): ``E_hw = min_{f in P_c} ||psi(x)_hw - f||^2``: :func:`error_map` (exact nearest
  neighbour, memory bounded by chunking).
* eq (15): ``M^(p) = Upsample(1[E > r])`` with ``r = argmin_r Var({E >= r}) + Var({E < r})``:
  :func:`variance_threshold` and :func:`prototype_mask`.
* not in the paper (``Config.proto_floor="shots"``, mini): ``r`` no lower than :func:`shot_floor`,
  a high quantile of the errors the shots' own views make against the rest of the bank.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def rotations(images: torch.Tensor, angles: Sequence[int] = (0, 90, 180, 270),
              flips: bool = False) -> torch.Tensor:
    """Rotation augmentation ``Aug(.)`` of eq (13) for the few-shot normals.

    ``images``: ``(N, C, H, W)`` or ``(C, H, W)``. Angles must be multiples of 90 degrees (exact
    ``torch.rot90``, counter-clockwise, no interpolation; square images keep their size). With
    ``flips=True`` the horizontally flipped copy of every rotation is added. Returns the copies
    stacked along dim 0, angle-major: ``(len(angles) * (2 if flips else 1) * N, C, H, W)``.
    """
    x = images if images.ndim == 4 else images[None]
    out = []
    for a in angles:
        if int(a) % 90 != 0:
            raise ValueError(f"only multiples of 90 degrees are supported, got {a}")
        r = torch.rot90(x, k=(int(a) // 90) % 4, dims=(-2, -1))
        out.append(r)
        if flips:
            out.append(torch.flip(r, dims=(-1,)))
    return torch.cat(out, dim=0)


def build_bank(features) -> torch.Tensor:
    """Prototype bank ``P_c`` (eq 13): all spatial feature vectors, ``(M, C)``.

    ``features``: a tensor ``(C, h, w)`` / ``(n, C, h, w)`` or a list of such tensors (they may
    differ in ``h, w`` but must share ``C``).
    """
    if isinstance(features, torch.Tensor):
        features = [features]
    rows = []
    c = None
    for f in features:
        f = f if f.ndim == 4 else f[None]
        if f.ndim != 4:
            raise ValueError(f"expected (C,h,w) or (n,C,h,w) features, got shape {tuple(f.shape)}")
        if c is None:
            c = f.shape[1]
        elif f.shape[1] != c:
            raise ValueError(f"feature channels differ: {c} vs {f.shape[1]}")
        rows.append(f.permute(0, 2, 3, 1).reshape(-1, c))
    if not rows:
        raise ValueError("build_bank needs at least one feature map")
    return torch.cat(rows, dim=0)


@torch.no_grad()
def error_map(feat: torch.Tensor, bank: torch.Tensor, chunk: int = 4096,
              return_index: bool = False):
    """Error map of eq (14): ``E_hw = min_{f in P_c} ||psi(x)_hw - f||^2`` (squared L2).

    ``feat``: ``(C, h, w)`` or ``(B, C, h, w)``; ``bank``: ``(M, C)``. Returns ``(h, w)`` or
    ``(B, h, w)`` (and the argmin bank index if ``return_index``).

    Exact nearest neighbour with bounded memory: queries and bank are both processed in blocks of
    ``chunk`` rows, so the largest temporary is ``chunk x chunk``. Within a block the distances use
    ``||a||^2 - 2 a.b + ||b||^2`` (clamped at 0) to find the nearest prototype; the returned value is
    then recomputed directly as ``||a - b*||^2`` for that prototype, so it has no cancellation
    error. (Only near-exact ties between two prototypes could pick the other one, which changes
    ``E`` by rounding error only.)
    """
    single = feat.ndim == 3
    f = feat[None] if single else feat
    b, c, h, w = f.shape
    if bank.ndim != 2 or bank.shape[1] != c:
        raise ValueError(f"bank must be (M, {c}), got {tuple(bank.shape)}")
    q = f.permute(0, 2, 3, 1).reshape(-1, c)
    bank = bank.to(device=q.device, dtype=q.dtype)
    bank_sq = (bank * bank).sum(1)
    best_idx = torch.empty(q.shape[0], dtype=torch.long, device=q.device)
    for qs in range(0, q.shape[0], chunk):
        qq = q[qs:qs + chunk]
        q_sq = (qq * qq).sum(1, keepdim=True)
        best = torch.full((qq.shape[0],), float("inf"), dtype=q.dtype, device=q.device)
        bi = torch.zeros(qq.shape[0], dtype=torch.long, device=q.device)
        for ms in range(0, bank.shape[0], chunk):
            bb = bank[ms:ms + chunk]
            d = (q_sq - 2.0 * qq @ bb.T + bank_sq[ms:ms + chunk][None]).clamp_min_(0)
            v, i = d.min(dim=1)
            better = v < best
            best = torch.where(better, v, best)
            bi = torch.where(better, i + ms, bi)
        best_idx[qs:qs + chunk] = bi
    e = torch.empty(q.shape[0], dtype=q.dtype, device=q.device)
    for qs in range(0, q.shape[0], chunk):
        diff = q[qs:qs + chunk] - bank[best_idx[qs:qs + chunk]]
        e[qs:qs + chunk] = (diff * diff).sum(1)
    e = e.reshape(b, h, w)
    idx = best_idx.reshape(b, h, w)
    if single:
        e, idx = e[0], idx[0]
    return (e, idx) if return_index else e


def _split_objective(v: np.ndarray):
    """For sorted ``v`` (float64): objective ``Var(v[:k]) + Var(v[k:])`` for every valid ``k``.

    Returns ``(ks, obj)``; valid ``k`` are split positions ``1..n-1`` between DISTINCT values
    (``v[k-1] < v[k]``), so equal values never fall on both sides. Variances are population
    variances (ddof = 0) from prefix sums of the centred values (one O(n) pass after sorting).
    """
    n = v.size
    x = v - v.mean()
    s1 = np.concatenate([[0.0], np.cumsum(x)])
    s2 = np.concatenate([[0.0], np.cumsum(x * x)])
    ks = np.flatnonzero(v[1:] > v[:-1]) + 1
    if ks.size == 0:
        return ks, np.empty(0)
    nl = ks.astype(np.float64)
    nu = n - nl
    var_l = s2[ks] / nl - (s1[ks] / nl) ** 2
    var_u = (s2[n] - s2[ks]) / nu - ((s1[n] - s1[ks]) / nu) ** 2
    return ks, np.maximum(var_l, 0.0) + np.maximum(var_u, 0.0)


def variance_threshold(values) -> float:
    """Threshold ``r`` of eq (15): ``argmin_r Var({E >= r}) + Var({E < r})``, computed exactly.

    As written in the paper the two variances are SUMMED, unweighted (unlike Otsu, which weights
    them by the group sizes); this is implemented literally, with population variances. The
    search is exact: the values are sorted (O(n log n)) and every split between two consecutive
    DISTINCT sorted values is scored with prefix sums; both groups are non-empty and tied values
    always stay on the same side. Ties in the objective go to the lowest split.

    Returned value: the paper's set ``{E >= r}`` needs ``r`` in ``(v_{k-1}, v_k]`` while its mask
    uses ``1[E > r]``; we return the midpoint ``(v_{k-1} + v_k) / 2``, rounded to the input's float
    dtype, so ``E > r`` and ``E >= r`` both select exactly the upper group of the optimal split
    (when ``v_{k-1}`` and ``v_k`` are adjacent floats, ``r = v_{k-1}`` and only ``E > r`` does).
    If all values are equal (no split exists) the common value is returned, and ``E > r`` is empty.

    Note: an unweighted sum rewards splitting off a small extreme group (a group of one value has
    zero variance), so on long-tailed error maps ``r`` often isolates only the most anomalous
    cells; that is the paper's criterion, kept as is.
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        values = values.float() if values.dtype == torch.bfloat16 else values
    raw = np.asarray(values)
    in_dtype = raw.dtype if raw.dtype in (np.float16, np.float32) else np.dtype(np.float64)
    v = np.sort(raw.astype(np.float64).ravel())
    if v.size == 0:
        raise ValueError("variance_threshold needs at least one value")
    if not np.all(np.isfinite(v)):
        raise ValueError("variance_threshold got NaN or infinite values")
    ks, obj = _split_objective(v)
    if ks.size == 0:
        return float(v[0])
    k = int(ks[int(np.argmin(obj))])
    lo, hi = v[k - 1], v[k]
    # round the midpoint to the input's float type, so comparing in that type is exact too
    r = float(np.asarray(lo + (hi - lo) / 2.0, dtype=in_dtype))
    if not (lo < r < hi):
        r = lo
    return float(r)


#: the quantile of the shots' leave-one-view-out errors that :func:`shot_floor` returns
FLOOR_QUANTILE = 0.99


@torch.no_grad()
def shot_floor(features: torch.Tensor, q: float = FLOOR_QUANTILE) -> float:
    """A floor for the threshold of eq (15) from the few-shot normals alone (not in the paper).

    ``features``: ``(V, C, h, w)``, the bank's views (the rotations of every shot). Each view's
    error map (eq 14) is taken against the bank without that view, and the ``q`` quantile of all
    these errors is returned: an error that a normal feature seldom exceeds.

    Why: eq (15) always splits the error map in two, so ``M^(p)`` covers part of every image, of a
    normal one too, and the prototype branch then adds repainting error on normal regions. On the
    mini validation build (1 shot) it covered 27-41 % of a normal image; with ``r = max(eq 15,
    floor)`` it covers about 5 %, and the image AUROC rose (``benchmarks/proto_floor_validation.py``).

    Examples:
        >>> import torch
        >>> views = torch.zeros(4, 2, 3, 3)
        >>> shot_floor(views)   # identical views: every feature has an exact match
        0.0
    """
    if features.ndim != 4 or features.shape[0] < 2:
        raise ValueError(f"shot_floor needs (V >= 2, C, h, w) views, got {tuple(features.shape)}")
    if not 0.0 < q <= 1.0:
        raise ValueError(f"quantile q must be in (0, 1], got {q}")
    errs = []
    for v in range(features.shape[0]):
        rest = torch.cat([features[:v], features[v + 1:]])
        errs.append(error_map(features[v], build_bank(rest)).flatten())
    return float(torch.quantile(torch.cat(errs).double(), q))


def prototype_mask(E, size: int | tuple[int, int], r: float | None = None,
                   return_threshold: bool = False):
    """Prototype-guided mask ``M^(p) = Upsample(1[E > r])`` of eq (15).

    ``E``: error map ``(h, w)`` (or ``(B, h, w)``, one threshold per map), torch or NumPy. ``r``
    defaults to :func:`variance_threshold` of ``E``. The comparison is the paper's strict
    ``E > r``; with our midpoint ``r`` it selects the same pixels as the ``{E >= r}`` set of the
    threshold search (see :func:`variance_threshold`). Upsampling is nearest-neighbour to
    ``size x size``, so the mask stays binary. Returns a bool array/tensor of the input's kind.
    """
    is_np = not isinstance(E, torch.Tensor)
    t = torch.as_tensor(np.asarray(E)) if is_np else E
    if isinstance(size, int):
        size = (size, size)
    batched = t.ndim == 3
    maps = t if batched else t[None]
    outs, rs = [], []
    for m in maps:
        rr = variance_threshold(m) if r is None else float(r)
        rs.append(rr)
        bin_ = (m > rr).float()[None, None]
        outs.append(F.interpolate(bin_, size=size, mode="nearest")[0, 0] > 0.5)
    out = torch.stack(outs) if batched else outs[0]
    if is_np:
        out = out.cpu().numpy()
    thr = rs if batched else rs[0]
    return (out, thr) if return_threshold else out
