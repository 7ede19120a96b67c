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
# # Ablation: inference masks (Table 5)
#
# ## Overview
#
# Which masks should the test image be inpainted under? Table 5 of the paper
# {cite:p}`yan2024anomalysd` compares three answers on MVTec-AD (1 shot):
#
# - **full**: one mask over the whole image, $S_{map} = D(x, \hat x_{full})$;
# - **ms**: the multi-scale grid masks, $S_{map} = S_{ms}$ (eq 18-19);
# - **ms+proto**: the multi-scale masks plus the prototype-guided mask, eq (21).
#
# All three need only the per-image intermediates of one run (the full mask is the $k = 1$ grid
# mask), so this notebook evaluates them from the same cached inpaintings: the comparison isolates
# the fusion, with every inpainting identical.
#
# On mini the prototype mask's threshold is the paper's eq (15) raised to a floor from the shots'
# own errors (`proto_floor="shots"`, see {doc}`../deviations`). With the paper's threshold the mask
# covered about a third of every normal image, and on the validation build `ms+proto` then scored
# below `ms`. Exercise 4 runs this table with the paper's threshold.
#
# ## Prerequisites
#
# | Concept | Importance | Notes |
# | --- | --- | --- |
# | {doc}`04_inference` | Necessary | $S^{(k)}$, $S_{ms}$, $S_{pg}$, $S_{map}$ |
# | {doc}`06_ablation_modules` | Helpful | the same layout for Table 3 |
#
# **Time to learn**: 10 minutes. **Run time**: seconds when {doc}`05_main_results` has run (the
# intermediates are cached), otherwise one evaluation.
#
# ## Imports

# %% tags=["parameters"]
profile = "mini"      # run profile: paper, mini or smoke
data_root = ""        # empty: the profile's benchmark (mini/smoke: built when missing)
base_model = ""       # empty: the profile's base model (smoke: a random stand-in when it is absent)
out_dir = ""          # empty: the profile's runs cache
results_dir = ""      # empty: results/PROFILE (receives table5.csv and its provenance)
shots = 1             # the paper's ablations are 1-shot
seed = 0              # one seed: the CPU budget of the mini profile
n_classes_shown = 3   # classes in the figure of section 3

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from anomalysd_core.method import features

from anomalysd_core.reproduce import params, prose, summaries, tables
from anomalysd_core.reproduce import plots
from anomalysd_core.reproduce.display import glue, html_table, shown
from anomalysd_core.config import get_config
from anomalysd_core.data.datasets import load_sample
from anomalysd_core.reproduce.evaluate import fit, intermediates_cached

over, rdir, base_note = params.notebook_setup(profile, data_root, base_model, out_dir, results_dir)
display(Markdown(base_note))
glue("shots", str(shots))
glue("seed", str(seed))
glue("profile", profile)

# %% [markdown]
# ## 1. One run, three fusions
#
# `tables.table5` evaluates the variants `full`, `ms` and `ms+proto` from the same
# intermediates ({glue:text}`shots` shot(s), seed {glue:text}`seed`: one seed, the CPU budget) and
# writes `table5.csv`; the prototype kNN map alone is in the same file for reference.

# %%
df = tables.table5(profile, seed=seed, shots=shots, results_dir=rdir, **over)
table1_df, _ = tables.load_result("table1", profile, rdir)
print(f"{len(df)} rows -> {shown(rdir / 'table5.csv')}")

# %% [markdown]
# ## 2. Ours beside the paper's Table 5
#
# Class-mean AnomalySD image and pixel AUROC (percent) and each variant's difference to
# `ms+proto`; the paper's columns are its MVTec-AD numbers. Pixel AUROC averages the classes with
# pixel masks only (the mini solar-cell classes have image labels).

# %%
table = summaries.ablation_table(df, "table5", profile)
glue("table5_beside_paper", html_table(table), display=False)
table

# %%
fig = plots.ours_vs_paper_bars(summaries.ablation_long(df, "table5", profile), profile,
                               f"inference masks: {profile} ({shots}-shot, seed {seed}) and the paper")
plt.show()

# %%
sent = prose.ablation_sentences(df, "table5", profile, table1_df)
for key in ("best_i_auroc", "best_p_auroc", "spread"):
    glue(f"t5_{key}", sent.get(key, "n/a"))
d = df[(df["class"] == "mean")].set_index("setting")
glue("t5_knn_i", summaries.fmt(100 * d.loc["proto-knn", "i_auroc"]) if "proto-knn" in d.index else "n/a")
glue("t5_knn_p", summaries.fmt(100 * d.loc["proto-knn", "p_auroc"]) if "proto-knn" in d.index else "n/a")
display(Markdown("\n\n".join(f"- {v}" for v in sent.values())))

# %% [markdown]
# How sure is each difference on these test images? Each variant's difference in image AUROC to
# `ms+proto`, with the 95% interval of a paired bootstrap over the test images
# (`summaries.ablation_gaps`, from `table5_scores.csv`); "sure" means that the interval leaves
# out 0.

