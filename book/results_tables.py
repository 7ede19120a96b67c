# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Results files of this build
#
# This page is generated: the book runner executes it after the other notebooks and it reads
# every CSV file of `results/<profile>/`. Other pages ({doc}`../results`, {doc}`../reproduce`)
# show its tables through glue keys, so the numbers in the prose always come from these files.
#
# Glue keys defined here (all always present, with a placeholder when a file is missing):
# `profile`, `results_dir`, `result_files_table`, `n_result_files`, `notebook_times_table`,
# `notebook_total_seconds`, `stage_times_table`, `metrics_table`, `profiles_table` and, for every
# profile P, `P_image_size`, `P_steps` and `P_n_masks`; from the paper-table results
# (`table1.csv`, `table3.csv`, `table4.csv`, `table5.csv`, `noise_sweep.csv`, written by notebooks
# 05-09): `provenance_table`, `table1_summary`, `table1_beside_paper`, `table1_per_class`,
# `table1_timing`, `table1_plot`, `t1_*` sentences, `cost_table` (from the `bench_*.csv` of the speed benchmark), `tableN_beside_paper` and `tN_*` sentences for
# N = 3, 4, 5, `noise_table`, `noise_per_class`, `noise_*_text` sentences and `n_seeds`, `shots`,
# `ablation_shots`, `ablation_seed`.

# %% tags=["parameters"]
profile = "mini"     # run profile whose results are shown
results_dir = ""     # empty: results/PROFILE under the repository root

# %%
from pathlib import Path

import pandas as pd

from anomalysd_core.reproduce.display import glue, html_table, shown
from anomalysd_core.config import REPO_ROOT

rdir = Path(results_dir) if results_dir else REPO_ROOT / "results" / profile
files = sorted(p for p in rdir.glob("*.csv") if not p.name.startswith(".")) if rdir.is_dir() else []
result_tables = {p.name: pd.read_csv(p) for p in files}
glue("profile", profile)
glue("results_dir", f"results/{profile}")
glue("n_result_files", str(len(result_tables)))
listing = pd.DataFrame([{"file": n, "rows": len(t), "columns": ", ".join(map(str, t.columns[:8]))
                         + (", ..." if len(t.columns) > 8 else "")} for n, t in result_tables.items()],
                       columns=["file", "rows", "columns"])
if listing.empty:
    listing = pd.DataFrame([{"file": "(none yet)", "rows": 0, "columns": ""}])
glue("result_files_table", html_table(listing), display=False)
listing


# %%
def placeholder(what: str, how: str) -> pd.DataFrame:
    return pd.DataFrame([{"status": f"no {what} in results/{profile} yet", "how to make it": how}])


times = result_tables.get("notebook_times.csv")
if times is not None and len(times):
    times = times.sort_values("notebook").reset_index(drop=True)
    glue("notebook_total_seconds", f"{times['seconds'].sum():.0f}")
else:
    times = placeholder("notebook_times.csv", f"python -m anomalysd_core.reproduce.book --profile {profile}")
    glue("notebook_total_seconds", "n/a")
glue("notebook_times_table", html_table(times), display=False)
times

# %% [markdown]
# Stage times written by the pipeline (any other CSV whose name contains `time`):

# %%
stage = [t.assign(file=n) for n, t in result_tables.items() if "time" in n and n != "notebook_times.csv"]
stage_times = (pd.concat(stage, ignore_index=True) if stage else
               placeholder("stage timing file", f"anomalysd evaluate --profile {profile}"))
glue("stage_times_table", html_table(stage_times), display=False)
stage_times

# %% [markdown]
# Metrics (every `metrics*.csv`, scores in percent):

# %%
metric_files = [n for n in result_tables if n.startswith("metrics")]
if metric_files:
    metrics = pd.concat([result_tables[n].assign(file=n) for n in metric_files], ignore_index=True)
    num = [c for c in metrics.columns if c.startswith(("i_", "p_"))]
    metrics[num] = (100 * metrics[num]).round(1)
else:
    metrics = placeholder("metrics.csv", f"anomalysd evaluate --profile {profile}")
glue("metrics_table", html_table(metrics), display=False)
metrics

# %% [markdown]
# The run profiles, as `anomalysd_core/config.py` defines them (shown on {doc}`../reproduce`):

# %%
from anomalysd_core.config import PROFILES, get_config

fields = ["dataset", "data_root", "image_size", "base_model", "text_encoder", "backbone", "distance",
          "unet_steps", "unet_epochs", "decoder_steps", "decoder_epochs", "num_inference_steps",
          "grid_scales", "noise_strength", "shots"]
