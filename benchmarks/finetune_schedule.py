"""Quality against fine-tune seconds on the *validation* build of mini (never the test images).

Each candidate is a set of config overrides (learning rate, its schedule, U-Net and decoder steps);
it is fine-tuned once per distance of ``--distances`` (1 shot, seed 0, on ``data/mini-val``) and
scored at every noise strength in ``--lambdas`` (lambda does not change the fine-tune). One row per candidate, lambda and Table-5
variant goes to ``results/<profile>/finetune_schedule.csv`` with the fine-tune's seconds per
module (one thread per worker process, ``--workers`` processes side by side), and the run's
provenance to ``finetune_schedule.provenance.json``. Notebook 10 plots it; the mini defaults in
``config.py`` were chosen from it.

    python benchmarks/finetune_schedule.py --workers 2
    python benchmarks/finetune_schedule.py --only 1000-200-3e-4-cos   # one candidate by name
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# name -> overrides; steps are U-Net / decoder optimiser steps at batch 8
CANDIDATES: dict[str, dict] = {
    "150-50-1e-4": dict(unet_steps=150, decoder_steps=50, lr=1e-4, lr_schedule="constant"),
    "1000-200-3e-4": dict(unet_steps=1000, decoder_steps=200, lr=3e-4, lr_schedule="constant"),
    "500-100-5e-4-cos": dict(unet_steps=500, decoder_steps=100, lr=5e-4, lr_schedule="cosine"),
    "1000-200-5e-4-cos": dict(unet_steps=1000, decoder_steps=200, lr=5e-4, lr_schedule="cosine"),
    "2000-300-3e-4-cos": dict(unet_steps=2000, decoder_steps=300, lr=3e-4, lr_schedule="cosine"),
    "4000-400-1e-4": dict(unet_steps=4000, decoder_steps=400, lr=1e-4, lr_schedule="constant"),
}
VARIANTS = ("full", "ms", "ms+proto")


def _module_seconds(run_dir: Path) -> dict:
    """{"unet_s", "decoder_s"} of a fine-tune; a module adopted from another fine-tune (same module
    settings, ``finetune.module_donor``) counts with the seconds its donor spent training it."""
    done = json.loads((run_dir / "done.json").read_text())
    times = dict(done.get("times", {}))
    for module, key in (("unet", "unet_s"), ("vae", "decoder_s")):
        donor = done.get("adopted", {}).get(module)
        if key not in times and donor:
            times[key] = _module_seconds(run_dir.parent / donor).get(key, float("nan"))
    return times


def run_one(args) -> list[dict]:
    """Fine-tune one candidate and score it at every lambda; rows of the CSV."""
    name, over, profile, data_root, lambdas, out_dir, threads = args  # over holds the distance
    import torch

    torch.set_num_threads(threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from anomalysd_core.config import get_config
    from anomalysd_core.reproduce.evaluate import evaluate, fit

    rows = []
    t0 = time.perf_counter()
    fitted = None
    for lam in lambdas:
        cfg = get_config(profile, data_root=data_root, shots=1, seed=0, out_dir=out_dir,
                         noise_strength=lam, **over)
        fitted = fit(cfg, progress=False) if fitted is None else fit(
            cfg, progress=False, comp=fitted.detector.comp, backbone=fitted.detector.backbone,
            distance=fitted.detector.distance)
        t1 = time.perf_counter()
        df = evaluate(fitted, variants=VARIANTS, progress=False)
        score_s = time.perf_counter() - t1
        times = _module_seconds(fitted.run_dir)
        for _, r in df[df["class"] == "mean"].iterrows():
            rows.append({"candidate": name, **{k: over.get(k, getattr(cfg, k)) for k in
                                               ("unet_steps", "decoder_steps", "lr", "lr_schedule",
                                                "distance")},
                         "noise_strength": lam, "method": r["method"], "variant": r["variant"],
                         "i_auroc": r["i_auroc"], "p_auroc": r["p_auroc"], "p_pro": r["p_pro"],
                         "unet_s": times.get("unet_s", float("nan")),
                         "decoder_s": times.get("decoder_s", float("nan")),
                         "score_s": score_s, "threads": threads})
        for _, r in df[(df["class"] != "mean") & (df["variant"] == "ms+proto")].iterrows():
            print(f"{name} {cfg.distance} lambda {lam} {r['class']}: {100 * r['i_auroc']:.1f} / {100 * r['p_auroc']:.1f}",
                  flush=True)
    print(f"{name} {over.get('distance')}: done in {time.perf_counter() - t0:.0f} s", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="mini")
    ap.add_argument("--data-root", default="data/mini-val")
    ap.add_argument("--lambdas", default="0.4,0.6")
    ap.add_argument("--distances", default="lite0,pixel", help="the distance D of each run (eq 16-17)")
    ap.add_argument("--only", default="", help="comma-separated candidate names (default: all)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out-dir", default="runs/schedule", help="runs folder of the fine-tunes")
    ap.add_argument("--csv", default=None, help="default: results/<profile>/finetune_schedule.csv")
    a = ap.parse_args(argv)
    if not a.data_root.rstrip("/").endswith("-val"):
        raise SystemExit(f"--data-root {a.data_root!r}: settings are chosen on a validation build "
                         "(a folder named *-val), never on the test images")
    names = [n for n in a.only.split(",") if n] or list(CANDIDATES)
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise SystemExit(f"unknown candidates {unknown}; known: {list(CANDIDATES)}")
    lambdas = [float(v) for v in a.lambdas.split(",")]
    threads = max(1, (os.cpu_count() or 1) // max(1, a.workers))
    dists = [d for d in a.distances.split(",") if d]
    jobs = [(n, {**CANDIDATES[n], "distance": d}, a.profile, a.data_root, lambdas, a.out_dir, threads)
            for d in dists for n in names]

    import multiprocessing as mp

    import pandas as pd

    from anomalysd_core.config import get_config
    from anomalysd_core.utils import provenance, write_csv_atomic, write_json_atomic

    csv = Path(a.csv) if a.csv else REPO / "results" / a.profile / "finetune_schedule.csv"
    old = pd.read_csv(csv) if csv.is_file() else pd.DataFrame()
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(min(a.workers, len(jobs))) as pool:
        for rows in pool.imap_unordered(run_one, jobs):
            new = pd.DataFrame(rows)
            if len(old):
                if "distance" not in old:
                    old["distance"] = "lite0"
                done = set(zip(new["candidate"], new["distance"]))
                old = old[[(c, d) not in done for c, d in zip(old["candidate"], old["distance"])]]
            old = pd.concat([old, new], ignore_index=True)
            write_csv_atomic(csv, old.sort_values(["distance", "unet_s", "candidate", "noise_strength"],
                                                  kind="stable"))
    write_json_atomic(csv.with_suffix(".provenance.json"), provenance(
        get_config(a.profile, data_root=a.data_root), candidates={n: CANDIDATES[n] for n in names},
        lambdas=lambdas, distances=dists, workers=a.workers, threads_per_worker=threads, shots=1, seed=0,
        seconds=time.perf_counter() - t0))
    print(f"wrote {csv}")


if __name__ == "__main__":
    main()
