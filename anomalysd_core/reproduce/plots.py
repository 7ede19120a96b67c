"""Figures shared by the notebooks (matplotlib and seaborn); no method logic lives here.

Images are H x W x 3 float arrays in [0, 1], (3, H, W) tensors/arrays or (3, H, W) uint8 arrays
(``Intermediates.inpaintings``); maps are H x W arrays. Every function returns the figure (it
does not call ``plt.show``), so a notebook decides where it goes.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

MAP_CMAP = "inferno"     # anomaly / distance maps
GT_COLOUR = "cyan"       # ground-truth contours
MASK_COLOUR = "autumn"   # masks drawn over images


def as_image(img) -> np.ndarray:
    """Any of the image layouts above -> H x W x 3 float array in [0, 1]."""
    if hasattr(img, "detach"):
        img = img.detach().float().cpu().numpy()
    a = np.asarray(img)
    if a.ndim == 4:
        a = a[0]
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    return np.clip(a.astype(np.float32), 0, 1)


def show(ax, img, title: str = "", fontsize: int = 8) -> None:
    """An image without axes."""
    ax.imshow(as_image(img), interpolation="nearest")
    ax.set_title(title, fontsize=fontsize)
    ax.axis("off")


def show_map(ax, m, title: str = "", vmin=None, vmax=None, gt=None, fig=None, colorbar: bool = False,
             fontsize: int = 8) -> None:
    """A heat map (optionally with the ground-truth contour and a colour bar)."""
    im = ax.imshow(np.asarray(m, dtype=np.float32), cmap=MAP_CMAP, vmin=vmin, vmax=vmax,
                   interpolation="nearest")
    if gt is not None and np.asarray(gt).any():
        ax.contour(np.asarray(gt, dtype=float), levels=[0.5], colors=GT_COLOUR, linewidths=0.8)
    if colorbar and fig is not None:
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    ax.set_title(title, fontsize=fontsize)
    ax.axis("off")


def show_mask(ax, img, mask, title: str = "", gt=None, alpha: float = 0.5, fontsize: int = 8) -> None:
    """An image with a binary mask drawn over it (and the ground-truth contour)."""
    m = np.asarray(mask, dtype=bool)
    ax.imshow(as_image(img), interpolation="nearest")
    ax.imshow(np.ma.masked_where(~m, m.astype(float)), cmap=MASK_COLOUR, alpha=alpha, vmin=0, vmax=1,
              interpolation="nearest")
    if gt is not None and np.asarray(gt).any():
        ax.contour(np.asarray(gt, dtype=float), levels=[0.5], colors=GT_COLOUR, linewidths=0.8)
    ax.set_title(title, fontsize=fontsize)
    ax.axis("off")


def masked_view(img, mask) -> np.ndarray:
    """What the inpainting model sees: the hidden pixels at mid-grey ((1 - m) x + 0.5 m)."""
    x, m = as_image(img), np.asarray(mask, dtype=np.float32)[..., None]
    return x * (1 - m) + 0.5 * m


def mosaic(inpaintings, grid: np.ndarray, index: list, k: int) -> np.ndarray:
    """sum_ij M_ij^(k) x^_ij^(k): every patch of scale k taken from its own inpainting (the image
    that S^(k) of eq 18 compares with x)."""
    out = None
    for n, (kk, _, _) in enumerate(index):
        if kk != k:
            continue
        x = as_image(inpaintings[n])
        out = np.zeros_like(x) if out is None else out
        out += np.asarray(grid[n], dtype=np.float32)[..., None] * x
    return out


def figure_grid(nrows: int, ncols: int, size: float = 1.9, extra_h: float = 0.35):
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, (size + extra_h) * nrows), squeeze=False)
    return fig, axes


def loss_curves(losses: pd.DataFrame, window: int = 25, title: str = ""):
    """Fine-tuning losses (``losses.csv``: module, step, loss): raw and a rolling mean, one panel
    per module (U-Net: eq 8, decoder: eq 10)."""
    modules = list(dict.fromkeys(losses["module"]))
    fig, axes = plt.subplots(1, max(len(modules), 1), figsize=(5.2 * max(len(modules), 1), 3.2), squeeze=False)
    names = {"unet": "U-Net, eq (8): noise-prediction MSE", "decoder": "decoder, eq (10): MSE + β·perceptual"}
    for ax, mod in zip(axes[0], modules):
        d = losses[losses["module"] == mod].sort_values("step")
        w = max(1, min(window, len(d) // 5 or 1))
        ax.plot(d["step"], d["loss"], color="0.75", lw=0.8, label="per step")
        ax.plot(d["step"], d["loss"].rolling(w, min_periods=1).mean(), color="C0" if mod == "unet" else "C3",
                lw=2, label=f"rolling mean ({w} steps)")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("loss")
        ax.set_title(names.get(mod, mod), fontsize=10)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def metric_vs_shots(ours: pd.DataFrame, paper: pd.DataFrame | None = None, profile: str = "mini",
                    metrics=(("i_auroc", "image AUROC"), ("p_auroc", "pixel AUROC"))):
    """Metrics against the number of shots, one line per method.

    ``ours``: long table with columns method (label), shots, seed and the metric columns in percent
    (class-mean rows, one per seed: seaborn draws the mean and the spread over seeds). ``paper``:
    the paper's Table 1 in the same columns (MVTec-AD), drawn in a second row, labelled as the paper's.
    """
    rows = 1 + (paper is not None)
    fig, axes = plt.subplots(rows, len(metrics), figsize=(5.6 * len(metrics), 3.4 * rows), squeeze=False,
                             sharey="col")
    methods = list(dict.fromkeys(list(ours["method"]) + (list(paper["method"]) if paper is not None else [])))
    pal = dict(zip(methods, sns.color_palette("tab10", len(methods))))
    shapes = dict(zip(methods, ["o", "X", "s", "P", "D", "^", "v", "*"] * 2))
    for j, (col, name) in enumerate(metrics):
        ax = axes[0, j]
        d = ours.dropna(subset=[col])
        if len(d):
            sns.lineplot(d, x="shots", y=col, hue="method", style="method", dashes=False, errorbar="sd",
                         palette=pal, markers={m: shapes[m] for m in d["method"].unique()}, ax=ax)
        ax.set_title(f"{name}: this project ({profile}; mean ± sd over seeds)", fontsize=9)
        ax.set_ylabel(f"{name} (%)")
        ax.set_xticks(sorted(ours["shots"].unique()))
        if paper is not None:
            ax2 = axes[1, j]
            sns.lineplot(paper, x="shots", y=col, hue="method", style="method", dashes=False, palette=pal,
                         markers={m: shapes[m] for m in paper["method"].unique()}, ax=ax2)
            ax2.set_title(f"{name}: the paper's Table 1 (MVTec-AD)", fontsize=9)
            ax2.set_ylabel(f"{name} (%)")
            ax2.set_xticks(sorted(paper["shots"].unique()))
    for ax in axes.ravel():
        if ax.get_legend() is not None:
            ax.legend(fontsize=7, title=None)
    fig.tight_layout()
    return fig


def ours_vs_paper_bars(table: pd.DataFrame, profile: str = "mini", title: str = ""):
    """Grouped bars per setting: our image/pixel AUROC beside the paper's.

    ``table``: columns setting, source ('<profile>' or 'paper (MVTec)'), metric ('image AUROC' or
    'pixel AUROC') and value (percent).
    """
    metrics = list(dict.fromkeys(table["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.8 * len(metrics), 3.4), squeeze=False)
    for ax, met in zip(axes[0], metrics):
        d = table[table["metric"] == met]
        srcs = list(dict.fromkeys(table["source"]))
        order = [x for x in srcs if not str(x).startswith("paper")] + [x for x in srcs if str(x).startswith("paper")]
        sns.barplot(d, x="setting", y="value", hue="source", hue_order=order, ax=ax,
                    palette=["C0", "0.65"][:len(order)] if len(order) <= 2 else None)
        lo = np.nanmin(d["value"]) if d["value"].notna().any() else 0
        ax.set_ylim(max(0, lo - 10), 100)
        ax.set_ylabel(f"{met} (%)")
        ax.set_xlabel("")
        ax.set_title(met, fontsize=10)
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
        ax.legend(fontsize=8, title=None)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def noise_curves(df: pd.DataFrame, profile: str = "mini"):
    """i-AUROC and p-AUROC against lambda: the class mean (thick) and every class (thin), each
    averaged over the seeds of ``df`` (seaborn's band: the spread over seeds)."""
    per = df[(df["method"] == "anomalysd")].copy()
    per[["i_auroc", "p_auroc"]] = per[["i_auroc", "p_auroc"]] * 100
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for ax, (col, name) in zip(axes, (("i_auroc", "image AUROC"), ("p_auroc", "pixel AUROC"))):
        classes = per[per["class"] != "mean"].dropna(subset=[col])
        if len(classes):
            sns.lineplot(classes, x="lambda", y=col, hue="class", ax=ax, lw=1, alpha=0.7, marker="o",
                         markersize=4)
        mean = per[per["class"] == "mean"].dropna(subset=[col]).groupby("lambda")[col].mean()  # over seeds
        ax.plot(mean.index, mean.values, color="k", lw=2.5, marker="s", label="mean of classes")
        ax.set_xlabel("noise strength λ")
        ax.set_ylabel(f"{name} (%)")
        ax.set_title(f"{name} against λ ({profile}, AnomalySD)", fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def patch_at(index: list, size: int, k: int, point) -> int:
    """Position in ``index`` of the scale-k grid mask whose patch contains ``point`` = (row, col)."""
    r, c = (int(min(max(v, 0), size - 1)) for v in point)
    edges = [(i * size) // k for i in range(k + 1)]
    i = max(n for n in range(k) if edges[n] <= r)
    j = max(n for n in range(k) if edges[n] <= c)
    return index.index((k, i, j))


def centre_of(mask) -> tuple[int, int]:
    """(row, col) of a mask's centre of mass; the image centre for an empty or missing mask."""
    if mask is None or not np.asarray(mask).any():
        h = np.asarray(mask).shape[0] if mask is not None else 0
        return (h // 2, h // 2)
    rr, cc = np.nonzero(np.asarray(mask))
    return int(round(rr.mean())), int(round(cc.mean()))


def auto_lambda_curves(sel: pd.DataFrame, sweep: pd.DataFrame, profile: str = "mini"):
    """One panel per class: the selection criterion of automatic lambda on the synthetic views
    (``summaries.auto_lambda_table``) beside the test-set image and pixel AUROC of the sweep,
    which the rule never sees (both in percent, mean over seeds); a triangle marks each seed's
    choice."""
    classes = list(dict.fromkeys(sel["class"]))
    fig, axes = plt.subplots(1, len(classes), figsize=(2.6 * len(classes), 2.9), sharey=True, squeeze=False)
    test = sweep[(sweep["method"] == "anomalysd") & (sweep["class"] != "mean")]
    for ax, c in zip(axes[0], classes):
        s = sel[sel["class"] == c].groupby("lambda")["criterion"].mean() * 100
        ax.plot(s.index, s.values, color="tab:purple", marker="o", lw=2, label="selection (synthetic)")
        t = test[test["class"] == c].groupby("lambda")[["i_auroc", "p_auroc"]].mean() * 100
        ax.plot(t.index, t["i_auroc"], color="tab:blue", marker="s", ls="--", lw=1.2, label="test image AUROC")
        if t["p_auroc"].notna().any():
            ax.plot(t.index, t["p_auroc"], color="tab:green", marker="^", ls="--", lw=1.2, label="test pixel AUROC")
        chosen = sel[(sel["class"] == c) & sel["chosen"]]
        for n, (_, r) in enumerate(chosen.iterrows()):
            ax.annotate("", xy=(r["lambda"], 0.02 + 0.04 * n), xycoords=("data", "axes fraction"),
                        xytext=(r["lambda"], 0.1 + 0.04 * n), textcoords=("data", "axes fraction"),
                        arrowprops=dict(arrowstyle="-|>", color="tab:purple", lw=1))
        ax.set_title(c, fontsize=9)
        ax.set_xlabel("λ")
        ax.set_xticks(sorted(sel["lambda"].unique()))
    axes[0, 0].set_ylabel("AUROC (%)")
    handles = {}
    for ax in axes[0]:  # one legend for the figure, with every line some panel has
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), fontsize=7, loc="lower center", ncol=len(handles),
               frameon=False)
    fig.suptitle(f"automatic λ ({profile}): the rule's criterion on synthetic defects of the shots, "
                 "and the test set it never sees (arrows: each seed's choice)", fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def degradation_curves(df: pd.DataFrame, metric: str = "i_auroc", profile: str = "mini"):
    """One panel per perturbation, one line per method: the class-mean ``metric`` (percent)
    against severity, with the clean images at severity 0 (``tables.robustness``'s table)."""
    from .summaries import METHOD_LABELS, METRIC_LABELS

    d = df[df["class"] == "mean"].copy()
    clean = d[d["severity"] == 0]
    parts = []
    for name in [p for p in dict.fromkeys(d["perturbation"]) if p != "clean"]:
        parts.append(pd.concat([clean.assign(perturbation=name), d[d["perturbation"] == name]]))
    d = pd.concat(parts, ignore_index=True)
    d[metric] = d[metric] * 100
    d["method"] = d["method"].map(lambda m: METHOD_LABELS.get(m, m))
    order = [METHOD_LABELS[m] for m in METHOD_LABELS if METHOD_LABELS[m] in set(d["method"])]
    g = sns.relplot(d, x="severity", y=metric, hue="method", hue_order=order, style="method",
                    style_order=order, col="perturbation", col_wrap=min(3, d["perturbation"].nunique()),
                    kind="line", markers=True, dashes=False, height=2.3, aspect=1.3)
    g.set_titles("{col_name}")
    g.set(xticks=sorted(d["severity"].unique()))
    g.set_axis_labels("severity (0 = clean)", f"{METRIC_LABELS.get(metric, metric)} (%)")
    sns.move_legend(g, "lower center", bbox_to_anchor=(0.5, 0.0), ncol=len(order), title=None, frameon=False)
    g.figure.suptitle(f"{METRIC_LABELS.get(metric, metric)} under perturbed test images ({profile}; "
                      "the shots stay clean)", fontsize=10)
    g.figure.tight_layout(rect=(0, 0.05, 1, 1))
    return g.figure
