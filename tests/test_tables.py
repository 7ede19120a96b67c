"""``reproduce.tables``, ``summaries``, ``prose`` and ``paper_numbers``: the paper's numbers, the report helpers (on synthetic tables, fast) and the table
functions end to end at the smoke profile (results written atomically where asked, timings kept)."""
import json
import sys
import time

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from anomalysd_core.reproduce import paper_numbers, params, prose, settings, summaries, tables
from anomalysd_core.reproduce import schedule
from anomalysd_core.config import get_config
from anomalysd_core.reproduce.evaluate import METRIC_COLUMNS


# ----------------------------------------------------------------------------- synthetic tables
def _rows(method, shots, seed, values, classes=("a", "b", "solar"), setting="", variant=""):
    """Per-class rows + the class-mean row, as evaluate/run_baselines make them."""
    rows = []
    for c, v in zip(classes, values):
        r = {"setting": setting, "method": method, "variant": variant, "class": c, "shots": shots,
             "seed": seed, "n_test": 10, "n_anomalous": 5}
        r.update({m: v for m in METRIC_COLUMNS})
        if c == "solar":  # image labels only
            r.update(p_auroc=np.nan, p_pro=np.nan, p_f1max=np.nan)
        rows.append(r)
    d = pd.DataFrame(rows)
    mean = {**rows[0], "class": "mean", "n_test": 30, "n_anomalous": 15}
    mean.update(d[METRIC_COLUMNS].mean().to_dict())
    return rows + [mean]


@pytest.fixture
def t1():
    rows = []
    for seed, bump in ((0, 0.0), (1, 0.02)):
        rows += _rows("anomalysd", 0, seed, (0.6 + bump, 0.5, 0.7))
        rows += _rows("anomalysd", 1, seed, (0.9 + bump, 0.8, 0.7))
        rows += _rows("proto-knn", 1, seed, (0.8, 0.8, 0.8))
        rows += _rows("patchcore", 1, seed, (0.7, 0.7, 0.7))
    return pd.DataFrame(rows)


def test_paper_tables_are_labelled():
    p = paper_numbers.paper_table1()
    assert (p["source"] == "paper").all() and len(p) == 18
    a = p[(p["method"] == "AnomalySD") & (p["shots"] == 1)].iloc[0]
    assert a["i_auroc"] == 93.6 and a["v_i_auroc"] == 86.1
    for t in (paper_numbers.PAPER_TABLE3, paper_numbers.PAPER_TABLE4, paper_numbers.PAPER_TABLE5):
        assert (t["source"] == "paper").all()
    for name, ref in paper_numbers.REFERENCE_SETTING.items():
        assert ref in set(paper_numbers.PAPER_ABLATIONS[name]["setting"])


def test_sweep_defaults_and_parse_list():
    assert params.sweep_defaults("mini")["shots"] == (0, 1, 2, 4)
    assert params.sweep_defaults("smoke") == dict(shots=(0, 1), seeds=(0,), lambdas=(0.2, 0.5, 0.8),
                                              baselines=("patchcore", "spade", "padim"))
    assert "winclip" in params.sweep_defaults("paper")["baselines"]
    assert params.parse_list("", (0, 1)) == [0, 1]
    assert params.parse_list(None, (2,)) == [2]
    assert params.parse_list("0, 2 4", ()) == [0, 2, 4]
    assert params.parse_list([1, 2], ()) == [1, 2]
    assert params.parse_list("0.2,0.8", (), float) == [0.2, 0.8]
    assert params.parse_list("patchcore,spade", (), str) == ["patchcore", "spade"]
    assert params.parse_list(3, ()) == [3]


def test_results_dir_override(tmp_path):
    assert tables.get_results_dir("mini").parts[-2:] == ("results", "mini")
    assert tables.get_results_dir("mini", tmp_path) == tmp_path
    assert tables.get_results_dir("mini", "") == tables.get_results_dir("mini")


