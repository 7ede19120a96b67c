"""Summaries of the result tables: mean ± std over seeds, per-class tables, paired bootstrap
gaps, timing and cost tables, and our numbers beside the paper's (``paper_numbers``).

Every function takes a long table of ``tables.py`` (or its run infos) and returns a small table
for the book; the sentences that state what they show are in ``prose.py``.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from .evaluate import METRIC_COLUMNS
from .paper_numbers import PAPER_ABLATIONS, REFERENCE_SETTING, paper_table1
from .tables import get_results_dir

# ----------------------------------------------------------------------------- labels and defaults
METHOD_LABELS = {"anomalysd": "AnomalySD", "anomalysd-auto": "AnomalySD, automatic λ", "proto-knn": "Prototype kNN map", "patchcore": "PatchCore",
                 "spade": "SPADE", "padim": "PaDiM", "winclip": "WinCLIP", "anomalydino": "AnomalyDINO"}


METRIC_LABELS = {"i_auroc": "i-AUROC", "i_aupr": "i-AUPR", "i_f1max": "i-F1max", "p_auroc": "p-AUROC",
                 "p_pro": "PRO", "p_f1max": "p-F1max"}


def auto_lambda_table(runs: list) -> pd.DataFrame:
    """The choices of ``noise_strength="auto"`` in run infos (``df.attrs["runs"]`` or a provenance's
    ``runs``): one row per (shots, seed, class, candidate lambda) with the selection curves
    (``pixel``, ``image``, ``criterion``), ``chosen`` (bool) and the class's selection seconds."""
    rows = []
    for r in runs or []:
        for cls, rec in (r.get("auto_lambda") or {}).items():
            for lam, crit in rec.get("criterion", {}).items():
                rows.append({"shots": r["shots"], "seed": r["seed"], "class": cls, "lambda": float(lam),
                             "pixel": rec["pixel"][lam], "image": rec["image"][lam], "criterion": crit,
                             "chosen": np.isclose(float(lam), rec["lambda"]), "seconds": rec["seconds"]})
    cols = ["shots", "seed", "class", "lambda", "pixel", "image", "criterion", "chosen", "seconds"]
    return pd.DataFrame(rows, columns=cols)


def robustness_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per method (class means, percent): clean image / pixel AUROC, the mean over every
    perturbation at the highest severity, the worst condition and the clean-to-worst drop."""
    d = df[df["class"] == "mean"]
    top = d["severity"].max()
    rows = []
    for m in [m for m in METHOD_LABELS if m in set(d["method"])]:
        x = d[d["method"] == m]
        clean = x[x["severity"] == 0].iloc[0]
        pert = x[x["severity"] > 0]
        worst = pert.loc[pert["i_auroc"].idxmin()]
        hi = pert[pert["severity"] == top]
        rows.append({"method": method_label(m), "clean i-AUROC": fmt(clean["i_auroc"] * 100),
                     "clean p-AUROC": fmt(clean["p_auroc"] * 100),
                     f"mean i-AUROC, severity {top}": fmt(hi["i_auroc"].mean() * 100),
                     f"mean p-AUROC, severity {top}": fmt(hi["p_auroc"].mean() * 100),
                     "worst condition": f"{worst['perturbation']} {int(worst['severity'])}",
                     "worst i-AUROC": fmt(worst["i_auroc"] * 100),
                     "clean-to-worst drop": fmt((clean["i_auroc"] - worst["i_auroc"]) * 100)})
    return pd.DataFrame(rows)


MEMORY_BANKS = ("patchcore", "spade", "padim", "proto-knn")


# ----------------------------------------------------------------------------- summaries and reports
def fmt(x, digits: int = 1) -> str:
    """A number as text for tables and glue ('n/a' for NaN/None)."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if not np.isfinite(x) else f"{x:.{digits}f}"


def summarise(df: pd.DataFrame, by=("method", "variant", "shots")) -> pd.DataFrame:
    """Mean and std over seeds of the class-mean rows, in percent ('93.1 ± 0.4')."""
    m = df[df["class"] == "mean"].groupby(list(by), sort=False)[METRIC_COLUMNS]
    mean, std = m.mean() * 100, m.std(ddof=0).fillna(0) * 100
    out = mean.round(1).astype(str) + " ± " + std.round(1).astype(str)
    return out.where(~mean.isna(), "n/a").reset_index()


