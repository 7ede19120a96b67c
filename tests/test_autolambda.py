"""Automatic noise strength (autolambda.py): synthetic defects, the criterion, the choice, and
noise_strength="auto" end to end on the smoke profile."""
import json

import numpy as np
import pytest

from anomalysd_core.method import autolambda as al
from anomalysd_core.config import get_config


@pytest.mark.parametrize("kind", al.KINDS)
def test_synthetic_anomaly_marks_what_it_changes(kind):
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:48, :48] / 48.0
    img = np.stack([0.3 + 0.4 * yy, 0.5 + 0.2 * xx, 0.4 + 0 * xx], -1).astype(np.float32)
    allowed = np.zeros((48, 48), bool)
    allowed[12:36, 12:36] = True
    out, mask = al.synthetic_anomaly(img, kind, rng, allowed)
    assert out.shape == img.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    assert 0 < mask.mean() < 0.25
    diff = np.abs(out - img).max(-1)
    assert diff[mask].mean() > 0.08  # the marked pixels changed visibly
    assert diff[~mask].mean() < 0.02  # the rest (almost) did not: a stain's faint rim is unmarked
    ys, xs = np.nonzero(mask)
    assert allowed[int(ys.mean()), int(xs.mean())] or kind == "scratch"  # centred on the foreground


def test_synthetic_anomaly_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown synthetic anomaly 'dent'"):
        al.synthetic_anomaly(np.zeros((8, 8, 3)), "dent", np.random.default_rng(0), np.ones((8, 8), bool))


def test_views_are_deterministic_and_cycle_kinds():
    shot = np.random.default_rng(0).uniform(0.3, 0.7, (32, 32, 3)).astype(np.float32)
    a = al.make_views([shot], "texture", 5, seed=1, cls="x")
    b = al.make_views([shot], "texture", 5, seed=1, cls="x")
    c = al.make_views([shot], "texture", 5, seed=2, cls="x")
    assert all(np.array_equal(u, v) for u, v in zip(a[1], b[1]))
    assert not np.array_equal(a[1][0], c[1][0])
    clean, bad, masks = a
    assert len(clean) == len(bad) == len(masks) == 5
    for x, y, m in zip(clean, bad, masks):  # each defective view is its clean view plus the defect
        assert np.abs(x - y).max(-1)[m].mean() > np.abs(x - y).max(-1)[~m].mean()
    with pytest.raises(ValueError, match="class 'x'.*at least one normal"):
        al.make_views([], "texture", 2, seed=0, cls="x")


def test_choose_takes_the_best_and_breaks_ties_towards_the_default():
    assert al.choose({0.2: 0.7, 0.4: 0.8, 0.6: 0.9}, default=0.4) == 0.6
    assert al.choose({0.2: 0.9, 0.4: 0.898, 0.6: 0.7}, default=0.4) == 0.4  # within tol
    assert al.choose({0.2: 0.9, 0.8: 0.9}, default=0.4) == 0.2  # equally far: the smaller
    assert al.choose({0.2: np.nan, 0.6: 0.5}, default=0.4) == 0.6
    assert al.choose({0.2: np.nan}, default=0.4) == 0.4
    # the tolerance: a lead smaller than TOL over the default is noise of four views, a larger one is not
    assert al.choose({0.2: 0.80 + al.TOL / 2, 0.4: 0.80}, default=0.4) == 0.4
    assert al.choose({0.2: 0.80 + 2 * al.TOL, 0.4: 0.80}, default=0.4) == 0.2


def test_a_stored_record_is_chosen_again_from_its_curve(tmp_path, monkeypatch):
    rec = {"lambda": 0.2, "criterion": {"0.2": 0.81, "0.4": 0.80}, "default": 0.4}
    al.record_path(tmp_path, "x").write_text(json.dumps(rec))
    assert al.load_record(tmp_path, "x")["lambda"] == 0.4  # 0.01 < TOL: the default wins
    monkeypatch.setattr(al, "TOL", 0.005)
    assert al.load_record(tmp_path, "x")["lambda"] == 0.2
    assert al.load_record(tmp_path, "missing") is None


def _toy_views(n=4, size=32):
    """Flat grey normals; the defect is what differs from the view's median colour."""
    return al.make_views([np.full((size, size, 3), 0.5, np.float32)], "texture", n, seed=0, cls="toy")