def test_summaries(t1):
    s = summaries.table1_summary(t1)
    assert list(s["method"]) == ["AnomalySD", "AnomalySD", "Prototype kNN map", "PatchCore"]
    assert list(s["shots"]) == [0, 1, 1, 1] and (s["seeds"] == 2).all()
    a1 = s[(s["shots"] == 1) & (s["method"] == "AnomalySD")].iloc[0]
    # class means 0.8 and ~0.8067 -> mean 80.3, population std 0.3 (percent)
    assert a1["i-AUROC"] == "80.3 ± 0.3"
    # pixel metrics average the classes with masks only: (0.9, 0.8) and (0.92, 0.8)
    assert a1["p-AUROC"] == "85.5 ± 0.5"
    ms = summaries.mean_std(t1)
    assert ms.loc[(ms["method"] == "patchcore"), "i_auroc_std"].iloc[0] == pytest.approx(0)
    pc = summaries.per_class_table(t1)
    assert pc.columns.name.startswith("1-shot")
    assert pc.loc["solar", "AnomalySD"] == "70.0 / n/a"
    assert pc.loc["a", "PatchCore"] == "70.0 / 70.0"


def test_beside_paper1(t1):
    b = summaries.beside_paper1(t1, "mini")
    row = b[(b["shots"] == 1) & (b["method"] == "AnomalySD")].iloc[0]
    assert row["i-AUROC (mini)"] == "80.3 ± 0.3" and row["i-AUROC (paper, MVTec)"] == 93.6
    knn = b[(b["method"] == "Prototype kNN map")].iloc[0]
    assert knn["i-AUROC (paper, MVTec)"] == "—"
    win = b[(b["shots"] == 4) & (b["method"] == "WinCLIP")].iloc[0]
    assert win["i-AUROC (mini)"] == "—" and win["p-AUROC (paper, VisA)"] == 97.2


def test_table1_sentences(t1):
    s = prose.table1_sentences(t1, "mini")
    assert "rises from 60.3 at 0 shots to 80.3 at 1 shot" in s["shots_trend"]
    assert "86.6 to 93.6" in s["shots_trend"]
    assert "AnomalySD's (80.3)" in s["best_method"]
    assert "+10.3 here, +10.2 in the paper" in s["gap"]
    assert "standard deviation of 0.3 points" in s["seed_std"]
    one = prose.table1_sentences(t1[t1["seed"] == 0], "mini")
    assert "Only one seed" in one["seed_std"]
    # a falling curve is called falling
    worse = t1.copy()
    worse.loc[(worse["shots"] == 0) & worse["i_auroc"].notna(), "i_auroc"] = 0.99
    assert " falls from " in prose.table1_sentences(worse, "mini")["shots_trend"]


def test_timing_table():
    runs = [{"shots": 1, "seconds_per_image": {"anomalysd": 2.0, "patchcore": 0.01, "proto-knn": 0.02}},
            {"shots": 2, "seconds_per_image": {"anomalysd": 4.0, "patchcore": 0.03}},
            {"shots": 0, "seconds_per_image": {"anomalysd": float("nan")}}]
    t = summaries.timing_table(runs).set_index("method")
    assert t.loc["AnomalySD", "seconds per image"] == "3" and t.loc["AnomalySD", "runs"] == 2
    assert t.loc["AnomalySD", "x PatchCore"] == "150"
    assert list(t.index) == ["AnomalySD", "Prototype kNN map", "PatchCore"]
    assert summaries.timing_table([]).empty


def _ablation(name, values):
    rows = []
    for setting, v in values.items():
        rows += _rows("anomalysd", 1, 0, (v, v, v), setting=setting)
        rows += _rows("proto-knn", 1, 0, (0.5, 0.5, 0.5), setting=setting)
    return pd.DataFrame(rows)


