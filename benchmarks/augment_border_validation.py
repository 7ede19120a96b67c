"""Black or mirrored borders in the fine-tune's augmentation: measured on the *validation* build.

Sec. 5's rotation (up to 15 degrees) and scaling (from 0.9) bring corners into the training
images that the shot does not have; ``TF.affine`` fills them with black, so the U-Net learns to
inpaint black wedges at the edges, which may raise the distances at the border of a normal test
image. ``Config.augment="reflect"`` warps the mirrored image instead (``finetune.augment``). For
each seed (1 shot, the profile's other defaults, ``--data-root``) this fine-tunes with each
border and scores the validation images. One row per seed, border and class goes to
``results/<profile>/augment_border_validation.csv``: image and pixel AUROC of ms+proto, and the
mean anomaly map of the normal images in the outer band of ``--band`` pixels against the
inside (``border_ratio`` > 1: the border looks more anomalous than the middle of a normal image).

    python benchmarks/augment_border_validation.py --seeds 0 1 2
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import _validation  # noqa: E402  (benchmarks/_validation.py)

BORDERS = {"black": True, "reflect": "reflect"}  # True: the profile's own setting (its cached fine-tunes)


def border_ratio(maps, band: int) -> float:
    """Mean of the maps in the outer ``band`` pixels over their mean inside it."""
    import numpy as np

    m = np.stack(maps).astype(np.float64)
    inner = np.zeros(m.shape[1:], bool)
    inner[band:-band, band:-band] = True
    return float(m[:, ~inner].mean() / max(m[:, inner].mean(), 1e-12))


def main(argv=None) -> None:
    ap = _validation.parser(__doc__.splitlines()[0], seeds=(0, 1, 2))
    ap.add_argument("--band", type=int, default=4, help="width of the border band in pixels (at the profile's size)")
    args = _validation.checked(ap.parse_args(argv))
    import pandas as pd

    from anomalysd_core.reproduce.evaluate import collect, summarise

    t0 = time.perf_counter()
    rows = []
    for seed in args.seeds:
        for border, setting in BORDERS.items():
            fitted = _validation.fitted(args, seed, augment=setting)
            times = json.loads((fitted.run_dir / "done.json").read_text()).get("times", {})
            records = collect(fitted, progress=False)
            df, _ = summarise(fitted, records)
            df = df[(df["method"] == "anomalysd") & (df["class"] != "mean")].set_index("class")
            for cls in fitted.classes:
                normal = [r["fused"][("ms+proto", fitted.cfg.alpha)][1] for r in records
                          if r["cls"] == cls and r["label"] == 0]
                rows.append({"seed": seed, "border": border, "class": cls, "i_auroc": df.loc[cls, "i_auroc"],
                             "p_auroc": df.loc[cls, "p_auroc"], "border_ratio": border_ratio(normal, args.band),
                             "finetune_s": sum(times.values())})
    df = pd.DataFrame(rows)
    _validation.write(args, "augment_border_validation", df, _validation.config(args), seeds=args.seeds,
                      borders=list(BORDERS), band=args.band, wall_seconds=time.perf_counter() - t0)
    mean = df.groupby(["border", "seed"])[["i_auroc", "p_auroc", "border_ratio"]].mean().groupby("border")
    print(mean.mean().round(3).to_string())
    print("std over seeds:\n" + mean.std().round(3).to_string())


if __name__ == "__main__":
    main()
