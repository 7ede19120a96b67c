"""The book's comparison sentences, computed from the numbers (``*_sentences``): no number in
the book's prose is typed by hand, and each sentence is true whatever the numbers are.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .paper_numbers import PAPER_ABLATIONS, paper_table1
from .summaries import (MEMORY_BANKS, METHOD_LABELS, disjoint_draw_shots, fmt, mean_std, method_label,
                        noise_per_class, noise_table, same_draw_shots)


def robustness_sentences(df: pd.DataFrame, profile: str = "mini") -> dict:
    """What the robustness table says, computed from it: the ranking by mean image-AUROC drop at the
    highest severity, whether the memory-bank methods drop less than AnomalySD (RAD's finding),
    and where AnomalySD breaks (its largest drops, by perturbation group)."""
    d = df[(df["class"] == "mean") & (df["severity"] > 0)]
    top = d["severity"].max()
    hi = d[d["severity"] == top]
    drop = hi.groupby("method")["i_drop"].mean().sort_values()
    out = {}
    if not len(drop):
        return out
    out["ranking"] = (f"Mean drop of image AUROC over the perturbations at severity {top} on {profile}, "
                      "smallest first: " + ", ".join(f"{method_label(m)} {v:+.1f}" for m, v in drop.items())
                      + " points.")
    banks = [m for m in MEMORY_BANKS if m in drop.index]
    if "anomalysd" in drop.index and banks:
        lower = [m for m in banks if drop[m] < drop["anomalysd"]]
        out["rad"] = (f"RAD's finding, memory banks hold up best: {len(lower)} of the {len(banks)} "
                      f"memory-bank methods here ({', '.join(method_label(m) for m in banks)}) drop less than "
                      f"AnomalySD ({drop['anomalysd']:+.1f}) at severity {top}"
                      + (", so it holds on this data." if len(lower) == len(banks) else
                         "; it does not hold for " + ", ".join(method_label(m) for m in banks if m not in lower) + "."))
    a = d[d["method"] == "anomalysd"]
    if len(a):
        g = a[a["severity"] == top].groupby("group")["i_drop"].mean().sort_values(ascending=False)
        w = a.loc[a["i_drop"].idxmax()]
        out["anomalysd"] = (f"AnomalySD loses most under {w['perturbation']} at severity {int(w['severity'])} "
                            f"({w['i_drop']:+.1f} points of image AUROC); by group at severity {top}: "
                            + ", ".join(f"{k} {v:+.1f}" for k, v in g.items()) + ".")
    return out


def gap_sentence(gaps: pd.DataFrame, key: str, ref_label: str) -> str:
    """One sentence from a ``gap_table``: which differences to ``ref_label`` the test images can
    tell from zero, and which they cannot."""
    if not len(gaps):
        return "No per-image scores: the differences were not bootstrapped."
    said = {"yes": [], "no": []}
    for _, r in gaps.iterrows():
        said[r["sure"]].append(f"{r[key]} ({r['difference']}, {r['95% interval']})")
    sure, unsure = said["yes"], said["no"]
    out = [f"Against {ref_label}, in points of image AUROC with the 95% bootstrap interval over the test images:"]
    if sure:
        out.append("clearly different: " + "; ".join(sure) + ".")
    if unsure:
        out.append("not distinguishable from 0 on these images: " + "; ".join(unsure) + ".")
    return " ".join(out)


def margin_sentence(gaps: pd.DataFrame, key: str, halfwidth: float, shots: int | None = None) -> str:
    """Which of a ``gap_table``'s differences are larger than ``halfwidth``, the half-width of the
    95% interval of a Table 1 difference on this build (``summaries.table1_halfwidth``), and which
    are within it, as one sentence."""
    if not len(gaps):
        return "No per-image scores: the differences were not bootstrapped."
    if not np.isfinite(halfwidth):
        return "Table 1 has not been run, so its interval's half-width is not known yet."
    big = [f"{r[key]} ({r['difference']})" for _, r in gaps.iterrows() if abs(float(r["difference"])) > halfwidth]
    small = [f"{r[key]} ({r['difference']})" for _, r in gaps.iterrows() if abs(float(r["difference"])) <= halfwidth]
    at = f" at {_shots(shots)}" if shots else ""
    out = [f"A Table 1 difference{at} is known to about ±{halfwidth:.1f} points of image AUROC on this build."]
    out.append(("Larger than that: " + "; ".join(big) + ".") if big else "No margin here is larger than that.")
    if small:
        out.append("Within it: " + "; ".join(small) + ".")
    return " ".join(out)


def _shots(k) -> str:
    return f"{int(k)} shot{'s' if int(k) != 1 else ''}"


def _seed_std(df1: pd.DataFrame | None, shots: int = 1, metric: str = "i_auroc") -> float:
    """Std over seeds (percent) of AnomalySD's class-mean ``metric`` at ``shots`` in Table 1."""
    if df1 is None or not len(df1):
        return float("nan")
    d = df1[(df1["class"] == "mean") & (df1["method"] == "anomalysd") & (df1["shots"] == shots)]
    return float(d[metric].std(ddof=0) * 100) if d["seed"].nunique() > 1 else float("nan")


def table1_sentences(df: pd.DataFrame, profile: str = "mini") -> dict:
    """Comparison sentences for Table 1, computed from ``df`` (true whatever the numbers are)."""
    ms = mean_std(df)
    paper = paper_table1()
    ran = [m for m in METHOD_LABELS if m in set(ms["method"])]
    out = {}
    a = ms[ms["method"] == "anomalysd"].sort_values("shots")
    pa = paper[paper["method"] == "AnomalySD"].sort_values("shots")
    if len(a) > 1:
        lo, hi = a.iloc[0], a.iloc[-1]
        trend = ("rises" if hi["i_auroc"] > lo["i_auroc"] else "falls" if hi["i_auroc"] < lo["i_auroc"]
                 else "stays the same")
        p_lo = pa.loc[pa["shots"] == lo["shots"], "i_auroc"]
        p_hi = pa.loc[pa["shots"] == hi["shots"], "i_auroc"]
        paper_part = (f"; in the paper it goes from {fmt(p_lo.iloc[0])} to {fmt(p_hi.iloc[0])} on MVTec-AD "
                      "over the same shot counts" if len(p_lo) and len(p_hi) else "")
        out["shots_trend"] = (
            f"On {profile}, AnomalySD's image AUROC {trend} from {fmt(lo['i_auroc'])} at "
            f"{_shots(lo['shots'])} to {fmt(hi['i_auroc'])} at {_shots(hi['shots'])} (mean over "
            f"{int(hi['n_seeds'])} seed{'s' if hi['n_seeds'] != 1 else ''}){paper_part}.")
    elif len(a):
        out["shots_trend"] = (f"On {profile}, AnomalySD was run at {_shots(a['shots'].iloc[0])} only "
                              f"(image AUROC {fmt(a['i_auroc'].iloc[0])}).")
    best = []
    for k, g in ms[ms["shots"] > 0].groupby("shots"):
        top = g.sort_values("i_auroc", ascending=False).iloc[0]
        p = paper[(paper["shots"] == k) & paper["method"].isin([method_label(m) for m in ran])]
        ptop = p.sort_values("i_auroc", ascending=False).iloc[0]["method"] if len(p) else "n/a"
        best.append(f"at {_shots(k)} the best image AUROC here is {method_label(top['method'])}'s "
                    f"({fmt(top['i_auroc'])}), in the paper {ptop}'s")
    if best:
        out["best_method"] = ("Among the methods run here, " + "; ".join(best) +
                              " (the paper's ranking is on MVTec-AD).")
    gaps = []
    for k, g in ms[ms["shots"] > 0].groupby("shots"):
        base = g[g["method"].isin(["patchcore", "spade", "padim"])]
        a_ = g[g["method"] == "anomalysd"]
        pb = paper[(paper["shots"] == k) & paper["method"].isin(["PatchCore", "SPADE", "PaDiM"])]
        pa = paper[(paper["shots"] == k) & (paper["method"] == "AnomalySD")]
        if len(base) and len(a_) and len(pb) and len(pa):
            d_ours = float(a_["i_auroc"].iloc[0] - base["i_auroc"].max())
            d_pap = float(pa["i_auroc"].iloc[0] - pb["i_auroc"].max())
            gaps.append(f"{_shots(k)}: {d_ours:+.1f} here, {d_pap:+.1f} in the paper")
    if gaps:
        out["gap"] = ("Image AUROC of AnomalySD minus the best of PatchCore, SPADE and PaDiM, in points: "
                      + "; ".join(gaps) + ".")
    s = _seed_std(df, 1)
    out["seed_std"] = (f"Across seeds, AnomalySD's 1-shot image AUROC varies with a standard deviation of "
                       f"{fmt(s)} points on {profile}." if np.isfinite(s) else
                       "Only one seed was run, so the spread over shot draws is unknown.")
    same = same_draw_shots(df.attrs.get("runs", []))
    if same:
        ks = ", ".join(map(str, same))
        out["same_draws"] = (f"At {ks} shot(s) every seed drew the same normal images, so "
                             f"the spread there comes from AnomalySD's noise draw "
                             f"alone, and the feature baselines have none.")
    else:
        apart = disjoint_draw_shots(df.attrs.get("runs", []))
        out["same_draws"] = "Every seed drew different normal images at every shot count run" + (
            f"; at {', '.join(map(str, apart))} shot(s) no two seeds share a single image (AnomalyDINO's "
            "protocol), so the spread over seeds is a spread over shot draws." if apart else ".")
    return out


def prototype_term_sentence(table: pd.DataFrame, alpha: float | None = None) -> str:
    """Which classes the prototype term helps and hurts, and where M^(p) falls on them
    (``prototype_term_table``), as one paragraph computed from the numbers; ``alpha`` is the
    weight of S_pg in eq (21)."""
    t = table[table["class"] != "mean"].dropna(subset=["gain"])
    if t.empty:
        return "No class has both `ms` and `ms+proto` rows yet."
    lose, win = t[t["gain"] < 0], t[t["gain"] > 0]
    cn, ca, hit = "M(p) of a normal image", "M(p) of a defective image", "defect inside M(p)"

    def where(r) -> str:
        if not np.isfinite(r[cn]):
            return f"{r['class']} {r['gain']:+.1f}"
        h = f", {r[hit]:.0f} % of the defect" if np.isfinite(r[hit]) else ""
        return f"{r['class']} {r['gain']:+.1f} (M(p): {r[cn]:.1f} % of a normal image, {r[ca]:.1f} % of a defective one{h})"

    parts = []
    if len(win):
        parts.append("The prototype term raises the image AUROC on "
                     + "; ".join(where(r) for _, r in win.sort_values("gain", ascending=False).iterrows()))
    if len(lose):
        parts.append("it lowers it on " + "; ".join(where(r) for _, r in lose.sort_values("gain").iterrows()))
    text = ", and ".join(parts) + "."
    text = text[0].upper() + text[1:]
    inverted = lose[lose[cn] > lose[ca]]
    if len(inverted):
        text += (f" On {', '.join(inverted['class'])} the mask covers more of a normal test image than of a "
                 "defective one: these normal images hold patches far from every patch of the shot (what "
                 "M^(p) marks), and the repainting error inside it becomes the image's score.")
    missed = lose[(lose[cn] <= lose[ca]) & (lose[hit] < 50)]
    if len(missed):
        keep = f" keeps only {1 - alpha:.0%} of S_ms there (alpha = {alpha:g})" if alpha is not None else \
            " weights S_ms down there"
        text += (f" On {', '.join(missed['class'])} the mask falls on the defective images but holds less "
                 f"than half of the defect, and the fused map{keep}, while S_ms alone scores "
                 + ", ".join(f"{r['ms']:.1f}" for _, r in missed.iterrows()) + ".")
    return text


def _concordant(ours: pd.Series, paper: pd.Series) -> tuple[int, int]:
    """Pairs of settings ordered the same way by both sides (pairs tied on either side skipped)."""
    keys = [k for k in paper.index if k in ours.index and np.isfinite(ours[k])]
    agree = n = 0
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            so, sp = np.sign(ours[a] - ours[b]), np.sign(paper[a] - paper[b])
            if so == 0 or sp == 0:
                continue
            n += 1
            agree += int(so == sp)
    return agree, n


def ablation_sentences(df: pd.DataFrame, name: str, profile: str = "mini", table1_df=None) -> dict:
    """Comparison sentences for an ablation table, computed from the numbers."""
    paper = PAPER_ABLATIONS[name].set_index("setting")
    d = df[(df["class"] == "mean") & (df["method"] == "anomalysd")]
    ours = d.groupby("setting", sort=False)[["i_auroc", "p_auroc"]].mean() * 100
    ours = ours[ours.index.isin(paper.index)]
    out = {}
    for col, what in (("i_auroc", "image"), ("p_auroc", "pixel")):
        o = ours[col].dropna()
        if not len(o):
            out[f"best_{col}"] = f"No {what} AUROC is available for this ablation on {profile} yet."
            continue
        tops = sorted(o[o == o.max()].index)
        ptops = sorted(paper[col][paper[col] == paper[col].max()].index)
        a, n = _concordant(o, paper[col])
        out[f"best_{col}"] = (
            f"Highest {what} AUROC on {profile}: {' = '.join(tops)} ({fmt(o.max())}); in the paper: "
            f"{' = '.join(ptops)} ({fmt(paper[col].max())}). The two sides order the settings the same way "
            f"in {a} of {n} pairs.")
    o = ours["i_auroc"].dropna()
    if len(o) > 1:
        spread = float(o.max() - o.min())
        s = _seed_std(table1_df, 1)
        out["spread"] = (f"The settings span {fmt(spread)} points of image AUROC on {profile} (the paper: "
                         f"{fmt(paper['i_auroc'].max() - paper['i_auroc'].min())})"
                         + (f"; for scale, changing only the seed of the shot draw moves the 1-shot image "
                            f"AUROC with a standard deviation of {fmt(s)} points (Table 1)." if np.isfinite(s)
                            else "; Table 1's seed spread is not available for scale."))
    return out


def auto_lambda_summary(table1_df: pd.DataFrame | None, sweep_df: pd.DataFrame | None,
                        shots: int = 1) -> tuple[pd.DataFrame, dict]:
    """Automatic lambda against fixed lambdas at ``shots``: a table (percent, mean ± std over
    seeds) of Table 1's fixed-lambda row, its automatic-lambda row and the best single fixed lambda
    of the sweep in hindsight (by image AUROC), and sentences that state how they compare."""
    rows, out = [], {}
    if table1_df is not None and len(table1_df):
        ms = mean_std(table1_df)
        for m in ("anomalysd", "anomalysd-auto"):
            r = ms[(ms["method"] == m) & (ms["shots"] == shots)]
            if len(r):
                r = r.iloc[0]
                rows.append({"AnomalySD": "fixed λ (Table 1)" if m == "anomalysd" else "automatic λ (Table 1)",
                             "i": r["i_auroc"], "i_std": r["i_auroc_std"], "p": r["p_auroc"],
                             "p_std": r["p_auroc_std"], "seeds": int(r["n_seeds"])})
    if sweep_df is not None and len(sweep_df):
        t = noise_table(sweep_df[sweep_df["shots"] == shots] if "shots" in sweep_df else sweep_df)
        if len(t):
            b = t.loc[t["i-AUROC"].idxmax()]
            rows.append({"AnomalySD": f"best fixed λ in hindsight (sweep: λ = {b['lambda']:g})",
                         "i": b["i-AUROC"], "i_std": b["i-AUROC std"], "p": b["p-AUROC"],
                         "p_std": b["p-AUROC std"], "seeds": int(b["seeds"])})
    tab = pd.DataFrame(rows, columns=["AnomalySD", "i", "i_std", "p", "p_std", "seeds"])
    show = pd.DataFrame({"AnomalySD": tab["AnomalySD"],
                         "i-AUROC": [f"{fmt(a)} ± {fmt(b)}" for a, b in zip(tab["i"], tab["i_std"])],
                         "p-AUROC": [f"{fmt(a)} ± {fmt(b)}" for a, b in zip(tab["p"], tab["p_std"])],
                         "seeds": tab["seeds"]})
    get = {r["AnomalySD"].split(" (")[0]: r for _, r in tab.iterrows()}
    fixed, auto = get.get("fixed λ"), get.get("automatic λ")
    best = next((r for k, r in get.items() if k.startswith("best")), None)
    if fixed is not None and auto is not None:
        di, dp = auto["i"] - fixed["i"], auto["p"] - fixed["p"]
        verdict = ("at or above the fixed λ on both metrics" if di >= 0 and dp >= 0 else
                   "below the fixed λ on " + " and ".join(n for n, d in (("image", di), ("pixel", dp)) if d < 0)
                   + " AUROC")
        out["vs_fixed"] = (f"At {_shots(shots)}, automatic λ scores {fmt(auto['i'])} / {fmt(auto['p'])} image / "
                           f"pixel AUROC against {fmt(fixed['i'])} / {fmt(fixed['p'])} with the fixed λ "
                           f"({di:+.1f} / {dp:+.1f} points): {verdict}.")
    if auto is not None and best is not None:
        gap = best["i"] - auto["i"]
        within = gap <= best["i_std"] + 1e-9
        out["vs_best"] = (f"The best single fixed λ in hindsight reaches {fmt(best['i'])} ± {fmt(best['i_std'])} "
                          f"image AUROC on the test images; automatic λ is {abs(gap):.1f} points "
                          f"{'below' if gap > 0 else 'above'} it, "
                          f"{'within' if within else 'outside'} one seed-std of it.")
    return show, out


def noise_sentences(df: pd.DataFrame, profile: str = "mini", default: float | None = None) -> dict:
    t = noise_table(df).set_index("lambda")
    out = {}
    for col, what in (("i-AUROC", "image"), ("p-AUROC", "pixel")):
        c = t[col].dropna()
        if not len(c):
            out[col] = f"No {what} AUROC is available for the sweep on {profile} yet."
            continue
        best = [f"{v:g}" for v in c[c == c.max()].index]
        out[col] = (f"On {profile} the {what} AUROC is highest at λ = {' and '.join(best)} ({fmt(c.max())}) and "
                    f"lowest at λ = {c.idxmin():g} ({fmt(c.min())}).")
    pc = noise_per_class(df)
    if len(pc):
        counts = pc["best λ"].value_counts()
        out["per_class"] = ("Per class, the best λ is " + ", ".join(
            f"{v} for {n} class{'es' if n != 1 else ''}" for v, n in counts.items()) + ".")
    if default is not None:
        out["default"] = f"The {profile} profile runs every class at λ = {default:g}."
    return out
