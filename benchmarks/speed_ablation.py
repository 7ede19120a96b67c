"""Table (3) of ``inference_speed.py``: what makes the engine fast, one factor at a time
(shared encodes, batching, attention kernel, shared noise...), on one image and 86 masks, each
variant checked against ``inpaint.inpaint``."""
from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import torch
from speed_scaling import masks_for
from speed_timing import log, timed

from anomalysd_core.method import scoring
from anomalysd_core.method.inpaint import inpaint, latent_mask, masked_image, start_timesteps, unet_input


def engine_variant(comp, x, masks, context, strength, steps, seed=0, batch=86, shared_noise=True,
                   per_mask_prep=None, channels_last=False):
    """``inpaint.inpaint`` written out with switches for the ablation (no inference_mode here:
    the caller chooses the autograd mode). Defaults reproduce ``inpaint.inpaint`` exactly.

    ``per_mask_prep``: None, or a function returning the prompt embedding: then z = E(x) and the
    embedding are recomputed for every mask instead of once per image. ``shared_noise=False``: one
    noise draw per mask instead of one per image.
    """
    dev, dt = comp.device, comp.dtype
    x, masks = x.to(dev, torch.float32), masks.to(dev, torch.float32)
    n = masks.shape[0]
    timesteps = start_timesteps(comp.scheduler, steps, strength)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    z0 = comp.encode(x).to(dt)
    noise = torch.randn((n if not shared_noise else 1,) + tuple(z0.shape[1:]), generator=gen).to(dev, dt)
    ctx = context.to(dev, dt)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    outs = []
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        m = masks[lo:hi]
        if per_mask_prep is not None:
            zs = torch.cat([comp.encode(x).to(dt) for _ in range(hi - lo)])
            c = torch.cat([per_mask_prep().to(dev, dt) for _ in range(hi - lo)])
        else:
            zs, c = z0.expand(hi - lo, -1, -1, -1), ctx.expand(hi - lo, -1, -1)
        nz = noise.expand(hi - lo, -1, -1, -1) if shared_noise else noise[lo:hi]
        z = comp.scheduler.add_noise(zs, nz, timesteps[:1].to(dev))
        zo = comp.encode(masked_image(x, m).contiguous(memory_format=fmt)).to(dt)
        ml = latent_mask(m, tuple(z0.shape[-2:])).to(dt)
        for t in timesteps:
            inp = unet_input(z, zo, ml).contiguous(memory_format=fmt)
            eps = comp.unet(inp, t.to(dev), encoder_hidden_states=c).sample
            z = comp.scheduler.step(eps, t, z, eta=0.0).prev_sample
        outs.append(comp.decode(z).detach())
    return torch.cat(outs)


def set_attention(comp, kind):
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    proc = AttnProcessor() if kind == "classic" else AttnProcessor2_0()
    comp.unet.set_attn_processor(proc)
    comp.vae.set_attn_processor(proc)


