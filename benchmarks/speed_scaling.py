"""Table (2) of ``inference_speed.py``: seconds per image against the mask set, image size,
DDIM steps and batch size, each beside the cost model's prediction (``reproduce/cost.py``:
calls x per-call costs measured in isolation)."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pandas as pd
import torch
from naive_pipeline import score
from speed_timing import log, timed

from anomalysd_core.method import scoring
from anomalysd_core.reproduce import cost as cost_mod


def masks_for(det, x, cls):
    """The grid masks plus the prototype mask M^(p) of ``x`` (as ``AnomalySD.intermediates`` builds them)."""
    from anomalysd_core.method import prototypes

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
    from anomalysd_core.data import datasets as data_mod

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
