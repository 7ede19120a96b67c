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
# # Inference, stage by stage
#
# ## Overview
#
# At test time AnomalySD {cite:p}`yan2024anomalysd` inpaints the image many times and asks where
# the inpaintings disagree with it (Sec. 4.2-4.3). This notebook follows one anomalous test image
# through every stage, with the fine-tuned model of {doc}`03_finetuning`, in the spirit of the
# paper's Fig. 2:
#
# 1. the multi-scale grid masks $M^{(k)}_{ij}$ and one inpainting per mask (eq 11);
# 2. the distance maps $D(x, \hat x)$ (eq 16-17: LPIPS in the paper; on mini the colour difference
#    after a 1-pixel blur, chosen on the validation build: see {doc}`../deviations` and
#    {doc}`10_diagnosis`);
# 3. the per-scale maps $S^{(k)}$ (eq 18) and their harmonic mean $S_{ms}$ (eq 19);
# 4. the prototype error map $E$ (eq 14), its threshold $r$ and mask $M^{(p)}$ (eq 15), the
#    prototype inpainting and $S_{pg}$ (eq 20);
# 5. the fused, blurred map $S_{map}$ (eq 21) and the image score $S_I$, the paper's $\max S_{map}$;
#
# and then, like the paper's Fig. 3, puts normal and anomalous images of several classes side by
# side with their ground truth.
#
# ## Prerequisites
#
# | Concept | Importance | Notes |
# | --- | --- | --- |
# | {doc}`02_masks_and_prompts` | Necessary | grid masks, prototype mask |
# | {doc}`03_finetuning` | Necessary | the model used here |
# | Harmonic mean | Helpful | section 3 |
#
# **Time to learn**: 25 minutes. **Run time**: about a minute on a CPU for the mini profile.
#
# ## Imports

# %% tags=["parameters"]
profile = "mini"         # run profile: paper, mini or smoke
data_root = ""           # empty: the profile's benchmark (mini/smoke: built when missing)
base_model = ""          # empty: the profile's base model (smoke: a random stand-in when it is absent)
out_dir = ""             # empty: the profile's runs cache
walk_class = "coins"     # class of the image followed through every stage (needs pixel masks)
n_classes_fig3 = 4       # classes in the normal-vs-anomalous figure
seed = 0

# %%
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from IPython.display import Markdown, display

from anomalysd_core.method import features

from anomalysd_core.reproduce import params
from anomalysd_core.reproduce import plots
from anomalysd_core.method import prototypes as P
from anomalysd_core.reproduce.display import glue
from anomalysd_core.config import get_config
from anomalysd_core.data.datasets import load_sample
from anomalysd_core.reproduce.evaluate import fit
from anomalysd_core.method.scoring import harmonic_mean

over, _, base_note = params.notebook_setup(profile, data_root, base_model, out_dir)
cfg = get_config(profile, seed=seed, **over)
display(Markdown(base_note))
backbone, distance = features.frozen_models(cfg)
fitted = fit(cfg, progress=False, backbone=backbone, distance=distance)   # cached fine-tune
det, ds, size = fitted.detector, fitted.dataset, cfg.image_size
print(f"profile {cfg.profile}: {cfg.shots}-shot fit {fitted.fit_hash}; {size} px; grid scales "
      f"{cfg.grid_scales}; lambda {cfg.noise_strength}; {cfg.num_inference_steps} DDIM steps")

# %% [markdown]
# ## 1. Masks and inpaintings
#
# `AnomalySD.intermediates` does the expensive work for one image: it builds $M^{(p)}$, inpaints the
# image under every grid mask and under $M^{(p)}$ in batched U-Net calls, and measures $D$ for each
# inpainting. With `keep_inpaintings=True` it also returns the inpaintings themselves. Below: one
# mask per scale (the patch holding the defect's centre), what the model sees, what it paints and
# the distance map of that inpainting.

# %%
wcls = walk_class if walk_class in fitted.classes and ds.has_pixel_masks(walk_class) else next(
    c for c in fitted.classes if ds.has_pixel_masks(c))
