"""The diffusion preliminaries of the paper (Sec. 3, eq 1-5), written out in plain PyTorch.

These functions exist to be read next to the equations and checked against diffusers, which does
the same work inside ``DDPMScheduler``/``DDIMScheduler`` and the U-Net's attention layers. The
method itself (``inpaint.py``) uses the diffusers objects directly; nothing here is on its hot path.

* :func:`betas_of` and :func:`alpha_bar`: the noise schedule ``beta_t`` and
  ``abar_t = prod_{i<=t} (1 - beta_i)`` (eq 1).
* :func:`q_sample`: the forward process
  ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` (eq 1); equals ``scheduler.add_noise``.
* :func:`posterior_variance` and :func:`ddpm_reverse_step`: one ancestral DDPM step (eq 2),
  ``x_{t-1} = 1/sqrt(alpha_t) (x_t - (1 - alpha_t)/sqrt(1 - abar_t) eps_theta) + sigma_t eta``
  with ``sigma_t^2 = beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t``; equals
  ``DDPMScheduler.step`` with ``variance_type="fixed_small"``.
* :func:`posterior_mean`: the mean of ``q(x_{t-1} | x_t, x_0)``, which the eq (2) mean reproduces
  exactly when ``eps_theta`` is the true noise (a check of the step algebra).
* :func:`epsilon_loss`: eq (3)/(5), ``||eps - eps_theta||^2`` averaged.
* :func:`cross_attention`: eq (4), ``softmax(Q K^T / sqrt(d)) V``; equals
  ``torch.nn.functional.scaled_dot_product_attention``; :func:`attention_from_module` applies it
  with the projections of a diffusers ``Attention`` layer (the U-Net's ``attn2``).
* :func:`token_states` and :func:`pooled_text_embeddings`: the text condition ``tau(y)`` per token,
  and its mask-aware mean over tokens (used to compare prompts with one vector each).

Indexing convention: ``t`` is a 0-based index into the schedule arrays, as in diffusers; the
paper's ``t = 1..T`` is ``index = t - 1``. ``abar`` "before the first step" is 1.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["betas_of", "alpha_bar", "q_sample", "posterior_variance", "posterior_mean",
           "predict_x0", "ddpm_reverse_step", "epsilon_loss", "cross_attention",
           "attention_from_module", "token_states", "pooled_text_embeddings"]


# --------------------------------------------------------------------------------------------
# Schedule (eq 1)
# --------------------------------------------------------------------------------------------
def betas_of(schedule) -> torch.Tensor:
    """``beta_t`` as a float64 tensor from a diffusers scheduler (``.betas``) or from the betas."""
    betas = getattr(schedule, "betas", schedule)
    return torch.as_tensor(betas).detach().to(torch.float64).cpu()


def alpha_bar(schedule) -> torch.Tensor:
    """``abar_t = prod_{i<=t} (1 - beta_i)`` (eq 1), float64, one value per timestep index.

    ``schedule`` is a diffusers scheduler or a 1-d tensor/array of betas. For a scheduler this
    equals its ``alphas_cumprod`` (computed there in float32).
    """
    return torch.cumprod(1.0 - betas_of(schedule), dim=0)


def _gather(values: torch.Tensor, t, like: torch.Tensor) -> torch.Tensor:
    """``values[t]`` broadcast against ``like`` (B, ...): ``t`` is an int or a (B,) tensor."""
    t = torch.as_tensor(t, device=values.device).long()
    out = values[t].to(device=like.device, dtype=like.dtype)
    return out.reshape(out.shape + (1,) * (like.ndim - out.ndim))


def q_sample(x0: torch.Tensor, t, noise: torch.Tensor, alphas_cumprod) -> torch.Tensor:
    """Forward process, eq (1): ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``.

    ``alphas_cumprod``: ``abar`` (1-d) or a scheduler; ``t`` an int or one index per batch item.
    """
    ab = alphas_cumprod if isinstance(alphas_cumprod, torch.Tensor) else alpha_bar(alphas_cumprod)
    ab = _gather(ab.to(torch.float64), t, x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


# --------------------------------------------------------------------------------------------
# Reverse step (eq 2) and loss (eq 3, 5)
# --------------------------------------------------------------------------------------------
def _prev_alpha_bar(ab: torch.Tensor) -> torch.Tensor:
    """``abar_{t-1}`` for every index, with ``abar_{-1} = 1``."""
    return torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])


def posterior_variance(betas) -> torch.Tensor:
    """``beta~_t = (1 - abar_{t-1}) / (1 - abar_t) * beta_t`` for every index (0 at the first)."""
    b = betas_of(betas)
    ab = torch.cumprod(1.0 - b, dim=0)
    return (1.0 - _prev_alpha_bar(ab)) / (1.0 - ab) * b


def predict_x0(x_t: torch.Tensor, t, eps: torch.Tensor, betas) -> torch.Tensor:
    """Invert eq (1) for ``x_0`` given a noise estimate: ``(x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``."""
    ab = _gather(alpha_bar(betas), t, x_t)
    return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()


def posterior_mean(x0: torch.Tensor, x_t: torch.Tensor, t, betas) -> torch.Tensor:
    """Mean of ``q(x_{t-1} | x_t, x_0)`` (Ho et al. 2020, eq 7):
    ``sqrt(abar_{t-1}) beta_t / (1 - abar_t) x_0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t``.
    """
    b = betas_of(betas)
    ab = torch.cumprod(1.0 - b, dim=0)
    abp = _prev_alpha_bar(ab)
    c0 = _gather(abp.sqrt() * b / (1 - ab), t, x_t)
    ct = _gather((1 - b).sqrt() * (1 - abp) / (1 - ab), t, x_t)
    return c0 * x0 + ct * x_t


def ddpm_reverse_step(x_t: torch.Tensor, t, eps: torch.Tensor, betas,
                      noise: torch.Tensor | None = None, generator: torch.Generator | None = None
                      ) -> torch.Tensor:
    """One DDPM step, eq (2): ``x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t/sqrt(1-abar_t) eps) + sigma_t eta``.

    ``alpha_t = 1 - beta_t``; ``eps`` is the model's noise estimate ``eps_theta(x_t, t)``;
    ``eta ~ N(0, I)`` is ``noise`` (drawn with ``generator`` when None); ``t`` is one int index.

    The paper prints the noise term as ``beta~_t eta``. In DDPM (and in diffusers) ``beta~_t`` is the
    VARIANCE of the step, so the standard deviation multiplying ``eta`` is ``sigma_t = sqrt(beta~_t)``;
    we follow DDPM. No noise is added at the last step (``t = 0``, where ``beta~_0 = 0``).
    """
    t = int(t)
    b = betas_of(betas)
    ab = torch.cumprod(1.0 - b, dim=0)
    beta, alpha = float(b[t]), float(1.0 - b[t])
    mean = (x_t - beta / math.sqrt(1.0 - float(ab[t])) * eps) / math.sqrt(alpha)
    if t == 0:
        return mean
    if noise is None:
        noise = torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype).to(x_t.device)
    sigma = math.sqrt(float(posterior_variance(b)[t]))
    return mean + sigma * noise


def epsilon_loss(eps: torch.Tensor, eps_pred: torch.Tensor) -> torch.Tensor:
    """Eq (3)/(5)/(8): ``E ||eps - eps_theta||^2``, as the mean squared error over all elements."""
    return F.mse_loss(eps_pred.float(), eps.float())


# --------------------------------------------------------------------------------------------
# Cross-attention (eq 4)
# --------------------------------------------------------------------------------------------
def cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    mask: torch.Tensor | None = None, return_weights: bool = True):
    """Eq (4): ``Attention(Q, K, V) = softmax(Q K^T / sqrt(d)) V``.

    ``q``: ``(..., Lq, d)`` (queries from U-Net features), ``k``/``v``: ``(..., Lk, d)`` / ``(..., Lk, dv)``
    (keys and values from the text states ``tau(y)``). ``mask`` (bool, broadcastable to
    ``(..., Lq, Lk)``) marks the keys that may be attended (False -> weight 0). Returns the output
    ``(..., Lq, dv)`` and, with ``return_weights``, the attention weights ``(..., Lq, Lk)``, whose rows
    sum to 1. Agrees with ``torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)``.
    """
    d = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)
    if mask is not None:
        scores = scores.masked_fill(~mask.bool(), float("-inf"))
    weights = scores.softmax(dim=-1)
    out = weights @ v
    return (out, weights) if return_weights else out


def attention_from_module(attn, hidden_states: torch.Tensor, context: torch.Tensor):
    """Eq (4) with the projections of a diffusers ``Attention`` layer (e.g. the U-Net's ``attn2``).

    ``hidden_states``: the layer's input ``(B, N, C)`` (N latent positions), ``context``:
    ``tau(y)`` ``(B, L, d_text)``. Computes ``Q = W_q h``, ``K = W_k tau``, ``V = W_v tau`` split
    into ``attn.heads`` heads, applies :func:`cross_attention` per head and the output projection.
    Returns ``(out, weights)`` with ``out`` ``(B, N, C)`` (what the layer returns for these inputs,
    without an attention mask) and ``weights`` ``(B, heads, N, L)``.
    """
    b, n, _ = hidden_states.shape
    h = attn.heads
    q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)

    def split(x):
        return x.reshape(b, x.shape[1], h, -1).transpose(1, 2)

    out, w = cross_attention(split(q), split(k), split(v))
    out = out.transpose(1, 2).reshape(b, n, -1)
    out = attn.to_out[1](attn.to_out[0](out))  # linear, then dropout (identity in eval mode)
    if getattr(attn, "residual_connection", False):
        out = out + hidden_states
    return out / getattr(attn, "rescale_output_factor", 1.0), w


# --------------------------------------------------------------------------------------------
# Text condition tau(y)
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def token_states(text, prompts: list[str]):
    """``tau(y)`` per token for a :class:`~anomalysd_core.method.models.TextEncoder`.

    Returns ``(states (n, L, d), attention_mask (n, L) bool, tokens list[list[str]])``; ``states``
    is exactly what the U-Net receives as cross-attention context (padding included).
    """
    tok = text.tokenizer(list(prompts), padding="max_length", truncation=True,
                         max_length=text.max_length, return_tensors="pt")
    states = text(list(prompts))
    tokens = [text.tokenizer.convert_ids_to_tokens(ids) for ids in tok.input_ids.tolist()]
    return states, tok.attention_mask.bool(), tokens


@torch.no_grad()
def pooled_text_embeddings(text, prompts: list[str], normalize: bool = True) -> torch.Tensor:
    """One vector per prompt: the mean of ``tau(y)`` over its real (non-padding) tokens, ``(n, d)``.

    This is the usual sentence embedding of MiniLM (mean pooling); with ``normalize`` the rows
    have unit L2 norm, so ``E @ E.T`` is the cosine similarity matrix.
    """
    states, mask, _ = token_states(text, prompts)
    m = mask.to(states.dtype)[..., None]
    pooled = (states * m).sum(1) / m.sum(1).clamp_min(1.0)
    return F.normalize(pooled, dim=-1) if normalize else pooled