def test_ablation_table_and_sentences(t1):
    df = _ablation("table3", {"none": 0.80, "decoder only": 0.82, "denoiser only": 0.90, "both": 0.88})
    t = summaries.ablation_table(df, "table3", "mini").set_index("setting")
    assert t.loc["both", "i-AUROC (mini)"] == "88.0" and t.loc["both", "Δ i-AUROC (mini)"] == "0.0"
    assert t.loc["none", "Δ i-AUROC (mini)"] == "-8.0" and t.loc["none", "Δ i-AUROC (paper)"] == "-7.0"
    assert t.loc["denoiser only", "i-AUROC (paper, MVTec)"] == "93.2"
    s = prose.ablation_sentences(df, "table3", "mini", t1)
    assert "Highest image AUROC on mini: denoiser only (90.0); in the paper: both (93.6)" in s["best_i_auroc"]
    assert "in 5 of 6 pairs" in s["best_i_auroc"]  # only denoiser-vs-both is ordered differently
    assert "span 10.0 points" in s["spread"] and "0.3 points" in s["spread"]
    long = summaries.ablation_long(df, "table3", "mini")
    assert set(long["source"]) == {"mini", "paper (MVTec)"} and len(long) == 16
    # table 4: the two full-method rows tie on both sides
    d4 = _ablation("table4", {"mask: random": 0.7, "mask: designed": 0.8, "prompt: none": 0.6,
                              "prompt: simple": 0.75, "prompt: hierarchical": 0.8})
    s4 = prose.ablation_sentences(d4, "table4", "mini")
    assert "mask: designed = prompt: hierarchical (80.0)" in s4["best_i_auroc"]
    assert "in 8 of 9 pairs" in s4["best_i_auroc"]  # random vs simple differs
    assert "not available" in s4["spread"]
    pc = summaries.per_class_by(d4)
    assert list(pc.columns)[:2] == ["mask: random", "mask: designed"] and pc.loc["solar", "prompt: none"] == "60.0 / n/a"


def test_concordant_skips_ties():
    o = pd.Series({"a": 1.0, "b": 2.0, "c": 2.0})
    p = pd.Series({"a": 1.0, "b": 3.0, "c": 2.0})
    assert prose._concordant(o, p) == (2, 2)


def test_noise_reports():
    rows = []
    for lam, v in ((0.2, 0.6), (0.4, 0.9), (0.8, 0.7)):
        for r in _rows("anomalysd", 1, 0, (v, v - 0.1, 0.5), setting=f"lambda={lam:g}"):
            rows.append({**r, "lambda": lam})
    df = pd.DataFrame(rows)
    t = summaries.noise_table(df)
    assert list(t["lambda"]) == [0.2, 0.4, 0.8] and t["i-AUROC"].round(1).tolist() == [53.3, 73.3, 60.0]
    pc = summaries.noise_per_class(df).set_index("class")
    assert pc.loc["a", "best λ"] == "0.4" and pc.loc["a", "λ=0.4"] == "90.0"
    s = prose.noise_sentences(df, "mini", 0.4)
    assert "highest at λ = 0.4 (73.3)" in s["i-AUROC"] and "lowest at λ = 0.2" in s["i-AUROC"]
    assert s["default"] == "The mini profile runs every class at λ = 0.4."


def test_fmt_and_delta():
    assert summaries.fmt(float("nan")) == "n/a" and summaries.fmt(None) == "n/a" and summaries.fmt(93.649) == "93.6"
    assert summaries._delta(-1e-12) == "0.0" and summaries._delta(1.25) == "+1.2" and summaries._delta(-0.44) == "-0.4"


def test_load_result_missing(tmp_path):
    assert tables.load_result("table1", "smoke", tmp_path) == (None, None)


# ----------------------------------------------------------------------------- end to end (smoke)
@pytest.fixture(scope="module")
def over(smoke_base, smoke_data, tmp_path_factory):
    return dict(base_model=str(smoke_base), data_root=str(smoke_data), grid_scales=(1, 2),
                out_dir=str(tmp_path_factory.mktemp("exp-runs")))


@pytest.mark.slow
def test_table5_writes_results_and_reuses_cache(over, tmp_path):
    out = tmp_path / "results"
    df = tables.table5("smoke", results_dir=out, **over)
    saved = pd.read_csv(out / "table5.csv").fillna({"variant": ""})
    assert len(saved) == len(df) and set(saved["setting"]) == {"full", "ms", "ms+proto", "proto-knn"}
    assert not list(out.glob(".*"))  # atomic writes leave no temporary files
    prov = json.loads((out / "table5.provenance.json").read_text())
    assert prov["profile"] == "smoke" and prov["config"]["base_model"] == over["base_model"]
    run = prov["runs"][0]
    assert run["n_test_images"] == 18 and run["n_fresh_images"] == 18
    assert run["seconds_per_image"]["anomalysd"] > 0
    assert df.attrs["runs"][0]["fit_hash"] == run["fit_hash"]
    # a second run reads every intermediate from the cache and reports the stored timing
    again = tables.table5("smoke", write=False, **over)
    info = again.attrs["runs"][0]
    assert info["n_fresh_images"] == 0
    assert info["seconds_per_image"]["anomalysd"] == pytest.approx(run["seconds_per_image"]["anomalysd"])
    pd.testing.assert_frame_equal(again.reset_index(drop=True)[saved.columns].fillna({"variant": ""}),
                                  saved, check_dtype=False)
    # writing the same table again leaves both files byte-identical (stable for the book's stage cache)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    tables.table5("smoke", results_dir=out, **over)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert prov["signature"]


