#!/usr/bin/env python
"""Inference speed of AnomalySD scoring: our batched engine against the naive per-mask pipeline.

AnomalySD inpaints every test image under 86 masks (85 multi-scale grid masks + the prototype
mask), each a partial DDIM run from T~ = lambda T: floor(lambda x steps) + 1 U-Net evaluations
(eq 11; ``inpaint.unet_calls``). This script
measures, on the same images in the same run:

(a) our engine: ``scoring.AnomalySD.intermediates`` + ``fuse`` with ``inpaint.inpaint`` (all masks
    of an image in chunked U-Net batches, z = E(x) and the prompt embedding computed once, one
    noise draw shared by the masks);
(b) the naive approach: one diffusers ``StableDiffusionInpaintPipeline`` call per mask, built from
    the same components, with the same lambda (``strength``), steps, averaged prompt embedding
    (``prompt_embeds``, ``guidance_scale=1.0``: no classifier-free guidance, checked) and seed,
    followed by the distance of each inpainting (batch 1), as a loop over masks would be written.
    Everything else (prototype mask, fusion) is the same code.

and prints images/second, peak memory and image/pixel AUROC of both (maps fused with
``scoring.fuse``), then optional tables: scaling (mask set, image size, DDIM steps, batch size,
with the cost model of ``anomalysd_core/cost.py`` checked against them), "what makes it fast"
(one factor at a time), and a paper-size (SD-1.5-inpainting-size, random weights) projection.
The speed-up ratio is printed LAST.

Two facts about the naive pipeline that the comparison has to handle (both printed):

* diffusers concatenates the U-Net input as [z_t ; mask ; z_o] (SD-inpainting checkpoints). The
  engine now does the same (``inpaint.unet_input``); should the order ever differ, the pipeline
  gets a copy of our U-Net with ``conv_in``'s input channels permuted (``pipeline_unet``): the
  same function of the same inputs.
* diffusers keeps int(strength x steps) timesteps and so starts one step below lambda T; our
  engine keeps floor(lambda x steps) + 1 and starts at lambda T. The pipeline is therefore called
  with strength = (floor(lambda x steps) + 1) / steps (0.5 for 10 steps at lambda 0.4), which
  gives it exactly our timesteps (checked: same count, same first timestep).

Usage::

    python benchmarks/inference_speed.py                       # mini profile, 12 images, tables
    python benchmarks/inference_speed.py --quick               # 2 images, no tables, no CSV
    python benchmarks/inference_speed.py --paper-size          # + SD-1.5-size projection (<3 min)
    python benchmarks/inference_speed.py --images 4 --no-scaling --no-ablation

CSV files go to ``results/<profile>/bench_*.csv`` (atomically), except with ``--quick``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import os
import platform
import sys
import threading
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from anomalysd_core import cost as cost_mod  # noqa: E402
from anomalysd_core import scoring  # noqa: E402
from anomalysd_core.inpaint import inpaint, latent_mask, masked_image, start_timesteps, unet_input  # noqa: E402

PAPER_MASKS, PAPER_STEPS, PAPER_LAMBDA, PAPER_SIZE = 86, 50, 0.4, 512


def log(*a):
    print(*a, flush=True)


# ---------------------------------------------------------------------------------------------
# Measuring: wall time and peak memory
# ---------------------------------------------------------------------------------------------

def _trim_heap():
    """Give freed heap memory back to the OS (glibc ``malloc_trim``), so RSS tracks live memory."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory of a block above its start. CUDA: ``torch.cuda.max_memory_allocated``. CPU: the
    process's resident set size sampled every ``interval`` s in a thread (psutil), after returning
    freed heap pages to the OS; torch's CPU allocations are invisible to tracemalloc and
    ``ru_maxrss`` only ever rises. CPU figures are approximate (a few MiB)."""

    def __init__(self, device, interval: float = 0.002):
        self.device, self.interval, self.mib = torch.device(device), interval, float("nan")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            import psutil

            _trim_heap()
            self.proc = psutil.Process()
            self.base = self.peak = self.proc.memory_info().rss
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.stop.set()
            self.thread.join()
            peak = max(self.peak, self.proc.memory_info().rss)
        self.mib = (peak - self.base) / 2 ** 20


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, mem: bool = False):
    """(result, seconds, peak MiB or nan)."""
    sync(device)
    with (PeakMemory(device) if mem else contextlib.nullcontext()) as pm:
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        dt = time.perf_counter() - t0
    return out, dt, (pm.mib if mem else float("nan"))


# ---------------------------------------------------------------------------------------------
# (b) the naive engine: one StableDiffusionInpaintPipeline call per mask
# ---------------------------------------------------------------------------------------------

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
        strength = pipeline_strength(strength, steps)
        dev = comp.device
        x = x.to(dev, torch.float32)
        outs = []
        for i in range(masks.shape[0]):
            m = masks[i:i + 1].to(dev, torch.float32)
            kw = {}
            if self.matched:
                with torch.inference_mode():
                    kw = dict(image=comp.encode(x), masked_image_latents=comp.encode(masked_image(x, m)))
            else:
                kw = dict(image=x)
            r = self.pipe(prompt_embeds=context.to(dev, comp.dtype), mask_image=m, height=x.shape[-2],
                          width=x.shape[-1], strength=strength, num_inference_steps=steps, guidance_scale=1.0,
                          generator=torch.Generator().manual_seed(int(seed)), output_type="pt", **kw)
            if self.pipe.do_classifier_free_guidance:
                raise RuntimeError("the pipeline ran classifier-free guidance")
            outs.append(r.images.float())
        return torch.cat(outs)


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


# ---------------------------------------------------------------------------------------------
# Set-up
# ---------------------------------------------------------------------------------------------

def load_everything(args):
    from anomalysd_core import data as data_mod
    from anomalysd_core.config import get_config
    from anomalysd_core.evaluate import open_data
    from anomalysd_core.features import build_backbone, build_distance
    from anomalysd_core.models import load_components, new_mini_components

    over = dict(device=args.device, num_inference_steps=args.steps, noise_strength=args.strength,
                infer_batch=args.batch, grid_scales=args.scales)
    if args.classes:
        over["classes"] = args.classes
    native = get_config(args.profile).image_size
    if args.size and args.size != native:
        # another size than the profile's: build the benchmark at that size in its own folder
        # (ensure_mini would otherwise rebuild the shared data/<profile> folder at the new size)
        over["image_size"] = args.size
        over["data_root"] = args.data_root or f"/tmp/anomalysd-bench-data/{args.profile}-{args.size}"
    elif args.data_root:
        over["data_root"] = args.data_root
    cfg = get_config(args.profile, **over)
    if args.size and args.size != native and not args.data_root:
        from anomalysd_core.mini import ensure_mini

        ensure_mini(cfg, build=True)  # the benchmark's own folder: built here on purpose
    from anomalysd_core.utils import resolve_device

    device = resolve_device(cfg.device)
    if not args.random_model and Path(cfg.base_model).is_dir():
        comp = load_components(cfg, device)
        model = f"pretrained mini base model ({cfg.base_model})"
    else:
        if args.profile == "paper":
            raise SystemExit("the paper profile needs its checkpoint; use --paper-size for a weightless timing")
        comp = new_mini_components(cfg.image_size, device=device, seed=0)
        for m in (comp.vae, comp.unet):
            m.requires_grad_(False).eval()
        why = "--random-model" if args.random_model else f"{cfg.base_model} does not exist yet"
        model = (f"RANDOMLY INITIALISED mini model, same architecture ({why}); timings are those of "
                 f"the trained model, AUROC values are not")
    backbone = build_backbone(cfg.backbone, device=device)
    distance = build_distance(cfg.distance, device=device)
    ds, classes = open_data(cfg)
    classes = classes if args.classes else [c for c in ("brick", "coins") if c in classes] or classes[:2]
    shots = data_mod.sample_shots(ds, classes, cfg.shots, cfg.seed)
    det = scoring.AnomalySD(cfg, comp, backbone, distance)
    det.set_shots({c: [data_mod.load_image(s.path, cfg.image_size) for s in shots[c]] for c in classes})
    per = max(1, args.images // len(classes))
    items = []
    for c in classes:
        test = ds.test(c)
        good = [s for s in test if not s.label][: per - per // 2]
        bad = [s for s in test if s.label][: per // 2]
        items += [(c, s) + data_mod.load_sample(s, cfg.image_size) for s in good + bad]
    return cfg, comp, det, ds, classes, shots, items, model


# ---------------------------------------------------------------------------------------------
# (1) head to head
# ---------------------------------------------------------------------------------------------

def head_to_head(cfg, comp, det, items, args):
    from anomalysd_core.evaluate import class_metrics

    dev = comp.device
    naive = NaiveEngine(comp)
    # warm-up (one-time allocations, kernel selection), untimed
    c0, _, img0, _ = items[0]
    score(det, img0, c0, cfg.seed)
    with engine(det, naive, distance_chunk=1):
        score(det, img0, c0, cfg.seed)
    naive.unet_batches.clear()
    naive.unet_timesteps.clear()
    res = {"a": [], "b": []}
    t = {"a": 0.0, "b": 0.0}
    mem = {"a": 0.0, "b": 0.0}
    stage = {"a": {}, "b": {}}
    log(f"  {'image':34s} {'(a) s':>7s} {'(b) s':>7s} {'score a':>9s} {'score b':>9s}   (b)/(a)")
    ratios = []
    for cls, s, img, gt in items:
        line = []
        for key in ("a", "b"):
            best = None
            for _ in range(max(1, args.repeats)):  # best of repeats: the CPU is shared with other jobs
                ctx = contextlib.nullcontext() if key == "a" else engine(det, naive, distance_chunk=1)
                mods = cost_mod.engine_modules(comp) if key == "a" else {
                    "unet": naive.pipe.unet, "vae_encode": comp.vae.encoder, "vae_decode": comp.vae.decoder}
                with ctx, cost_mod.StageTimer(mods) as st:
                    (inter, sm), dt, mib = timed(lambda: score(det, img, cls, cfg.seed), dev, mem=True)
                if best is None or dt < best[0]:
                    best = (dt, mib, dict(st.seconds), sm)
            dt, mib, secs, sm = best
            for k, v in secs.items():
                stage[key][k] = stage[key].get(k, 0.0) + v
            t[key] += dt
            mem[key] = max(mem[key], mib)
            res[key].append((cls, s.label, gt, sm.score, sm.S_map))
            line.append((dt, sm.score))
        ratios.append(line[1][0] / line[0][0])
        log(f"  {s.relpath[:34]:34s} {line[0][0]:7.2f} {line[1][0]:7.2f} {line[0][1]:9.4g} {line[1][1]:9.4g}"
            f"   x{ratios[-1]:.1f}")
    n = len(items)
    per_mask = cost_mod.unet_calls_per_mask(cfg.noise_strength, cfg.num_inference_steps)
    n_masks = det.grid.shape[0] + 1
    assert set(naive.unet_batches) == {1}, naive.unet_batches
    reps = max(1, args.repeats)
    ours = [int(t) for t in start_timesteps(comp.scheduler, cfg.num_inference_steps, cfg.noise_strength)]
    assert naive.unet_timesteps[:per_mask] == ours, (naive.unet_timesteps[:per_mask], ours)
    assert len(naive.unet_batches) == reps * n * n_masks * per_mask, (len(naive.unet_batches), n, n_masks, per_mask)
    log(f"  naive pipeline: {len(naive.unet_batches)} U-Net calls, all of batch 1 "
        f"(= {reps} repeats x {n} images x {n_masks} masks x {per_mask}): guidance_scale=1.0 runs no "
        f"classifier-free guidance; timesteps {naive.unet_timesteps[:per_mask]} = ours")

    def metrics(rows):
        out = {}
        for c in dict.fromkeys(r[0] for r in rows):
            rr = [r for r in rows if r[0] == c]
            m = class_metrics([r[1] for r in rr], [r[3] for r in rr], [r[2] for r in rr], [r[4] for r in rr])
            out[c] = (m["i_auroc"], m["p_auroc"])
        out["mean"] = tuple(float(np.nanmean([v[i] for k, v in out.items()])) for i in range(2))
        return out

    ma, mb = metrics(res["a"]), metrics(res["b"])
    # seed floor: our engine with another noise seed, to size the AUROC change a different noise draw makes
    res_seed = []
    for cls, s, img, gt in items:
        _, sm = score(det, img, cls, cfg.seed + 1)
        res_seed.append((cls, s.label, gt, sm.score, sm.S_map))
    ms = metrics(res_seed)
    out = dict(n_images=n, n_masks=n_masks, unet_calls_per_mask=per_mask, t_a=t["a"], t_b=t["b"],
               mem_a=mem["a"], mem_b=mem["b"], stage_a=stage["a"], stage_b=stage["b"], ma=ma, mb=mb, ms=ms,
               median_ratio=float(np.median(ratios)))
    return out


def matched_check(cfg, comp, det, items):
    """Max |x^_a - x^_b| over the 86 inpaintings of one image when the pipeline gets our latents."""
    cls, s, img, _ = items[0]
    x = scoring.to_tensor(img)
    with torch.inference_mode():
        masks = masks_for(det, x, cls)
    ctx = det.context(cls)
    a = inpaint(comp, x, masks, ctx, cfg.noise_strength, cfg.num_inference_steps, seed=cfg.seed, batch=cfg.infer_batch)
    b = NaiveEngine(comp, matched=True)(comp, x, masks, ctx, cfg.noise_strength, cfg.num_inference_steps, cfg.seed)
    c = NaiveEngine(comp)(comp, x, masks, ctx, cfg.noise_strength, cfg.num_inference_steps, cfg.seed)
    n_grid = det.grid.shape[0]
    return dict(matched_max=float((a - b)[:n_grid].abs().max()), matched_proto=float((a - b)[n_grid:].abs().max())
                if masks.shape[0] > n_grid else float("nan"), plain_mean=float((a - c).abs().mean()))


# ---------------------------------------------------------------------------------------------
# (2) scaling tables and the cost model
# ---------------------------------------------------------------------------------------------

def masks_for(det, x, cls):
    """The grid masks plus the prototype mask M^(p) of ``x`` (as ``AnomalySD.intermediates`` builds them)."""
    from anomalysd_core import prototypes

    if cls not in det.banks:
        return det.grid
    E = prototypes.error_map(det.backbone.psi(x.to(det.comp.device)).float().cpu(), det.banks[cls])[0]
    return torch.cat([det.grid, prototypes.prototype_mask(E, det.cfg.image_size)[None, None].float()])


def fixed_cost(det, img, cls, inter):
    """Seconds per image outside the inpainting and the distance: prototype mask and fusion."""
    x = scoring.to_tensor(img)
    with torch.inference_mode():
        masks_for(det, x, cls)
        t1 = timed(lambda: masks_for(det, x, cls), det.comp.device)[1]
    t2 = timed(lambda: det.fuse(inter), det.comp.device)[1]
    return t1 + t2


def scaling(cfg, comp, det, items, shots_imgs, args):
    from anomalysd_core import data as data_mod

    dev = comp.device
    n_img = args.scale_images
    sub = items[:: max(1, len(items) // n_img)][:n_img]
    costs_cache = {}

    def costs_for(size, b, n_masks, fixed):
        key = (size, min(b, n_masks), min(32, n_masks))
        if key not in costs_cache:
            c = cost_mod.measure_call_costs(comp, None, image_size=size, batch=key[1],
                                            context=det.context(sub[0][0]), repeats=2)
            c.distance = _dist_cost(det, size, key[2])
            costs_cache[key] = c
        c = copy.copy(costs_cache[key])
        c.fixed = fixed
        return c

    sized = {cfg.image_size: sub}

    def sub_for(size):
        if size not in sized:
            sized[size] = [(c, s) + data_mod.load_sample(s, size) for c, s, _, _ in sub]
        return sized[size]

    dets = {}

    def det_for(size=cfg.image_size, scales=cfg.grid_scales, steps=cfg.num_inference_steps, batch=cfg.infer_batch):
        key = (size, tuple(scales), steps, batch)
        if key not in dets:
            c2 = dataclasses.replace(cfg, image_size=size, grid_scales=tuple(scales),
                                     num_inference_steps=steps, infer_batch=batch)
            d = scoring.AnomalySD(c2, comp, det.backbone, det.distance)
            d._ctx = det._ctx
            if size == cfg.image_size:
                d.banks = det.banks
            else:
                d.set_shots({c: [data_mod.load_image(s.path, size) for s in ss] for c, ss in shots_imgs.items()})
            dets[key] = d
        return dets[key]

    rows = []
    tables = [("mask set K", "grid_scales", [(1,), (1, 2), (1, 2, 4), (1, 2, 4, 8)]),
              ("image size", "image_size", [64, 128]),
              ("DDIM steps (lambda 0.4)", "num_inference_steps", [5, 10, 20]),
              ("batch size", "infer_batch", [1, 8, 32, 86])]
    for title, field, values in tables:
        for v in values:
            kw = dict(size=cfg.image_size, scales=cfg.grid_scales, steps=cfg.num_inference_steps, batch=cfg.infer_batch)
            kw[{"grid_scales": "scales", "image_size": "size", "num_inference_steps": "steps",
                "infer_batch": "batch"}[field]] = v
            if field == "grid_scales" and 8 in v and max(cfg.grid_scales) < 8:
                continue
            d = det_for(**kw)
            imgs = sub_for(kw["size"])
            inter, _ = score(d, imgs[0][2], imgs[0][0], cfg.seed)  # warm-up for these shapes
            fixed = fixed_cost(d, imgs[0][2], imgs[0][0], inter)
            ts, mems = [], []
            for cls, s, img, _ in imgs:
                _, dt, mib = timed(lambda: score(d, img, cls, cfg.seed), dev, mem=True)
                ts.append(dt)
                mems.append(mib)
            n_masks = d.grid.shape[0] + (1 if sub[0][0] in d.banks else 0)
            counts = cost_mod.calls_per_image(n_masks, cfg.noise_strength, kw["steps"])
            b = kw["batch"] or 32
            c = costs_for(kw["size"], b, n_masks, fixed)
            pred = cost_mod.predict_breakdown(counts, c)
            rows.append({"table": title, "value": str(v), "image_size": kw["size"], "n_masks": n_masks,
                         "steps": kw["steps"], "unet_calls_per_mask": counts.unet // n_masks, "batch": b,
                         "unet_calls": counts.unet, "vae_encodes": counts.vae_encode,
                         "vae_decodes": counts.vae_decode, "measured_s_per_image": float(np.mean(ts)),
                         "predicted_s_per_image": pred["total"],
                         "pred_unet_s": pred["unet"], "pred_vae_s": pred["vae_encode"] + pred["vae_decode"],
                         "pred_distance_s": pred["distance"], "pred_fixed_s": pred["fixed"],
                         "peak_mem_mib": float(np.max(mems)), "n_images": len(imgs)})
            r = rows[-1]
            log(f"  {title:24s} {str(v):>13s}: {r['measured_s_per_image']:6.2f} s/img measured, "
                f"{r['predicted_s_per_image']:6.2f} predicted ({100 * (r['predicted_s_per_image'] / r['measured_s_per_image'] - 1):+4.0f}%), "
                f"peak {r['peak_mem_mib']:6.0f} MiB, {counts.unet} U-Net items")
    costs = pd.DataFrame([{"image_size": k[0], "batch": k[1], **{n: getattr(c, n) for n in
                          ("unet", "vae_encode", "vae_decode", "distance", "fixed")}} for k, c in costs_cache.items()])
    return pd.DataFrame(rows), costs


def _dist_cost(det, size, b):
    """Seconds per item of the distance as ``det.distance_maps`` calls it (chunks of ``b``)."""
    dev = det.comp.device
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, size, size, generator=g).to(dev)
    xh = torch.rand(b, 3, size, size, generator=g).to(dev)
    with torch.inference_mode():
        det.distance(x, xh)
        best = min(timed(lambda: det.distance(x, xh), dev)[1] for _ in range(2))
    return best / b


# ---------------------------------------------------------------------------------------------
# (3) what makes it fast: one factor at a time (inpainting engine only)
# ---------------------------------------------------------------------------------------------

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
    from anomalysd_core.prompts import prompt_set

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


# ---------------------------------------------------------------------------------------------
# (4) paper size, random weights
# ---------------------------------------------------------------------------------------------

# SD-1.5-inpainting's U-Net (9 input channels, 768-d cross-attention) and SD's VAE
SD_UNET = dict(in_channels=9, out_channels=4, cross_attention_dim=768, sample_size=64)
SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=512,
              down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
              block_out_channels=(128, 256, 512, 512), layers_per_block=2)


def random_models(unet_kw: dict, vae_kw: dict, device, seed: int = 0):
    """A ``UNet2DConditionModel`` and an ``AutoencoderKL`` with random weights on ``device``, built
    without the default initialisers' cost (timing only: the time does not depend on the weights)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    with torch.device("meta"):
        unet, vae = UNet2DConditionModel(**unet_kw), AutoencoderKL(**vae_kw)
    gen = torch.Generator(device=device).manual_seed(seed)
    for m in (unet, vae):
        m.to_empty(device=device)
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0, 0.02, generator=gen)
            for b in m.buffers():
                b.zero_()
        m.requires_grad_(False).eval()
    return unet, vae