profiles_table = pd.DataFrame({p: {f: shown(getattr(get_config(p), f)) if f in ("data_root", "base_model")
                                  else str(getattr(get_config(p), f)) for f in fields} for p in PROFILES})
profiles_table.index.name = "field"
glue("profiles_table", html_table(profiles_table, index=True), display=False)
profiles_table
for p in PROFILES:
    c = get_config(p)
    glue(f"{p}_image_size", str(c.image_size))
    glue(f"{p}_steps", str(c.num_inference_steps))
    glue(f"{p}_n_masks", str(sum(k * k for k in c.grid_scales)))


# %% [markdown]
# ## The paper's tables, rebuilt
#
# The results of notebooks 05-09 (`table1.csv`, `table3.csv`, `table4.csv`, `table5.csv`,
# `noise_sweep.csv`), each beside the paper's numbers, with the comparison sentences computed from
# them by `anomalysd_core.reproduce.summaries` and `prose`. A missing file gives a placeholder that names the notebook
# that makes it.

# %%
import matplotlib.pyplot as plt

from anomalysd_core.reproduce import paper_numbers, prose, summaries, tables
from anomalysd_core.reproduce import plots

MAKERS = {"table1": "05_main_results", "table3": "06_ablation_modules", "table4": "07_ablation_design",
          "table5": "08_ablation_masks", "noise_sweep": "09_noise_strength", "diagnosis": "10_diagnosis",
          "robustness": "11_robustness"}
loaded = {name: tables.load_result(name, profile, rdir) for name in MAKERS}


def missing(name: str) -> pd.DataFrame:
    return placeholder(f"{name}.csv", f"run notebooks/{MAKERS[name]}.py "
                       f"(python -m anomalysd_core.reproduce.book --profile {profile} --only {MAKERS[name][:2]})")


def not_yet(name: str) -> str:
    return (f"Not available: results/{profile}/{name}.csv has not been made yet "
            f"(notebook {MAKERS[name]}).")


prov_rows = []
for name, (df, info) in loaded.items():
    if df is None:
        prov_rows.append({"file": f"{name}.csv", "profile": "(missing)", "created (UTC)": "", "commit": "",
                          "image size": "", "base model": "", "seeds": "", "hours": ""})
        continue
    cfg_d = info.get("config", {})
    prov_rows.append({"file": f"{name}.csv", "profile": info.get("profile", "?"),
                      "created (UTC)": info.get("created", ""), "commit": info.get("commit", ""),
                      "image size": cfg_d.get("image_size", ""), "base model": shown(cfg_d.get("base_model", "")),
                      "seeds": ", ".join(map(str, info.get("seeds", []))),
                      "hours": summaries.fmt(info.get("wall_seconds", float("nan")) / 3600, 2)})
provenance_table = pd.DataFrame(prov_rows)
glue("provenance_table", html_table(provenance_table), display=False)
provenance_table

# %% [markdown]
# ### Table 1

# %%
t1, t1_info = loaded["table1"]
if t1 is not None:
    t1_summary, t1_beside = summaries.table1_summary(t1), summaries.beside_paper1(t1, profile)
    t1_per_class, t1_timing = summaries.per_class_table(t1), summaries.timing_table(t1.attrs.get("runs", []))
    t1_sent = prose.table1_sentences(t1, profile)
    glue("n_seeds", str(t1["seed"].nunique()))
    glue("shots", ", ".join(str(k) for k in sorted(t1["shots"].unique())))
    mean_rows = t1[t1["class"] == "mean"].copy()
    mean_rows["method"] = mean_rows["method"].map(summaries.METHOD_LABELS)
    mean_rows[["i_auroc", "p_auroc"]] *= 100
    paper1 = paper_numbers.paper_table1()
    paper1 = paper1[paper1["method"].isin(set(mean_rows["method"]) | {"WinCLIP"})]
    fig = plots.metric_vs_shots(mean_rows, paper1, profile)
    glue("table1_plot", fig, display=False)
    plt.close(fig)
else:
    t1_summary = t1_beside = t1_per_class = t1_timing = missing("table1")
    t1_sent = {}
    glue("n_seeds", "n/a")
    glue("shots", "n/a")
    fig, ax = plt.subplots(figsize=(4, 1))
    ax.text(0.5, 0.5, f"no table1.csv for {profile} yet", ha="center", va="center")
    ax.axis("off")
    glue("table1_plot", fig, display=False)
    plt.close(fig)
