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
# # Preliminaries: diffusion, latent space and cross-attention
#
# ## Overview
#
# AnomalySD builds on Stable Diffusion (SD) {cite:p}`rombach2022ldm`. This notebook walks through
# the pieces of Sec. 3 of the paper {cite:p}`yan2024anomalysd` on a real picture, each time with
# the code of `anomalysd_core` and a check against the library that does the same job:
#
# 1. the noise schedule and the forward process, eq (1) {cite:p}`ho2020ddpm`;
# 2. one reverse (denoising) step, eq (2), and the training loss, eq (3);
# 3. the latent space of SD: the VAE encoder $\mathcal{E}$ and decoder $\mathcal{D}$;
# 4. text conditioning by cross-attention, eq (4), and the latent loss, eq (5).
#
# ## Prerequisites
#
# | Concept | Importance | Notes |
# | --- | --- | --- |
# | Gaussian noise, means and variances | Necessary | the whole notebook |
# | PyTorch tensors | Necessary | shapes are printed as we go |
# | Attention (queries, keys, values) | Helpful | section 4 |
#
# **Time to learn**: 20 minutes. **Run time**: a few seconds on a CPU.
#
# ## Imports

# %% tags=["parameters"]
profile = "mini"           # run profile: paper, mini or smoke
pixel_size = 128           # side of the picture used in pixel space (sections 1-2)
timesteps = [0, 100, 250, 500, 750, 999]  # 0-based indices into the 1000-step schedule
reverse_t = 300            # timestep of the single reverse step of section 2
attention_class = "coins"  # class whose coarse prompt conditions the U-Net in section 4
n_query_positions = 4      # latent positions whose attention weights are shown
seed = 0

# %%
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from skimage import data as skdata
from skimage.transform import resize

from anomalysd_core.method import diffusion as D
from anomalysd_core.reproduce.display import components_for_notebook, glue
from anomalysd_core.config import get_config
from anomalysd_core.method.inpaint import masked_image, unet_input
from anomalysd_core.method.masks import grid_masks
from anomalysd_core.method.models import scheduler_config
from anomalysd_core.method.prompts import prompt_set

torch.manual_seed(seed)
cfg = get_config(profile)
print(f"profile {cfg.profile}: images {cfg.image_size} px, text encoder {cfg.text_encoder}")


