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
# # Masks and prompts
#
# ## Overview
#
# AnomalySD {cite:p}`yan2024anomalysd` turns an inpainting diffusion model into an anomaly
# detector. What it inpaints, and under which text condition, is decided by masks and prompts;
# this notebook shows each of them on the project's benchmark images:
#
# 1. the benchmark and the **foreground masks** $m_f$ of its classes (Sec. 4.1);
# 2. the **training masks**: random rectangles whose IoU with $m_f$ exceeds $\gamma \in
#    \{0, 0.2, 0.5\}$ (Sec. 4.1, Table 4);
# 3. the **multi-scale grid masks** of inference, $k \in \{1, 2, 4, 8\}$: 85 in the paper (Sec. 4.2);
# 4. the **prototype-guided mask**: the error map of eq (14) against a bank of few-shot normal
#    features and its variance threshold, eq (15);
# 5. the **hierarchical prompts** $\mathcal T_c = \mathcal T^1_c \cup \mathcal T^2_c$ and how
#    similar their text embeddings are.
#
# ## Prerequisites
#
# | Concept | Importance | Notes |
# | --- | --- | --- |
# | {doc}`01_preliminaries` | Helpful | inpainting input of eq (7) |
# | Intersection over union | Necessary | section 2 |
# | Nearest-neighbour search in feature space | Helpful | section 4 (as in PatchCore {cite:p}`roth2022patchcore`) |
#
# **Time to learn**: 20 minutes. **Run time**: seconds on a CPU (the benchmark is built on first use).
#
# ## Imports

# %% tags=["parameters"]
profile = "mini"          # run profile: paper, mini or smoke
data_root = ""            # empty: the data_root of the profile (mini/smoke: built when missing)
object_class = "coins"    # an object class (foreground mask, training masks)
proto_class = "brick"     # a class with pixel masks (prototype error map)
prompt_class = "coins"    # whose prompt set is embedded in section 5
n_masks_per_gamma = 4     # training masks drawn per gamma for the figure
n_iou_draws = 300         # draws per gamma for the IoU histogram
seed = 0

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from anomalysd_core.method import masks as M
from anomalysd_core.method import prototypes as P
from anomalysd_core.reproduce.display import glue, shown
from anomalysd_core.config import get_config
from anomalysd_core.data.datasets import MVTecDataset, load_image, load_mask, sample_shots
from anomalysd_core.method.diffusion import pooled_text_embeddings
from anomalysd_core.method.features import build_backbone
from anomalysd_core.data.mini import ensure_mini
from anomalysd_core.method.models import load_text_encoder
from anomalysd_core.method.prompts import display_name, prompt_set

cfg = get_config(profile, **({"data_root": data_root} if data_root else {}))
rng = np.random.default_rng(seed)
root = ensure_mini(cfg)
ds = MVTecDataset(root)
size = cfg.image_size
print(f"profile {cfg.profile}: {len(ds.classes)} classes at {size} px from {shown(root)}")

# %% [markdown]
# ## 1. The benchmark and its foreground masks
#
# The mini and smoke profiles use a small benchmark in MVTec-AD layout {cite:p}`bergmann2019mvtec`
# built from images that ship with pip packages (textures and coins from scikit-image, solar cells
# from the ELPV data set {cite:p}`deitsch2019elpv`; see {doc}`../reproduce`). The paper needs a
# foreground mask $m_f$ for objects but does not say how to get it; `masks.foreground_mask`
# separates the object from the border colour (Otsu threshold, morphology, largest components),
# and a texture is foreground everywhere.

# %%
rows = []
for c in ds.classes:
    test = ds.test(c)
    rows.append({"class": c, "kind": ds.class_kind(c), "train normals": len(ds.train(c)),
                 "test normal": sum(s.label == 0 for s in test),
                 "test anomalous": sum(s.label == 1 for s in test),
                 "pixel masks": ds.has_pixel_masks(c)})
classes_table = pd.DataFrame(rows)
glue("classes_table", classes_table, display=False)
glue("n_classes", str(len(ds.classes)))
classes_table