def paper_size(args, n_masks: int = 1):
    from diffusers import DDIMScheduler

    from anomalysd_core.features import build_backbone, build_distance
    from anomalysd_core.models import Components, scheduler_config

    t_start = time.perf_counter()
    unet, vae = random_models(SD_UNET, SD_VAE, "cpu")
    n_unet = sum(p.numel() for p in unet.parameters()) / 1e6
    n_vae = sum(p.numel() for p in vae.parameters()) / 1e6
    log(f"  UNet2DConditionModel default config, in_channels=9, cross_attention_dim=768: {n_unet:.0f}M params; "
        f"AutoencoderKL SD config: {n_vae:.0f}M params (built in {time.perf_counter() - t_start:.0f} s)")
    comp = Components(vae, unet, None, DDIMScheduler(**scheduler_config()), torch.device("cpu"))
    ctx = torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(0))
    x = torch.rand(1, 3, PAPER_SIZE, PAPER_SIZE, generator=torch.Generator().manual_seed(1))
    from anomalysd_core.masks import grid_masks

    masks = grid_masks(PAPER_SIZE, (2,))[0][:n_masks].float()
    steps, lam = 5, 0.2  # floor(0.2 x 5) + 1 = 2 U-Net calls per mask
    with cost_mod.StageTimer(cost_mod.engine_modules(comp)) as st:
        _, t_eng, mib = timed(lambda: inpaint(comp, x, masks, ctx, lam, steps, batch=n_masks), "cpu", mem=True)
    per_item = st.per_item()
    dist = build_distance("lpips_alex", pretrained=False)
    xh = torch.rand(2, 3, PAPER_SIZE, PAPER_SIZE)
    with torch.inference_mode():
        dist(x, xh)
        t_dist = timed(lambda: dist(x, xh), "cpu")[1] / 2
        bb = build_backbone("efficientnet_b6", pretrained=False)
        bb.psi(x)
        t_psi = timed(lambda: bb.psi(x), "cpu")[1]
    costs = cost_mod.CallCosts(unet=per_item["unet"], vae_encode=per_item["vae_encode"], vae_decode=per_item["vae_decode"],
                               distance=t_dist, fixed=t_psi, batch=2, image_size=PAPER_SIZE,
                               note="random weights, CPU")
    counts = cost_mod.calls_per_image(PAPER_MASKS, PAPER_LAMBDA, PAPER_STEPS)
    pred = cost_mod.predict_breakdown(counts, costs)
    hours = cost_mod.project_dataset_hours(pred["total"])
    log(f"  measured on this CPU ({n_masks} mask(s), {steps} steps at lambda {lam} = 2 U-Net calls each, batch {n_masks}, "
        f"{t_eng:.0f} s, peak +{mib:.0f} MiB): U-Net {per_item['unet']:.2f} s/item, VAE encode "
        f"{per_item['vae_encode']:.2f} s/image, decode {per_item['vae_decode']:.2f} s/image, LPIPS-Alex {t_dist:.2f} s/pair, "
        f"EfficientNet-B6 psi {t_psi:.2f} s/image")
    per = cost_mod.unet_calls_per_mask(PAPER_LAMBDA, PAPER_STEPS)
    log(f"  projected paper setting (86 masks x (floor(0.4 x 50) + 1) = {per} U-Net calls = {counts.unet} U-Net items, "
        f"{counts.vae_encode} encodes, {counts.vae_decode} decodes, 512 px): {pred['total']:.0f} s/image on this CPU "
        f"(U-Net {pred['unet']:.0f} s, VAE {pred['vae_encode'] + pred['vae_decode']:.0f} s, "
        f"distance {pred['distance']:.0f} s, prototype features {pred['fixed']:.0f} s)")
    log(f"  MVTec-AD test set ({cost_mod.MVTEC_TEST_IMAGES} images): {hours:.0f} CPU-hours on this machine "
        f"({hours / 24:.1f} days)")
    log("  GPU numbers need a lent GPU: none was available in this task, so none are reported.")
    log(f"  (paper-size section took {time.perf_counter() - t_start:.0f} s)")
    return pd.DataFrame([{**costs.as_dict(), **{f"pred_{k}_s": v for k, v in pred.items()},
                          "unet_items": counts.unet, "vae_encodes": counts.vae_encode,
                          "vae_decodes": counts.vae_decode, "mvtec_test_images": cost_mod.MVTEC_TEST_IMAGES,
                          "projected_cpu_hours": hours, "measured_engine_s_2masks": t_eng,
                          "unet_params_m": n_unet, "vae_params_m": n_vae, "threads": torch.get_num_threads(),
                          "device": "cpu", "n_masks_timed": n_masks, "section_s": time.perf_counter() - t_start}])


