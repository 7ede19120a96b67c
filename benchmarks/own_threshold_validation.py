"""How the threshold of `score --normals` was chosen: on the *validation* build (never the test images).

For every class of ``data/mini-val`` its training normals play the user's normal photos and its
test images the new ones. Each normal is left out in turn and scored against a bank of the others
in 4 variants, either re-lit (``autolambda.relit``, what ``own.calibrate`` does) or flipped, turned
and re-lit (``autolambda.view``); the threshold is the maximum (``own.py``'s rule) or, for scale,
the median of those scores. Rows (method, variants, rule, class, false-positive rate on the normal
test images, true-positive rate on the anomalous ones) go to
``results/<profile>/own_threshold_validation.csv`` with provenance; the class means are printed.

    python benchmarks/own_threshold_validation.py patchcore padim protoknn
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import _validation  # noqa: E402  (benchmarks/_validation.py)


def main(argv=None) -> None:
    ap = _validation.parser(__doc__.splitlines()[0], seeds=None, out_dir=None)
    ap.add_argument("methods", nargs="*", default=["patchcore", "padim", "protoknn"])
    args = _validation.checked(ap.parse_args(argv))
    import numpy as np
    import pandas as pd

    from anomalysd_core import own
    from anomalysd_core.method.autolambda import relit, view
    from anomalysd_core.config import get_config
    from anomalysd_core.data.datasets import load_image, open_dataset
    from anomalysd_core.data.mini import ensure_mini

    t0 = time.perf_counter()
    cfg = get_config(args.profile, data_root=args.data_root)
    ds = open_dataset("mvtec", ensure_mini(cfg))
    rows = []
    for method in args.methods:
        for cls in ds.classes:
            normals = [load_image(s.path, cfg.image_size) for s in ds.train(cls)]
            det = own.OwnDetector(cfg, method, cls, "texture", normals, None, progress=False)
            scored = [(det.score(load_image(s.path, cfg.image_size))[0], s.label) for s in ds.test(cls)]
            rng = np.random.default_rng(0)
            cal = {"re-lit": [], "flipped, turned and re-lit": []}
            for i in range(len(normals)):
                det.refit(normals[:i] + normals[i + 1:])
                for _ in range(4):
                    cal["re-lit"].append(det.score(relit(normals[i], rng))[0])
                    cal["flipped, turned and re-lit"].append(det.score(view(normals[i], rng))[0])
            det.refit(normals)
            for variants, scores in cal.items():
                for rule, t in (("max", max(scores)), ("median", float(np.median(scores)))):
                    rows.append({"method": method, "variants": variants, "rule": rule, "class": cls,
                                 "n_normals": len(normals), "threshold": t,
                                 "fpr": float(np.mean([s > t for s, y in scored if y == 0])),
                                 "tpr": float(np.mean([s > t for s, y in scored if y == 1]))})
    df = pd.DataFrame(rows)
    _validation.write(args, "own_threshold_validation", df, cfg, methods=args.methods,
                      wall_seconds=time.perf_counter() - t0)
    print((df.groupby(["method", "variants", "rule"])[["fpr", "tpr"]].mean() * 100).round(0).to_string())


if __name__ == "__main__":
    main()