def mean_std(df: pd.DataFrame, by=("method", "shots")) -> pd.DataFrame:
    """Long table of the class-mean rows: ``by`` columns, then ``<metric>``, ``<metric>_std`` (percent,
    population std over seeds) and ``n_seeds``."""
    d = df[df["class"] == "mean"]
    g = d.groupby(list(by), sort=False)
    mean, std = g[METRIC_COLUMNS].mean() * 100, g[METRIC_COLUMNS].std(ddof=0).fillna(0) * 100
    out = mean.join(std.add_suffix("_std"))
    out["n_seeds"] = g["seed"].nunique()
    return out.reset_index()


def method_label(m: str) -> str:
    return METHOD_LABELS.get(m, m)


def table1_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Table 1 as in the paper: one row per (shots, method), metrics as 'mean ± std' over seeds."""
    s = summarise(df, by=("shots", "method"))
    seeds = df[df["class"] == "mean"].groupby(["shots", "method"], sort=False)["seed"].nunique()
    s["seeds"] = [int(seeds.get((k, m), 0)) for k, m in zip(s["shots"], s["method"])]
    order = {m: i for i, m in enumerate(METHOD_LABELS)}
    s = s.assign(_o=s["method"].map(order)).sort_values(["shots", "_o"], kind="stable").drop(columns="_o")
    s["method"] = s["method"].map(method_label)
    return s.rename(columns=METRIC_LABELS).reset_index(drop=True)


def gap_table(scores: pd.DataFrame | None, key: str, ref: str, n: int = 1000, labels=None,
              **where) -> pd.DataFrame:
    """How sure is each difference in image AUROC to ``ref``, on these test images?

    ``scores`` are a table's per-image scores (``load_scores``), restricted to the rows where each
    column of ``where`` has its value (e.g. ``shots=1``); ``key`` names what is compared (``method``,
    ``setting``). ``metrics.bootstrap_gain`` draws the test images of each class again (paired:
    the same draw for every value and seed). Columns: the compared value (labelled with
    ``labels``, default ``METHOD_LABELS``), ``difference`` (points of class-mean image AUROC,
    averaged over the seeds), ``bootstrap sd``, ``95% interval``, ``half-width`` (half the
    interval's length), ``seeds``, and ``sure`` ("yes" when the interval leaves out 0). Empty when
    there are no scores."""
    from ..method.metrics import bootstrap_gain

    cols = [key, "difference", "bootstrap sd", "95% interval", "half-width", "seeds", "sure"]
    if scores is None or not len(scores):
        return pd.DataFrame(columns=cols)
    d = scores
    for k, v in where.items():
        d = d[d[k] == v]
    if ref not in set(d[key]):
        raise ValueError(f"gap_table: {key} {ref!r} is not in the scores (have {sorted(set(d[key]))})")
    # only the seeds at which every compared value was run (the paired draw needs the same images)
    seeds = set.intersection(*(set(g["seed"]) for _, g in d.groupby(key)))
    d = d[d["seed"].isin(seeds)]
    lab = METHOD_LABELS if labels is None else labels
    order = {v: i for i, v in enumerate(dict.fromkeys(list(lab) + list(d[key])))}  # labels' order, then the table's
    b = bootstrap_gain(d, key, ref, n)
    b = b[b[key] != ref].sort_values(key, key=lambda c: c.map(order), kind="stable")
    return pd.DataFrame({key: [lab.get(v, v) for v in b[key]],
                         "difference": [f"{g * 100:+.1f}" for g in b["gain"]],
                         "bootstrap sd": [fmt(x * 100) for x in b["sd"]],
                         "95% interval": [f"[{lo * 100:+.1f}, {hi * 100:+.1f}]" for lo, hi in zip(b["lo"], b["hi"])],
                         "half-width": [f"{(hi - lo) * 50:.1f}" for lo, hi in zip(b["lo"], b["hi"])],
                         "seeds": len(seeds),
                         "sure": ["yes" if lo > 0 or hi < 0 else "no" for lo, hi in zip(b["lo"], b["hi"])]},
                        columns=cols).reset_index(drop=True)


def table1_gaps(scores: pd.DataFrame | None, n: int = 1000) -> tuple[int | None, pd.DataFrame]:
    """``gap_table`` of Table 1: every method against AnomalySD at 1 shot (the largest shot count
    when 1 was not run); returns ``(shots, table)`` (``(None, empty)`` without scores)."""
    if scores is None or not len(scores):
        return None, gap_table(None, "method", "anomalysd")
    shots = 1 if 1 in set(scores["shots"]) else int(scores["shots"].max())
    return shots, gap_table(scores, "method", "anomalysd", n, shots=shots)


def table1_halfwidth(scores: pd.DataFrame | None, n: int = 1000) -> tuple[int | None, float]:
    """How well this build resolves a Table 1 difference: ``(shots, half-width)``, the mean over
    the methods of the half-width (points of image AUROC) of the 95% bootstrap interval of their
    difference to AnomalySD at 1 shot (``table1_gaps``); ``(None, nan)`` without scores. A margin
    smaller than this is one the test images cannot tell from zero."""
    shots, gaps = table1_gaps(scores, n)
    if not len(gaps):
        return None, float("nan")
    return shots, float(np.mean([float(h) for h in gaps["half-width"]]))


#: What each ablation's settings are compared with (the full method) and the rows left out:
#: Table 4's "prompt: hierarchical" is the same run as "mask: designed"; Table 5 compares
#: AnomalySD's inference-mask variants only.
ABLATION_REFS = {"table3": ("both", {"method": "anomalysd"}, ()),
                 "table4": ("mask: designed", {"method": "anomalysd"}, ("prompt: hierarchical",)),
                 "table5": ("ms+proto", {"method": "anomalysd"}, ())}


def ablation_gaps(name: str, scores: pd.DataFrame | None, n: int = 1000) -> pd.DataFrame:
    """``gap_table`` of an ablation (``ABLATION_REFS``): each setting's difference in image AUROC
    to the full method, with its bootstrap interval over the test images."""
    ref, where, drop = ABLATION_REFS[name]
    if scores is not None:
        scores = scores[~scores["setting"].isin(drop)]
    return gap_table(scores, "setting", ref, n, labels={}, **where)


def noise_gaps(scores: pd.DataFrame | None, default: float, n: int = 1000) -> pd.DataFrame:
    """``gap_table`` of the noise sweep: AnomalySD at each lambda against the profile's ``default``."""
    return gap_table(scores, "setting", f"lambda={float(default):g}", n, labels={}, method="anomalysd")


def per_class_table(df: pd.DataFrame, shots: int | None = None) -> pd.DataFrame:
    """i-AUROC / p-AUROC per class and method (mean over seeds, percent) at ``shots`` (default:
    the largest shot count in ``df``). Classes without pixel masks show 'n/a' for p-AUROC."""
    d = df[df["class"] != "mean"]
    shots = int(d["shots"].max()) if shots is None else shots
    d = d[d["shots"] == shots]
    g = d.groupby(["class", "method"], sort=False)[["i_auroc", "p_auroc"]].mean() * 100
    cell = g["i_auroc"].map(fmt) + " / " + g["p_auroc"].map(fmt)
    t = cell.unstack("method")
    t = t[[m for m in METHOD_LABELS if m in t.columns]].rename(columns=METHOD_LABELS)
    t.columns.name = f"{shots}-shot, i-AUROC / p-AUROC"
    return t


def beside_paper1(df: pd.DataFrame, profile: str = "mini") -> pd.DataFrame:
    """Ours (``profile``, mean ± std over seeds) beside the paper's Table 1 (MVTec-AD and VisA)
    for i-AUROC, p-AUROC and PRO; methods that only one side ran show '—' on the other."""
    ours = table1_summary(df)
    paper = paper_table1()
    keys = pd.concat([ours[["shots", "method"]], paper[["shots", "method"]]]).drop_duplicates()
    order = {v: i for i, v in enumerate(list(METHOD_LABELS.values()) + ["SD (no fine-tune)"])}
    keys = keys.sort_values(["shots", "method"], key=lambda c: c.map(order) if c.name == "method" else c,
                            kind="stable")
    out = keys.merge(ours, on=["shots", "method"], how="left").merge(paper, on=["shots", "method"], how="left")
    cols = {"i-AUROC": f"i-AUROC ({profile})", "p-AUROC": f"p-AUROC ({profile})", "PRO": f"PRO ({profile})",
            "i_auroc": "i-AUROC (paper, MVTec)", "p_auroc": "p-AUROC (paper, MVTec)", "p_pro": "PRO (paper, MVTec)",
            "v_i_auroc": "i-AUROC (paper, VisA)", "v_p_auroc": "p-AUROC (paper, VisA)"}
    out = out[["shots", "method"] + list(cols)].rename(columns=cols)
    return out.astype(object).where(out.notna(), "—").reset_index(drop=True)


def timing_table(runs: list) -> pd.DataFrame:
    """Seconds per test image per method (mean over the runs that timed it) from run infos."""
    rows = [{"method": m, "shots": r.get("shots"), "seconds": s} for r in runs or []
            for m, s in (r.get("seconds_per_image") or {}).items() if s is not None and np.isfinite(s)]
    if not rows:
        return pd.DataFrame(columns=["method", "seconds per image", "runs"])
    d = pd.DataFrame(rows)
    g = d.groupby("method", sort=False)["seconds"]
    out = pd.DataFrame({"seconds per image": g.mean(), "runs": g.size()}).reset_index()
    ref = out.loc[out["method"] == "patchcore", "seconds per image"]
    if len(ref):
        out["x PatchCore"] = (out["seconds per image"] / float(ref.iloc[0])).map(lambda v: f"{v:,.0f}")
    out["seconds per image"] = out["seconds per image"].map(lambda v: f"{v:.3g}")
    order = {m: i for i, m in enumerate(METHOD_LABELS)}
    out = out.sort_values("method", key=lambda c: c.map(order)).reset_index(drop=True)
    out["method"] = out["method"].map(method_label)
    return out


def cost_table(profile: str = "mini", results_dir=None) -> pd.DataFrame | None:
    """Seconds per test image per stage, from the inference-speed benchmark's CSVs in
    ``results/<profile>`` (``benchmarks/inference_speed.py``): one row per measured mask set
    (``bench_scaling.csv``) with the cost model's split (U-Net, VAE encode+decode, distance, the
    rest) beside the measured total, and the SD-1.5-size projection (``bench_paper_size*.csv``,
    random weights: timings only). ``None`` when the benchmark has not been run."""
    rdir = get_results_dir(profile, results_dir)
    rows = []
    speed = rdir / "bench_speed.csv"
    dev = "cpu"
    if speed.is_file():
        sp = pd.read_csv(speed).iloc[0]
        dev = f"{sp['device']} ({int(sp['threads'])} thread{'s' if int(sp['threads']) != 1 else ''})" \
            if str(sp["device"]) == "cpu" else str(sp["device"])
    scaling = rdir / "bench_scaling.csv"
    if scaling.is_file():
        d = pd.read_csv(scaling)
        for r in d[d["table"] == "mask set K"].itertuples():
            rows.append({"model": f"{profile} base model", "device": dev, "px": int(r.image_size),
                         "masks": int(r.n_masks), "U-Net calls": int(r.unet_calls),
                         "U-Net s": r.pred_unet_s, "VAE s": r.pred_vae_s, "distance s": r.pred_distance_s,
                         "other s": r.pred_fixed_s, "predicted s": r.predicted_s_per_image,
                         "measured s": r.measured_s_per_image})
    for f in sorted(rdir.glob("bench_paper_size*.csv")):
        for r in pd.read_csv(f).itertuples():
            d = str(r.device) + (f" ({int(r.threads)} threads)" if str(r.device) == "cpu" and hasattr(r, "threads") else "")
            rows.append({"model": "SD-1.5-inpainting size, random weights", "device": d,
                         "px": int(r.image_size), "masks": int(r.vae_decodes), "U-Net calls": int(r.unet_items),
                         "U-Net s": r.pred_unet_s, "VAE s": r.pred_vae_encode_s + r.pred_vae_decode_s,
                         "distance s": r.pred_distance_s, "other s": r.pred_fixed_s,
                         "predicted s": r.pred_total_s, "measured s": float("nan")})
    if not rows:
        return None
    out = pd.DataFrame(rows)
    num = ["U-Net s", "VAE s", "distance s", "other s", "predicted s", "measured s"]
    out[num] = out[num].apply(lambda c: c.map(lambda v: "—" if not np.isfinite(v) else
                                              f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"))
    return out


def same_draw_shots(runs: list) -> list[int]:
    """Shot counts > 0 at which every seed of ``runs`` (run infos with ``shot_files``) drew the same
    images for every class, and more than one seed was run."""
    by_k: dict[int, list] = {}
    for r in runs or []:
        if r.get("shots") and r.get("shot_files") is not None:
            files = {c: sorted(v) for c, v in r["shot_files"].items()}  # the same set, in any order
            by_k.setdefault(int(r["shots"]), []).append(json.dumps(files, sort_keys=True))
    return sorted(k for k, v in by_k.items() if len(v) > 1 and len(set(v)) == 1)


def disjoint_draw_shots(runs: list) -> list[int]:
    """Shot counts > 0 at which more than one seed was run and no two seeds' shots share an image
    in any class (``datasets.SHOT_PROTOCOL`` makes them so while the pool is large enough)."""
    by_k: dict[int, dict] = {}
    for r in runs or []:
        if r.get("shots") and r.get("shot_files") is not None:
            by_k.setdefault(int(r["shots"]), {})[r.get("seed")] = r["shot_files"]
    out = []
    for k, seeds in by_k.items():
        draws = list(seeds.values())
        classes = set().union(*(d.keys() for d in draws))
        if len(draws) > 1 and all(len(set().union(*(d.get(c, []) for d in draws))) ==
                                  sum(len(d.get(c, [])) for d in draws) for c in classes):
            out.append(k)
    return sorted(out)


def _delta(x) -> str:
    """A signed difference in points ('+1.2', '-0.4', '0.0'), 'n/a' for NaN."""
    x = float(x)
    if not np.isfinite(x):
        return "n/a"
    return "0.0" if round(x, 1) == 0 else f"{x:+.1f}"


def ablation_table(df: pd.DataFrame, name: str, profile: str = "mini") -> pd.DataFrame:
    """Ours (AnomalySD, class mean, percent) beside the paper's Table 3/4/5 numbers, with each side's
    difference to its full method (``REFERENCE_SETTING``)."""
    paper = PAPER_ABLATIONS[name].set_index("setting")
    d = df[(df["class"] == "mean") & (df["method"] == "anomalysd")]
    ours = d.groupby("setting", sort=False)[["i_auroc", "p_auroc"]].mean() * 100
    ref = REFERENCE_SETTING[name]
    rows = []
    for s in paper.index:
        o = ours.loc[s] if s in ours.index else pd.Series({"i_auroc": np.nan, "p_auroc": np.nan})
        r = {"setting": s, f"i-AUROC ({profile})": fmt(o["i_auroc"]), f"p-AUROC ({profile})": fmt(o["p_auroc"]),
             "i-AUROC (paper, MVTec)": fmt(paper.loc[s, "i_auroc"]),
             "p-AUROC (paper, MVTec)": fmt(paper.loc[s, "p_auroc"])}
        if ref in ours.index:
            r[f"Δ i-AUROC ({profile})"] = _delta(o["i_auroc"] - ours.loc[ref, "i_auroc"])
        r["Δ i-AUROC (paper)"] = _delta(paper.loc[s, "i_auroc"] - paper.loc[ref, "i_auroc"])
        rows.append(r)
    return pd.DataFrame(rows)


def ablation_long(df: pd.DataFrame, name: str, profile: str = "mini") -> pd.DataFrame:
    """Long table for plots: setting, source ('<profile>' / 'paper (MVTec)'), metric, value (percent)."""
    paper = PAPER_ABLATIONS[name]
    d = df[(df["class"] == "mean") & (df["method"] == "anomalysd")]
    ours = (d.groupby("setting", sort=False)[["i_auroc", "p_auroc"]].mean() * 100).reset_index()
    ours = ours[ours["setting"].isin(paper["setting"])]
    rows = []
    for src, t in ((profile, ours), ("paper (MVTec)", paper)):
        for _, r in t.iterrows():
            rows += [{"setting": r["setting"], "source": src, "metric": "image AUROC", "value": r["i_auroc"]},
                     {"setting": r["setting"], "source": src, "metric": "pixel AUROC", "value": r["p_auroc"]}]
    out = pd.DataFrame(rows)
    out["setting"] = pd.Categorical(out["setting"], categories=list(paper["setting"]), ordered=True)
    return out.sort_values(["metric", "setting", "source"]).reset_index(drop=True)


def per_class_by(df: pd.DataFrame, by: str = "setting", method: str = "anomalysd") -> pd.DataFrame:
    """i-AUROC / p-AUROC (percent) per class and ``by`` value for one method ('n/a': no pixel masks)."""
    d = df[(df["class"] != "mean") & (df["method"] == method)]
    g = d.groupby(["class", by], sort=False)[["i_auroc", "p_auroc"]].mean() * 100
    t = (g["i_auroc"].map(fmt) + " / " + g["p_auroc"].map(fmt)).unstack(by)
    t = t[list(dict.fromkeys(d[by]))]
    t.columns.name = f"{METHOD_LABELS.get(method, method)}, i-AUROC / p-AUROC"
    return t


def prototype_term_table(table5_df: pd.DataFrame, stage: pd.DataFrame) -> pd.DataFrame:
    """Per class: what the prototype term of eq (21) adds to the image AUROC (``ms+proto`` minus
    ``ms`` of Table 5) beside where its mask M^(p) falls (``diagnose.stage_table`` of the same
    model): the share of a normal and of a defective test image inside M^(p), and the share of the
    defect inside it. Percent; one row per class, then the class mean.

    Examples
    --------
    >>> t5 = pd.DataFrame({"method": "anomalysd", "class": ["a", "a"], "setting": ["ms", "ms+proto"],
    ...                    "i_auroc": [0.9, 0.6]})
    >>> st = pd.DataFrame({"class": ["a"], "proto_cover_normal": [0.05], "proto_cover_anomal": [0.02],
    ...                    "proto_hit": [0.2]})
    >>> prototype_term_table(t5, st).loc[0, ["ms", "ms+proto", "gain"]].tolist()
    [90.0, 60.0, -30.0]
    """
    d = table5_df[(table5_df["method"] == "anomalysd") & (table5_df["class"] != "mean")]
    i = d.groupby(["class", "setting"], sort=False)["i_auroc"].mean().unstack("setting") * 100
    out = pd.DataFrame({"ms": i["ms"], "ms+proto": i["ms+proto"], "gain": i["ms+proto"] - i["ms"]})
    cover = stage[stage["class"] != "mean"].set_index("class")[
        ["proto_cover_normal", "proto_cover_anomal", "proto_hit"]] * 100
    cover.columns = ["M(p) of a normal image", "M(p) of a defective image", "defect inside M(p)"]
    out = out.join(cover, how="left").reset_index().rename(columns={"index": "class"})
    mean = out.drop(columns="class").mean(numeric_only=True)
    return pd.concat([out, pd.DataFrame([{"class": "mean", **mean.to_dict()}])], ignore_index=True)


def noise_table(df: pd.DataFrame) -> pd.DataFrame:
    """AnomalySD's class-mean i/p-AUROC (percent) per noise strength lambda: mean over seeds, their
    population std (``… std``) and the number of seeds."""
    d = df[(df["class"] == "mean") & (df["method"] == "anomalysd")]
    g = d.groupby("lambda")
    t = g[["i_auroc", "p_auroc"]].mean() * 100
    sd = g[["i_auroc", "p_auroc"]].std(ddof=0).fillna(0) * 100
    t = t.rename(columns=METRIC_LABELS).join(sd.rename(columns={k: METRIC_LABELS[k] + " std" for k in sd}))
    t["seeds"] = g["seed"].nunique()
    return t.reset_index()


def noise_per_class(df: pd.DataFrame) -> pd.DataFrame:
    """Per class: image AUROC at every lambda and the lambda that maximises it."""
    d = df[(df["class"] != "mean") & (df["method"] == "anomalysd")]
    t = (d.groupby(["class", "lambda"], sort=False)["i_auroc"].mean() * 100).unstack("lambda")
    best = t.idxmax(axis=1)
    out = t.apply(lambda c: c.map(fmt))
    out.columns = [f"λ={c:g}" for c in out.columns]
    out["best λ"] = best.map(lambda v: f"{v:g}" if np.isfinite(v) else "n/a")
    return out.reset_index()
