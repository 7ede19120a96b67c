"""How the rule of automatic lambda was chosen: on the *validation* build (never the test images).

For each seed (1 shot, the profile's defaults, ``data/mini-val``) this runs the noise sweep over
``LAMBDAS`` and the rule of ``autolambda.py`` on every class with all of them as candidates, then
asks: had the rule maximised the views' pooled pixel AUROC (``pixel``), their image AUROC
(``image``) or the mean of both (``mean``), with a tie tolerance of 0.005 or ``autolambda.TOL``,
over all of ``LAMBDAS`` or without 0.8, which lambda would each class have got, and what would
the validation images have scored with it? A class's score at a lambda is the sweep's (same
fine-tune, same noise draw per image: the cache is keyed by lambda per class); a rule with fewer
candidates is the same curves restricted, because each candidate is scored on its own. Rows, with
the fixed lambdas for scale, go to ``results/<profile>/auto_lambda_validation.csv`` and the run's
provenance beside it; ``autolambda.CRITERION``, ``TOL`` and ``CANDIDATES`` were set from it.

    python benchmarks/auto_lambda_validation.py --seeds 0 1 2
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import _validation  # noqa: E402  (benchmarks/_validation.py)


LAMBDAS = (0.2, 0.4, 0.6, 0.8)
TOLS = (0.005, 0.03)


def choices(rec: dict, name: str, default: float, tol: float, candidates=LAMBDAS) -> float:
    from anomalysd_core.method.autolambda import choose

    pix, img = ({float(k): v for k, v in rec[c].items()} for c in ("pixel", "image"))
    curve = {"pixel": pix, "image": img, "mean": {k: (pix[k] + img[k]) / 2 for k in pix}}[name]
    return choose({k: v for k, v in curve.items() if k in candidates}, default, tol)


def main(argv=None) -> None:
    args = _validation.checked(_validation.parser(__doc__.splitlines()[0]).parse_args(argv))
    import pandas as pd

    from anomalysd_core.reproduce import tables
    from anomalysd_core.method.autolambda import FALLBACK

    t0 = time.perf_counter()
    common = dict(data_root=args.data_root, out_dir=args.out_dir)
    rows = []
    for seed in args.seeds:
        sweep = tables.noise_sweep(args.profile, lambdas=LAMBDAS, seeds=(seed,), shots=1, write=False, **common)
        sweep = sweep[(sweep["method"] == "anomalysd") & (sweep["class"] != "mean")]
        at = {(r["class"], round(r["lambda"], 6)): r for _, r in sweep.iterrows()}
        fitted = _validation.fitted(args, seed, noise_strength="auto", auto_lambdas=LAMBDAS)
        for c in fitted.classes:
            fitted.strength(c)
        recs = fitted.auto_records()
        options = [(f"fixed {lam:g}", {c: lam for c in recs}) for lam in LAMBDAS]
        for top in (0.8, 0.6):
            cands = [lam for lam in LAMBDAS if lam <= top]
            options += [(f"auto: {n}, tol {tol:g}, λ ≤ {top:g}",
                         {c: choices(r, n, FALLBACK, tol, cands) for c, r in recs.items()})
                        for n in ("pixel", "image", "mean") for tol in TOLS]
        for name, lams in options:
            for c, lam in lams.items():
                r = at[(c, round(lam, 6))]
                rows.append({"seed": seed, "rule": name, "class": c, "lambda": lam,
                             "i_auroc": r["i_auroc"], "p_auroc": r["p_auroc"],
                             "selection_s": recs[c]["seconds"]})
    df = pd.DataFrame(rows)
    _validation.write(args, "auto_lambda_validation", df, _validation.config(args),
                      seeds=args.seeds, wall_seconds=time.perf_counter() - t0)
    mean = df.groupby(["rule", "seed"])[["i_auroc", "p_auroc"]].mean().groupby("rule").mean() * 100
    print(mean.round(1).to_string())


if __name__ == "__main__":
    main()
