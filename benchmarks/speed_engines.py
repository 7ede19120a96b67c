#!/usr/bin/env python
"""Today's engine against the new one, side by side in one run, on the validation build.

* **old**: float32 throughout, every mask's masked image encoded by the setting that scores it
  (the engine up to mini build version 3);
* **new**: the engine as mini runs it now: bfloat16 autocast for the convolutions and matmuls
  (``Config.autocast``, ``Components.mixed_precision``) and the grid masks' VAE encodes read from
  the shared ``inpaint.EncodeCache``, warm as it is for every setting of a book run after the
  first (the cold run, which fills it, is timed too).

The same images (``--images`` test images of the validation build, normal and anomalous of each
class), the same shots (1, seed 0), the mini base model without a fine-tune (the engine's cost
does not depend on the weights). Per engine: seconds per image, the time inside the U-Net, the VAE
encoder and decoder (``cost.StageTimer``), image AUROC; and how far the new engine's maps are from
the old one's: max and mean |S_map(new) - S_map(old)| (S_map in [0, 1]) and of the image scores.
Every image is timed as the best of ``--repeats``; one thread (``torch.set_num_threads(1)``), as a
book worker runs. Rows go to ``results/<profile>/bench_engines.csv`` with provenance.

    python benchmarks/speed_engines.py                 # 24 images, 2 repeats (about 2 minutes)

Temporary cache folders are made under the system's temp folder and removed at the end.
    python benchmarks/speed_engines.py --images 6 --no-save
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def engines(profile: str = "mini", n_images: int = 24, repeats: int = 2, data_root: str | None = None,
            log=print) -> "tuple[object, dict]":
    """Run both engines on the same images; returns (rows DataFrame, summary dict)."""
    import numpy as np
    import pandas as pd
    import torch

    from anomalysd_core.config import get_config
    from anomalysd_core.data import datasets as data_mod
    from anomalysd_core.data.mini import default_roots, ensure_mini
    from anomalysd_core.method.features import build_backbone, build_distance
    from anomalysd_core.method.inpaint import EncodeCache
    from anomalysd_core.method.metrics import image_metrics
    from anomalysd_core.method.models import load_components
    from anomalysd_core.method.scoring import AnomalySD, to_tensor
    from anomalysd_core.reproduce import cost as cost_mod

    torch.set_num_threads(1)
    root = data_root or str(default_roots(profile)[1])  # the validation build
    new_cfg = get_config(profile, data_root=root, device="cpu", shots=1, seed=0)
    old_cfg = get_config(profile, data_root=root, device="cpu", shots=1, seed=0, autocast="none")
    ensure_mini(new_cfg)
    ds, classes = data_mod.open_dataset(new_cfg.dataset, root), None
    classes = ds.classes
    shots = data_mod.sample_shots(ds, classes, 1, 0)
    images = {c: [data_mod.load_image(s.path, new_cfg.image_size) for s in shots[c]] for c in classes}
    per = max(2, n_images // len(classes))
    items = []
    for c in classes:
        test = ds.test(c)
        pick = [s for s in test if not s.label][: per // 2] + [s for s in test if s.label][: per - per // 2]
        items += [(c, s, data_mod.load_image(s.path, new_cfg.image_size)) for s in pick]
    backbone = build_backbone(new_cfg.backbone, device="cpu")
    distance = build_distance(new_cfg.distance, device="cpu")
    dets = {}
    for name, cfg in (("old", old_cfg), ("new", new_cfg)):
        det = AnomalySD(cfg, load_components(cfg, torch.device("cpu")), backbone, distance)
        det.set_shots(images)
        dets[name] = det
    tmp = tempfile.TemporaryDirectory(prefix="anomalysd-encodes-")
    cache_dir = tmp.name
    dets["new"].encodes = EncodeCache(cache_dir, dets["new"].comp)

    def run(det, cls, img):
        inter = det.intermediates(img, cls, seed=0)
        return det.fuse(inter)

    run(dets["old"], *items[0][::2])  # warm-up (allocations, kernel choice), untimed
    rows, maps = [], {}
    for name in ("old", "new-cold", "new"):
        det = dets["old" if name == "old" else "new"]
        if name == "new-cold":
            det.encodes = EncodeCache(Path(cache_dir) / "cold-0", det.comp)
        elif name == "new":
            det.encodes = EncodeCache(cache_dir, det.comp)
            for cls, _s, img in items:  # fill the shared cache, as the book's first setting does
                det.encodes.encode(det.comp, to_tensor(img), det.grid)
        for cls, s, img in items:
            best = None
            for _ in range(max(1, repeats)):
                if name == "new-cold":  # a cold cache for every repeat
                    det.encodes = EncodeCache(Path(cache_dir) / f"cold-{len(rows)}-{_}", det.comp)
                with cost_mod.StageTimer(cost_mod.engine_modules(det.comp)) as st:
                    t0 = time.perf_counter()
                    sm = run(det, cls, img)
                    dt = time.perf_counter() - t0
                if best is None or dt < best[0]:
                    best = (dt, dict(st.seconds), sm)
            dt, secs, sm = best
            maps[(name, s.relpath)] = sm
            rows.append(dict(engine=name, cls=cls, image=s.relpath, label=s.label, seconds=dt,
                             unet_s=secs["unet"], encode_s=secs["vae_encode"], decode_s=secs["vae_decode"],
                             score=sm.score))
        log(f"  {name:9s} {np.mean([r['seconds'] for r in rows if r['engine'] == name]):.3f} s per image")
    d = pd.DataFrame(rows)
    for r in d.itertuples():
        a, b = maps[("old", r.image)], maps[(r.engine, r.image)]
        d.loc[r.Index, "max_map_diff"] = float(np.abs(b.S_map - a.S_map).max())
        d.loc[r.Index, "mean_map_diff"] = float(np.abs(b.S_map - a.S_map).mean())
        d.loc[r.Index, "score_diff"] = float(abs(b.score - a.score))
    summary = {}
    for name, g in d.groupby("engine", sort=False):
        au = np.nanmean([image_metrics(list(gc.label), list(gc.score))["auroc"] for _, gc in g.groupby("cls")])
        summary[name] = dict(images=len(g), s_per_image=g.seconds.mean(), unet_s=g.unet_s.mean(),
                             encode_s=g.encode_s.mean(), decode_s=g.decode_s.mean(),
                             other_s=(g.seconds - g.unet_s - g.encode_s - g.decode_s).mean(),
                             i_auroc=au, max_map_diff=g.max_map_diff.max(), mean_map_diff=g.mean_map_diff.mean(),
                             max_score_diff=g.score_diff.max())
    tmp.cleanup()
    return d, summary


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="mini", choices=["mini", "smoke"])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--data-root", default=None, help="a validation build (default: the profile's)")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    if args.images < 1 or args.repeats < 1:
        ap.error("--images and --repeats must be at least 1")
    import pandas as pd

    from anomalysd_core.reproduce.tables import get_results_dir
    from anomalysd_core.utils import provenance, write_csv_atomic, write_json_atomic

    t0 = time.perf_counter()
    rows, summary = engines(args.profile, args.images, args.repeats, args.data_root)
    s = pd.DataFrame(summary).T
    print(s.round(4).to_string())
    if not args.no_save:
        out = get_results_dir(args.profile)
        write_csv_atomic(out / "bench_engines.csv", s.rename_axis("engine").reset_index())
        write_json_atomic(out / "bench_engines.provenance.json", provenance(
            None, script="benchmarks/speed_engines.py", args=vars(args), threads=1,
            wall_seconds=time.perf_counter() - t0, per_image=rows.to_dict("records")))
    print(f"new engine (warm encode cache) is {summary['old']['s_per_image'] / summary['new']['s_per_image']:.2f}x "
          f"faster per image than the old one (cold cache: "
          f"{summary['old']['s_per_image'] / summary['new-cold']['s_per_image']:.2f}x)")


if __name__ == "__main__":
    main()
