"""Did a regeneration move a committed number? ``results check`` compares freshly regenerated
tables with the committed ones, cell by cell, within a stated tolerance per metric.

``make book`` rewrites ``results/<profile>/`` in place. Then

    python -m anomalysd_core results check --profile mini            # against git HEAD
    python -m anomalysd_core results check --profile mini --against OLD_DIR

compares each table the book writes (``TABLES``) in the working tree with the committed version
(``git show REF:results/<profile>/<file>``, or the same file under ``--against``): rows are matched
on their key columns (every column that is not a measured value: setting, method, class, shots,
seed, ...), and every measured cell must lie within ``tolerance(column)`` of the committed one.
Run times are not compared. It prints every cell that moved beyond its tolerance, every row
that appeared or disappeared, and the tolerances used; exit status 0 when nothing moved, 1 when
something did, 2 on bad input (an unknown profile, a missing folder or file, no git).

The tolerances are this machine's float noise, not a statement about the method: on 16 test
images per class the same code gave image AUROC values 0.019 apart on two CPUs, so AUROC-like
values (fractions in [0, 1]) may move by 0.02; the reconstruction PSNR by 0.5 dB; other measured
values (distances, coverages) by 5 % of their size.
"""
from __future__ import annotations

import io
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

#: The tables ``make book`` regenerates (``results/<profile>/<name>.csv``).
TABLES = ("table1", "table3", "table4", "table5", "noise_sweep", "robustness", "diagnosis")
#: Measured values in [0, 1] (AUROC, AUPR, F1, PRO and their drops): absolute tolerance.
FRACTION_COLUMNS = ("i_auroc", "i_aupr", "i_f1max", "p_auroc", "p_pro", "p_f1max", "i_drop", "p_drop",
                    "pixel_auroc_ms", "max_on_defect", "proto_cover_normal", "proto_cover_anomal", "proto_hit")
FRACTION_TOL = 0.02
#: Other measured values: (absolute, relative) tolerance.
OTHER_TOL = {"vae_psnr": (0.5, 0.0)}
DEFAULT_TOL = (1e-3, 0.05)
#: Columns never compared (they measure the machine, not the method).
IGNORED = ("seconds", "finished_utc")


class DriftInputError(ValueError):
    """A folder, file or revision that ``check`` cannot read (exit status 2)."""


def tolerance(column: str, committed: float) -> float:
    """The largest change of ``column`` that counts as float noise, at the committed value.

    >>> tolerance("i_auroc", 0.8), tolerance("vae_psnr", 24.0), round(tolerance("d_ratio", 2.0), 4)
    (0.02, 0.5, 0.101)
    """
    if column in FRACTION_COLUMNS:
        return FRACTION_TOL
    a, r = OTHER_TOL.get(column, DEFAULT_TOL)
    return a + r * abs(committed)


@dataclass
class Moved:
    table: str
    row: str
    column: str
    committed: object
    fresh: object
    tol: float | None  # None: a row that appeared or disappeared

    def __str__(self) -> str:
        if self.tol is None:
            return f"{self.table}: row {self.row} {self.column}"
        return (f"{self.table}: {self.row} {self.column}: {self.committed:.4g} -> {self.fresh:.4g} "
                f"(moved {abs(self.fresh - self.committed):.4g} > {self.tol:.4g})")


def measured_columns(df: pd.DataFrame) -> list[str]:
    """Columns holding measured floats (not keys, not run times)."""
    keys = key_columns(df)
    return [c for c in df.columns if c not in keys and not any(c.startswith(i) or c.endswith(i) for i in IGNORED)]


def key_columns(df: pd.DataFrame) -> list[str]:
    """Columns that identify a row: text and whole numbers (setting, class, shots, seed, n_test,
    lambda and severity too, which are set, not measured)."""
    out = []
    for c in df.columns:
        if any(c.startswith(i) or c.endswith(i) for i in IGNORED) or c in FRACTION_COLUMNS or c in OTHER_TOL:
            continue
        s = df[c]
        if not pd.api.types.is_float_dtype(s) or c in ("lambda",) or np.all(np.isnan(s) | (s == np.round(s))):
            out.append(c)
    return out


