"""The naive engine the benchmarks compare ours with: one diffusers
``StableDiffusionInpaintPipeline`` call per mask (``NaiveEngine``), built from our components,
with the same lambda, steps, averaged prompt embedding (guidance 1) and seed.

Two facts it has to handle: diffusers stacks the U-Net input as [z_t ; mask ; z_o]
(``pipeline_unet`` permutes ``conv_in`` should ours ever differ), and diffusers keeps
int(strength x steps) timesteps where we keep floor(lambda x steps) + 1 (``pipeline_strength``
gives it exactly ours). ``engine`` swaps an inpainting function into ``AnomalySD.intermediates``.
"""
from __future__ import annotations

import contextlib
import copy

import torch

from anomalysd_core.method import scoring
from anomalysd_core.method.inpaint import inpaint, masked_image, unet_input
from anomalysd_core.reproduce import cost as cost_mod


def pipeline_strength(strength: float, steps: int) -> float:
    """The ``strength`` that makes diffusers keep our timesteps (``inpaint.start_timesteps``).

    diffusers keeps the last int(strength x steps) of the schedule's timesteps; we keep the last
    floor(lambda x steps) + 1 (those at or below lambda T). A tiny margin guards int() against
    rounding (e.g. 0.45 x 20 = 9.000000000000002 is fine, 0.3 x 10 = 2.9999999999999996 is not).
    """
    n = cost_mod.unet_calls_per_mask(strength, steps)
    s = min(1.0, (n + 1e-6) / steps)
    if cost_mod.diffusers_calls_per_mask(s, steps) != n:
        raise ValueError(f"no pipeline strength gives {n} of {steps} timesteps")
    return s


def channel_order() -> list[str]:
    """The order in which ``inpaint.unet_input`` stacks the 9 U-Net input channels."""
    zt = torch.zeros(1, 4, 1, 1) + torch.arange(0, 4).view(1, 4, 1, 1)
    zo = torch.zeros(1, 4, 1, 1) + torch.arange(4, 8).view(1, 4, 1, 1)
    m = torch.full((1, 1, 1, 1), 8.0)
    names = [f"z_t{i}" for i in range(4)] + [f"z_o{i}" for i in range(4)] + ["m"]
    return [names[int(v)] for v in unet_input(zt, zo, m)[0, :, 0, 0]]


# diffusers' StableDiffusionInpaintPipeline: torch.cat([latents, mask, masked_image_latents], dim=1)
DIFFUSERS_ORDER = [f"z_t{i}" for i in range(4)] + ["m"] + [f"z_o{i}" for i in range(4)]


def pipeline_unet(unet):
    """``unet`` as the pipeline must see it: if our engine stacks the input channels in another
    order than diffusers ([z_t ; mask ; z_o]), a copy with ``conv_in``'s input channels permuted
    (the same function); else ``unet`` itself."""
    ours = channel_order()
    if ours == DIFFUSERS_ORDER:
        return unet
    u = copy.deepcopy(unet)
    perm = [ours.index(c) for c in DIFFUSERS_ORDER]
    with torch.no_grad():
        u.conv_in.weight.copy_(unet.conv_in.weight[:, perm])
    return u


def pipeline_vae(comp):
    """The VAE as a pipeline loaded with ``torch_dtype=comp.dtype`` holds it: ``comp.vae`` itself, or
    a copy in the U-Net's dtype where ``models.vae_dtype`` keeps ours in float32 (under float16);
    the pipeline feeds its VAE in the U-Net's dtype."""
    if next(comp.vae.parameters()).dtype == comp.dtype:
        return comp.vae
    return copy.deepcopy(comp.vae).to(comp.dtype)


