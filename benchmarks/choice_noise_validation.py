"""How sure is each inference choice of mini? A paired bootstrap on the *validation* build.

Mini departs from the paper's inference in four settings (``tables.PAPER_MAP``), each chosen
on a validation build by its own study: the blur of S_map (``map_blur_validation.py``), the floor
on eq (15)'s threshold (``proto_floor_validation.py``), the weight of S_pg in eq (21)
(``fusion_alpha_validation.py``) and the image score (``image_score_validation.py``); the last two
on the three times larger ``data/mini-x3-val``.
For each seed (1 shot) this scores the validation images with mini's defaults and, for each
choice, with that one setting put back to the paper's value (the inpaintings are cached and
shared; only M^(p) differs for the floor). ``metrics.bootstrap_gain`` then draws the images of
each class again with replacement, the same draw for both settings and every seed, and reports
the gain in image AUROC of mini's value over the paper's with its spread. One row per choice goes
to ``results/<profile>/choice_noise_validation.csv`` (with the observed pixel-AUROC gain beside
it) and the run's provenance.

    python benchmarks/choice_noise_validation.py --seeds 0 1 2
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
    ap.add_argument("--boot", type=int, default=1000, help="bootstrap draws of the validation images")
    args = _validation.checked(ap.parse_args(argv))
    import pandas as pd

    from anomalysd_core.reproduce.evaluate import collect, summarise
    from anomalysd_core.reproduce.tables import PAPER_MAP as PAPER  # the paper's value of each inference choice
    from anomalysd_core.method.metrics import bootstrap_gain

    t0 = time.perf_counter()
    mini = _validation.config(args)
    scores, pixel = [], []
    for seed in args.seeds:
        for choice in [None] + list(PAPER):
            fitted = _validation.fitted(args, seed, **({} if choice is None else {choice: PAPER[choice]}))
            df, sc = summarise(fitted, collect(fitted, with_baseline=False, progress=False), with_baseline=False)
            name = "mini" if choice is None else choice
            scores.append(sc[sc["method"] == "anomalysd"].assign(seed=seed, setting=name))
            p = df[(df["method"] == "anomalysd") & (df["class"] == "mean")]["p_auroc"].iloc[0]
            pixel.append({"seed": seed, "setting": name, "p_auroc": p})
    scores, pixel = pd.concat(scores), pd.DataFrame(pixel).groupby("setting")["p_auroc"].mean()
    rows = []
    for choice, paper_value in PAPER.items():
        pair = scores[scores["setting"].isin(["mini", choice])]
        boot = bootstrap_gain(pair, "setting", choice, n=args.boot).set_index("setting").loc["mini"]
        rows.append({"choice": choice, "mini": getattr(mini, choice), "paper": paper_value,
                     "i_gain": boot["gain"], "i_sd": boot["sd"], "i_lo": boot["lo"], "i_hi": boot["hi"],
                     "p_gain": pixel["mini"] - pixel[choice]})
    out = pd.DataFrame(rows)
    _validation.write(args, "choice_noise_validation", out, mini, seeds=args.seeds, draws=args.boot,
                      wall_seconds=time.perf_counter() - t0)
    print(out.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
