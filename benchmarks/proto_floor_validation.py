"""How mini's floor on the prototype-mask threshold was chosen: on the *validation* build.

Eq (15) splits every error map in two, so M^(p) covers part of every test image, of a normal one
too. ``Config.proto_floor="shots"`` keeps the threshold no lower than ``prototypes.shot_floor``:
the 99th percentile of the errors the shots' own rotated views make against the rest of the bank.
For each seed (1 shot, the profile's other defaults, ``data/mini-val``) this scores the validation
images with the paper's threshold (``none``) and with the floor (``shots``); the grid inpaintings
are shared (``evaluate.latent_dir``), only M^(p) is inpainted again. One row per seed, rule and
class goes to ``results/<profile>/proto_floor_validation.csv``: the image and pixel AUROC of
ms+proto and of ms (which has no M^(p), for scale) and, from ``diagnose.stage_table``, how much of a
normal and of an anomalous image M^(p) covers and how much of the defect it holds.

    python benchmarks/proto_floor_validation.py --seeds 0 1
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import _validation  # noqa: E402  (benchmarks/_validation.py)

RULES = ("none", "shots")


def main(argv=None) -> None:
    args = _validation.checked(_validation.parser(__doc__.splitlines()[0]).parse_args(argv))
    import pandas as pd

    from anomalysd_core.reproduce.diagnose import stage_table
    from anomalysd_core.reproduce.evaluate import evaluate

    t0 = time.perf_counter()
    rows = []
    for seed in args.seeds:
        for rule in RULES:
            fitted = _validation.fitted(args, seed, proto_floor=rule)
            df = evaluate(fitted, variants=("ms+proto", "ms"), progress=False)
            df = df[(df["method"] == "anomalysd") & (df["class"] != "mean")]
            stages = stage_table(fitted).set_index("class")
            for _, r in df.iterrows():
                st = stages.loc[r["class"]]
                rows.append({"seed": seed, "proto_floor": rule, "variant": r["variant"], "class": r["class"],
                             "i_auroc": r["i_auroc"], "p_auroc": r["p_auroc"],
                             "floor": fitted.detector.floors.get(r["class"], float("nan")),
                             "proto_cover_normal": st["proto_cover_normal"],
                             "proto_cover_anomal": st["proto_cover_anomal"], "proto_hit": st["proto_hit"]})
    df = pd.DataFrame(rows)
    _validation.write(args, "proto_floor_validation", df, _validation.config(args),
                      seeds=args.seeds, rules=list(RULES), wall_seconds=time.perf_counter() - t0)
    cols = ["i_auroc", "p_auroc", "proto_cover_normal", "proto_cover_anomal", "proto_hit"]
    mean = df.groupby(["variant", "proto_floor", "seed"])[cols].mean().groupby(["variant", "proto_floor"]).mean()
    print((mean * 100).round(1).to_string())


if __name__ == "__main__":
    main()