def build_pipeline(comp):
    from diffusers import DDIMScheduler, StableDiffusionInpaintPipeline

    pipe = StableDiffusionInpaintPipeline(
        vae=pipeline_vae(comp), text_encoder=comp.text.model if comp.text is not None else None,
        tokenizer=comp.text.tokenizer if comp.text is not None else None, unet=pipeline_unet(comp.unet),
        scheduler=DDIMScheduler.from_config(comp.scheduler.config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class NaiveEngine:
    """``inpaint.inpaint``'s signature, one pipeline call per mask (what a user would write).

    ``matched=True`` feeds the pipeline our engine's latents (z = E(x) as the posterior mean and
    z_o) instead of the image, so that its only random draw is the start noise, which then equals
    ours: used to check that both engines compute the same thing (not for timing).
    """

    def __init__(self, comp, matched: bool = False):
        self.comp, self.pipe, self.matched = comp, build_pipeline(comp), matched
        self.unet_batches: list[int] = []
        self.unet_timesteps: list[int] = []
        self.recording = False  # the pipeline's U-Net is our engine's own when the channel orders match

        def hook(m, a):
            if self.recording:
                self.unet_batches.append(int(a[0].shape[0]))
                self.unet_timesteps.append(int(a[1]))

        self.pipe.unet.register_forward_pre_hook(hook)

    def __call__(self, *args, **kwargs):
        self.recording = True
        try:
            return self._run(*args, **kwargs)
        finally:
            self.recording = False

    def _run(self, comp, x, masks, context, strength, steps, seed=0, batch=0, progress=False):
        return pipeline_inpaint(self.pipe, comp, x, masks, context, strength, steps, seed, self.matched)


def pipeline_inpaint(pipe, comp, x, masks, context, strength, steps, seed=0, matched=True):
    """x^ (N,3,H,W) from one ``pipe`` call per mask at our lambda, steps, prompt embedding
    (guidance 1) and seed. ``matched`` feeds it our engine's latents, z = E(x) as the posterior
    mean and z_o = E((1 - m) x) with mid-grey fill, so that its only random draw is the start
    noise, which then equals ours; else it gets the image and encodes (and samples) itself."""
    strength = pipeline_strength(strength, steps)
    dev = comp.device
    x = x.to(dev, torch.float32)
    outs = []
    for i in range(masks.shape[0]):
        m = masks[i:i + 1].to(dev, torch.float32)
        if matched:
            with torch.inference_mode():
                kw = dict(image=comp.encode(x), masked_image_latents=comp.encode(masked_image(x, m)))
        else:
            kw = dict(image=x)
        r = pipe(prompt_embeds=context.to(dev, comp.dtype), mask_image=m, height=x.shape[-2],
                 width=x.shape[-1], strength=strength, num_inference_steps=steps, guidance_scale=1.0,
                 generator=torch.Generator().manual_seed(int(seed)), output_type="pt", **kw)
        if pipe.do_classifier_free_guidance:
            raise RuntimeError("the pipeline ran classifier-free guidance")
        outs.append(r.images.float())
    return torch.cat(outs)


def engine_vs_pipeline(comp, pipe, x, masks, context, strength, steps, seed=0) -> dict:
    """How far our batched engine (``inpaint.inpaint``) is from diffusers' pipeline on the same
    inputs (``pipeline_inpaint``, matched), and from itself run one mask at a time: the largest
    absolute differences of the inpaintings x^ in [0, 1]. ``pipe`` holds the U-Net as it is (no
    channel permutation), so an engine that stacks the 9 input channels in another order than
    the checkpoints expect is far from it."""
    n = masks.shape[0]
    a = inpaint(comp, x, masks, context, strength, steps, seed=seed, batch=n)
    one = torch.cat([inpaint(comp, x, masks[i:i + 1], context, strength, steps, seed=seed, batch=1)
                     for i in range(n)])
    b = pipeline_inpaint(pipe, comp, x, masks, context, strength, steps, seed)
    return {"engine_vs_pipeline": float((a.float() - b).abs().max()),
            "batched_vs_one_at_a_time": float((a.float() - one.float()).abs().max()), "masks": n,
            "strength": float(strength), "steps": int(steps)}


@contextlib.contextmanager
def engine(det, fn=None, distance_chunk=None):
    """Run ``det.intermediates`` with another inpainting function and/or distance chunk size.

    ``fn`` has ``inpaint``'s signature and returns images: it stands in for ``scoring.denoise``,
    and ``scoring.decode`` passes its images through (the pipeline decodes itself)."""
    old_inpaint, old_decode, old_dist = scoring.denoise, scoring.decode, det.distance_maps
    if fn is not None:
        scoring.denoise, scoring.decode = fn, (lambda comp, images, batch=0: images)
    if distance_chunk is not None:
        det.distance_maps = lambda x, xh, chunk=32: old_dist(x, xh, chunk=distance_chunk)
    try:
        yield
    finally:
        scoring.denoise, scoring.decode = old_inpaint, old_decode
        det.distance_maps = old_dist


def score(det, img, cls, seed):
    inter = det.intermediates(img, cls, seed=seed)
    return inter, det.fuse(inter)
