"""End-to-end ``fit`` + ``evaluate`` with the smoke profile on a random-weight mini base model."""
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anomalysd_core.reproduce import evaluate as ev
from anomalysd_core.config import get_config

VARIANTS = ("ms+proto", "ms", "full")


@pytest.fixture(scope="module")
def smoke_cfg(smoke_base, smoke_data, tmp_path_factory):
    return get_config("smoke", base_model=str(smoke_base), data_root=str(smoke_data),
                      out_dir=str(tmp_path_factory.mktemp("smoke-runs")), grid_scales=(1, 2))


def denoise_calls(monkeypatch) -> list:
    """A list that records how many masks each ``scoring.denoise`` call inpaints."""
    from anomalysd_core.method import scoring

    calls, real = [], scoring.denoise

    def spy(comp, x, masks, *a, **k):
        calls.append(masks.shape[0])
        return real(comp, x, masks, *a, **k)

    monkeypatch.setattr(scoring, "denoise", spy)
    return calls


@pytest.fixture(scope="module")
def first(smoke_cfg, tmp_path_factory):
    fitted = ev.fit(smoke_cfg, progress=False)
    out = tmp_path_factory.mktemp("eval") / "results"
    t0 = time.perf_counter()
    df = ev.evaluate(fitted, variants=VARIANTS, progress=False, out_dir=out)
    return fitted, df, out, time.perf_counter() - t0


def test_metrics_table(first):
    fitted, df, out, _ = first
    saved = pd.read_csv(out / "metrics.csv")
    assert len(saved) == len(df) == 4 * 4  # (3 variants + kNN baseline) x (3 classes + mean)
    classes = ["brick", "coins", "solar_mono"]
    assert fitted.classes == classes
    for (method, variant), g in saved.fillna({"variant": ""}).groupby(["method", "variant"]):
        assert list(g["class"]) == classes + ["mean"], (method, variant)
        per = g.set_index("class")
        assert per.loc["mean", "n_test"] == per.loc[classes, "n_test"].sum() == 18
        # image metrics for every class; pixel metrics only where masks exist (not solar cells)
        assert per[["i_auroc", "i_aupr", "i_f1max"]].notna().all().all()
        assert per.loc[["brick", "coins"], ["p_auroc", "p_pro", "p_f1max"]].notna().all().all()
        assert per.loc["solar_mono", ["p_auroc", "p_pro", "p_f1max"]].isna().all()
        # the mean row averages pixel metrics over the classes that have them
        assert per.loc["mean", "p_auroc"] == pytest.approx(per.loc[["brick", "coins"], "p_auroc"].mean())
        assert per.loc["mean", "i_auroc"] == pytest.approx(per.loc[classes, "i_auroc"].mean())
    assert set(saved["method"]) == {"anomalysd", "proto-knn"}
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == 4 * 18 and scores["score"].notna().all()


def test_provenance(first, smoke_data):
    fitted, _, out, _ = first
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["profile"] == "smoke" and prov["config"]["grid_scales"] == [1, 2]
    assert prov["commit"] and prov["commit"] != "" and prov["versions"]["torch"]
    assert set(prov["shot_files"]) == set(fitted.classes)
    for cls, files in prov["shot_files"].items():
        assert len(files) == 1 and (Path(smoke_data) / files[0]).is_file(), files
        assert files[0].startswith(f"{cls}/train/good/")
    for stage in ("load", "finetune", "prototypes", "score", "evaluate_total"):
        assert prov["stage_seconds"][stage] >= 0, stage
    assert prov["n_test_images"] == 18 and prov["seconds_per_image"] > 0
    assert prov["finetune"]["reused"] is False and prov["fit_hash"] == fitted.fit_hash


