"""What the resolution buys when scoring your own images: pixel AUROC, PRO and seconds per image
against the scoring size, on the *validation* build (never the test images).

``score --normals`` scores the memory-bank methods (PatchCore, SPADE, PaDiM, the prototype kNN
map) at ``own.BANK_SIZE`` px unless ``--size`` says otherwise; this study is where that default
comes from. For each size the validation build is made at that size (``data/mini-<size>px-val``:
the same crops and cells as ``data/mini-val``, the synthetic defects painted at the output
resolution), each class's training normals play the user's normals (``--shots`` of them, drawn
per seed) and its test images the new ones, and each method is fitted and timed exactly as
``own.OwnDetector`` does for ``score``. Rows (size, seed, method, class, image AUROC, pixel AUROC,
PRO, seconds per image) go to ``results/<profile>/own_size_validation.csv`` with provenance; the
means over classes and seeds are printed. ``--anomalysd`` adds AnomalySD at its model's training
size (a fine-tune per class and seed, minutes each on a CPU).

    python benchmarks/own_size_validation.py                        # 64, 128, 256 px; seeds 0-2
    python benchmarks/own_size_validation.py --sizes 64 256 --seeds 0 --anomalysd
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import _validation  # noqa: E402  (benchmarks/_validation.py)

BANKS = ("patchcore", "spade", "padim", "protoknn")


def size_root(size: int, native: int, base: str) -> str:
    """The validation build at ``size`` px: ``base`` itself at the profile's own size, else a
    sibling ``<name without -val>-<size>px-val``."""
    if size == native:
        return base
    p = Path(base)
    return str(p.with_name(f"{p.name[:-len('-val')]}-{size}px-val"))


def main(argv=None) -> None:
    ap = _validation.parser(__doc__.splitlines()[0], seeds=(0, 1, 2), out_dir="runs/own-size")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--shots", type=int, default=1)
    ap.add_argument("--methods", nargs="+", default=list(BANKS), choices=list(BANKS))
    ap.add_argument("--anomalysd", action="store_true", help="also AnomalySD, at its model's training size")
    args = _validation.checked(ap.parse_args(argv))
    import pandas as pd

    from anomalysd_core import own
    from anomalysd_core.config import get_config
    from anomalysd_core.data.datasets import class_kind, load_image, load_sample, open_dataset, sample_shots
    from anomalysd_core.data.mini import ensure_mini
    from anomalysd_core.reproduce.evaluate import class_metrics

    t0 = time.perf_counter()
    native = get_config(args.profile).image_size
    runs = [(s, m) for s in args.sizes for m in args.methods]
    if args.anomalysd:
        runs.append((native, "anomalysd"))
    rows = []
    for size, method in runs:
        root = size_root(size, native, args.data_root)
        cfg = get_config(args.profile, data_root=root, out_dir=args.out_dir, image_size=size)
        ds = open_dataset("mvtec", ensure_mini(cfg, build=True))
        for seed in args.seeds:
            cfg_s = get_config(args.profile, data_root=root, out_dir=args.out_dir, image_size=size, seed=seed,
                               shots=args.shots)
            shots = sample_shots(ds, k=args.shots, seed=seed)
            for cls in ds.classes:
                normals = [load_image(s.path, size) for s in shots[cls]]
                run_dir = Path(args.out_dir) / args.profile / "own-size" / f"{cls}-{size}-{seed}"
                det = own.OwnDetector(cfg_s, method, cls, class_kind(cls, ds.root), normals, run_dir, progress=False)
                labels, gts, scores, maps, secs = [], [], [], [], 0.0
                for s in ds.test(cls):
                    img, mask = load_sample(s, size)
                    t = time.perf_counter()
                    sc, mp = det.score(img)
                    secs += time.perf_counter() - t
                    labels.append(s.label), gts.append(mask), scores.append(sc), maps.append(mp)
                m = class_metrics(labels, scores, gts if ds.has_pixel_masks(cls) else None, maps)
                rows.append({"size": size, "seed": seed, "method": method, "class": cls, "shots": args.shots,
                             "i_auroc": m["i_auroc"], "p_auroc": m["p_auroc"], "p_pro": m["p_pro"],
                             "seconds_per_image": secs / len(labels), "n_test": len(labels)})
            print(f"  {method} {size} px seed {seed}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    df = pd.DataFrame(rows)
    _validation.write(args, "own_size_validation", df, cfg, sizes=args.sizes, seeds=args.seeds,
                      shots=args.shots, methods=[m for _, m in runs], wall_seconds=time.perf_counter() - t0)
    print(summary(df).to_string(index=False))


def summary(df):
    """Per method and size: the mean over classes (pixel metrics over the classes with masks) and
    seeds, in percent, and seconds per image."""
    means = df.groupby(["method", "size", "seed"])[["i_auroc", "p_auroc", "p_pro", "seconds_per_image"]].mean()
    out = means.groupby(["method", "size"]).mean()
    out[["i_auroc", "p_auroc", "p_pro"]] *= 100
    return out.reset_index().round({"i_auroc": 1, "p_auroc": 1, "p_pro": 1, "seconds_per_image": 3})


if __name__ == "__main__":
    main()