def test_rule_finds_the_lambda_that_is_right_by_construction():
    """A toy detector whose map is the true defect signal at lambda = 0.6 and is drowned in
    fixed noise the further lambda is from 0.6: the rule must pick 0.6."""
    clean, bad, masks = _toy_views()
    noise = np.random.default_rng(1).uniform(0, 1, (64, 32, 32))
    seen = []

    def score_map(img, lam):
        signal = np.abs(img - np.median(img, axis=(0, 1))).max(-1)
        w = min(1.0, abs(lam - 0.6) / 0.4)
        seen.append(lam)
        return (1 - w) * signal + w * noise[len(seen) % 64]

    curves = al.selection_curves(score_map, clean, bad, masks)
    assert al.choose(curves["criterion"], default=0.4) == 0.6
    assert curves["pixel"][0.6] > 0.85 and curves["image"][0.6] == 1.0  # a stain's faint rim is unmarked
    assert curves["criterion"][0.6] > max(v for k, v in curves["criterion"].items() if k != 0.6)
    assert sorted(set(seen)) == [0.2, 0.4, 0.6] and len(seen) == 3 * 8  # clean + defective views


def test_rule_keeps_the_default_when_lambda_does_not_matter():
    clean, bad, masks = _toy_views()

    def score_map(img, lam):
        return np.abs(img - np.median(img, axis=(0, 1))).max(-1)

    curves = al.selection_curves(score_map, clean, bad, masks)
    assert len(set(curves["criterion"].values())) == 1
    assert al.choose(curves["criterion"], default=0.4) == 0.4


def test_config_auto():
    cfg = get_config("mini", noise_strength="auto")
    assert cfg.auto_strength and cfg.noise_strength == "auto"
    with pytest.raises(ValueError, match="chosen by fit"):
        cfg.strength_for("brick")
    assert get_config("mini", noise_strength="auto", noise_strength_per_class="brick:0.6").strength_for("brick") == 0.6
    for bad, msg in [("1.5", "noise_strength must be in"), ("0", "noise_strength must be in"),
                     ("sometimes", "cannot parse 'sometimes'")]:
        with pytest.raises(ValueError, match=msg):
            get_config("mini", noise_strength=bad)
    with pytest.raises(ValueError, match=r"auto_lambdas\[1\] must be in"):
        get_config("mini", auto_lambdas="0.2,1.2")
    with pytest.raises(ValueError, match="auto_views. must be >= 1"):
        get_config("mini", auto_views="0")


@pytest.mark.slow
def test_auto_end_to_end_shares_the_fixed_lambda_cache(smoke_base, smoke_data, tmp_path):
    """fit with noise_strength="auto" chooses lambda per class once (stored, with its curves);
    the test images are scored into the folder of the chosen lambda, so a run with that lambda
    fixed reads them from the cache."""
    from anomalysd_core.reproduce import settings, summaries

    over = dict(base_model=str(smoke_base), data_root=str(smoke_data), grid_scales=(1, 2), shots=1,
                classes=["brick"], auto_lambdas=(0.3, 0.7), auto_views=2, out_dir=str(tmp_path / "runs"))
    df, info = settings.run_setting("smoke", noise_strength="auto", **over)
    rec = info["auto_lambda"]["brick"]
    assert rec["lambda"] in (0.3, 0.7) and set(rec["criterion"]) == {"0.3", "0.7"}
    assert rec["n_views"] == 2 and rec["seconds"] > 0
    assert info["n_fresh_images"] == info["n_test_images"] > 0
    t = summaries.auto_lambda_table([info])
    assert len(t) == 2 and t["chosen"].sum() == 1 and set(t["class"]) == {"brick"}
    again = settings.run_setting("smoke", noise_strength="auto", **over)[1]
    assert again["auto_lambda"] == info["auto_lambda"] and again["n_fresh_images"] == 0
    fixed_df, fixed = settings.run_setting("smoke", noise_strength=rec["lambda"], **over)
    assert fixed["n_fresh_images"] == 0  # the auto run's cache
    cols = ["i_auroc", "p_auroc"]
    assert np.allclose(df[cols].to_numpy(float), fixed_df[cols].to_numpy(float), equal_nan=True)