def test_second_evaluate_hits_the_cache(first, tmp_path, monkeypatch):
    fitted, df, _, seconds = first

    def boom(*a, **k):
        raise AssertionError("cached intermediates must not be recomputed")

    monkeypatch.setattr(fitted.detector, "intermediates", boom)
    t0 = time.perf_counter()
    df2 = ev.evaluate(fitted, variants=VARIANTS, progress=False, out_dir=tmp_path)
    assert time.perf_counter() - t0 < seconds
    pd.testing.assert_frame_equal(df2, df)  # the same numbers, bit for bit


def test_failure_mid_run_writes_nothing(first, tmp_path, monkeypatch):
    fitted = first[0]
    calls = {"n": 0}
    orig = ev.intermediates_cached

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 8:  # in the second class
            raise RuntimeError("simulated crash")
        return orig(*a, **k)

    monkeypatch.setattr(ev, "intermediates_cached", flaky)
    out = tmp_path / "results"
    with pytest.raises(RuntimeError, match="simulated crash"):
        ev.evaluate(fitted, variants=VARIANTS, progress=False, out_dir=out)
    assert not (out / "metrics.csv").exists()
    assert not out.exists() or not any(out.iterdir())  # no partial or temporary files either


def test_zero_shot_has_no_prototypes(smoke_cfg):
    """K = 0: no fine-tune, no prototype mask; ms+proto falls back to ms (Sec. 4.3, Table 1)."""
    from dataclasses import replace

    cfg = replace(smoke_cfg, shots=0, classes=["brick"])
    fitted = ev.fit(cfg, progress=False)
    assert fitted.detector.banks == {} and fitted.finetune_info == {}
    assert fitted.fit_hash.endswith("-base") and fitted.shot_files == {"brick": []}
    df = ev.evaluate(fitted, variants=("ms+proto", "ms"), progress=False)
    assert set(df["method"]) == {"anomalysd"}  # no error map, no kNN baseline
    a = df[df["variant"] == "ms+proto"][ev.METRIC_COLUMNS].to_numpy()
    b = df[df["variant"] == "ms"][ev.METRIC_COLUMNS].to_numpy()
    np.testing.assert_array_equal(a, b)


