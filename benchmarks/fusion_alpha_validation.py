"""How mini's weight of the prototype-guided map in eq (21) was chosen: on the *validation* build.

Eq (21) fuses S_map = (1 - alpha) S_ms + alpha S_pg with the paper's alpha = 0.1. Mini's M^(p)
is thresholded no lower than the shots' own errors (``proto_floor="shots"``), so it covers little
of a normal image and S_pg carries more signal than the paper's weight lets through. For each
seed (1 shot, the profile's other defaults, ``--data-root``; mini's 0.9 was chosen on the three
times larger build ``data/mini-x3-val``) this scores the validation images
once and fuses the same intermediates at every ``--alphas`` value (``evaluate.evaluate`` with
several alphas: fusion only, no inpainting again). One row per seed, alpha and class goes to
``results/<profile>/fusion_alpha_validation.csv`` with the run's provenance. How sure the chosen
weight's gain is: ``choice_noise_validation.py``.

    python benchmarks/fusion_alpha_validation.py --seeds 0 1 2
    python benchmarks/fusion_alpha_validation.py --data-root data/mini-x3-val --seeds 0 1 2 \
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
    ap = _validation.parser(__doc__.splitlines()[0])
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.1, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
                    help="weights of S_pg in eq 21 (the paper: 0.1)")
    args = _validation.checked(ap.parse_args(argv))
    import pandas as pd

    from anomalysd_core.reproduce.evaluate import evaluate

    t0 = time.perf_counter()
    rows = []
    for seed in args.seeds:
        df = evaluate(_validation.fitted(args, seed), variants=("ms+proto",), alphas=args.alphas,
                      with_baseline=False, progress=False)
        for _, r in df[(df["method"] == "anomalysd") & (df["class"] != "mean")].iterrows():
            alpha = float(r["variant"].split("alpha=")[1]) if "alpha=" in r["variant"] else args.alphas[0]
            rows.append({"seed": seed, "alpha": alpha, "class": r["class"],
                         "i_auroc": r["i_auroc"], "p_auroc": r["p_auroc"]})
    df = pd.DataFrame(rows)
    _validation.write(args, "fusion_alpha_validation", df, _validation.config(args),
                      seeds=args.seeds, alphas=args.alphas, wall_seconds=time.perf_counter() - t0)
    mean = df.groupby(["alpha", "seed"])[["i_auroc", "p_auroc"]].mean().groupby("alpha").mean()
    print((mean * 100).round(1).to_string())


if __name__ == "__main__":
    main()