@pytest.mark.slow
def test_table1_baselines_and_timings(over, tmp_path):
    with pytest.warns(UserWarning, match="WinCLIP"):  # no open_clip weights here: skipped, with why
        df = tables.table1("smoke", shots=(0, 1), seeds=(0,), baselines=("patchcore", "winclip"),
                       results_dir=tmp_path, **over)
    means = df[df["class"] == "mean"]
    assert set(means.loc[means["shots"] == 0, "method"]) == {"anomalysd"}  # no bank at zero shots
    # at one shot (AUTO_SHOTS) a second AnomalySD row with noise_strength="auto"
    assert set(means.loc[means["shots"] == 1, "method"]) == {"anomalysd", "anomalysd-auto", "proto-knn", "patchcore"}
    runs = json.loads((tmp_path / "table1.provenance.json").read_text())["runs"]
    assert [r["shots"] for r in runs] == [0, 1, 1]
    assert set(runs[2]["auto_lambda"]) == set(df.loc[df["class"] != "mean", "class"])
    assert "auto_lambda" not in runs[1]
    sel = summaries.auto_lambda_table(runs)
    n_candidates = len(get_config("smoke").auto_lambdas)
    assert len(sel) == 3 * n_candidates and sel.groupby("class")["chosen"].sum().eq(1).all()
    assert "AnomalySD, automatic λ" in set(summaries.table1_summary(df)["method"])
    runs = runs[:2]
    assert set(runs[1]["seconds_per_image"]) == {"anomalysd", "patchcore", "proto-knn"}
    assert runs[1]["finetune_seconds"] and not runs[0]["finetune_seconds"]
    assert all("WinCLIP" in r["skipped_baselines"]["winclip"] for r in runs)  # zero-shot too
    t = summaries.timing_table(runs)
    assert set(t["method"]) == {"AnomalySD", "PatchCore", "Prototype kNN map"}
    summary = summaries.table1_summary(df)
    assert (summary["seeds"] == 1).all()
    # the per-image scores beside the table (not in its provenance), named as the table's rows
    assert all("image_scores" not in r for r in json.loads((tmp_path / "table1.provenance.json").read_text())["runs"])
    sc = tables.load_scores("table1", "smoke", tmp_path)
    assert list(sc.columns) == tables.SCORE_COLUMNS
    per_class = df[df["class"] != "mean"]
    counts = sc.groupby(["setting", "method", "class"]).size()
    for _, r in per_class.iterrows():
        assert counts[(r["setting"], r["method"], r["class"])] == r["n_test"]
    assert set(sc.loc[sc["setting"].str.endswith("auto lambda"), "method"]) == {"anomalysd-auto"}
    one = sc[(sc["shots"] == 1) & (sc["method"] == "patchcore")]
    got = one.groupby("class").apply(lambda g: roc_auc_score(g["label"], g["score"]), include_groups=False)
    want = per_class[(per_class["method"] == "patchcore")].set_index("class")["i_auroc"]
    assert np.allclose(got.sort_index(), want.sort_index())
    gaps = summaries.gap_table(sc, "method", "anomalysd", n=50, shots=1)
    assert set(gaps["method"]) == {"AnomalySD, automatic λ", "Prototype kNN map", "PatchCore"}
    assert (gaps["seeds"] == 1).all() and gaps["sure"].isin(["yes", "no"]).all()
    assert summaries.table1_gaps(sc, n=50)[0] == 1 and summaries.table1_gaps(sc, n=50)[1].equals(gaps)  # 1 shot when run
    assert summaries.table1_gaps(sc[sc["shots"] == 0], n=50)[0] == 0 and summaries.table1_gaps(None)[0] is None
    with pytest.raises(ValueError, match="'spade' is not in the scores"):
        summaries.gap_table(sc, "method", "spade", shots=1)