# %%
fig, axes = plt.subplots(2, len(ds.classes), figsize=(2.2 * len(ds.classes), 4.6))
fgs = {}
for j, c in enumerate(ds.classes):
    img = load_image(ds.train(c)[0].path, size)
    fg = M.foreground_mask(img, ds.class_kind(c))
    fgs[c] = (img, fg)
    axes[0, j].imshow(img)
    axes[0, j].set_title(f"{c} ({ds.class_kind(c)})", fontsize=9)
    axes[1, j].imshow(img)
    axes[1, j].imshow(np.ma.masked_where(~fg, fg), cmap="autumn", alpha=0.45, vmin=0, vmax=1)
    axes[1, j].set_title(f"m_f: {100 * fg.mean():.0f}% of the image", fontsize=9)
for ax in axes.ravel():
    ax.axis("off")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2. Training masks and the IoU threshold $\gamma$
#
# During fine-tuning (eq 8) the U-Net learns to fill a hidden rectangle $m$ of a normal image.
# The paper keeps a random rectangle only if its IoU with the foreground mask exceeds $\gamma$,
# drawn uniformly from $\{0, 0.2, 0.5\}$, so that many masks cover the object rather than empty
# background. `masks.training_mask` does this by rejection sampling (the rectangle sizes are our
# choice; the paper gives none).

# %%
cls = object_class if object_class in ds.classes else next(
    (c for c in ds.classes if ds.class_kind(c) == "object"), ds.classes[0])
img, fg = fgs[cls]
gammas = list(cfg.gammas)
fig, axes = plt.subplots(len(gammas), n_masks_per_gamma, figsize=(2.0 * n_masks_per_gamma, 2.1 * len(gammas)))
for i, g in enumerate(gammas):
    for j in range(n_masks_per_gamma):
        m = M.training_mask(fg, g, rng)
        iou = (m & fg).sum() / max((m | fg).sum(), 1)
        ax = axes[i, j]
        ax.imshow(img * (1 - 0.6 * m[..., None]))
        ax.contour(fg, levels=[0.5], colors="yellow", linewidths=0.8)
        ax.set_title(f"gamma {g}: IoU {iou:.2f}", fontsize=8)
        ax.axis("off")
fig.suptitle(f"training masks on '{cls}' (dark: hidden; yellow: m_f)", fontsize=10)
fig.tight_layout()
plt.show()

# %%
ious = []
for g in gammas:
    for _ in range(n_iou_draws):
        m = M.training_mask(fg, g, rng)
        ious.append({"gamma": g, "IoU with m_f": (m & fg).sum() / max((m | fg).sum(), 1)})
ious = pd.DataFrame(ious)
fig, ax = plt.subplots(figsize=(7, 2.8))
sns.histplot(ious, x="IoU with m_f", hue="gamma", bins=30, element="step", palette="deep", ax=ax)
for g in gammas:
    ax.axvline(g, ls=":", color="gray")
ax.set_title(f"IoU of {n_iou_draws} training masks per gamma ('{cls}')", fontsize=10)
fig.tight_layout()
plt.show()
accept = ious.assign(ok=ious["IoU with m_f"] > ious["gamma"]).groupby("gamma")["ok"].mean()
glue("iou_ok_05", f"{100 * accept.get(0.5, float('nan')):.0f}")
accept.rename("share with IoU > gamma").to_frame()

# %% [markdown]
# With $\gamma = 0.5$, {glue:text}`iou_ok_05`% of the drawn masks reach the threshold; when none of
# the candidates does, the best one is kept (see the `training_mask` docstring). Table 4 of the
# paper credits this design with +0.6 image AUROC over purely random rectangles on MVTec-AD.
#
# ## 3. The multi-scale inference masks
#
# At test time the image is split into $k \times k$ patches for $k \in \{1, 2, 4, 8\}$ and every
# patch is inpainted separately: $1 + 4 + 16 + 64 = 85$ masks $M^{(k)}_{ij}$ (Sec. 4.2). Large
# masks catch large defects, small masks keep the inpainting close to the image. This profile
# uses the scales `cfg.grid_scales`, {glue:text}`n_grid_masks` masks in all. For the U-Net
# each mask is brought to latent size ($\tilde m$ of eq 7; a latent cell is hidden if any of its
# pixels is).

