"""Perturbed test images (robustness.py): masks move with the image, border pixels are excluded
from the pixel metrics, and the robustness table end to end on the smoke profile."""
import json

import numpy as np
import pandas as pd
import pytest

from anomalysd_core.reproduce import robustness as rb
from anomalysd_core.method.metrics import pixel_metrics


def _square(size=64):
    img = np.full((size, size, 3), 0.1, np.float32)
    mask = np.zeros((size, size), bool)
    mask[14:30, 36:52] = True  # off-centre, so that a warp moves it
    img[mask] = 0.9
    return img, mask


@pytest.mark.parametrize("name", rb.GEOMETRIC)
@pytest.mark.parametrize("severity", rb.SEVERITIES)
def test_warped_mask_stays_on_the_warped_defect(name, severity):
    img, mask = _square()
    out, m, valid = rb.perturb(img, mask, name, severity, np.random.default_rng(severity))
    bright = out.mean(-1) > 0.5
    iou = (bright & m).sum() / (bright | m).sum()
    assert iou > 0.8, iou  # the mask moved with the square
    assert not np.array_equal(m, mask)  # and it did move
    assert not (m & ~valid).any()  # no anomalous pixel outside the image


def test_geometric_warps_mark_the_pixels_from_outside():
    img, mask = _square()
    _, _, valid = rb.perturb(img, mask, "rotation", 3, np.random.default_rng(0))
    assert not valid[0, 0] and not valid[-1, -1] and valid[32, 32]  # corners came from outside
    assert 0.8 < valid.mean() < 1.0
    out, _, _ = rb.perturb(img, mask, "rotation", 3, np.random.default_rng(0))
    assert out[0, 0].max() > 0.05  # filled with the mirrored image, not black


@pytest.mark.parametrize("name", [n for n in rb.PERTURBATIONS if n not in rb.GEOMETRIC])
def test_photometric_perturbations_keep_mask_and_every_pixel(name):
    img, mask = _square()
    img = img * 0.8 + 0.1 * np.random.default_rng(0).uniform(size=img.shape).astype(np.float32)
    out, m, valid = rb.perturb(img, mask, name, 3, np.random.default_rng(1))
    assert np.array_equal(m, mask) and valid.all()
    assert out.shape == img.shape and 0 <= out.min() and out.max() <= 1
    assert np.abs(out - img).mean() > 0.003  # it changed the image


def test_severity_grows_and_the_stream_is_fixed():
    img, mask = _square()
    img = img + 0.05 * np.sin(np.arange(64))[None, :, None].astype(np.float32)
    diffs = [np.abs(rb.perturb(img, mask, "gaussian_blur", s, np.random.default_rng(0))[0] - img).mean()
             for s in rb.SEVERITIES]
    assert diffs[0] < diffs[1] < diffs[2]
    a = rb.perturb(img, mask, "sensor_noise", 2, rb.image_rng(0, "x/y.png", "sensor_noise", 2))[0]
    b = rb.perturb(img, mask, "sensor_noise", 2, rb.image_rng(0, "x/y.png", "sensor_noise", 2))[0]
    c = rb.perturb(img, mask, "sensor_noise", 2, rb.image_rng(0, "x/z.png", "sensor_noise", 2))[0]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_bad_perturbations_are_named():
    with pytest.raises(ValueError, match="unknown perturbation 'fog'"):
        rb.level("fog", 1)
    with pytest.raises(ValueError, match="severity must be one of"):
        rb.level("gain", 4)
    with pytest.raises(ValueError, match="unknown perturbation 'fog'"):
        rb.conditions(["gain", "fog"])


def test_excluded_border_pixels_leave_the_pixel_metrics():
    """Normal pixels outside the warped image score highest; counted as normal they would lower the
    pixel AUROC, left out (valid) they do not count at all."""
    img, mask = _square()
    _, m, valid = rb.perturb(img, mask, "rotation", 3, np.random.default_rng(0))
    score = m.astype(float) * 0.8 + 0.1
    score[~valid] = 1.0  # the border: "more anomalous" than the defect
    assert pixel_metrics(m[None], score[None])["auroc"] < 0.95
    kept = pixel_metrics(m[None], score[None], valid=valid[None])
    assert kept["auroc"] == pytest.approx(1.0) and kept["pro"] == pytest.approx(1.0)
    # the same with binned metrics
    assert pixel_metrics(m[None], score[None], bins=100, valid=valid[None])["auroc"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="valid must match"):
        pixel_metrics(m[None], score[None], valid=valid[:10])


def test_test_samples_halves_normal_and_anomalous_spread_through_the_files():
    from types import SimpleNamespace as S

    tests = [S(relpath=f"good/{i:03d}", label=0) for i in range(10)] + \
        [S(relpath=f"bad/{i:03d}", label=1) for i in range(6)]
    ds = S(test=lambda cls: tests)
    assert rb.test_samples(ds, "x") == tests
    got = rb.test_samples(ds, "x", 6)
    assert [s.relpath for s in got] == ["good/000", "good/004", "good/009", "bad/000", "bad/002", "bad/005"]
    assert len(rb.test_samples(ds, "x", 40)) == 16  # never more than there are
    with pytest.raises(ValueError, match="test_per_class"):
        rb.test_samples(ds, "x", 1)


@pytest.mark.slow
def test_robustness_table_on_smoke(smoke_base, smoke_data, tmp_path):
    from anomalysd_core.reproduce import prose, settings, summaries, tables

    over = dict(base_model=str(smoke_base), data_root=str(smoke_data), grid_scales=(1, 2),
                out_dir=str(tmp_path / "runs"))
    df = tables.robustness("smoke", classes=("brick",), perturbations=("rotation", "gain"), severities=(1, 3),
                       baselines=("patchcore",), results_dir=tmp_path / "res", workers=1, **over)
    saved = pd.read_csv(tmp_path / "res" / "robustness.csv")
    assert len(saved) == len(df)
    means = df[df["class"] == "mean"]
    assert set(means["method"]) == {"anomalysd", "proto-knn", "patchcore"}
    assert set(zip(means["perturbation"], means["severity"])) == {
        ("clean", 0), ("rotation", 1), ("rotation", 3), ("gain", 1), ("gain", 3)}
    clean = means[means["severity"] == 0]
    assert (clean["i_drop"] == 0).all()
    # the clean row is Table 1's evaluation of the same images (the same fine-tune and cache)
    t1, info = settings.run_setting("smoke", shots=1, seed=0, **over)
    assert info["finetune_reused"]
    assert clean.set_index("method").loc["anomalysd", "i_auroc"] == pytest.approx(
        t1[(t1["method"] == "anomalysd") & (t1["class"] == "brick")]["i_auroc"].iloc[0])
    prov = json.loads((tmp_path / "res" / "robustness.provenance.json").read_text())
    assert prov["runs"][0]["classes"] == ["brick"] and prov["runs"][0]["n_fresh_images"] > 0
    again = tables.robustness("smoke", classes=("brick",), perturbations=("rotation", "gain"), severities=(1, 3),
                          baselines=("patchcore",), write=False, workers=1, test_per_class=4, **over)
    assert again.attrs["runs"][0]["n_fresh_images"] == 0  # every map from the cache
    assert (again["n_test"] == 4).all() and again.attrs["runs"][0]["test_per_class"] == 4
    t = summaries.robustness_table(df)
    assert set(t["method"]) == {"AnomalySD", "Prototype kNN map", "PatchCore"}
    assert set(prose.robustness_sentences(df, "smoke")) == {"ranking", "rad", "anomalysd"}