@pytest.mark.slow
def test_smoke_stand_in_base_model(monkeypatch, tmp_path):
    from anomalysd_core import config
    from anomalysd_core.method.models import read_card

    monkeypatch.setitem(config.PROFILES["smoke"], "base_model", str(tmp_path / "absent"))
    path, note = params.resolve_base_model("smoke", out_dir=str(tmp_path / "runs"))
    assert path == str(tmp_path / "runs" / "smoke" / "random-base-32") and "RANDOMLY" in note
    assert read_card(path)["random"] is True
    assert params.resolve_base_model("smoke", out_dir=str(tmp_path / "runs"))[0] == path  # reused
    assert params.resolve_base_model("smoke", "/given")[0] == "/given"
    # other profiles never fall back to random weights
    monkeypatch.setitem(config.PROFILES["mini"], "base_model", str(tmp_path / "absent"))
    assert params.resolve_base_model("mini")[0] == str(tmp_path / "absent")
    over, rdir, _ = params.notebook_setup("smoke", data_root="/d", out_dir=str(tmp_path / "runs"),
                                      results_dir=str(tmp_path / "res"))
    assert over == {"data_root": "/d", "out_dir": str(tmp_path / "runs"), "base_model": path}
    assert rdir == tmp_path / "res"


@pytest.mark.slow
def test_parallel_settings_equal_one_process(over, tmp_path, monkeypatch):
    """Two spawned worker processes give the table of one process; the two settings share one
    fine-tune, which the lock lets only one of them compute (the other reuses it)."""
    monkeypatch.delenv("ANOMALYSD_WORKERS", raising=False)
    kw = dict(lambdas=(0.3, 0.6), write=False, **{**over, "grid_scales": (1,)})
    two = tables.noise_sweep("smoke", workers=2, **{**kw, "out_dir": str(tmp_path / "two")})
    one = tables.noise_sweep("smoke", workers=1, **{**kw, "out_dir": str(tmp_path / "one")})
    pd.testing.assert_frame_equal(two.reset_index(drop=True), one.reset_index(drop=True))
    runs = two.attrs["runs"]
    assert [r["finetune_reused"] for r in runs] == [False, True]  # one fine-tune task for both
    assert [r["setting"] for r in runs] == ["lambda=0.3", "lambda=0.6"]
    # every image was scored by the class tasks and is counted in its setting's run info
    assert [r["n_fresh_images"] for r in runs] == [r["n_test_images"] for r in runs]
    assert runs[0]["stage_seconds"]["finetune"] > 0 and all(r["seconds_per_image"]["anomalysd"] > 0 for r in runs)


@pytest.mark.slow
def test_pool_scores_a_shared_cache_once(over, tmp_path, monkeypatch):
    """Two settings that differ only in how the maps are fused share their cache folder: its
    classes are scored once, and both tables come out of it."""
    monkeypatch.delenv("ANOMALYSD_WORKERS", raising=False)
    base = {**over, "grid_scales": (1,), "shots": 0, "out_dir": str(tmp_path / "runs")}
    todo, _, missing, _ = schedule.plan("smoke", base)
    assert todo is None and len(missing) == 3  # zero shots: nothing to fine-tune, 3 classes to score
    out = schedule.run_settings("smoke", [("a", base), ("b", {**base, "variants": ("ms", "full")})],
                                 settings.run_setting, workers=2)
    (da, ia), (db, ib) = out
    assert ia["n_fresh_images"] + ib["n_fresh_images"] == ia["n_test_images"] == 18
    assert set(db["variant"]) == {"ms", "full"} and set(da["variant"]) == {"ms+proto"}
    assert schedule.plan("smoke", base)[2] == []  # all cached now


@pytest.mark.slow
def test_pool_waits_for_latents_on_their_way(over, tmp_path, monkeypatch):
    """Zero shots and one shot with nothing fine-tuned (Table 3's "none") use the same U-Net, so the
    same grid latents: with both queued at once (one class: two tasks for two workers), the
    one-shot task waits and decodes them."""
    monkeypatch.delenv("ANOMALYSD_WORKERS", raising=False)
    zero = {**over, "grid_scales": (1, 2), "shots": 0, "classes": ["brick"], "out_dir": str(tmp_path / "runs")}
    none = {**zero, "shots": 1, "finetune_unet": False, "finetune_decoder": False}
    assert schedule.plan("smoke", none)[0] is None  # nothing to fine-tune: both start scoring at once
    (_, iz), (_, i_none) = schedule.run_settings("smoke", [("zero", zero), ("none", none)], settings.run_setting,
                                                   workers=2)
    assert iz["n_latents_reused"] == 0 and i_none["n_latents_reused"] == i_none["n_fresh_images"] == 6


