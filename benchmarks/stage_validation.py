"""The stage diagnostics of mini's default model on a *validation* build, for comparison with the
test images' (``results/<profile>/diagnosis.csv``, notebook 10).

``diagnose.stage_table`` measures each link of AnomalySD's chain per class. On the test images
the prototype mask M^(p) of eq (15) covers more of a normal grass image than of a defective one,
and the prototype term lowers the image AUROC of the textures (Table 5); neither shows on the
validation builds, whose settings mini's defaults come from. This writes the same table for each
``--seeds`` seed (1 shot, the profile's defaults, ``--data-root``) so that the two can be put side
by side: one row per seed and class in ``results/<profile>/stage_validation.csv`` with the run's
provenance. It only reads what the other studies on the same build cached, and fits a seed that
is not cached yet.

    python benchmarks/stage_validation.py --data-root data/mini-x3h-val --seeds 0 1 2 \\
        --results-dir results/mini/val-x3h
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
    args = _validation.checked(ap.parse_args(argv))
    import pandas as pd

    from anomalysd_core.reproduce.diagnose import stage_table

    t0 = time.perf_counter()
    frames = []
    for seed in args.seeds:
        st = stage_table(_validation.fitted(args, seed))
        frames.append(st[st["class"] != "mean"].assign(seed=seed))
    df = pd.concat(frames, ignore_index=True)
    df = df[["seed"] + [c for c in df.columns if c != "seed"]]
    _validation.write(args, "stage_validation", df, _validation.config(args),
                      seeds=args.seeds, wall_seconds=time.perf_counter() - t0)
    cols = ["proto_cover_normal", "proto_cover_anomal", "proto_hit", "i_auroc"]
    print((100 * df.groupby("class")[cols].mean()).round(1).to_string())


if __name__ == "__main__":
    main()