# %%
grid, index = M.grid_masks(size, cfg.grid_scales)
glue("n_grid_masks", str(len(index)))
print(f"{len(index)} masks of shape {tuple(grid.shape[1:])}; index[:3] = {index[:3]}")
scales = list(cfg.grid_scales)
fig, axes = plt.subplots(1, len(scales) + 1, figsize=(2.3 * (len(scales) + 1), 2.6))
pal = sns.color_palette("Set2", 4)
for a, k in enumerate(scales):
    canvas = np.zeros((size, size, 3))
    for t, (kk, i, j) in enumerate(index):
        if kk == k:  # each mask M_ij^(k) hides one patch; neighbours get different colours
            canvas[grid[t, 0].numpy()] = pal[2 * (i % 2) + (j % 2)]
    axes[a].imshow(canvas, interpolation="nearest")
    for e in range(1, k):  # patch borders
        axes[a].axhline(e * size / k - 0.5, color="white", lw=1)
        axes[a].axvline(e * size / k - 0.5, color="white", lw=1)
    axes[a].set_title(f"k = {k}: {k * k} mask" + ("s" if k > 1 else ""), fontsize=9)
t_example = next(t for t, (kk, i, j) in enumerate(index) if kk == max(scales) and i == 1 and j == 1)
lat = M.downsample_mask(grid[t_example:t_example + 1], size // 8)[0, 0]
axes[-1].imshow(lat, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
axes[-1].set_title(f"M_11^({max(scales)}) at latent size {size // 8} (white: hidden)", fontsize=9)
for ax in axes:
    ax.axis("off")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. The prototype-guided mask (eq 12-15)
#
# The grid masks know nothing about where a defect is. The prototype-guided mask does: frozen CNN
# features $\psi(x) = [\phi_2(x); \mathrm{Up}(\phi_3(x))]$ (eq 12; EfficientNet
# {cite:p}`tan2019efficientnet`, Lite0 here, B6 in the paper) of the $K$ few-shot normals and their
# rotations form a bank $\mathcal P_c$ (eq 13); the error map is the distance of every test
# feature to its nearest prototype (eq 14),
#
# $$E_{hw} = \min_{f \in \mathcal P_c} \lVert \psi(x)_{hw} - f \rVert^2 ,$$
#
# and the mask keeps the cells above the threshold $r$ that minimises
# $\mathrm{Var}(\{E \ge r\}) + \mathrm{Var}(\{E < r\})$ (eq 15). This is the nearest-neighbour idea
# of SPADE and PatchCore {cite:p}`cohen2020spade,roth2022patchcore`, used here to place one mask.

# %%
pcls = proto_class if proto_class in ds.classes and ds.has_pixel_masks(proto_class) else next(
    c for c in ds.classes if ds.has_pixel_masks(c))
backbone = build_backbone(cfg.backbone)
shots = sample_shots(ds, [pcls], k=max(cfg.shots, 1), seed=cfg.seed)[pcls]
normals = torch.stack([torch.from_numpy(load_image(s.path, size)).permute(2, 0, 1) for s in shots])
bank = P.build_bank(backbone.psi(P.rotations(normals)))
test = next(s for s in ds.test(pcls) if s.label == 1 and s.mask_path)
x = load_image(test.path, size)
gt = load_mask(test.mask_path, size)
E = P.error_map(backbone.psi(torch.from_numpy(x).permute(2, 0, 1)[None])[0], bank)
r = P.variance_threshold(E)
mask_p = P.prototype_mask(E, size, r=r)
print(f"class {pcls}: {len(shots)} shot(s) x 4 rotations -> bank of {bank.shape[0]} prototypes "
      f"of dimension {bank.shape[1]}; error map {tuple(E.shape)}; threshold r = {r:.3f}; "
      f"M^(p) covers {100 * mask_p.float().mean():.1f}% of the image")
glue("proto_bank_size", str(bank.shape[0]))
glue("proto_dim", str(bank.shape[1]))
glue("proto_threshold", f"{r:.3f}")
glue("proto_cover", f"{100 * float(mask_p.float().mean()):.1f}")

fig, axes = plt.subplots(1, 4, figsize=(10, 2.8))
axes[0].imshow(x)
axes[0].set_title(f"test image ({test.defect})", fontsize=9)
axes[1].imshow(gt, cmap="gray")
axes[1].set_title("ground truth", fontsize=9)
im = axes[2].imshow(E, cmap="magma", interpolation="nearest")
fig.colorbar(im, ax=axes[2], fraction=0.046)
axes[2].set_title("error map E (eq 14)", fontsize=9)
axes[3].imshow(x)
axes[3].imshow(np.ma.masked_where(~mask_p.numpy(), mask_p.numpy()), cmap="autumn", alpha=0.5)
axes[3].contour(gt, levels=[0.5], colors="cyan", linewidths=0.8)
axes[3].set_title("M^(p) (eq 15), cyan: truth", fontsize=9)
for ax in axes:
    ax.axis("off")
fig.tight_layout()
plt.show()

# %%
fig, ax = plt.subplots(figsize=(7, 2.8))
sns.histplot(E.flatten().numpy(), bins=40, ax=ax, color="C0")
ax.axvline(r, color="C3", lw=2, label=f"r = {r:.3f} (eq 15)")
ax.set_xlabel("E (squared feature distance to the nearest prototype)")
ax.legend()
ax.set_title(f"error-map values of one '{pcls}' test image", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# The bank holds {glue:text}`proto_bank_size` prototypes of dimension {glue:text}`proto_dim`. The
# threshold $r$ = {glue:text}`proto_threshold` keeps {glue:text}`proto_cover`% of the image. Note
# that eq (15) sums the two variances without weighting them by group size (unlike Otsu's method),
# which favours splitting off a small group of extreme values: a tight mask around the most
# unusual cells.
#
# ## 5. Hierarchical prompts
#
# Each class has a coarse prompt, "A perfect [c].", and fine-grained descriptions of its normal
# appearance (Sec. 4.1). Training draws one at random; inference averages their text embeddings
# $\tau(y)$. The paper's fine-grained lists are not public, so the project wrote its own
# (`anomalysd_core/method/prompts.yaml`, see {doc}`../deviations`).

# %%
pset = prompt_set(prompt_class)
pd.DataFrame({"set": ["T1 (coarse)"] + ["T2 (fine)"] * (len(pset) - 1), "prompt": pset})

# %% [markdown]
# Below: cosine similarities of the mean-pooled embeddings of these prompts, then of the mean
# embedding of every benchmark class's set. Prompts of one class should be closer to each other
# than to other classes', or averaging them would blur the classes together.

# %%
text = load_text_encoder(cfg.text_encoder, cfg.base_model)
emb = pooled_text_embeddings(text, pset)
sim = (emb @ emb.T).numpy()
short = ["coarse"] + [f"fine {i}" for i in range(1, len(pset))]
class_sets = {c: prompt_set(c) for c in ds.classes}
class_emb = torch.nn.functional.normalize(
    torch.stack([pooled_text_embeddings(text, ps).mean(0) for ps in class_sets.values()]), dim=-1)
class_sim = (class_emb @ class_emb.T).numpy()
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
sns.heatmap(sim, annot=True, fmt=".2f", cmap="rocket_r", vmin=0, vmax=1, ax=axes[0],
            xticklabels=short, yticklabels=short)
axes[0].set_title(f"prompts of '{display_name(prompt_class)}' ({cfg.text_encoder})", fontsize=10)
sns.heatmap(class_sim, annot=True, fmt=".2f", cmap="rocket_r", vmin=0, vmax=1, ax=axes[1],
            xticklabels=list(class_sets), yticklabels=list(class_sets))
axes[1].set_title("mean prompt embedding per class", fontsize=10)
fig.tight_layout()
plt.show()
off = sim[~np.eye(len(sim), dtype=bool)]
glue("prompt_sim_mean", f"{off.mean():.2f}")
glue("n_prompts", str(len(pset)))

# %% [markdown]
# The {glue:text}`n_prompts` prompts of this class have a mean pairwise cosine similarity of
# {glue:text}`prompt_sim_mean`.
#
# ## Summary
#
# - Foreground masks are computed, not given: by a border-colour segmentation for objects, the
#   whole image for textures.
# - Training masks are rectangles accepted when their IoU with $m_f$ exceeds $\gamma$.
# - Inference inpaints under {glue:text}`n_grid_masks` grid masks plus one prototype-guided mask,
#   whose threshold comes from eq (15).
# - Each class's prompt set is averaged into one condition at inference.
#
# ## What's next
#
# {doc}`03_finetuning` fine-tunes the base model with these training masks and prompts; then
# {doc}`04_inference` follows one test image through the inference masks, and the
# {doc}`../results` page collects the benchmark tables.
#
# ## Exercises
#
# 1. Set `object_class` to a texture class. Why do all training masks then have IoU equal to
#    their area fraction, and what happens at $\gamma = 0.5$?
# 2. Replace `P.variance_threshold(E)` by the Otsu threshold (`skimage.filters.threshold_otsu`).
#    Is the mask larger or smaller, and which covers the ground truth better?
# 3. Add a sentence describing a defect ("A brick wall with a crack.") to the prompt set and
#    look at its row in the similarity matrix.