def show_row(images, titles, size=2.2):
    """A row of images in [0, 1] (H x W x 3 arrays or (3, H, W) tensors)."""
    fig, axes = plt.subplots(1, len(images), figsize=(size * len(images), size + 0.4))
    for ax, im, t in zip(np.atleast_1d(axes), images, titles):
        if isinstance(im, torch.Tensor):
            im = im.detach().float().permute(1, 2, 0).cpu().numpy()
        ax.imshow(np.clip(im, 0, 1), cmap="gray" if im.ndim == 2 else None)
        ax.set_title(t, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig


# %% [markdown]
# ## 1. The noise schedule and the forward process (eq 1)
#
# The forward process adds Gaussian noise in $T$ small steps with variances $\beta_t$. Its
# closed form jumps straight from a clean image $x_0$ to step $t$:
#
# $$x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon, \qquad
#   \bar\alpha_t = \prod_{i\le t} (1-\beta_i), \quad \epsilon \sim \mathcal N(0, I).$$
#
# SD v1 uses $T = 1000$ steps with "scaled-linear" betas from 0.00085 to 0.012
# (`models.scheduler_config()`); `diffusion.alpha_bar` computes $\bar\alpha_t$ and must agree
# with the scheduler's own `alphas_cumprod`.

# %%
sched = DDIMScheduler(**scheduler_config())
abar = D.alpha_bar(sched)
gap = float((abar.float() - sched.alphas_cumprod).abs().max())
print(f"max |alpha_bar - scheduler.alphas_cumprod| = {gap:.2e}")
assert gap < 1e-6

fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
t_axis = np.arange(len(abar))
axes[0].plot(t_axis, abar, label=r"$\bar\alpha_t$")
axes[0].plot(t_axis, abar.sqrt(), label=r"$\sqrt{\bar\alpha_t}$ (signal)")
axes[0].plot(t_axis, (1 - abar).sqrt(), label=r"$\sqrt{1-\bar\alpha_t}$ (noise)")
axes[0].set_xlabel("timestep t")
axes[0].legend(fontsize=8)
axes[0].set_title("SD v1 schedule")
axes[1].semilogy(t_axis, abar / (1 - abar))
axes[1].set_xlabel("timestep t")
axes[1].set_title(r"signal-to-noise ratio $\bar\alpha_t / (1-\bar\alpha_t)$")
fig.tight_layout()
plt.show()
glue("abar_last", f"{float(abar[-1]):.4f}")
glue("abar_mid", f"{float(abar[499]):.3f}")

# %% [markdown]
# At the last step $\bar\alpha_T$ = {glue:text}`abar_last`: almost nothing of the image is left
# and $x_T$ is close to pure noise; half-way, $\bar\alpha_{500}$ = {glue:text}`abar_mid`.
# Now the same on a real picture (scikit-image's astronaut, scaled to $[-1, 1]$ as SD does). `diffusion.q_sample` is eq (1) written out; the
# scheduler's `add_noise` must give the same tensor.

# %%
img = resize(skdata.astronaut(), (pixel_size, pixel_size), anti_aliasing=True).astype(np.float32)
x0 = torch.from_numpy(img).permute(2, 0, 1)[None] * 2 - 1          # (1, 3, H, W) in [-1, 1]
eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
xs = [D.q_sample(x0, t, eps, abar) for t in timesteps]
ref = [sched.add_noise(x0, eps, torch.tensor([t])) for t in timesteps]
gap = max(float((a - b).abs().max()) for a, b in zip(xs, ref))
print(f"max |q_sample - scheduler.add_noise| over {len(timesteps)} timesteps = {gap:.2e}")
assert gap < 1e-4
fig = show_row([(x[0] + 1) / 2 for x in xs], [f"t = {t}" for t in timesteps])
plt.show()

# %% [markdown]
# ## 2. One reverse step (eq 2) and the loss (eq 3)
#
# A network $\epsilon_\theta(x_t, t)$ is trained to predict the noise, with the loss
# $\mathbb E\,\lVert \epsilon - \epsilon_\theta(x_t, t) \rVert^2$ (eq 3). Sampling then walks back
# one step at a time (eq 2):
#
# $$x_{t-1} = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{1-\alpha_t}{\sqrt{1-\bar\alpha_t}}\,
#   \epsilon_\theta(x_t, t)\Big) + \sigma_t \eta, \qquad
#   \sigma_t^2 = \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t .$$
#
# (The paper prints the last term as $\tilde\beta_t\eta$; $\tilde\beta_t$ is the variance of the step,
# so the standard deviation is its square root, as in DDPM.) To see the algebra without a trained
# network we feed the step the **true** noise $\epsilon$: its mean must then equal the mean of
# the exact posterior $q(x_{t-1} \mid x_t, x_0)$, and the whole step (with the same $\eta$) must
# equal diffusers' `DDPMScheduler.step`.

# %%
ddpm = DDPMScheduler(**{k: v for k, v in scheduler_config().items()
                        if k not in ("set_alpha_to_one", "steps_offset")}, variance_type="fixed_small")
x_t = D.q_sample(x0, reverse_t, eps, abar).float()
mean = D.ddpm_reverse_step(x_t, reverse_t, eps, ddpm, noise=torch.zeros_like(x_t))
post = D.posterior_mean(x0, x_t, reverse_t, ddpm)
eta = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(seed + 1))
x_prev = D.ddpm_reverse_step(x_t, reverse_t, eps, ddpm, noise=eta)
ref = ddpm.step(eps, reverse_t, x_t, generator=torch.Generator().manual_seed(seed + 1)).prev_sample
x0_hat = D.predict_x0(x_t, reverse_t, eps, ddpm)
checks = {
    "|eq-2 mean - posterior mean|": float((mean - post).abs().max()),
    "|eq-2 step - DDPMScheduler.step|": float((x_prev - ref).abs().max()),
    "|x0 predicted from (x_t, eps) - x0|": float((x0_hat - x0).abs().max()),
}
for k, v in checks.items():
    print(f"max {k} = {v:.2e}")
