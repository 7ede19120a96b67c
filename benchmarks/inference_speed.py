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
with the cost model of ``anomalysd_core/reproduce/cost.py`` checked against them), "what makes it fast"
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
import os
import platform
import sys
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
from naive_pipeline import DIFFUSERS_ORDER, NaiveEngine, channel_order, engine, pipeline_strength, score  # noqa: E402
from speed_ablation import ablation  # noqa: E402
from speed_paper_size import paper_size  # noqa: E402
from speed_scaling import masks_for, scaling  # noqa: E402
from speed_timing import log, md_table, timed  # noqa: E402

from anomalysd_core.method import scoring  # noqa: E402
from anomalysd_core.method.inpaint import inpaint, start_timesteps  # noqa: E402
from anomalysd_core.reproduce import cost as cost_mod  # noqa: E402


def load_everything(args):
    from anomalysd_core.data import datasets as data_mod
    from anomalysd_core.config import get_config
    from anomalysd_core.reproduce.evaluate import open_data
    from anomalysd_core.method.features import build_backbone, build_distance
    from anomalysd_core.method.models import load_components, new_mini_components

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
        from anomalysd_core.data.mini import ensure_mini

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


def head_to_head(cfg, comp, det, items, args):
    from anomalysd_core.reproduce.evaluate import class_metrics

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
        parts += ["## Scaling and the cost model (`anomalysd_core/reproduce/cost.py`)", md_table(d[cols])]
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