glue("table1_summary", html_table(t1_summary), display=False)
glue("table1_beside_paper", html_table(t1_beside), display=False)
glue("table1_per_class", html_table(t1_per_class, index=t1 is not None), display=False)
glue("table1_timing", html_table(t1_timing), display=False)
cost = summaries.cost_table(profile, rdir)
if cost is None:
    cost = placeholder("bench_scaling.csv", f"python benchmarks/inference_speed.py --profile {profile}")
glue("cost_table", html_table(cost), display=False)

# the paper-size head-to-head measured on a GPU (benchmarks/paper_speed.py), when one has been run
gdir = tables.get_results_dir("gpu")
gpu_tables = {}  # the CSVs read, by name
for key, name, cols in (
        ("gpu_speed", "bench_paper_speed", ["gpu", "dtype", "engine", "mode", "s_per_image", "peak_gib",
                                            "tflop_per_image", "fraction_of_peak", "speedup_vs_naive",
                                            "max_abs_diff_vs_eager", "compile_s", "mvtec_test_hours",
                                            "visa_test_hours"]),
        ("gpu_finetune", "bench_paper_finetune", ["gpu", "dtype", "batch", "s_per_step", "paper_finetune_minutes"])):
    f = gdir / f"{name}.csv"
    if f.is_file():
        gpu_tables[name] = pd.read_csv(f)
    g = gpu_tables[name][cols].round(3) if name in gpu_tables else pd.DataFrame([{
        "status": f"no results/gpu/{name}.csv yet: no GPU has run it",
        "how to make it": "python benchmarks/paper_speed.py --device cuda"}])
    glue(key, html_table(g), display=False)


def gpu_sentence(speed: pd.DataFrame) -> str:
    """The GPU head-to-head in words, from ``bench_paper_speed.csv``'s first dtype."""
    first = speed[speed["dtype"] == speed["dtype"].iloc[0]].set_index(["engine", "mode"])
    eager, naive = first.loc[("batched inpaint", "eager")], first.loc[("one pipeline call per mask", "eager")]
    text = (f"On the {eager['gpu']} in {speed['dtype'].iloc[0]}, our batched engine inpaints one image in "
            f"{eager['s_per_image']:.2f} s ({eager['fraction_of_peak']:.0%} of the measured peak), "
            f"{eager['speedup_vs_naive']:.1f}x faster than one pipeline call per mask "
            f"({naive['s_per_image']:.1f} s, timed on {int(naive['naive_masks_timed'])} of the "
            f"{int(naive['n_masks'])} masks and scaled).")
    for (engine, mode), r in first.iterrows():
        if engine != "batched inpaint" or mode == "eager":
            continue
        how = "faster" if r["s_per_image"] < eager["s_per_image"] else "slower"
        what = ("With channels-last weights alone" if mode == "channels_last" else
                f"Compiled (mode {mode}, after {r['compile_s']:.0f} s of compiling)")
        text += (f" {what} it takes {r['s_per_image']:.2f} s, {how} than eager, at {r['fraction_of_peak']:.0%} "
                 f"of peak (largest difference to the eager inpaintings {r['max_abs_diff_vs_eager']:.1e}).")
    best = first.xs("batched inpaint", level="engine")["s_per_image"].idxmin()
    r = first.loc[("batched inpaint", best)]
    return text + (f" At the fastest variant's speed ({best}), MVTec-AD's test set takes {r['mvtec_test_hours']:.1f} h "
                   f"and VisA's {r['visa_test_hours']:.1f} h.")


glue("gpu_summary", gpu_sentence(gpu_tables["bench_paper_speed"]) if "bench_paper_speed" in gpu_tables else
     "No GPU has run benchmarks/paper_speed.py for these results yet.")
for key in ("shots_trend", "best_method", "gap", "seed_std", "same_draws"):
    glue(f"t1_{key}", t1_sent.get(key, not_yet("table1")))
t1_scores = tables.load_scores("table1", profile, rdir)
if t1 is not None and t1_scores is not None:
    gap_shots, t1_gaps = summaries.table1_gaps(t1_scores)
    glue("t1_gap_text", prose.gap_sentence(t1_gaps, "method", f"AnomalySD at {gap_shots} shot(s)"))
else:
    t1_gaps = missing("table1")
    glue("t1_gap_text", not_yet("table1"))