assert max(checks.values()) < 1e-3
sigma = float(D.posterior_variance(ddpm)[reverse_t].sqrt())
glue("sigma_t", f"{sigma:.4f}")
glue("reverse_t", str(reverse_t))
print(f"t = {reverse_t}: beta_t = {float(ddpm.betas[reverse_t]):.5f}, sigma_t = {sigma:.4f}, "
      f"eq-3 loss of the true noise = {float(D.epsilon_loss(eps, eps)):.1f}")
fig = show_row([(x_t[0] + 1) / 2, (mean[0] + 1) / 2, (x_prev[0] + 1) / 2, (x0_hat[0] + 1) / 2],
               [f"$x_{{{reverse_t}}}$", "mean of the step", f"$x_{{{reverse_t - 1}}}$ (with $\\eta$)",
                r"$\hat x_0$ from $(x_t, \epsilon)$"])
plt.show()

# %% [markdown]
# One step removes very little: at $t$ = {glue:text}`reverse_t` the step's standard deviation is
# $\sigma_t$ = {glue:text}`sigma_t`, so $x_{t-1}$ looks like $x_t$. What a single step *does* know
# is where it is heading: the last panel recovers $x_0$ exactly from $x_t$ and the noise. A trained
# $\epsilon_\theta$ only estimates that noise, which is why sampling takes many steps (DDPM) or
# larger deterministic ones (DDIM {cite:p}`song2021ddim`, which the method uses at inference).
#
# ## 3. The latent space of Stable Diffusion
#
# SD runs the diffusion on latents $z = \mathcal E(x)$ of a variational auto-encoder, 8 times
# smaller per side with 4 channels, and decodes with $\mathcal D$. The mini profile uses the
# project's own small model of the same architecture (see {doc}`../deviations`).

# %%
comp, model_note = components_for_notebook(cfg)
print(model_note)
size = cfg.image_size
x = torch.from_numpy(resize(skdata.astronaut(), (size, size), anti_aliasing=True).astype(np.float32))
x = x.permute(2, 0, 1)[None]                                    # (1, 3, size, size) in [0, 1]
with torch.no_grad():
    z = comp.encode(x)
    x_rec = comp.decode(z)
mse = float(F.mse_loss(x_rec, x))
psnr = 10 * np.log10(1.0 / max(mse, 1e-12))
print(f"x {tuple(x.shape)} -> z {tuple(z.shape)} (scaling factor {comp.scaling_factor:.4f}) "
      f"-> D(z) {tuple(x_rec.shape)}; reconstruction PSNR {psnr:.1f} dB")
glue("latent_shape", " x ".join(str(s) for s in z.shape[1:]))
glue("vae_psnr", f"{psnr:.1f}")
zc = z[0].detach()
lat = [(zc[i] - zc[i].min()) / (zc[i].max() - zc[i].min() + 1e-8) for i in range(zc.shape[0])]
fig = show_row([x[0]] + [c.numpy() for c in lat] + [x_rec[0]],
               ["x"] + [f"z channel {i}" for i in range(len(lat))] + ["D(E(x))"], size=1.9)
plt.show()

