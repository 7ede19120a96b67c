"""The shared helpers of the validation studies (benchmarks/_validation.py)."""
import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import _validation  # noqa: E402

from anomalysd_core.method.metrics import bootstrap_gain  # noqa: E402


def _scores(n_per_class=12, seeds=(0, 1)):
    """Two variants on the same images: 'good' ranks every anomaly first, 'ref' is noise."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in seeds:
        for cls in ("a", "b"):
            labels = np.arange(n_per_class) % 2
            noise = rng.uniform(size=n_per_class)
            for v, score in (("ref", noise), ("same", noise), ("good", labels + 0.1 * noise)):
                rows += [{"seed": seed, "variant": v, "class": cls, "file": f"{i:02d}.png", "label": int(y),
                          "score": float(s)} for i, (y, s) in enumerate(zip(labels, score))]
    return pd.DataFrame(rows)


def test_bootstrap_gain_of_a_perfect_ranking_is_sure_and_of_a_copy_is_nothing():
    boot = bootstrap_gain(_scores(), "variant", "ref", n=200).set_index("variant")
    assert boot.loc["ref", "gain"] == 0 and boot.loc["ref", "sd"] == 0
    assert boot.loc["same", "gain"] == 0 and boot.loc["same", "sd"] == 0  # paired: identical scores, no spread
    good = boot.loc["good"]
    assert good["gain"] > 0.2 and good["lo"] > 0 and good["sd"] > 0 and good["lo"] <= good["gain"] <= good["hi"]


def test_bootstrap_spread_shrinks_with_more_images():
    small = bootstrap_gain(_scores(8), "variant", "ref", n=200).set_index("variant")
    large = bootstrap_gain(_scores(64), "variant", "ref", n=200).set_index("variant")
    assert large.loc["good", "sd"] < small.loc["good", "sd"]


def test_a_study_refuses_the_test_build():
    with pytest.raises(SystemExit, match="not a validation build"):
        _validation.checked(argparse.Namespace(data_root="data/mini"))