glue("table1_gaps", html_table(t1_gaps), display=False)
t1_half_shots, t1_half = summaries.table1_halfwidth(t1_scores) if t1_scores is not None else (None, float("nan"))
glue("t1_halfwidth", f"±{t1_half:.1f}" if t1_half == t1_half else "n/a")
pc = t1_gaps[t1_gaps["method"] == summaries.method_label("patchcore")] if "method" in t1_gaps else t1_gaps.iloc[:0]
glue("t1_patchcore_interval", (f"{pc['difference'].iloc[0]} {pc['95% interval'].iloc[0]}, half-width "
                               f"{pc['half-width'].iloc[0]}") if len(pc) else "n/a")
t1_beside

# %% [markdown]
# ### Tables 3, 4 and 5

# %%
ablation_meta = []
for n in (3, 4, 5):
    name = f"table{n}"
    df, info = loaded[name]
    if df is not None:
        glue(f"{name}_beside_paper", html_table(summaries.ablation_table(df, name, profile)), display=False)
        sent = prose.ablation_sentences(df, name, profile, t1)
        ablation_meta.append((int(df["shots"].iloc[0]), int(df["seed"].iloc[0])))
    else:
        glue(f"{name}_beside_paper", html_table(missing(name)), display=False)
        sent = {}
    for key in ("best_i_auroc", "best_p_auroc", "spread"):
        glue(f"t{n}_{key}", sent.get(key, not_yet(name)))
    scores = tables.load_scores(name, profile, rdir)
    gaps = summaries.ablation_gaps(name, scores) if df is not None and scores is not None else missing(name)
    glue(f"{name}_gaps", html_table(gaps), display=False)
    glue(f"{name}_margins", prose.margin_sentence(gaps, "setting", t1_half, t1_half_shots)
         if df is not None and scores is not None else not_yet(name))
meta = sorted(set(ablation_meta))
glue("ablation_shots", ", ".join(str(k) for k, _ in meta) if meta else "n/a")
glue("ablation_seed", ", ".join(str(s) for _, s in meta) if meta else "n/a")

# %% [markdown]
# ### Noise strength

# %%
ns, _ = loaded["noise_sweep"]
if ns is not None:
    glue("noise_table", html_table(summaries.noise_table(ns).round(1)), display=False)
    glue("noise_per_class", html_table(summaries.noise_per_class(ns)), display=False)
    n_sent = prose.noise_sentences(ns, profile, get_config(profile).noise_strength)
    ns_scores = tables.load_scores("noise_sweep", profile, rdir)
    n_gaps = (summaries.noise_gaps(ns_scores, get_config(profile).noise_strength)
              if ns_scores is not None else missing("noise_sweep"))
    glue("noise_gaps", html_table(n_gaps), display=False)
    glue("noise_margins", prose.margin_sentence(n_gaps, "setting", t1_half, t1_half_shots)
         if ns_scores is not None else not_yet("noise_sweep"))
else:
    glue("noise_gaps", html_table(missing("noise_sweep")), display=False)
    glue("noise_margins", not_yet("noise_sweep"))
    glue("noise_table", html_table(missing("noise_sweep")), display=False)
    glue("noise_per_class", html_table(missing("noise_sweep")), display=False)
    n_sent = {}
for key in ("i-AUROC", "p-AUROC", "per_class", "default"):
    glue(f"noise_{key.replace('-', '_')}_text", n_sent.get(key, not_yet("noise_sweep")))


def glue_study(key: str, name: str, table, script: str = "") -> None:
    """Glue ``table(df)`` of ``results/<profile>/<name>.csv`` (a validation study of
    ``benchmarks/<script or name>.py``) as ``key``, or a note naming the script that makes the CSV."""
    csv = rdir / f"{name}.csv"
    out = table(pd.read_csv(csv)) if csv.is_file() else pd.DataFrame({"note": [
        f"results/{profile}/{name}.csv is made by benchmarks/{script or name}.py"]})
    glue(key, html_table(out), display=False)


def _auto_table(v):
    v = (v.groupby(["rule", "seed"])[["i_auroc", "p_auroc"]].mean().groupby("rule").mean() * 100).round(1)
    return v.rename(columns={"i_auroc": "i-AUROC (validation)", "p_auroc": "p-AUROC (validation)"}).reset_index()


def _image_slash_pixel(study, by: list):
    """'image / pixel' AUROC in percent per ``by``: class means per seed, then the mean over seeds."""
    m = study.groupby(by + ["seed"])[["i_auroc", "p_auroc"]].mean().groupby(by).mean() * 100
    return m["i_auroc"].map("{:.1f}".format) + " / " + m["p_auroc"].map("{:.1f}".format)


