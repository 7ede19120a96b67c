"""How mini's image score was chosen: on the *validation* build (never the test images).

The paper scores an image by the maximum of its anomaly map, S_I = max S_map. Mini's colour
distance repaints normal texture with a heavy tail of errors, so the maximum of a normal image is
often one unlucky spot (notebook 10). For each seed (1 shot, the profile's other defaults,
``--data-root``) this scores the validation images once and reduces the same maps to an image
score in every ``--tops`` way: 0 is the maximum, a fraction f the mean of the map's highest f of
pixels (``scoring.image_score``). The prototype kNN map, whose image score is also its map's
maximum, is reduced the same ways beside AnomalySD, to see whether the reduction favours one
method. One row per seed, method, fraction and class goes to
``results/<profile>/image_score_validation.csv`` with the run's provenance; mini's
``image_score_top`` in ``config.PROFILES`` was set from it. The pixel AUROC does not change.

    python benchmarks/image_score_validation.py --data-root data/mini-x3-val --seeds 0 1 2 \\
        --results-dir results/mini/val-x3
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import _validation  # noqa: E402  (benchmarks/_validation.py)


def main(argv=None) -> None:
    ap = _validation.parser(__doc__.splitlines()[0], seeds=(0, 1, 2))
    ap.add_argument("--tops", type=float, nargs="+", default=[0.0, 0.005, 0.01, 0.02, 0.05],
                    help="fractions of S_map's pixels whose mean is S_I (0: the maximum, the paper)")
    args = _validation.checked(ap.parse_args(argv))
    import pandas as pd

    from anomalysd_core.reproduce.evaluate import collect
    from anomalysd_core.method.metrics import image_metrics
    from anomalysd_core.method.scoring import image_score

    t0 = time.perf_counter()
    rows = []
    for seed in args.seeds:
        fitted = _validation.fitted(args, seed)
        records = collect(fitted, progress=False)
        keys = {"anomalysd": ("ms+proto", fitted.cfg.alpha), "protoknn": ("knn", None)}
        for cls in fitted.classes:
            recs = [r for r in records if r["cls"] == cls]
            labels = [r["label"] for r in recs]
            for method, key in keys.items():
                for top in args.tops:
                    scores = [image_score(r["fused"][key][1], top) for r in recs]
                    rows.append({"seed": seed, "method": method, "top": top, "class": cls,
                                 "i_auroc": float(image_metrics(labels, scores)["auroc"])})
    df = pd.DataFrame(rows)
    _validation.write(args, "image_score_validation", df, _validation.config(args),
                      seeds=args.seeds, tops=args.tops, wall_seconds=time.perf_counter() - t0)
    mean = df.groupby(["method", "top", "seed"])["i_auroc"].mean().unstack("seed") * 100
    print(mean.assign(mean=mean.mean(axis=1)).round(1).to_string())


if __name__ == "__main__":
    main()