def ablation(cfg, comp, det, items, args):
    from anomalysd_core.method.prompts import prompt_set

    dev = comp.device
    cls, s, img, _ = items[0]
    x = scoring.to_tensor(img)
    with torch.inference_mode():
        masks = masks_for(det, x, cls)  # 85 grid masks + M^(p)
    ctx = det.context(cls)
    lam, steps, n_abl = cfg.noise_strength, cfg.num_inference_steps, args.ablation_repeats
    prompts = prompt_set(cls, cfg.prompt_design)

    def run(fn, mode="inference"):
        cm = {"inference": torch.inference_mode, "no_grad": torch.no_grad,
              "grad": contextlib.nullcontext}[mode]
        with cm():
            return fn()

    def measure(fn, mode="inference", repeats=n_abl, project=1.0):
        run(fn, mode)  # warm-up
        ts, mems = [], []
        for _ in range(repeats):
            _, dt, mib = timed(lambda: run(fn, mode), dev, mem=True)
            ts.append(dt)
            mems.append(mib)
        return float(np.min(ts)) * project, float(np.max(mems))

    def pair(base_fn, var_fn, var_mode="inference", repeats=n_abl, setup=None, teardown=None, project=1.0):
        """Baseline and variant measured alternately (best of ``repeats`` each): the CPU is shared,
        and its load drifts, so the two are timed under the same conditions."""
        bt, bm, vt, vm = [], [], [], []
        for r in range(repeats):
            b = measure(base_fn, repeats=1)
            if setup:
                setup()
            try:
                v = measure(var_fn, var_mode, repeats=1, project=project)
            finally:
                if teardown:
                    teardown()
            bt.append(b[0]), bm.append(b[1]), vt.append(v[0]), vm.append(v[1])
        return (min(bt), max(bm)), (min(vt), max(vm))

    n_m = masks.shape[0]
    ref = inpaint(comp, x, masks, ctx, lam, steps, seed=cfg.seed, batch=86)
    with torch.inference_mode():
        same = float((engine_variant(comp, x, masks, ctx, lam, steps, cfg.seed, 86) - ref).abs().max())
    log(f"  engine_variant(defaults) vs inpaint.inpaint: max |diff| = {same:.2e}")
    rows = []

    def row(factor, base_name, base, var_name, var, note=""):
        rows.append({"factor": factor, "baseline": base_name, "baseline_s_per_image": base[0],
                     "baseline_peak_mib": base[1], "variant": var_name, "variant_s_per_image": var[0],
                     "variant_peak_mib": var[1], "variant_time_over_baseline": var[0] / base[0], "note": note})
        log(f"  {factor:28s} {base_name:26s} {base[0]:7.2f} s {base[1]:6.0f} MiB | {var_name:33s} "
            f"{var[0]:7.2f} s {var[1]:6.0f} MiB | time x{var[0] / base[0]:5.2f} {note}")

    E = lambda **kw: (lambda: engine_variant(comp, x, masks, ctx, lam, steps, cfg.seed, **kw))  # noqa: E731
    b86 = E(batch=86)
    base, var = pair(b86, E(batch=1))
    row("batching", f"{n_m} masks per U-Net batch", base, "1 mask per U-Net batch", var)
    base, var = pair(b86, E(batch=8))
    row("batching", f"{n_m} masks per U-Net batch", base, "8 masks per U-Net batch", var)
    prep = lambda: comp.text.average(prompts)  # noqa: E731
    base, var = pair(E(batch=1), E(batch=1, per_mask_prep=prep), repeats=1)
    row("z=E(x), text embedding once", "once per image (batch 1)", base, "per mask (batch 1)", var,
        f"{len(prompts)} prompts averaged")
    base, var = pair(b86, E(batch=86, per_mask_prep=prep))
    row("z=E(x), text embedding once", "once per image (batch 86)", base, "per mask (batch 86)", var)
    base, var = pair(b86, b86, var_mode="no_grad")
    row("torch.inference_mode", "inference_mode", base, "no_grad", var)

    def grad_on():
        comp.unet.requires_grad_(True)
        comp.vae.requires_grad_(True)

    def grad_off():
        comp.unet.requires_grad_(False)
        comp.vae.requires_grad_(False)

    base, var = pair(b86, b86, var_mode="grad", repeats=1, setup=grad_on, teardown=grad_off)
    row("torch.inference_mode", "inference_mode", base, "autograd on, weights require grad", var)
    base, var = pair(b86, b86, setup=lambda: set_attention(comp, "classic"),
                     teardown=lambda: set_attention(comp, "sdpa"))
    row("SDPA attention", "AttnProcessor2_0 (SDPA)", base, "AttnProcessor (classic)", var)

    def cl_on():
        comp.unet.to(memory_format=torch.channels_last)
        comp.vae.to(memory_format=torch.channels_last)

    def cl_off():
        comp.unet.to(memory_format=torch.contiguous_format)
        comp.vae.to(memory_format=torch.contiguous_format)

    base, var = pair(b86, E(batch=86, channels_last=True), setup=cl_on, teardown=cl_off)
    row("channels_last", "NCHW contiguous", base, "channels_last", var)
    for dt_name in ("bfloat16", "float16"):
        dt = getattr(torch, dt_name)
        note = ""

        def to(d):
            comp.unet.to(d)
            comp.vae.to(d)
            comp.dtype = d

        try:
            to(dt)
            few = masks[:4]
            with torch.inference_mode():
                t4 = timed(lambda: engine_variant(comp, x, few, ctx, lam, steps, cfg.seed, batch=4), dev)[1]
                out = engine_variant(comp, x, masks[:8], ctx, lam, steps, cfg.seed, batch=8)
            to(torch.float32)
            note = f"max |x^ - x^_fp32| on 8 masks {float((out.float() - ref[:8]).abs().max()):.3f}"
            if t4 * n_m / 4 > 60:  # too slow to run all masks: 8 masks, scaled
                base, var = pair(lambda: engine_variant(comp, x, masks[:8], ctx, lam, steps, cfg.seed, batch=8),
                                 lambda: engine_variant(comp, x, masks[:8], ctx, lam, steps, cfg.seed, batch=8),
                                 repeats=1, setup=lambda: to(dt), teardown=lambda: to(torch.float32))
                base, var = (base[0] * n_m / 8, base[1]), (var[0] * n_m / 8, var[1])
                note = f"timed on 8 masks, x{n_m}/8; " + note
            else:
                base, var = pair(b86, b86, repeats=1, setup=lambda: to(dt), teardown=lambda: to(torch.float32))
        except Exception as e:  # noqa: BLE001 - report, whatever the backend says
            to(torch.float32)
            base, var, note = (float("nan"), float("nan")), (float("nan"), float("nan")), \
                f"does not run: {type(e).__name__}: {str(e)[:80]}"
        row(f"{dt_name} (CPU)" if dev.type == "cpu" else dt_name, "float32", base, dt_name, var, note)
    base, var = pair(b86, E(batch=86, shared_noise=False))
    with torch.inference_mode():
        xi = engine_variant(comp, x, masks, ctx, lam, steps, cfg.seed, 86, shared_noise=False)
    row("shared noise", "one noise draw per image", base, "one noise draw per mask", var,
        f"mean |x^ change| {float((xi - ref).abs().mean()):.3f}")
    return pd.DataFrame(rows)