def compare(name: str, committed: pd.DataFrame, fresh: pd.DataFrame) -> list[Moved]:
    """Every cell of ``fresh`` beyond its tolerance of ``committed``, and every row only in one."""
    keys = [c for c in key_columns(committed) if c in fresh.columns]
    if not keys:
        raise DriftInputError(f"{name}: no key columns to match rows on")

    def label(row) -> str:
        return ", ".join(f"{k}={row[k]}" for k in keys)

    a = committed.assign(_key=committed.apply(label, axis=1)).drop_duplicates("_key").set_index("_key")
    b = fresh.assign(_key=fresh.apply(label, axis=1)).drop_duplicates("_key").set_index("_key")
    out = [Moved(name, k, "only in the committed table", None, None, None) for k in a.index.difference(b.index)]
    out += [Moved(name, k, "only in the regenerated table", None, None, None) for k in b.index.difference(a.index)]
    for col in measured_columns(committed):
        if col not in b.columns:
            out.append(Moved(name, "(all rows)", f"column {col} missing from the regenerated table", None, None, None))
            continue
        for k in a.index.intersection(b.index):
            x, y = float(a.at[k, col]), float(b.at[k, col])
            if np.isnan(x) and np.isnan(y):
                continue
            tol = tolerance(col, x)
            if np.isnan(x) != np.isnan(y) or abs(y - x) > tol:
                out.append(Moved(name, k, col, x, y, tol))
    return out


def committed_table(path: Path, ref: str | None, against: Path | None, repo: Path) -> pd.DataFrame | None:
    """The committed version of ``path``: under ``against``, or ``git show ref:path``; None when
    it was never committed."""
    if against is not None:
        p = against / path.name
        return pd.read_csv(p) if p.is_file() else None
    rel = path.resolve().relative_to(repo.resolve()).as_posix()
    try:
        r = subprocess.run(["git", "show", f"{ref}:{rel}"], cwd=repo, capture_output=True)
    except FileNotFoundError as e:
        raise DriftInputError("git is not installed; pass --against a folder of committed tables") from e
    if r.returncode != 0:
        if b"does not exist" in r.stderr or b"exists on disk, but not in" in r.stderr:
            return None
        raise DriftInputError(f"git show {ref}:{rel} failed: {r.stderr.decode().strip()}")
    return pd.read_csv(io.BytesIO(r.stdout))


def check(results_dir, ref: str = "HEAD", against=None, repo=None, tables=TABLES) -> tuple[list[Moved], list[str]]:
    """(every moved cell or row, the tables compared) for the tables in ``results_dir``."""
    from ..config import REPO_ROOT

    results_dir, repo = Path(results_dir), Path(repo) if repo is not None else REPO_ROOT
    against = Path(against) if against is not None else None
    if not results_dir.is_dir():
        raise DriftInputError(f"results folder {str(results_dir)!r} does not exist")
    if against is not None and not against.is_dir():
        raise DriftInputError(f"--against folder {str(against)!r} does not exist")
    moved, compared = [], []
    for name in tables:
        path = results_dir / f"{name}.csv"
        old = committed_table(path, ref, against, repo) if path.is_file() or against is not None else None
        if old is None and not path.is_file():
            continue
        if not path.is_file():
            moved.append(Moved(name, "(table)", "committed but not regenerated", None, None, None))
            continue
        if old is None:
            moved.append(Moved(name, "(table)", "regenerated but never committed", None, None, None))
            continue
        moved += compare(name, old, pd.read_csv(path))
        compared.append(name)
    if not compared and not moved:
        raise DriftInputError(f"no table of {', '.join(tables)} in {str(results_dir)!r}")
    return moved, compared


def main(argv=None) -> int:
    """``python -m anomalysd_core results check``: exit 0 (nothing moved), 1 (moved), 2 (bad input)."""
    import argparse

    from ..config import CHOICES
    from .tables import get_results_dir

    ap = argparse.ArgumentParser(prog="python -m anomalysd_core results check", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="mini")
    ap.add_argument("--results", default=None, help="the regenerated folder (default results/<profile>)")
    ap.add_argument("--ref", default="HEAD", help="the git revision of the committed tables (default HEAD)")
    ap.add_argument("--against", default=None, help="a folder of committed tables instead of git")
    args = ap.parse_args(argv)
    try:
        if args.profile not in CHOICES["profile"]:
            raise DriftInputError(f"unknown profile {args.profile!r}; choose one of {list(CHOICES['profile'])}")
        moved, compared = check(args.results or get_results_dir(args.profile), args.ref, args.against)
    except DriftInputError as e:
        print(f"error: {e}")
        return 2
    print(f"compared {', '.join(compared)}; tolerances: AUROC-like values {FRACTION_TOL}, vae_psnr "
          f"{OTHER_TOL['vae_psnr'][0]} dB, other measured values {DEFAULT_TOL[1]:.0%} (+{DEFAULT_TOL[0]:g}); "
          "run times not compared")
    for m in moved:
        print(f"MOVED {m}")
    print(f"{len(moved)} cell(s) or row(s) moved beyond tolerance" if moved else "nothing moved")
    return 1 if moved else 0