def _blur_table(b):
    b = _image_slash_pixel(b, ["method", "blur_sigma_512"]).unstack()
    b.columns = [f"σ₅₁₂ = {c:g}" for c in b.columns]
    return b.reset_index()


def _floor_table(fl):
    cols = ["i_auroc", "p_auroc", "proto_cover_normal", "proto_cover_anomal", "proto_hit"]
    fl = (fl.groupby(["variant", "proto_floor", "seed"])[cols].mean().groupby(["variant", "proto_floor"]).mean()
          * 100).round(1).rename(columns={
              "i_auroc": "i-AUROC", "p_auroc": "p-AUROC", "proto_cover_normal": "M^(p) cover, normal (%)",
              "proto_cover_anomal": "M^(p) cover, anomalous (%)", "proto_hit": "defect inside M^(p) (%)"})
    fl = fl.drop(index=("ms", "shots"), errors="ignore").rename(index={"none": "eq 15 as in the paper",
                                                                      "shots": "floor from the shots"})
    fl = fl.reset_index()
    fl.loc[fl["variant"] == "ms", ["proto_floor"] + list(fl.columns[4:])] = ["(no M^(p))"] + [float("nan")] * 3
    return fl


def _alpha_table(a):
    a = _image_slash_pixel(a, ["alpha"]).to_frame().T
    a.columns = [f"α = {c:g}" for c in a.columns]
    return a.rename(index={0: "ms+proto"}).reset_index(drop=True)


def _top_table(t):
    t = t.groupby(["method", "top", "seed"])["i_auroc"].mean().groupby(["method", "top"]).mean() * 100
    t = t.map("{:.1f}".format).unstack()
    t.columns = ["max (the paper)" if c == 0 else f"top {c * 100:g} %" for c in t.columns]
    return t.rename(index={"anomalysd": "AnomalySD", "protoknn": "prototype kNN map"}).reset_index()


def _choice_table(c):
    pct = lambda v: f"{v * 100:+.1f}"  # noqa: E731
    return pd.DataFrame({"setting": c["choice"], "mini": c["mini"].astype(str), "paper": c["paper"].astype(str),
                         "gain in i-AUROC": c["i_gain"].map(pct), "sd over image draws": (c["i_sd"] * 100).map("{:.1f}".format),
                         "95 % interval": [f"[{pct(lo)}, {pct(hi)}]" for lo, hi in zip(c["i_lo"], c["i_hi"])],
                         "gain in p-AUROC": c["p_gain"].map(pct)})


# how the automatic-lambda criterion, mini's map blur and its floor on eq 15 were chosen
# (data/mini-val), with the first choice of alpha and the first choice-noise study
glue_study("auto_validation", "auto_lambda_validation", _auto_table)
glue_study("blur_validation", "map_blur_validation", _blur_table)
glue_study("floor_validation", "proto_floor_validation", _floor_table)
glue_study("alpha_validation", "fusion_alpha_validation", _alpha_table)
glue_study("choice_noise", "choice_noise_validation", _choice_table)
# the three-times larger validation build (data build-mini --val-scale 3): alpha and the image
# score chosen there, then every choice's noise and the automatic-lambda rule checked there
glue_study("choice_noise_x3", "val-x3/choice_noise_validation", _choice_table, "choice_noise_validation")
glue_study("alpha_validation_x3", "val-x3/fusion_alpha_validation", _alpha_table, "fusion_alpha_validation")
glue_study("image_score_x3", "val-x3/image_score_validation", _top_table, "image_score_validation")
glue_study("auto_validation_x3", "val-x3/auto_lambda_validation", _auto_table, "auto_lambda_validation")
# the held-out build (data build-mini --val-scale 3 --holdout): textures' shots and test crops
# from disjoint regions, as in the test build; the same studies again, and where M^(p) falls
glue_study("alpha_validation_x3h", "val-x3h/fusion_alpha_validation", _alpha_table, "fusion_alpha_validation")
glue_study("image_score_x3h", "val-x3h/image_score_validation", _top_table, "image_score_validation")
glue_study("choice_noise_x3h", "val-x3h/choice_noise_validation", _choice_table, "choice_noise_validation")
glue_study("auto_validation_x3h", "val-x3h/auto_lambda_validation", _auto_table, "auto_lambda_validation")

