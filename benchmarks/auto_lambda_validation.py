"""How the criterion of automatic lambda was chosen: on the *validation* build (never the test images).

For each seed (1 shot, the profile's defaults, ``data/mini-val``) this runs the noise sweep over
the candidates of ``autolambda.CANDIDATES`` and the rule of ``autolambda.py`` on every class, then
asks: had the rule maximised the views' pooled pixel AUROC (``pixel``), their image AUROC
(``image``) or the mean of both (``mean``), which lambda would each class have got, and what would
the validation images have scored with it? A class's score at a lambda is the sweep's (same
fine-tune, same noise draw per image: the cache is keyed by lambda per class). Rows, with the
fixed lambdas for scale, go to ``results/<profile>/auto_lambda_validation.csv`` and the run's
provenance beside it; ``autolambda.CRITERION`` was set from it.

    python benchmarks/auto_lambda_validation.py --seeds 0 1
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import _validation  # noqa: E402  (benchmarks/_validation.py)


def choices(rec: dict, name: str, default: float) -> float:
    from anomalysd_core.autolambda import choose

    pix, img = ({float(k): v for k, v in rec[c].items()} for c in ("pixel", "image"))
    curve = {"pixel": pix, "image": img, "mean": {k: (pix[k] + img[k]) / 2 for k in pix}}[name]
    return choose(curve, default)


def main(argv=None) -> None:
    args = _validation.checked(_validation.parser(__doc__.splitlines()[0]).parse_args(argv))
    import pandas as pd

    from anomalysd_core import experiments as ex
    from anomalysd_core.autolambda import CANDIDATES, FALLBACK
    from anomalysd_core.config import get_config
    from anomalysd_core.evaluate import fit
    from anomalysd_core.features import frozen_models

    t0 = time.perf_counter()
    common = dict(data_root=args.data_root, out_dir=args.out_dir)
    rows = []
    for seed in args.seeds:
        sweep = ex.noise_sweep(args.profile, lambdas=CANDIDATES, seeds=(seed,), shots=1, write=False, **common)
        sweep = sweep[(sweep["method"] == "anomalysd") & (sweep["class"] != "mean")]
        at = {(r["class"], round(r["lambda"], 6)): r for _, r in sweep.iterrows()}
        cfg = get_config(args.profile, shots=1, seed=seed, noise_strength="auto", **common)
        fitted = fit(cfg, progress=False, **dict(zip(("backbone", "distance"), frozen_models(cfg))))
        for c in fitted.classes:
            fitted.strength(c)
        recs = fitted.auto_records()
        options = [(f"fixed {lam:g}", {c: lam for c in recs}) for lam in CANDIDATES]
        options += [(f"auto: {n}", {c: choices(r, n, FALLBACK) for c, r in recs.items()})
                    for n in ("pixel", "image", "mean")]
        for name, lams in options:
            for c, lam in lams.items():
                r = at[(c, round(lam, 6))]
                rows.append({"seed": seed, "rule": name, "class": c, "lambda": lam,
                             "i_auroc": r["i_auroc"], "p_auroc": r["p_auroc"],
                             "selection_s": recs[c]["seconds"]})
    df = pd.DataFrame(rows)
    _validation.write(args, "auto_lambda_validation", df, get_config(args.profile, **common),
                      seeds=args.seeds, wall_seconds=time.perf_counter() - t0)
    mean = df.groupby(["rule", "seed"])[["i_auroc", "p_auroc"]].mean().groupby("rule").mean() * 100
    print(mean.round(1).to_string())


if __name__ == "__main__":
    main()