# %% [markdown]
# The latent has shape {glue:text}`latent_shape` (channels x height x width) and the round trip
# $\mathcal D(\mathcal E(x))$ reaches a PSNR of {glue:text}`vae_psnr` dB. The method inpaints in
# this space: for a mask $m$, the U-Net sees the noised latent $z_t$, the latent
# $z_o = \mathcal E((1-m)\odot x)$ of the masked image and the mask $\tilde m$ at latent size,
# stacked on channels (eq 7, 4 + 4 + 1 = 9 channels; the paper writes them as $[z_t ; z_o ; \tilde m]$,
# we stack $[z_t ; \tilde m ; z_o]$ as the SD-inpainting checkpoints do). Decoding a noised latent shows that the
# forward process of eq (1) acts on $z$ here, not on pixels:

# %%
t_show = [t for t in timesteps if t > 0][:3]
with torch.no_grad():
    noisy = [comp.decode(D.q_sample(z, t, torch.randn_like(z), abar).float())[0] for t in t_show]
fig = show_row([x_rec[0]] + noisy, ["t = 0"] + [f"D(z_t), t = {t}" for t in t_show])
plt.show()

# %% [markdown]
# ## 4. Text conditioning by cross-attention (eq 4, 5)
#
# The prompt $y$ enters through a text encoder $\tau$: one vector per token. (SD uses CLIP's text
# encoder; the mini profile uses MiniLM {cite:p}`wang2020minilm`, see {doc}`../deviations`.)
# Inside the U-Net, each cross-attention layer lets every spatial position attend to the tokens:
#
# $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\Big(\frac{QK^\top}{\sqrt d}\Big) V,\qquad
#   Q = W_Q\, \varphi(z_t),\; K = W_K\, \tau(y),\; V = W_V\, \tau(y).$$
#
# `diffusion.cross_attention` is this formula; first a check against PyTorch's fused kernel.

# %%
g = torch.Generator().manual_seed(seed)
q, k, v = (torch.randn(1, 8, n, 16, generator=g) for n in (10, 6, 6))
ours, _ = D.cross_attention(q, k, v)
gap = float((ours - F.scaled_dot_product_attention(q, k, v)).abs().max())
print(f"max |cross_attention - F.scaled_dot_product_attention| = {gap:.2e}")
assert gap < 1e-5

# %% [markdown]
# Now inside the real U-Net. We run it once on the 9-channel input of eq (7) for our picture, with
# the prompt "A perfect [c]." of the coarse set $\mathcal T^1_c$, catch the input of the first
# cross-attention layer (`attn2` of the first cross-attention down block) with a hook, and recompute
# that layer with `diffusion.attention_from_module`: its projections, our eq (4), its output layer.

# %%
prompt = prompt_set(attention_class)[0]
context, token_mask, tokens = D.token_states(comp.text, [prompt])
layer_name = next(n for n, _ in comp.unet.named_modules() if n.endswith("attn2"))
layer = comp.unet.get_submodule(layer_name)
caught = {}


def hook(module, args, kwargs, output):
    caught["h"] = args[0] if args else kwargs["hidden_states"]
    caught["out"] = output


handle = layer.register_forward_hook(hook, with_kwargs=True)
mask = grid_masks(size, (2,))[0][3:4].float()              # hide the bottom-right quarter
t_unet = 500
noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed))
z_t = D.q_sample(z, t_unet, noise, abar).float()
with torch.no_grad():
    z_o = comp.encode(masked_image(x, mask))
    eps_pred = comp.unet(unet_input(z_t, z_o, mask), t_unet, encoder_hidden_states=context).sample
handle.remove()
with torch.no_grad():
    out, weights = D.attention_from_module(layer, caught["h"], context)
gap = float((out - caught["out"]).abs().max())
print(f"prompt: {prompt!r}; context tau(y) {tuple(context.shape)}; layer {layer_name} "
      f"({layer.heads} heads) on {caught['h'].shape[1]} latent positions")
