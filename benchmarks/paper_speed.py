"""The head-to-head at the paper's size, measured on the device it runs on (a GPU).

Both engines inpaint one 512-px image under the paper's 86 masks with 50 DDIM steps at lambda 0.4
(21 U-Net calls per mask), with SD-1.5-inpainting-size models (``UNet2DConditionModel`` with 9
input channels and 768-d cross-attention, SD's ``AutoencoderKL``) and random weights: the time
does not depend on the weights. ``engine`` is ``inpaint.inpaint`` (all masks batched); ``naive``
is one ``StableDiffusionInpaintPipeline`` call per mask (``naive_pipeline.NaiveEngine``). For
each ``--dtypes`` value this measures seconds per image and the peak GPU memory above the models'
(``speed_timing.timed``) of both, the work per image from ``torch.utils.flop_counter`` (U-Net,
VAE encode and decode calls times their counts), and the fraction of the device's peak that the
engine reaches, the peak being a large matrix product in the same dtype timed in the same run.
In the first dtype the batched engine is timed again per ``--modes`` variant: channels-last
weights, and ``torch.compile`` modes (``Config.compile``) on them, each with its compile time and
its largest difference to the eager inpaintings. A U-Net fine-tuning step (batch 8, AdamW, float32
weights, the forward pass under autocast as ``finetune.finetune_unet`` runs it) is timed too.

Rows go to ``<out>/bench_paper_speed.csv`` (device, gpu, dtype, image_size, n_masks, steps,
engine, s_per_image, peak_gib, tflop_per_image, fraction_of_peak, speedup_vs_naive, mode,
max_abs_diff_vs_eager, compile_s, plus the projected hours for the MVTec-AD and VisA test sets)
``<out>/bench_paper_finetune.csv`` and ``<out>/bench_paper_equivalence.csv`` (per dtype: the largest
difference between the engine's inpaintings and diffusers' pipeline's on the same latents, noise and
timesteps, over ``--check-masks`` masks, and between the engine batched and one mask at a time),
each written atomically, with
``<out>/bench_paper_speed.provenance.json`` (arguments, commit, versions, device).

    python benchmarks/paper_speed.py --device cuda --naive-masks 24 --out results/gpu   # an H200: 4 min
    python benchmarks/paper_speed.py --toy --modes channels_last --out /tmp/toy   # the same code on a CPU
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from naive_pipeline import NaiveEngine, engine_vs_pipeline  # noqa: E402
from speed_paper_size import SD_UNET, SD_VAE, random_models  # noqa: E402
from speed_timing import timed  # noqa: E402

from anomalysd_core.reproduce import cost as cost_mod  # noqa: E402
from anomalysd_core.method.inpaint import inpaint, latent_mask, masked_image, unet_input  # noqa: E402
from anomalysd_core.method.masks import grid_masks  # noqa: E402
from anomalysd_core.method.models import (COMPILE_MODES, Components, channels_last, mini_unet_config,  # noqa: E402
                                   mini_vae_config, scheduler_config, vae_dtype)
from anomalysd_core.utils import (autocast, provenance, resolve_device, write_csv_atomic,  # noqa: E402
                                  write_json_atomic)

FINETUNE_STEPS = 4000 * math.ceil(15 / 8)  # the paper's 4000 epochs over 15 MVTec classes x 1 shot, batch 8


def timed_gib(fn, dev: torch.device):
    """(result, seconds, GPU memory at the peak above the start in GiB; NaN on a CPU) of one call
    of ``fn`` (``speed_timing.timed``)."""
    out, sec, mib = timed(fn, dev, mem=dev.type == "cuda")
    return out, sec, mib / 1024


def models_for(toy: bool, dev: torch.device):
    """U-Net and VAE with random weights (SD-1.5-inpainting's configs, or mini's for ``--toy``),
    the image size and the text width."""
    if toy:
        unet, vae = random_models(mini_unet_config(16, 32), mini_vae_config(64), dev)
        return unet, vae, 64, 32
    unet, vae = random_models(SD_UNET, SD_VAE, dev)
    return unet, vae, 512, 768


def components(unet, vae, dev, dtype) -> Components:
    from diffusers import DDIMScheduler

    return Components(vae.to(vae_dtype(dtype)), unet.to(dtype), None, DDIMScheduler(**scheduler_config()), dev, dtype)


def tflop_per_image(comp: Components, x, masks, ctx, counts: cost_mod.CallCounts) -> float:
    """Work of one image: one U-Net call, one encode and one decode counted by the FLOP counter,
    times the calls the method makes (``cost.calls_per_image``)."""
    from torch.utils.flop_counter import FlopCounterMode

    m = masks[:1]
    with torch.inference_mode():
        z = comp.encode(x).to(comp.dtype)
        zo = comp.encode(masked_image(x, m)).to(comp.dtype)
        ml = latent_mask(m, tuple(z.shape[-2:])).to(comp.dtype)
        t = torch.tensor([500], device=comp.device)
        flops = {}
        for name, fn in (("unet", lambda: comp.unet(unet_input(z, zo, ml), t, encoder_hidden_states=ctx)),
                         ("encode", lambda: comp.encode(x)), ("decode", lambda: comp.decode(z))):
            with FlopCounterMode(display=False) as fc:
                fn()
            flops[name] = fc.get_total_flops()
    total = flops["unet"] * counts.unet + flops["encode"] * counts.vae_encode + flops["decode"] * counts.vae_decode
    return total / 1e12


def variants(comp: Components, modes, eager, x, masks, ctx, lam: float, steps: int, dev: torch.device):
    """(engine, mode, seconds, GiB, largest difference to the eager inpaintings, seconds of compiling)
    of the batched engine per variant of ``modes``: ``channels_last`` (NHWC weights), or a
    ``torch.compile`` mode (``Config.compile``) on NHWC weights. The first call of a compiled engine
    compiles it and is timed apart; the models are back in NCHW afterwards."""
    try:
        channels_last((comp.unet, comp.vae))
        for mode in modes:
            c = comp if mode == "channels_last" else comp.compiled(mode)
            compile_s = 0.0
            if mode != "channels_last":
                compile_s = timed(lambda: inpaint(c, x, masks, ctx, lam, steps), dev)[1]
                inpaint(c, x, masks, ctx, lam, steps)  # a second warm-up: lazy autotuning, allocator
            out, sec, gib = timed_gib(lambda: inpaint(c, x, masks, ctx, lam, steps), dev)
            diff = float((out.float() - eager.float()).abs().max())
            yield "batched inpaint", mode, sec, gib, diff, compile_s
    finally:
        channels_last((comp.unet, comp.vae), on=False)


def peak_tflops(dev: torch.device, dtype, n: int) -> float:
    """Measured peak of this device: a large (n x n) matrix product in ``dtype``, the fastest of
    five timings (a busy CPU slows some of them)."""
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(3):
        a @ b
    reps = 20 if dev.type == "cuda" else 3
    sec = min(timed_gib(lambda: [a @ b for _ in range(reps)], dev)[1] for _ in range(5))
    return 2 * n ** 3 * reps / sec / 1e12


def finetune_step_seconds(unet, dev, dtype, batch: int, latent: int, text_dim: int, steps: int) -> float:
    """Seconds per U-Net training step: float32 weights and AdamW, forward under autocast."""
    unet = unet.float().train().requires_grad_(True)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-5)
    scaler = torch.amp.GradScaler("cuda", enabled=dev.type == "cuda" and dtype == torch.float16)
    x = torch.randn(batch, 9, latent, latent, device=dev)
    target = torch.randn(batch, 4, latent, latent, device=dev)
    ctx = torch.randn(batch, 77, text_dim, device=dev)
    t = torch.randint(0, 1000, (batch,), device=dev)

    def step():
        with autocast(dev, dtype):
            loss = torch.nn.functional.mse_loss(unet(x, t, encoder_hidden_states=ctx).sample.float(), target)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(2):
        step()
    sec = timed_gib(lambda: [step() for _ in range(steps)], dev)[1]
    unet.eval().requires_grad_(False)
    return sec / steps


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto (default), cuda or cpu")
    ap.add_argument("--toy", action="store_true", help="mini-size models at 64 px, 5 masks, 4 steps (a CPU check)")
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float16"],
                    help="compute dtypes on a GPU (a CPU runs float32 only)")
    ap.add_argument("--modes", nargs="+", default=["channels_last", "default"],
                    help="variants of the batched engine timed in the first dtype: channels_last and/or "
                         "torch.compile modes (default, max-autotune, reduce-overhead); none: eager only")
    ap.add_argument("--naive-masks", type=int, default=0,
                    help="masks timed for the naive engine, scaled to all (default 0: all of them)")
    ap.add_argument("--finetune-steps", type=int, default=10)
    ap.add_argument("--check-masks", type=int, default=4,
                    help="masks of the engine-vs-pipeline check (naive_pipeline.engine_vs_pipeline)")
    ap.add_argument("--out", default="results/gpu", help="folder of the two CSV files")
    args = ap.parse_args(argv)
    bad = [m for m in args.modes if m not in ("none", "channels_last") + COMPILE_MODES]
    if bad:
        raise SystemExit(f"--modes: {bad} not among none, channels_last, {', '.join(COMPILE_MODES[1:])}")
    args.modes = [m for m in args.modes if m != "none"]
    dev = resolve_device(args.device)
    if dev.type != "cuda" and not args.toy:
        raise SystemExit("the paper-size head-to-head needs a GPU (--device cuda); --toy runs the same code on a CPU")
    dtypes = [getattr(torch, d) for d in args.dtypes] if dev.type == "cuda" else [torch.float32]
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "none"
    unet, vae, size, text_dim = models_for(args.toy, dev)
    scales, steps, lam = ((1, 2), 4, 0.5) if args.toy else ((1, 2, 4, 8), 50, 0.4)
    masks = torch.cat([grid_masks(size, scales)[0].float(), torch.ones(1, 1, size, size)]).to(dev)  # + M^(p)
    n = masks.shape[0]
    counts = cost_mod.calls_per_image(n, lam, steps)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1)).to(dev)
    rows, ft_rows, eq_rows = [], [], []
    for i, dt in enumerate(dtypes):
        comp = components(unet, vae, dev, dt)
        ctx = torch.randn(1, 77, text_dim, generator=torch.Generator().manual_seed(0)).to(dev, dt)
        inpaint(comp, x, masks[:2], ctx, lam, steps)  # warm-up (kernels, allocator)
        eager, eng_s, eng_gib = timed_gib(lambda: inpaint(comp, x, masks, ctx, lam, steps), dev)
        naive = NaiveEngine(comp)
        k = args.naive_masks or n
        naive(comp, x, masks[:1], ctx, lam, steps)  # warm-up
        _, nv_s, nv_gib = timed_gib(lambda: naive(comp, x, masks[:k], ctx, lam, steps), dev)
        nv_s *= n / k
        check = engine_vs_pipeline(comp, naive.pipe, x, masks[:args.check_masks], ctx, lam, steps)
        eq_rows.append({"device": dev.type, "gpu": gpu, "dtype": str(dt).replace("torch.", ""), "image_size": size,
                        **check})
        print(f"{dt}: engine vs pipeline, {check['masks']} masks: max |diff| {check['engine_vs_pipeline']:.2e} "
              f"(batched vs one at a time {check['batched_vs_one_at_a_time']:.2e})", flush=True)
        tflop = tflop_per_image(comp, x, masks, ctx, counts)
        peak = peak_tflops(dev, dt, 1024 if args.toy else 8192)
        name = str(dt).replace("torch.", "")
        timings = [("batched inpaint", "eager", eng_s, eng_gib, 0.0, 0.0),
                   ("one pipeline call per mask", "eager", nv_s, nv_gib, float("nan"), 0.0)]
        if i == 0:  # the engine's variants, in the first dtype (a GPU's default)
            timings += list(variants(comp, args.modes, eager, x, masks, ctx, lam, steps, dev))
        for engine, mode, sec, gib, diff, compile_s in timings:
            rows.append({"device": dev.type, "gpu": gpu, "dtype": name, "image_size": size, "n_masks": n,
                         "steps": steps, "engine": engine, "s_per_image": sec, "peak_gib": gib,
                         "tflop_per_image": tflop, "fraction_of_peak": tflop / sec / peak,
                         "speedup_vs_naive": nv_s / sec, "mode": mode, "max_abs_diff_vs_eager": diff,
                         "compile_s": compile_s, "peak_tflops_matmul": peak,
                         "mvtec_test_hours": cost_mod.project_dataset_hours(sec, cost_mod.MVTEC_TEST_IMAGES),
                         "visa_test_hours": cost_mod.project_dataset_hours(sec, cost_mod.VISA_TEST_IMAGES),
                         "naive_masks_timed": k})
            print(f"{name} {engine} ({mode}): {sec:.2f} s/image ({gib:.1f} GiB), {nv_s / sec:.1f}x the naive "
                  f"engine, {tflop / sec / peak:.0%} of {peak:.3g} TFLOP/s", flush=True)
        s = finetune_step_seconds(unet, dev, dt, 2 if args.toy else 8, size // (4 if args.toy else 8), text_dim,
                                  args.finetune_steps)
        ft_rows.append({"device": dev.type, "gpu": gpu, "dtype": name, "batch": 2 if args.toy else 8,
                        "s_per_step": s, "paper_finetune_steps": FINETUNE_STEPS,
                        "paper_finetune_minutes": s * FINETUNE_STEPS / 60})
        print(f"{name}: fine-tune step {s:.3f} s; the paper's 1-shot fine-tune {s * FINETUNE_STEPS / 60:.0f} min",
              flush=True)
    if dev.type == "cuda" and not args.toy:  # float32 fine-tune for scale
        s = finetune_step_seconds(unet, dev, torch.float32, 8, size // 8, text_dim, args.finetune_steps)
        ft_rows.append({"device": dev.type, "gpu": gpu, "dtype": "float32", "batch": 8, "s_per_step": s,
                        "paper_finetune_steps": FINETUNE_STEPS, "paper_finetune_minutes": s * FINETUNE_STEPS / 60})
    out = Path(args.out)
    write_csv_atomic(out / "bench_paper_speed.csv", pd.DataFrame(rows))
    write_csv_atomic(out / "bench_paper_finetune.csv", pd.DataFrame(ft_rows))
    write_csv_atomic(out / "bench_paper_equivalence.csv", pd.DataFrame(eq_rows))
    write_json_atomic(out / "bench_paper_speed.provenance.json", provenance(
        argv=list(sys.argv[1:] if argv is None else argv), modes=args.modes))
    print(f"wrote {out / 'bench_paper_speed.csv'} and {out / 'bench_paper_finetune.csv'}")


if __name__ == "__main__":
    main()