sample = next(s for s in ds.test(wcls) if s.label == 1 and s.mask_path)
img, gt = load_sample(sample, size)
inter = det.intermediates(img, wcls, seed=cfg.seed, keep_inpaintings=True)
sm = det.fuse(inter)
grid, index = det.grid_np, inter.index
n_grid = len(index)
glue("n_masks", str(n_grid + (inter.proto_mask is not None)))
glue("n_grid_masks", str(n_grid))
glue("walk_class", wcls)
glue("walk_defect", sample.defect)
print(f"{wcls}/{sample.defect}: {n_grid} grid masks + {int(inter.proto_mask is not None)} prototype mask; "
      f"inpaintings {inter.inpaintings.shape}, distance maps {inter.D_grid.shape}")

centre = plots.centre_of(gt)
picked = [plots.patch_at(index, size, k, centre) for k in cfg.grid_scales]
vmax = float(np.percentile(inter.D_grid, 99.5))
fig, axes = plots.figure_grid(len(picked), 4, size=1.9)
for r, n in enumerate(picked):
    k, i, j = index[n]
    plots.show_mask(axes[r, 0], img, grid[n], f"M_{i}{j}^({k}) of {k * k}", gt=gt)
    plots.show(axes[r, 1], plots.masked_view(img, grid[n]), "input (1 - m) x")
    plots.show(axes[r, 2], inter.inpaintings[n], "inpainting x^")
    plots.show_map(axes[r, 3], inter.D_grid[n], "D(x, x^)", 0, vmax, gt=gt)