print(f"max |our eq-4 recomputation - the layer's output| = {gap:.2e}")
assert gap < 1e-4
loss = float(D.epsilon_loss(noise, eps_pred))
print(f"eq-5 loss ||eps - eps_theta(z_t, t, tau(y))||^2 at t = {t_unet}: {loss:.3f} "
      "(1.0 is what predicting zeros would score)")
glue("attn_layer", layer_name)
glue("eq5_loss", f"{loss:.3f}")

# %% [markdown]
# The attention weights (averaged over heads) of a few latent positions over the prompt's tokens.
# Each row sums to one over the whole context: the U-Net attends to the padding tokens too (SD does
# the same with CLIP's padded 77-token context), so besides the real tokens the first padding token
# is shown; the remaining padding tokens hold the rest of the weight.

# %%
n_pos = weights.shape[2]
side = int(round(n_pos ** 0.5))
picks = np.linspace(0, n_pos - 1, min(n_query_positions, n_pos)).round().astype(int)
n_real = int(token_mask[0].sum())
cols = list(range(min(n_real + 1, len(tokens[0]))))
w = weights[0].mean(0)[picks][:, cols].numpy()
labels = [tokens[0][i] if i < n_real else f"{tokens[0][i]} (pad)" for i in cols]
fig, axes = plt.subplots(1, 2, figsize=(10, 2.8), gridspec_kw={"width_ratios": [1, 2.6]})
axes[0].imshow(x[0].permute(1, 2, 0).numpy())
for j, p in enumerate(picks):
    r, c = divmod(int(p), side)
    cell = size / side
    axes[0].add_patch(plt.Rectangle((c * cell, r * cell), cell, cell, fill=False, lw=2, color=f"C{j}"))
    axes[0].text(c * cell + 1, r * cell + cell * 0.45, str(j), color=f"C{j}", fontsize=10, weight="bold")
axes[0].set_title(f"query positions ({side} x {side} grid)", fontsize=9)
axes[0].axis("off")
sns.heatmap(w, ax=axes[1], annot=True, fmt=".3f", cmap="viridis", cbar=False,
            xticklabels=labels, yticklabels=[f"position {j}" for j in range(len(picks))])
axes[1].set_title("softmax(QK^T / sqrt d), mean over heads", fontsize=9)
axes[1].tick_params(axis="x", rotation=30)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 5. The method in one figure
#
# Everything above is Stable Diffusion. AnomalySD fine-tunes such a model on the few normal images
# of every class (masked inpainting with class prompts, eq 7-10) and then, at test time, inpaints
# the test image under many masks and measures how far the inpaintings are from it (eq 11-21).
# The figure on the {doc}`../intro` page summarises this; the next notebook shows the masks and
# prompts.
#
# ## Summary
#
# - Eq (1) noises an image in one jump; $\bar\alpha_t$ of the SD v1 schedule falls from 1 to
#   {glue:text}`abar_last`. `diffusion.q_sample` equals diffusers' `add_noise`.
# - Eq (2) with the true noise gives the exact posterior mean; with a network's estimate it is
#   DDPM sampling. `diffusion.ddpm_reverse_step` equals `DDPMScheduler.step`.
# - SD works on VAE latents ({glue:text}`latent_shape`); the text condition enters through
#   cross-attention, eq (4), which we reproduced inside the U-Net's layer {glue:text}`attn_layer`.
#
# ## What's next
#
# {doc}`02_masks_and_prompts`: the masks used for fine-tuning and inference, the prototype-guided
# mask and the hierarchical prompts.
#
# ## Exercises
#
# 1. Re-run with `reverse_t = 5` and `reverse_t = 990`. How does $\sigma_t$ change, and why does
#    the step barely matter near $t = 0$?
# 2. Replace `eps` by `0.5 * eps` in the reverse step (a poor noise estimate). Which of the three
#    checks fails, and what does $\hat x_0$ look like?
# 3. Compare the attention rows for `attention_class = "brick"` and `"coins"`: do the positions
#    attend to the class-name token?