# mini build version 4's validation build (data/mini-val: 16 training normals, 48 test images per
# class), with mini's choices as they are: every study run again there, and the fine-tune's border
for key, name, table in (("blur_validation_v4", "map_blur_validation", _blur_table),
                         ("floor_validation_v4", "proto_floor_validation", _floor_table),
                         ("alpha_validation_v4", "fusion_alpha_validation", _alpha_table),
                         ("image_score_v4", "image_score_validation", _top_table),
                         ("choice_noise_v4", "choice_noise_validation", _choice_table),
                         ("auto_validation_v4", "auto_lambda_validation", _auto_table)):
    glue_study(key, f"val-v4/{name}", table, name)


def _border_table(b):
    """Per border fill: image / pixel AUROC and the normal maps' border ratio, class means per
    seed, then mean and standard deviation over seeds (percent; the ratio as it is)."""
    m = b.groupby(["border", "seed"])[["i_auroc", "p_auroc", "border_ratio"]].mean()
    mean, sd = m.groupby("border").mean(), m.groupby("border").std()
    out = pd.DataFrame({label: [f"{mean.loc[k, c] * f:.{d}f} ± {sd.loc[k, c] * f:.{d}f}" for k in mean.index]
                        for label, c, f, d in (("i-AUROC", "i_auroc", 100, 1), ("p-AUROC", "p_auroc", 100, 1),
                                               ("border / middle of a normal map", "border_ratio", 1, 2))},
                       index=mean.index.map({"black": "black (TF.affine's fill; mini)",
                                            "reflect": "mirrored (augment='reflect'; paper)"}.get))
    return out.rename_axis("corners of the warp").reset_index()


glue_study("augment_border_v4", "val-v4/augment_border_validation", _border_table, "augment_border_validation")


def _builds_table(name: str, cell, test=None):
    """One column per validation build (``cell(df)``: a Series per class) and, if given, the test
    images' (``test``), side by side; a note where a build's CSV is missing."""
    cols = {}
    for build, label in (("val-x3", "validation x3"), ("val-x3h", "held-out validation x3"),
                         ("val-v4", "validation, build 4")):
        csv = rdir / build / f"{name}.csv"
        if csv.is_file():
            cols[label] = cell(pd.read_csv(csv))
    if test is not None:
        cols["test images (seed 0)"] = test
    if not cols:
        return pd.DataFrame({"note": [f"results/{profile}/val-x3*/{name}.csv are made by benchmarks/{name}.py"]})
    return pd.DataFrame(cols).rename_axis("class").reset_index()


def _alpha_by_class(a, alphas=(0.1, 0.9)):
    """'image AUROC at the first / at the last of ``alphas``' per class (mean over seeds)."""
    m = a[a["alpha"].isin(alphas)].groupby(["class", "alpha"])["i_auroc"].mean().unstack() * 100
    return m[alphas[0]].map("{:.1f}".format) + " → " + m[alphas[-1]].map("{:.1f}".format)


def _cover(st):
    """'M^(p) share of a normal / of a defective image' (percent) per class, mean over seeds."""
    m = st[st["class"] != "mean"].groupby("class")[["proto_cover_normal", "proto_cover_anomal"]].mean() * 100
    return m["proto_cover_normal"].map("{:.1f}".format) + " / " + m["proto_cover_anomal"].map("{:.1f}".format)


glue("alpha_by_class", html_table(_builds_table("fusion_alpha_validation", _alpha_by_class)), display=False)
diag = loaded.get("diagnosis", (None, None))[0]
diag_test = _cover(diag[diag["model"] == diag["model"].iloc[-1]]) if diag is not None else None
glue("proto_cover_builds", html_table(_builds_table("stage_validation", _cover, diag_test)), display=False)

# automatic lambda (ours): Table 1's automatic row against its fixed row and the sweep's best
auto_table, auto_sent = prose.auto_lambda_summary(loaded["table1"][0], ns)
glue("auto_summary", html_table(auto_table if len(auto_table) else missing("table1")), display=False)
for key in ("vs_fixed", "vs_best"):
    glue(f"auto_{key}_text", auto_sent.get(key, not_yet("table1")))

# %% [markdown]
# ### Robustness (ours)

# %%
rob, _ = loaded["robustness"]
if rob is not None:
    glue("rob_summary", html_table(summaries.robustness_table(rob)), display=False)
    r_sent = prose.robustness_sentences(rob, profile)
else:
    glue("rob_summary", html_table(missing("robustness")), display=False)
    r_sent = {}
for key in ("ranking", "rad", "anomalysd"):
    glue(f"rob_{key}_text", r_sent.get(key, not_yet("robustness")))