fig.suptitle(f"one mask per scale on {wcls}/{sample.defect} (cyan: ground truth)", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# Each inpainting is a whole image: the model repaints everything, guided by the visible pixels
# (through $z_o$ of eq 7). Only the hidden patch of each mask is used in the next step, where the
# model had to invent the content. Putting every patch of one scale back together from its own
# inpainting gives the "normal-looking" image that scale compares $x$ with:

# %%
fig, axes = plots.figure_grid(1, len(cfg.grid_scales) + 1, size=2.1)
plots.show(axes[0, 0], img, "test image x")
for a, k in enumerate(cfg.grid_scales, start=1):
    plots.show(axes[0, a], plots.mosaic(inter.inpaintings, grid, index, k), f"patches of k = {k}")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2-3. From distance maps to $S^{(k)}$ and $S_{ms}$
#
# $S^{(k)} = \sum_{ij} M^{(k)}_{ij} \odot D(x, \hat x^{(k)}_{ij})$ (eq 18) keeps, for every pixel,
# the distance of the inpainting in which that pixel was hidden. Large masks catch large defects but
# repaint more freely (false alarms); small masks stay close to the image but can copy a small
# defect from its surroundings. The harmonic mean $S_{ms} = |K| / \sum_k 1/S^{(k)}$ (eq 19) is high
# only where every scale agrees.

# %%
per = sm.per_scale
fig, axes = plots.figure_grid(1, len(per) + 2, size=2.1)
plots.show_mask(axes[0, 0], img, np.zeros_like(gt), "x (cyan: truth)", gt=gt)
top = float(max(m.max() for m in per.values()))
for a, (k, m) in enumerate(per.items(), start=1):
    plots.show_map(axes[0, a], m, f"S^({k})", 0, top, gt=gt)
plots.show_map(axes[0, -1], sm.S_ms, "S_ms (harmonic mean)", gt=gt)
fig.tight_layout()
plt.show()
assert np.allclose(sm.S_ms, harmonic_mean(list(per.values())))

# %% [markdown]
# ## 4. The prototype-guided mask and $S_{pg}$
#
# The error map $E$ of eq (14) compares every feature of $x$ with the bank of few-shot normal
# features; the threshold $r$ of eq (15) splits its values into two groups of small total
# variance, and $M^{(p)}$ keeps the high group. One more inpainting under $M^{(p)}$ gives
# $S_{pg} = M^{(p)} \odot D(x, \hat x^{(p)})$ (eq 20).
#
# The split of eq (15) exists on every image, a normal one too. The mini profile therefore keeps
# $r$ no lower than a floor computed from the shots alone (`proto_floor="shots"`,
# `prototypes.shot_floor`): the 99th percentile of the errors that each rotated view of the shots
# makes against the other views. The histogram marks both.

# %%
if inter.error_map is not None:
    E = inter.error_map
    r_split, r = P.variance_threshold(E), det.proto_threshold(wcls, E)
    glue("proto_r_split", f"{r_split:.4g}")
    glue("proto_r", f"{r:.4g}")
    glue("proto_cover", f"{100 * inter.proto_mask.mean():.1f}")
    inter_gt = (inter.proto_mask & gt).sum() / max(gt.sum(), 1)
    glue("proto_hits", f"{100 * inter_gt:.0f}")
    fig, axes = plt.subplots(1, 6, figsize=(15, 2.8), gridspec_kw={"width_ratios": [1, 1.6, 1, 1, 1, 1]})
    plots.show_map(axes[0], E, "E (eq 14)")
    sns.histplot(E.ravel(), bins=30, ax=axes[1], color="C0")
    axes[1].axvline(r_split, color="C1", lw=1.5, ls="--", label=f"eq 15 split = {r_split:.4g}")
    if wcls in det.floors:
        axes[1].axvline(det.floors[wcls], color="C2", lw=1.5, ls=":", label=f"shots' floor = {det.floors[wcls]:.4g}")
    axes[1].axvline(r, color="C3", lw=2, label=f"r used = {r:.4g}")
    axes[1].legend(fontsize=8)
    axes[1].set_title("values of E, threshold (eq 15)", fontsize=8)
    plots.show_mask(axes[2], img, inter.proto_mask, "M^(p)", gt=gt)
    plots.show(axes[3], inter.inpaintings[-1], "x^(p)")
    plots.show_map(axes[4], inter.D_proto, "D(x, x^(p))", gt=gt)
    plots.show_map(axes[5], sm.S_pg, "S_pg (eq 20)", gt=gt)
    fig.tight_layout()
    plt.show()
else:  # zero shots: no bank, no prototype mask
    for key in ("proto_r_split", "proto_r", "proto_cover", "proto_hits"):
        glue(key, "n/a")
    print("no prototype bank (zero shots): S_map = S_ms")

# %% [markdown]
# For this image the split of eq (15) is at {glue:text}`proto_r_split` and the threshold used is
# $r$ = {glue:text}`proto_r`; $M^{(p)}$ covers {glue:text}`proto_cover`% of the image and
# {glue:text}`proto_hits`% of the defect's pixels.
#
# ## 5. The anomaly map and the image score
#
# $S_{map} = (1-\alpha) S_{ms} + \alpha S_{pg}$ (eq 21), blurred with a Gaussian; the paper's image
# score is its maximum. The paper weighs the prototype term with $\alpha = 0.1$; mini weighs it with 0.9,
# because with its floor on eq (15) $M^{(p)}$ covers little of a normal image, and on the
# validation build the larger weight raised both AUROCs ({doc}`../deviations`). The paper's
# $\sigma$ is 4 at 512 px. The profile scales `blur_sigma_512` with the image size, and mini sets it
# to 8: its colour distance is a per-pixel map, and on the validation build the doubled blur raised
# AnomalySD's image and pixel AUROC while the baselines' numbers did not move. For the image score
# mini averages the map's highest 2 % of pixels
# (`image_score_top = 0.02`, `scoring.image_score`), because the largest repainting error of a
# normal texture is often one spot while a defect raises a region (chosen on the validation build).

# %%
fig, axes = plots.figure_grid(1, 4, size=2.4)
plots.show(axes[0, 0], img, f"{wcls}/{sample.defect}")
plots.show_map(axes[0, 1], gt, "ground truth")
plots.show_map(axes[0, 2], sm.S_map, f"S_map, S_I = {sm.score:.3g}", gt=gt, fig=fig, colorbar=True)
thr = np.quantile(sm.S_map, 1 - max(gt.mean(), 1e-3))
plots.show_mask(axes[0, 3], img, sm.S_map >= thr, "top pixels of S_map (as many as defect pixels)", gt=gt)
fig.tight_layout()
plt.show()
glue("walk_score", f"{sm.score:.4g}")
glue("walk_alpha", f"{cfg.alpha:g}")
glue("walk_sigma", f"{cfg.blur_sigma:.2f}")

# %% [markdown]
# Here $\alpha$ = {glue:text}`walk_alpha`; at this image size the blur has $\sigma$ =
# {glue:text}`walk_sigma` px and the image's score is
# $S_I$ = {glue:text}`walk_score`. A score means nothing alone: the metrics compare the scores of
# normal and anomalous images, which is what the next figure does.
#
# ## 6. Normal and anomalous images of several classes (cf. Fig. 3)
#
# For each class: one normal and one anomalous test image, the prototype inpainting (the grid
# mosaic at the middle scale when there is no prototype mask), $S_{map}$ and the score. Both maps
# of a class share one colour scale, so a brighter map means a higher score. Solar-cell classes
# have image labels only (no ground-truth contour).

# %%
shown = fitted.classes[:n_classes_fig3]
k_mid = cfg.grid_scales[len(cfg.grid_scales) // 2]
rows = []
for c in shown:
    test = ds.test(c)
    pair = [next(s for s in test if s.label == 0), next(s for s in test if s.label == 1)]
    out = []
    for s in pair:
        x, m = load_sample(s, size)
        it = det.intermediates(x, c, seed=cfg.seed, keep_inpaintings=True)
        f = det.fuse(it)
        rec = it.inpaintings[-1] if it.proto_mask is not None else plots.mosaic(it.inpaintings, grid, index, k_mid)
        out.append((s, x, m, rec, f))
    rows.append((c, out))

fig, axes = plots.figure_grid(len(rows), 8, size=1.55)
higher = 0
for r, (c, out) in enumerate(rows):
    vmax = max(float(o[4].S_map.max()) for o in out)
    for h, (s, x, m, rec, f) in enumerate(out):
        b = 4 * h
        plots.show(axes[r, b], x, f"{c}: {s.defect}", fontsize=7)
        if m is None:
            axes[r, b + 1].axis("off")
            axes[r, b + 1].set_title("no pixel mask", fontsize=7)
        else:
            plots.show_map(axes[r, b + 1], m, "ground truth", 0, 1, fontsize=7)
        plots.show(axes[r, b + 2], rec, "inpainting", fontsize=7)
        plots.show_map(axes[r, b + 3], f.S_map, f"S_map, S_I={f.score:.3g}", 0, vmax,
                       gt=m if m is not None else None, fontsize=7)
    higher += int(out[1][4].score > out[0][4].score)
fig.suptitle("left: a normal test image; right: an anomalous one (one colour scale per row)", fontsize=10)
fig.tight_layout()
plt.show()
glue("fig3_higher", str(higher))
glue("fig3_n", str(len(rows)))

# %% [markdown]
# In {glue:text}`fig3_higher` of these {glue:text}`fig3_n` classes the anomalous image scores
# higher than the normal one. One pair per class is an anecdote; {doc}`05_main_results` measures
# the separation over every test image (image AUROC) and every pixel (pixel AUROC, PRO).
#
# ## Summary
#
# - One test image costs {glue:text}`n_masks` inpaintings here: the grid masks of every scale
#   and one prototype-guided mask.
# - Each scale contributes only the patches it hid ($S^{(k)}$); the harmonic mean keeps what all
#   scales agree on; the prototype mask adds a targeted inpainting with weight $\alpha$ =
#   {glue:text}`walk_alpha`.
# - The image score is the maximum of the blurred map (mini: the mean of its highest 2 %).
#
# ## What's next
#
# {doc}`05_main_results` runs this detector on the whole benchmark for 0 to 4 shots and several
# seeds, beside the feature-memory baselines, and compares with the paper's Table 1.
#
# ## Exercises
#
# 1. Replace the harmonic mean of eq (19) by the arithmetic mean of the $S^{(k)}$ and look at the
#    map of section 3. Which false alarms appear?
# 2. Drop the largest scale ($k = 1$) with `det.fuse(inter, scales=...)`: how does $S_{ms}$
#    change for this image?
# 3. Set `walk_class` to a texture and to the object class. For which kind does the prototype
#    mask cover the defect better, and why?