def test_git_commit_ignores_results_folder(tmp_path):
    """A regeneration rewrites results/ while it runs: the provenance's commit stays clean; a code
    change marks it dirty."""
    import subprocess

    from anomalysd_core.utils import git_commit

    def git(*a):
        subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "t.csv").write_text("a\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    sha = git_commit(tmp_path)
    assert sha != "unknown" and not sha.endswith("+dirty")
    (tmp_path / "results" / "t.csv").write_text("b\n")
    assert git_commit(tmp_path) == sha
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == sha + "+dirty"


def test_one_decoder_decodes_the_latents_of_another(first, smoke_cfg, tmp_path, monkeypatch):
    """A setting that differs from a scored one only in its decoder (Table 3's "denoiser only"
    beside "both") denoises nothing but M^(p): it decodes the stored grid latents, and its table
    equals the one it gets computing everything on a fresh folder."""
    from dataclasses import replace

    full = smoke_cfg  # scored by ``first``: 1 shot, U-Net and decoder fine-tuned
    unet_only = replace(full, finetune_decoder=False)
    assert ev.latent_dir(unet_only) == ev.latent_dir(full) != ev.latent_dir(replace(full, prompt_design="simple"))
    assert ev.latent_dir(replace(full, finetune_unet=False)) == ev.latent_dir(replace(full, shots=0)) \
        != ev.latent_dir(replace(full, shots=0, seed=1))
    n_grid = len(first[0].detector.index)
    assert all(len(list((ev.latent_dir(full) / c).glob("*.npz"))) == 6 for c in first[0].classes)

    denoised = denoise_calls(monkeypatch)
    fitted = ev.fit(unet_only, progress=False)
    assert fitted.finetune_info["adopted"] == {"unet": "fit-" + first[0].fit_hash}
    reused = ev.evaluate(fitted, variants=VARIANTS, progress=False)
    assert fitted.counts["latents_reused"] == 18 and denoised == [1] * 18  # M^(p) only
    assert "score" not in fitted.timer.stages and fitted.timer.stages["score_from_latents"] > 0

    denoised.clear()
    fresh_cfg = replace(unet_only, out_dir=str(tmp_path / "fresh"))
    fresh_fit = ev.fit(fresh_cfg, progress=False)
    fresh = ev.evaluate(fresh_fit, variants=VARIANTS, progress=False)
    assert fresh_fit.counts == {} and denoised == [n_grid + 1] * 18
    pd.testing.assert_frame_equal(reused, fresh, atol=1e-4)
    assert not reused.equals(first[1])  # the decoder does change the maps


def test_latents_of_another_grid_are_refused(first, smoke_cfg, tmp_path):
    from dataclasses import replace

    cfg = replace(smoke_cfg, out_dir=str(tmp_path), shots=0)
    fitted = ev.fit(cfg, progress=False)
    sample = fitted.dataset.test("brick")[0]
    lf = ev.latent_file(cfg, sample)
    lf.parent.mkdir(parents=True)
    np.savez(lf, z=np.zeros((3, 4, 8, 8), np.float32))
    img, _ = ev.data_mod.load_sample(sample, cfg.image_size)
    with pytest.raises(ValueError, match=r"latents of 3 masks, the grid has 5"):
        ev.intermediates_cached(fitted, sample, img)
    assert not ev.cache_file(cfg, sample).exists()


def test_knn_map_keeps_the_baselines_blur_whatever_anomalysd_uses():
    """The prototype kNN map is a baseline: its blur is PatchCore's (sigma 4 at 512 px), not
    AnomalySD's ``blur_sigma_512`` (8 on mini), so changing AnomalySD's blur never moves it."""
    import torch
    import torch.nn.functional as F

    from anomalysd_core.method.baselines import BLUR_SIGMA_512
    from anomalysd_core.method.scoring import blur

    assert get_config("mini").blur_sigma_512 != BLUR_SIGMA_512
    E = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    up = F.interpolate(torch.from_numpy(E)[None, None], size=(64, 64), mode="bilinear",
                       align_corners=False)[0, 0].numpy()
    got = ev.proto_map(E, 64)
    np.testing.assert_allclose(got, blur(up, BLUR_SIGMA_512 * 64 / 512), rtol=1e-6)
    assert not np.allclose(got, blur(up, get_config("mini").blur_sigma), rtol=1e-4)


def test_shot_floor_shrinks_the_prototype_mask_and_reuses_the_grid_latents(first, smoke_cfg, monkeypatch):
    """``proto_floor="shots"`` changes only M^(p): the grid latents of the paper's threshold are
    decoded again (one new inpainting per image), the error maps are the same, and every floored
    mask lies inside the paper's mask (its threshold is never lower)."""
    from dataclasses import replace

    floored = replace(smoke_cfg, proto_floor="shots")
    assert ev.latent_dir(floored) == ev.latent_dir(smoke_cfg)
    assert ev.cache_dir(floored) != ev.cache_dir(smoke_cfg)
    denoised = denoise_calls(monkeypatch)
    fitted = ev.fit(floored, progress=False)
    assert set(fitted.detector.floors) == set(fitted.classes) and min(fitted.detector.floors.values()) > 0
    ev.evaluate(fitted, variants=VARIANTS, progress=False)
    assert denoised == [1] * 18  # M^(p) only: the grid latents come from ``first``
    smaller = 0
    for cls, sample in ev.test_items(fitted):
        a = np.load(ev.cache_file(smoke_cfg, sample))
        b = np.load(ev.cache_file(floored, sample))
        np.testing.assert_array_equal(a["error_map"], b["error_map"])
        assert not (b["proto_mask"] & ~a["proto_mask"]).any()
        smaller += int(b["proto_mask"].sum() < a["proto_mask"].sum())
    assert smaller > 0
