"""What the validation studies share: their arguments, the check that the data is a validation
build (never the test images the tables report), and writing a study's CSV with its provenance.

A study is a script in this folder whose ``main`` calls :func:`parser`, :func:`checked` and
:func:`write`; the mini defaults in ``config.PROFILES`` name the study each one comes from.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def parser(description: str, seeds=(0, 1), out_dir: str | None = "runs/schedule") -> argparse.ArgumentParser:
    """``--profile``, ``--data-root`` (a ``-val`` build), ``--seeds``, ``--results-dir`` and, when
    ``out_dir`` is given, ``--out-dir`` (the runs cache, shared with ``finetune_schedule.py``)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--profile", default="mini")
    ap.add_argument("--data-root", default="data/mini-val")
    if out_dir is not None:
        ap.add_argument("--out-dir", default=out_dir, help="runs cache (shared with finetune_schedule.py)")
    if seeds is not None:
        ap.add_argument("--seeds", type=int, nargs="+", default=list(seeds))
    ap.add_argument("--results-dir", default="", help="default: results/<profile>")
    return ap


def checked(args: argparse.Namespace) -> argparse.Namespace:
    """Refuse a data root that is not a validation build; run offline."""
    if not Path(args.data_root).name.endswith("-val"):
        raise SystemExit(f"--data-root {args.data_root!r} is not a validation build (its name must end in -val)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return args


def config(args: argparse.Namespace, **over):
    """The profile's config on the study's data and runs cache, with ``over`` on top."""
    from anomalysd_core.config import get_config

    return get_config(args.profile, data_root=args.data_root, out_dir=args.out_dir, **over)


def fitted(args: argparse.Namespace, seed: int, **over):
    """The detector at one shot and ``seed`` on the study's data, fitted (or read from the cache)."""
    from anomalysd_core.reproduce.evaluate import fit
    from anomalysd_core.method.features import frozen_models

    cfg = config(args, shots=1, seed=seed, **over)
    return fit(cfg, progress=False, **dict(zip(("backbone", "distance"), frozen_models(cfg))))


def write(args: argparse.Namespace, name: str, df, cfg, **info) -> Path:
    """``<results>/<name>.csv`` and ``<name>.provenance.json`` (``cfg``'s config, ``info``),
    each written atomically. Returns the CSV's path."""
    from anomalysd_core.utils import provenance, write_csv_atomic, write_json_atomic

    rdir = Path(args.results_dir) if args.results_dir else REPO / "results" / args.profile
    csv = rdir / f"{name}.csv"
    write_csv_atomic(csv, df)
    write_json_atomic(rdir / f"{name}.provenance.json", provenance(
        cfg, name=name, data_root=args.data_root, **info))
    return csv
