import numpy as np
import pytest
import torch

from anomalysd_core.method.prototypes import (build_bank, error_map, prototype_mask, rotations,
                                       shot_floor, variance_threshold)


def test_rotations_shapes_and_content():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    r = rotations(x)
    assert r.shape == (8, 3, 4, 4)
    assert torch.equal(r[:2], x)
    assert torch.equal(r[4:6], torch.flip(x, dims=(-2, -1)))           # 180 degrees
    assert torch.equal(rotations(x[0], angles=(90,))[0], torch.rot90(x[0], 1, (-2, -1)))
    assert rotations(x, flips=True).shape == (16, 3, 4, 4)
    with pytest.raises(ValueError):
        rotations(x, angles=(45,))


def test_build_bank():
    a = torch.randn(5, 3, 4)
    b = torch.randn(2, 5, 2, 2)
    bank = build_bank([a, b])
    assert bank.shape == (12 + 8, 5)
    assert torch.equal(bank[1], a[:, 0, 1])                           # row-major over (h, w)
    assert torch.equal(bank[12 + 4 + 3], b[1, :, 1, 1])
    assert build_bank(a).shape == (12, 5)
    with pytest.raises(ValueError):
        build_bank([a, torch.randn(4, 2, 2)])


@pytest.mark.parametrize("chunk", [7, 4096])
def test_error_map_matches_brute_force(chunk):
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(3, 16, 6, 5, generator=g) * 3 + 10                # offset: tests cancellation
    bank = torch.randn(53, 16, generator=g) * 3 + 10
    e, idx = error_map(feat, bank, chunk=chunk, return_index=True)
    q = feat.permute(0, 2, 3, 1).reshape(-1, 16).double()
    d = ((q[:, None, :] - bank.double()[None]) ** 2).sum(-1)
    ref = d.min(1).values.reshape(3, 6, 5)
    assert e.shape == (3, 6, 5) and idx.shape == (3, 6, 5)
    assert torch.allclose(e.double(), ref, rtol=1e-5, atol=1e-5)
    single = error_map(feat[1], bank, chunk=chunk)
    assert single.shape == (6, 5) and torch.allclose(single, e[1])


def test_error_map_zero_for_bank_members():
    feat = torch.randn(8, 4, 4)
    bank = build_bank(feat)
    assert torch.all(error_map(feat, bank, chunk=5) < 1e-10)


def _brute_threshold(values):
    """Loop over every candidate r among the sorted values (eq 15 literally)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    best, best_r = np.inf, None
    for r in np.unique(v)[1:]:                 # both groups non-empty
        up, low = v[v >= r], v[v < r]
        obj = up.var() + low.var()
        if obj < best - 1e-12:
            best, best_r = obj, r
    return best_r, best


@pytest.mark.parametrize("seed", range(6))
def test_variance_threshold_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    kind = seed % 3
    if kind == 0:
        v = rng.normal(size=200)
    elif kind == 1:
        v = np.r_[rng.normal(0, 1, 150), rng.normal(6, 0.5, 30)]
    else:
        v = rng.integers(0, 12, 300).astype(float)          # many ties
    r = variance_threshold(v)
    r_ref, obj_ref = _brute_threshold(v)
    up = v > r
    assert np.array_equal(up, v >= r_ref)                    # same split as the brute force
    assert np.array_equal(up, v >= r)                        # '>' and '>=' agree at our r
    assert v[up].var() + v[~up].var() == pytest.approx(obj_ref, abs=1e-9)


def test_variance_threshold_ties_and_degenerate():
    v = np.array([1.0, 1.0, 1.0, 5.0, 5.0, 9.0])
    r = variance_threshold(v)
    assert r not in v                                        # splits between distinct values
    assert variance_threshold(np.full(10, 2.5)) == 2.5       # no split possible
    assert not (np.full(10, 2.5) > 2.5).any()
    assert variance_threshold([0.0, 1.0]) == 0.5
    with pytest.raises(ValueError):
        variance_threshold([])
    with pytest.raises(ValueError):
        variance_threshold([1.0, np.nan])


def test_variance_threshold_float32_adjacent_values():
    lo = np.float32(1.0)
    hi = np.nextafter(lo, np.float32(2.0))
    v = np.array([lo, lo, hi, hi, hi], dtype=np.float32)
    r = variance_threshold(torch.from_numpy(v))
    assert np.array_equal(v > np.float32(r), v == hi)
    assert torch.equal(torch.from_numpy(v) > r, torch.from_numpy(v == hi))


def test_prototype_mask_upsampled_and_batched():
    E = torch.zeros(4, 4)
    E[1, 2] = 5.0
    E[0, 0] = 0.1
    m, r = prototype_mask(E, 16, return_threshold=True)
    assert m.shape == (16, 16) and m.dtype == torch.bool
    assert m[4:8, 8:12].all() and m.sum() == 16 and 0.1 < r < 5.0
    mn = prototype_mask(E.numpy(), 8)
    assert isinstance(mn, np.ndarray) and mn.sum() == 4
    mb = prototype_mask(torch.stack([E, E.T]), 8)
    assert mb.shape == (2, 8, 8) and mb[1, 4:6, 2:4].all()
    assert prototype_mask(E, 4, r=-1.0).all()


def test_shot_floor_is_a_quantile_of_leave_one_view_out_errors():
    g = torch.Generator().manual_seed(0)
    views = torch.randn(4, 3, 5, 5, generator=g)
    # brute force: each view's error map against the bank of the other views
    errs = torch.cat([error_map(views[v], build_bank(torch.cat([views[:v], views[v + 1:]]))).flatten()
                      for v in range(4)])
    assert shot_floor(views, q=1.0) == pytest.approx(float(errs.max()))
    assert shot_floor(views) == pytest.approx(float(torch.quantile(errs.double(), 0.99)))
    assert shot_floor(views, q=0.5) < shot_floor(views)
    # a view that the others explain exactly adds zero errors: duplicated views give 0
    assert shot_floor(torch.cat([views[:1], views[:1]])) == 0.0
    with pytest.raises(ValueError, match="V >= 2"):
        shot_floor(views[:1])
    with pytest.raises(ValueError, match="quantile"):
        shot_floor(views, q=0.0)