@pytest.mark.slow
def test_pool_failure_names_the_setting(over, tmp_path, monkeypatch):
    monkeypatch.delenv("ANOMALYSD_WORKERS", raising=False)
    good = {**over, "grid_scales": (1,), "shots": 0, "out_dir": str(tmp_path / "runs")}
    bad = {**good, "shots": 1, "base_model": str(tmp_path / "no-such-model")}
    with pytest.raises(RuntimeError, match=r"setting 'broken'.*\(fit\).*no-such-model"):
        schedule.run_settings("smoke", [("fine", good), ("broken", bad)], settings.run_setting, workers=2)


def test_default_workers(monkeypatch):
    monkeypatch.setenv("ANOMALYSD_WORKERS", "3")
    assert schedule.default_workers("smoke", 2) == 2 and schedule.default_workers("smoke", 5) == 3
    monkeypatch.setenv("ANOMALYSD_WORKERS", "two")
    with pytest.raises(ValueError, match="ANOMALYSD_WORKERS"):
        schedule.default_workers("smoke", 2)
    monkeypatch.delenv("ANOMALYSD_WORKERS")
    assert 1 <= schedule.default_workers("smoke", 4, baselines=("patchcore",)) <= 4
    assert schedule.default_workers("smoke", 1) == 1


def test_identical_settings_run_once(monkeypatch):
    calls = []

    def fake(profile, setting="", **over):  # records the calls; the table is a one-row frame
        calls.append(setting)
        return pd.DataFrame({"setting": [setting], "v": [over["x"]]}), {"setting": setting, "wall_seconds": 0}

    out = schedule.run_settings("smoke", [("a", {"x": 1}), ("b", {"x": 2}), ("c", {"x": 1})], fake, workers=1)
    assert calls == ["a", "b"]
    assert [d["setting"][0] for d, _ in out] == ["a", "b", "c"] and out[2][0]["v"][0] == 1
    assert [i["setting"] for _, i in out] == ["a", "b", "c"]


def test_cost_table_from_benchmark_files(tmp_path):
    assert summaries.cost_table("mini", tmp_path) is None  # benchmark not run: the page shows a placeholder
    pd.DataFrame([{"device": "cpu", "threads": 1}]).to_csv(tmp_path / "bench_speed.csv", index=False)
    pd.DataFrame([{"table": "mask set K", "image_size": 64, "n_masks": 86, "unet_calls": 430,
                   "pred_unet_s": 5.0, "pred_vae_s": 4.0, "pred_distance_s": 0.2, "pred_fixed_s": 0.1,
                   "predicted_s_per_image": 9.3, "measured_s_per_image": 10.0},
                  {"table": "DDIM steps", "image_size": 64, "n_masks": 86, "unet_calls": 86,
                   "pred_unet_s": 1.0, "pred_vae_s": 4.0, "pred_distance_s": 0.2, "pred_fixed_s": 0.1,
                   "predicted_s_per_image": 5.3, "measured_s_per_image": 6.0}]).to_csv(
        tmp_path / "bench_scaling.csv", index=False)
    pd.DataFrame([{"device": "cpu", "threads": 2, "image_size": 512, "vae_decodes": 86, "unet_items": 1806,
                   "pred_unet_s": 27000.0, "pred_vae_encode_s": 1900.0, "pred_vae_decode_s": 3400.0,
                   "pred_distance_s": 28.0, "pred_fixed_s": 8.0, "pred_total_s": 32336.0}]).to_csv(
        tmp_path / "bench_paper_size.csv", index=False)
    t = summaries.cost_table("mini", tmp_path)
    assert list(t["masks"]) == [86, 86] and list(t["U-Net calls"]) == [430, 1806]  # mask-set rows only
    assert t.loc[0, "device"] == "cpu (1 thread)" and t.loc[1, "device"] == "cpu (2 threads)"
    assert t.loc[1, "VAE s"] == "5,300" and t.loc[1, "measured s"] == "—" and t.loc[0, "measured s"] == "10"