# %%
gaps = summaries.ablation_gaps("table5", tables.load_scores("table5", profile, rdir))
display(html_table(gaps))
t1_shots, t1_half = summaries.table1_halfwidth(tables.load_scores("table1", profile, rdir))
glue("t5_margins", prose.margin_sentence(gaps, "setting", t1_half, t1_shots), display=False)

# %% [markdown]
# Computed from the tables above:
#
# - {glue:text}`t5_best_i_auroc`
# - {glue:text}`t5_best_p_auroc`
# - {glue:text}`t5_spread`
# - {glue:text}`t5_margins`
#
# For reference, the prototype error map used alone (no inpainting) reaches an image AUROC of
# {glue:text}`t5_knn_i` and a pixel AUROC of {glue:text}`t5_knn_p` on the same images.
#
# ## 3. What the three fusions look like
#
# One anomalous test image per class, its cached intermediates and the three maps on a common
# colour scale per row.

# %%
cfg = get_config(profile, shots=shots, seed=seed, **over)
backbone, distance = features.frozen_models(cfg)
fitted = fit(cfg, progress=False, backbone=backbone, distance=distance)   # cached
variants = ["full", "ms", "ms+proto"]
shown = fitted.classes[:n_classes_shown]
fig, axes = plots.figure_grid(len(shown), 2 + len(variants), size=1.9)
for r, c in enumerate(shown):
    s = next(s for s in fitted.dataset.test(c) if s.label == 1)
    img, gt = load_sample(s, cfg.image_size)
    inter = intermediates_cached(fitted, s, img)
    maps = {v: fitted.detector.fuse(inter, variant=v) for v in variants}
    vmax = max(float(m.S_map.max()) for m in maps.values())
    plots.show(axes[r, 0], img, f"{c}: {s.defect}")
    if gt is None:
        axes[r, 1].axis("off")
        axes[r, 1].set_title("no pixel mask", fontsize=8)
    else:
        plots.show_map(axes[r, 1], gt, "ground truth", 0, 1)
    for a, v in enumerate(variants, start=2):
        plots.show_map(axes[r, a], maps[v].S_map, f"{v}: S_I={maps[v].score:.3g}", 0, vmax, gt=gt)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. Per class

# %%
per_class = summaries.per_class_by(df[df["method"] == "anomalysd"], "setting")
glue("table5_per_class", html_table(per_class, index=True), display=False)
per_class

# %% [markdown]
# The class means hide opposite effects. Where does the prototype term help, and where does it
# hurt? `diagnose.stage_table` measures where the prototype mask $M^{(p)}$ falls on the same
# model's test images ({doc}`10_diagnosis` explains every column); `summaries.prototype_term_table`
# puts it beside each class's gain from `ms` to `ms+proto` (image AUROC, percent):

# %%
from anomalysd_core.reproduce.diagnose import stage_table

proto_tab = summaries.prototype_term_table(df, stage_table(fitted))
display(html_table(proto_tab.round(1)))
proto_text = prose.prototype_term_sentence(proto_tab, cfg.alpha)
glue("t5_proto_text", proto_text)

# %% [markdown]
# {glue:text}`t5_proto_text`
#
# So the prototype term is a bet on the shots: it pays where the $K$ normal images show what a
# normal test image may look like (objects placed alike, such as the coins and the solar cells),
# and it costs where a normal test image holds texture that no shot shows. On mini's textures the
# test crops come from the other half of the source image than the shots. The weight $\alpha$
# of the prototype term is one number for all classes, chosen on the class mean of a validation
# build; {doc}`../deviations` shows, class by class, what it cost there and where $M^{(p)}$ fell
# on the validation images.

# %% [markdown]
# ## Summary
#
# - The three inference-mask variants of Table 5 were fused from one run's cached intermediates,
#   so they differ in nothing but eq (18)-(21).
# - The sentences above compare the winner and the ordering with the paper's, from the numbers.
# - The prototype term helps the classes whose normal test images the shots resemble and hurts
#   those whose normal test images hold texture no shot shows; where $M^{(p)}$ falls on the test
#   images (section 4) says which is which.
#
# ## What's next
#
# {doc}`09_noise_strength` varies the last free inference setting, the noise strength $\lambda$.
#
# ## Exercises
#
# 1. Evaluate `ms+proto` with $\alpha \in \{0, 0.1, 0.3, 0.6, 0.9\}$ (`evaluate.evaluate(fitted,
#    alphas=[...])` reuses the cache). Mini's 0.9 was chosen on the validation build
#    (`benchmarks/fusion_alpha_validation.py`): is it also the optimum on the test images, and how
#    far apart are neighbouring values compared with the seed-to-seed spread?
# 2. Fuse only the scales $k \ge 2$ (`fuse(..., scales=...)`): is the full-image mask useful
#    inside the harmonic mean?
# 3. Replace the harmonic mean by the minimum over scales. Which variant does it resemble?
# 4. Run `tables.table5(profile, shots=1, seed=0, proto_floor="none", write=False)`: the
#    paper's threshold of eq (15). The grid inpaintings are reused from the cache; only $M^{(p)}$ is
#    inpainted again. Does `ms+proto` still beat `ms` on the test images?