# ---------------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="mini", choices=["mini", "smoke"])
    ap.add_argument("--images", type=int, default=12, help="test images for (a) vs (b), split over the classes")
    ap.add_argument("--classes", default=None, help="comma-separated (default: brick,coins)")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    ap.add_argument("--size", type=int, default=None, help="image size (default: the profile's)")
    ap.add_argument("--data-root", default=None, help="benchmark data folder (default: the profile's)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--scales", default="1,2,4,8", help="grid scales K (default the paper's: 85 masks)")
    ap.add_argument("--repeats", type=int, default=2, help="(a) vs (b): best of this many runs per image")
    ap.add_argument("--strength", type=float, default=0.4)
    ap.add_argument("--batch", type=int, default=86, help="masks per U-Net batch of our engine")
    ap.add_argument("--quick", action="store_true", help="4 images, no tables, no CSV (a smoke run)")
    ap.add_argument("--paper-size", action="store_true", help="also time SD-1.5-size random-weight models")
    ap.add_argument("--paper-size-only", action="store_true")
    ap.add_argument("--paper-masks", type=int, default=1, help="masks timed at paper size (1 keeps it < 3 min)")
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--tag", default="", help="suffix for the CSV names, e.g. _2threads")
    ap.add_argument("--no-h2h", action="store_true", help="skip (a) vs (b) (run only the tables)")
    ap.add_argument("--no-ablation", action="store_true")
    ap.add_argument("--no-check", action="store_true", help="skip the matched-input equivalence check")
    ap.add_argument("--scale-images", type=int, default=2, help="images per scaling-table row")
    ap.add_argument("--ablation-repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (default: torch's); 1 is steadier when other jobs share the cores")
    ap.add_argument("--random-model", action="store_true", help="random mini weights even if the base model exists")
    ap.add_argument("--summary-only", action="store_true", help="only rewrite bench_summary.md from the CSVs")
    ap.add_argument("--out", default=None, help="CSV folder (default results/<profile>; none with --quick)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.images, args.no_scaling, args.no_ablation, args.no_check, args.repeats = 4, True, True, True, 1
    out = Path(args.out) if args.out else (None if args.quick else REPO / "results" / args.profile)
    from anomalysd_core.config import get_config

    native = get_config(args.profile).image_size
    tag = (f"_{args.size}px" if args.size and args.size != native else "") + args.tag

    def save(name, df):
        name = name.replace(".csv", f"{tag}.csv") if name != "bench_paper_size.csv" else name
        if out is not None:
            from anomalysd_core.utils import write_csv_atomic

            write_csv_atomic(out / name, df)
            log(f"  wrote {out / name}")

    log(f"== inference speed, {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs ({platform.machine()})")
    if args.paper_size_only:
        log("\n== paper size (SD-1.5-inpainting-size UNet + VAE, random weights)")
        save("bench_paper_size.csv", paper_size(args, args.paper_masks))
        if out is not None:
            log(f"  wrote {write_summary(out, tag)}")
        return 0
    if args.summary_only:
        log(f"  wrote {write_summary(out or Path('results') / args.profile, tag)}")
        return 0
    cfg, comp, det, ds, classes, shots, items, model = load_everything(args)
    per_mask = cost_mod.unet_calls_per_mask(cfg.noise_strength, cfg.num_inference_steps)
    log(f"   model: {model}")
    log(f"   profile {cfg.profile}, {cfg.image_size} px, {det.grid.shape[0]} grid masks + prototype mask, "
        f"{cfg.num_inference_steps} DDIM steps x lambda {cfg.noise_strength} -> {per_mask} U-Net calls per mask "
        f"(the pipeline gets strength {pipeline_strength(cfg.noise_strength, cfg.num_inference_steps):.3f}: the "
        f"same timesteps), engine batch {cfg.infer_batch}, {cfg.shots}-shot prototype banks, base model (not fine-tuned: "
        f"fine-tuning changes no cost)")
    log(f"   images: {len(items)} ({', '.join(f'{c}: {sum(1 for i in items if i[0] == c)}' for c in classes)}; "
        f"half normal, half anomalous)")

    h = None
    if not args.no_h2h:
        log("\n== (1) our batched engine (a) vs one StableDiffusionInpaintPipeline call per mask (b)")
        order = channel_order()
        log(f"   U-Net input order: ours {'[z_t; m~; z_o]' if order == DIFFUSERS_ORDER else '[z_t; z_o; m~]'}, "
            f"diffusers [z_t; mask; z_o]" + ("" if order == DIFFUSERS_ORDER else
                                             ": the pipeline gets a copy of our U-Net with conv_in permuted"))
        h = head_to_head(cfg, comp, det, items, args)
        chk = None
        if not args.no_check:
            chk = matched_check(cfg, comp, det, items)
            log(f"   equivalence: pipeline fed our latents (posterior mean z, z_o) and seed -> max |x^_a - x^_b| "
                f"= {chk['matched_max']:.1e} over the grid masks, {chk['matched_proto']:.1e} on the prototype mask "
                f"(diffusers downsamples masks by nearest, ours by max-pooling); the plain pipeline call samples "
                f"E(x) and draws its noise after that sample: mean |x^_a - x^_b| = {chk['plain_mean']:.3f}")

        n = h["n_images"]
        ips_a, ips_b = n / h["t_a"], n / h["t_b"]
        ratio = h["t_b"] / h["t_a"]
        inp_a = sum(h["stage_a"].values())
        inp_b = sum(h["stage_b"].values())
        rows = []
        for c in list(h["ma"]):
            rows.append({"class": c, "i_auroc_a": h["ma"][c][0], "i_auroc_b": h["mb"][c][0],
                         "p_auroc_a": h["ma"][c][1], "p_auroc_b": h["mb"][c][1],
                         "i_auroc_a_seed+1": h["ms"][c][0], "p_auroc_a_seed+1": h["ms"][c][1]})
        auc = pd.DataFrame(rows)
        log("\n   AUROC (%), maps fused by scoring.fuse from each engine's inpaintings "
            "(a_seed+1: our engine with the next noise seed, for scale):")
        with pd.option_context("display.float_format", lambda v: f"{100 * v:.1f}", "display.width", 160):
            log(auc.to_string(index=False))
        d_i = 100 * (h["ma"]["mean"][0] - h["mb"]["mean"][0])
        d_p = 100 * (h["ma"]["mean"][1] - h["mb"]["mean"][1])
        d_i_seed = 100 * (h["ma"]["mean"][0] - h["ms"]["mean"][0])
        d_p_seed = 100 * (h["ma"]["mean"][1] - h["ms"]["mean"][1])
        speed = pd.DataFrame([{
            "profile": cfg.profile, "model": "pretrained" if model.startswith("pretrained") else "random",
            "image_size": cfg.image_size, "n_images": n, "n_masks": h["n_masks"], "steps": cfg.num_inference_steps,
            "strength": cfg.noise_strength, "unet_calls_per_mask": per_mask, "engine_batch": cfg.infer_batch,
            "threads": torch.get_num_threads(), "device": str(comp.device),
            "s_per_image_a": h["t_a"] / n, "s_per_image_b": h["t_b"] / n, "images_per_s_a": ips_a,
            "images_per_s_b": ips_b, "speedup": ratio, "median_per_image_speedup": h["median_ratio"],
            "repeats": max(1, args.repeats), "inpaint_modules_s_per_image_a": inp_a / n,
            "inpaint_modules_s_per_image_b": inp_b / n, "peak_mem_mib_a": h["mem_a"], "peak_mem_mib_b": h["mem_b"],
            "i_auroc_a": h["ma"]["mean"][0], "i_auroc_b": h["mb"]["mean"][0], "p_auroc_a": h["ma"]["mean"][1],
            "p_auroc_b": h["mb"]["mean"][1], "i_auroc_a_seed1": h["ms"]["mean"][0], "p_auroc_a_seed1": h["ms"]["mean"][1],
            **({} if chk is None else {"matched_max_abs_diff": chk["matched_max"], "plain_mean_abs_diff": chk["plain_mean"]}),
        }])
        save("bench_speed.csv", speed)
        save("bench_auroc.csv", auc)

    if not args.no_scaling:
        log("\n== (2) scaling (full scoring per image: prototype mask + inpainting + distance + fusion) "
            "and the cost model (cost.py: calls x per-call costs measured in isolation)")
        shots_imgs = {c: shots[c] for c in classes}
        sc, costs = scaling(cfg, comp, det, items, shots_imgs, args)
        log("   per-call costs (s per item) measured in isolation:")
        log(costs.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        err = (sc["predicted_s_per_image"] / sc["measured_s_per_image"] - 1).abs()
        log(f"   cost model vs measured: median |error| {100 * err.median():.0f}%, max {100 * err.max():.0f}%")
        save("bench_scaling.csv", sc)
        save("bench_memory.csv", sc[sc["table"] == "batch size"][["batch", "n_masks", "image_size",
                                                                  "measured_s_per_image", "peak_mem_mib"]])
        save("bench_cost.csv", costs)
    if not args.no_ablation:
        log("\n== (3) what makes it fast, one factor at a time (inpainting engine only, 86 masks, one image)")
        ab = ablation(cfg, comp, det, items, args)
        save("bench_ablation.csv", ab)
    if args.paper_size:
        log("\n== (4) paper size (SD-1.5-inpainting-size UNet + VAE, random weights)")
        save("bench_paper_size.csv", paper_size(args, args.paper_masks))

    if out is not None:
        log(f"  wrote {write_summary(out, tag)}")
    if h is None:
        return 0
    log("\n== summary")
    log(f"   model: {model}")
    log(f"   {n} images ({', '.join(classes)}), {cfg.image_size} px, {h['n_masks']} masks x {per_mask} U-Net calls, "
        f"device {comp.device}, {torch.get_num_threads()} threads")
    log(f"   (a) batched engine: {ips_a:.3f} images/s ({h['t_a'] / n:.2f} s/image; inpainting modules "
        f"{inp_a / n:.2f} s), peak memory +{h['mem_a']:.0f} MiB")
    log(f"   (b) naive pipeline: {ips_b:.3f} images/s ({h['t_b'] / n:.2f} s/image; inpainting modules "
        f"{inp_b / n:.2f} s), peak memory +{h['mem_b']:.0f} MiB")
    log(f"   AUROC (a) - (b): image {d_i:+.1f} points, pixel {d_p:+.2f} points "
        f"(our engine, seed 0 - seed 1: image {d_i_seed:+.1f}, pixel {d_p_seed:+.2f})")
    log(f"   speed-up (a) over (b): {ratio:.1f}x (total time; median over images {h['median_ratio']:.1f}x)")
    return 0


def md_table(df: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-markdown table of ``df`` (floats to ``digits`` significant digits)."""
    def cell(v):
        if isinstance(v, float):
            return "" if v != v else (f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.{digits}g}")
        return str(v).replace("|", "\\|")
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "---|" * len(df.columns)
    return "\n".join([head, sep] + ["| " + " | ".join(cell(v) for v in r) + " |" for r in df.itertuples(index=False)])


def write_summary(out: Path, tag: str = "") -> Path | None:
    """``bench_summary<tag>.md`` from the benchmark CSVs in ``out`` (whatever runs have written):
    the head-to-head, the factor-by-factor ablation, the cost model against the measurements and the
    paper-size projection. Written atomically; every number is read from the CSVs."""
    from anomalysd_core.utils import write_text_atomic

    try:
        where = out.resolve().relative_to(REPO)
    except ValueError:
        where = out
    parts = [f"# Inference-speed benchmark: results of the last runs (`{where}`)",
             "Written by `benchmarks/inference_speed.py` from the CSV files next to it; times in seconds."]
    f = out / f"bench_speed{tag}.csv"
    if f.is_file():
        d = pd.read_csv(f)
        cols = ["device", "threads", "image_size", "n_images", "n_masks", "steps", "unet_calls_per_mask",
                "s_per_image_a", "s_per_image_b", "speedup", "i_auroc_a", "i_auroc_b", "p_auroc_a", "p_auroc_b"]
        parts += ["## (a) batched engine vs (b) one diffusers pipeline call per mask", md_table(d[cols])]
    f = out / f"bench_ablation{tag}.csv"
    if f.is_file():
        d = pd.read_csv(f)
        ratio = "variant_time_over_baseline" if "variant_time_over_baseline" in d else "speedup_of_baseline"
        cols = ["factor", "baseline", "baseline_s_per_image", "variant", "variant_s_per_image", ratio,
                "baseline_peak_mib", "variant_peak_mib", "note"]
        parts += ["## What makes it fast, one factor at a time (86 masks, one image; variant time / "
                  "baseline time > 1: the baseline is faster)", md_table(d[[c for c in cols if c in d]])]
    f = out / f"bench_scaling{tag}.csv"
    if f.is_file():
        d = pd.read_csv(f)
        cols = ["table", "value", "n_masks", "steps", "batch", "unet_calls", "measured_s_per_image",
                "predicted_s_per_image", "peak_mem_mib"]
        parts += ["## Scaling and the cost model (`anomalysd_core/cost.py`)", md_table(d[cols])]
    f = out / "bench_paper_size.csv"
    if f.is_file():
        d = pd.read_csv(f)
        cols = ["device", "threads", "image_size", "unet_items", "pred_unet_s", "pred_vae_encode_s",
                "pred_vae_decode_s", "pred_total_s", "mvtec_test_images", "projected_cpu_hours"]
        parts += ["## Paper size (SD-1.5-inpainting-size networks, random weights): one image, 86 masks, "
                  "50 steps, projected from measured per-call costs", md_table(d[[c for c in cols if c in d]])]
    if len(parts) == 2:
        return None
    path = out / f"bench_summary{tag}.md"
    write_text_atomic(path, "\n\n".join(parts) + "\n")
    return path


if __name__ == "__main__":
    raise SystemExit(main())