def test_same_draw_shots():
    runs = [{"shots": 4, "seed": s, "shot_files": {"a": order}} for s, order in
            enumerate((["1", "2"], ["2", "1"], ["1", "2"]))]
    runs += [{"shots": 1, "seed": s, "shot_files": {"a": [str(s)]}} for s in range(3)]
    runs += [{"shots": 0, "seed": s, "shot_files": {"a": []}} for s in range(3)]
    assert summaries.same_draw_shots(runs) == [4]
    assert summaries.same_draw_shots(runs[:1]) == []  # one seed: nothing to compare


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_pool_workers_exit_with_a_killed_parent(over, tmp_path):
    """A killed notebook kernel or run does not leave its workers computing on."""
    psutil = pytest.importorskip("psutil")
    import signal
    import subprocess

    base = {**over, "shots": 0, "out_dir": str(tmp_path / "runs")}
    grid = [(f"seed {s}", {**base, "seed": s}) for s in range(4)]
    code = ("import json, sys; from anomalysd_core.reproduce import schedule, settings; "
            "schedule.run_settings('smoke', json.loads(sys.argv[1]), settings.run_setting, workers=2)")
    def cmdline(proc) -> str:  # "" for a short-lived child that ended while being listed
        try:
            return " ".join(proc.cmdline())
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            return ""

    parent = subprocess.Popen([sys.executable, "-c", code, json.dumps(grid)])
    try:
        deadline = time.time() + 120
        workers = []
        while time.time() < deadline and len(workers) < 2:  # the pool's 2 workers (+ its tracker)
            workers = [c for c in psutil.Process(parent.pid).children(recursive=True)
                       if "spawn_main" in cmdline(c)]
            time.sleep(0.2)
        assert len(workers) == 2, "the pool did not start"
        while time.time() < deadline and not list((tmp_path / "runs").rglob("*.npz")):
            time.sleep(0.2)  # until the workers compute (past their initialiser)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        gone, alive = psutil.wait_procs(workers, timeout=20)
        assert not alive, [p.pid for p in alive]
    finally:
        parent.kill()


@pytest.mark.slow
def test_pool_one_module_fits_wait_for_the_full_one(over, tmp_path, monkeypatch):
    """On a fresh folder Table 3's one-module rows wait for "both" and take its modules."""
    monkeypatch.delenv("ANOMALYSD_WORKERS", raising=False)
    df = tables.table3("smoke", write=False, workers=2, **{**over, "grid_scales": (1,), "out_dir": str(tmp_path / "r")})
    runs = {r["setting"]: r for r in df.attrs["runs"]}
    full = runs["both"]
    assert full["finetune_adopted"] == {} and set(full["finetune_seconds"]) == {"unet_s", "decoder_s"}
    donor = "fit-" + full["fit_hash"]
    assert runs["decoder only"]["finetune_adopted"] == {"vae": donor}
    assert runs["denoiser only"]["finetune_adopted"] == {"unet": donor}
    assert not runs["decoder only"]["finetune_seconds"] and not runs["denoiser only"]["finetune_seconds"]
    # each U-Net denoises once: "decoder only" decodes the latents of "none" (the base U-Net) and
    # "denoiser only" those of "both" (pending tasks with the same latents are waited for)
    n = full["n_test_images"]
    assert {s: r["n_latents_reused"] for s, r in runs.items()} == \
        {"none": 0, "decoder only": n, "denoiser only": n, "both": 0}
    assert all(r["n_fresh_images"] == n for r in runs.values())


def test_table1_runs_the_zero_shot_row_at_its_own_seeds(monkeypatch):
    seen = {}

    def collect(profile, name, grid, seeds, write, **kw):
        seen.update(settings=grid, extra=kw)
        return pd.DataFrame()

    monkeypatch.setattr(tables, "_collect", collect)
    tables.table1("smoke", shots=(0, 1, 2), seeds=(0, 1, 2), zero_shot_seeds=(0,), write=False)
    plain = [(o["shots"], o["seed"]) for label, o in seen["settings"] if "auto" not in label]
    assert plain == [(0, 0), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    auto = [(o["shots"], o["seed"]) for label, o in seen["settings"] if "auto" in label]
    assert auto == [(1, 0), (1, 1), (1, 2)]
    assert seen["extra"]["zero_shot_seeds"] == [0]
    tables.table1("smoke", shots=(0, 1), seeds=(3, 4), write=False)  # default: the same seeds as the rest
    assert [(o["shots"], o["seed"]) for _, o in seen["settings"]][:2] == [(0, 3), (0, 4)]
    assert params.sweep_defaults("mini")["zero_shot_seeds"] == (0,)


def test_ablation_gaps_compare_with_the_full_method_and_leave_out_its_copies():
    rng = np.random.default_rng(0)
    rows = []
    for setting, good in (("mask: random", 0.0), ("mask: designed", 1.0), ("prompt: hierarchical", 1.0)):
        for c in ("a", "b"):
            for i in range(10):
                y = int(i < 5)
                rows.append(dict(setting=setting, shots=1, seed=0, method="anomalysd", variant="", file=f"{i}.png",
                                 label=y, score=float(y * good + good * rng.normal(0, 0.01)), **{"class": c}))
    sc = pd.DataFrame(rows)
    with_knn = pd.concat([sc, sc.assign(method="proto-knn", score=0.0)])  # each setting's kNN map rows too
    gaps = summaries.ablation_gaps("table4", with_knn, n=100)
    assert list(gaps["setting"]) == ["mask: random"]  # the hierarchical prompt is the same run
    r = gaps.iloc[0]
    assert float(r["difference"]) == -50.0 and r["sure"] == "yes"  # 0.5 (all tied) against 1.0
    assert "clearly different: mask: random" in prose.gap_sentence(gaps, "setting", "the full method")
    five = sc.assign(setting=sc["setting"].map({"mask: random": "full", "mask: designed": "ms+proto",
                                                "prompt: hierarchical": "ms"}))
    five = pd.concat([five, five[five["setting"] == "full"].assign(setting="proto-knn", method="proto-knn")])
    assert set(summaries.ablation_gaps("table5", five, n=50)["setting"]) == {"full", "ms"}  # AnomalySD's variants only
    assert summaries.ablation_gaps("table3", None).empty


def test_noise_gaps_compare_each_lambda_with_the_default():
    rows = [dict(setting=f"lambda={lam:g}", shots=1, seed=s, method=m, variant="", file=f"{i}.png", label=int(i < 4),
                 score=float(i < 4) if lam == 0.2 else 0.0, **{"class": "x"})
            for lam in (0.2, 0.4) for s in (0, 1) for m in ("anomalysd", "proto-knn") for i in range(8)]
    gaps = summaries.noise_gaps(pd.DataFrame(rows), 0.4, n=50)
    assert list(gaps["setting"]) == ["lambda=0.2"] and gaps["difference"].iloc[0] == "+50.0"
    assert (gaps["seeds"] == 2).all()


def test_prototype_term_table_and_sentence_name_the_classes_it_helps_and_hurts():
    t5 = pd.DataFrame([{"method": "anomalysd", "class": c, "setting": v, "i_auroc": i}
                       for c, ms, mp in (("coins", 0.7, 0.9), ("grass", 0.7, 0.3), ("brick", 0.95, 0.7))
                       for v, i in (("ms", ms), ("ms+proto", mp))])
    stage = pd.DataFrame({"class": ["coins", "grass", "brick", "mean"],
                          "proto_cover_normal": [0.03, 0.05, 0.01, 0.03],
                          "proto_cover_anomal": [0.06, 0.02, 0.015, 0.03],
                          "proto_hit": [0.75, 0.2, 0.35, 0.43]})
    t = summaries.prototype_term_table(t5, stage).set_index("class")
    assert t.loc["grass", "gain"] == pytest.approx(-40.0) and t.loc["coins", "M(p) of a defective image"] == pytest.approx(6.0)
    assert t.loc["mean", "gain"] == pytest.approx((20 - 40 - 25) / 3)
    s = prose.prototype_term_sentence(t.reset_index(), alpha=0.9)
    assert s.startswith("The prototype term raises the image AUROC on coins +20.0")
    assert "it lowers it on grass -40.0" in s and s.index("grass -40.0") < s.index("brick -25.0")
    assert "On grass the mask covers more of a normal test image than of a defective one" in s
    assert "On brick the mask falls on the defective images" in s and "keeps only 10% of S_ms" in s
    assert "S_ms alone scores 95.0" in s
    assert prose.prototype_term_sentence(t.iloc[:0].reset_index()).startswith("No class")
