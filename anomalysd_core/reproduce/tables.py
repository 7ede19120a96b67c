"""The paper's tables as functions: Table 1 (shots x seeds, with baselines), Tables 3-5, Fig. 4,
and the chapters past the paper (robustness, diagnosis).

Each function runs ``settings.run_setting`` for its settings on the process pool
(``schedule.run_settings``; fine-tunes and per-image intermediates are cached, so shared settings
are computed once), returns a long table (one row per method, variant, class, shots, seed and
setting) and, with ``write=True``, stores it as ``results/<profile>/<name>.csv`` with
``<name>.provenance.json`` and the per-image scores ``<name>_scores.csv`` beside it, each
atomically. ``load_result`` and ``load_scores`` read them back.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from ..config import get_config, project_root
from ..method.features import frozen_models
from ..utils import provenance, write_csv_atomic, write_json_atomic
from .evaluate import fit
from .schedule import run_settings
from .settings import baseline_extractor, run_setting

#: Shot counts at which Table 1 adds the row "AnomalySD, automatic λ" (noise_strength="auto")
AUTO_SHOTS = (1,)


# ----------------------------------------------------------------------------- running settings
def get_results_dir(profile: str, override=None) -> Path:
    """``override`` when given (non-empty), else ``results/<profile>`` of the clone (of the
    working directory outside one: ``config.project_root``)."""
    return Path(override) if override else project_root() / "results" / profile


RUN_KEYS = ("setting", "shots", "seed", "fit_hash", "shot_files", "overrides")


def _signature(df: pd.DataFrame, cfg, name: str, seeds, runs: list) -> str:
    """Hash of what a results file states: its table, configuration, seeds and runs (not timings,
    dates or the commit)."""
    import hashlib

    blob = json.dumps({"table": hashlib.sha256(df.to_csv(index=False).encode()).hexdigest(),
                       "config": cfg.to_dict(), "name": name, "seeds": list(seeds),
                       "runs": [{k: r.get(k) for k in RUN_KEYS} for r in runs]}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


SCORE_COLUMNS = ["setting", "shots", "seed", "method", "variant", "class", "file", "label", "score"]


def _take_scores(runs: list) -> pd.DataFrame:
    """Take the per-image scores out of the run infos of ``run_setting`` (they stay out of the
    provenance): one row per setting, method, variant and test image (``SCORE_COLUMNS``)."""
    frames = []
    for r in runs:
        rows = r.pop("image_scores", None)
        if rows:
            frames.append(pd.DataFrame(rows).assign(setting=r["setting"], shots=r["shots"], seed=r["seed"]))
    return pd.concat(frames, ignore_index=True)[SCORE_COLUMNS] if frames else pd.DataFrame(columns=SCORE_COLUMNS)


def _write(profile: str, name: str, df: pd.DataFrame, runs: list, seeds, t0: float, out=None,
           common: dict | None = None, scores: pd.DataFrame | None = None, **extra) -> bool:
    """Write ``<name>.csv``, ``<name>.provenance.json`` and, given ``scores``, the per-image scores
    ``<name>_scores.csv``, each atomically; returns False (and writes nothing) when the files already
    hold the same tables from the same configuration and runs, so a re-run from the cache leaves
    them byte-identical (the book runner's stage cache hashes them)."""
    out = get_results_dir(profile, out)
    cfg = get_config(profile, **(common or {}))
    sig = _signature(df, cfg, name, seeds, runs)
    prov_path, csv_path = out / f"{name}.provenance.json", out / f"{name}.csv"
    scores_path = out / f"{name}_scores.csv"
    tables = [(csv_path, df)] + ([(scores_path, scores)] if scores is not None else [])
    if prov_path.is_file() and all(p.is_file() for p, _ in tables):
        try:
            if (json.loads(prov_path.read_text()).get("signature") == sig
                    and all(p.read_bytes() == t.to_csv(index=False).encode() for p, t in tables)):
                return False
        except ValueError:
            pass
    write_json_atomic(prov_path, provenance(
        cfg, name=name, seeds=list(seeds), runs=runs, wall_seconds=time.perf_counter() - t0,
        signature=sig, **extra))
    for p, t in tables:
        write_csv_atomic(p, t)
    return True


def load_scores(name: str, profile: str = "mini", results_dir=None) -> pd.DataFrame | None:
    """The per-image scores ``<name>_scores.csv`` that ``table1``, ``table3``-``5`` and
    ``noise_sweep`` write beside their table (None when absent)."""
    p = get_results_dir(profile, results_dir) / f"{name}_scores.csv"
    return pd.read_csv(p, keep_default_na=True).fillna({"variant": ""}) if p.is_file() else None


def _collect(profile, name, settings, seeds, write, post=None, results_dir=None, common=None,
             workers=None, **extra):
    """Run every (setting label, overrides) (``run_settings``), concatenate, apply ``post``; write
    once at the end. The run infos of ``run_setting`` are attached as ``df.attrs["runs"]``.
    """
    t0 = time.perf_counter()
    done = run_settings(profile, settings, run_setting, workers)
    frames, runs = [d for d, _ in done], [i for _, i in done]
    df, scores = pd.concat(frames, ignore_index=True), _take_scores(runs)
    if post is not None:
        df, scores = post(df), post(scores)
    if write:
        _write(profile, name, df, runs, seeds, t0, out=results_dir, common=common, scores=scores, **extra)
    df.attrs["runs"] = runs
    return df


def table1(profile: str = "mini", shots=(0, 1, 2, 4), seeds=(0, 1, 2),
           baselines=("patchcore", "spade", "padim"), write: bool = True, results_dir=None,
           workers: int | None = None, auto_shots=AUTO_SHOTS, zero_shot_seeds=None, **over) -> pd.DataFrame:
    """Table 1 analog: every shot count and seed, AnomalySD, the kNN map alone and the baselines.

    With zero shots there is no fine-tune and no shot to draw, so a seed changes only the noise
    draws; ``zero_shot_seeds`` (default: ``seeds``) runs that row at fewer seeds (mini: seed 0,
    to keep the book within its hour).

    At the shot counts of ``auto_shots`` (those also in ``shots``, K > 0) AnomalySD runs a second
    time with ``noise_strength="auto"`` (``autolambda.py``): method ``anomalysd-auto``, with the
    chosen lambda and selection curves of every class in its run info (``auto_lambda``). Classes
    whose chosen lambda equals the fixed one are read from the fixed row's cache.
    """
    zero = list(seeds) if zero_shot_seeds is None else list(zero_shot_seeds)
    settings = [(f"{k}-shot", dict(shots=k, seed=s, baselines=tuple(baselines), **over))
                for k in shots for s in (zero if k == 0 else seeds)]
    auto = [k for k in auto_shots if k in shots and k > 0]
    settings += [(f"{k}-shot, auto lambda", {**over, "shots": k, "seed": s, "noise_strength": "auto"})
                 for k in auto for s in seeds]

    def mark_auto(df):
        is_auto = df["setting"].str.endswith("auto lambda")
        df = df[~(is_auto & (df["method"] != "anomalysd"))].copy()  # its kNN map is the fixed row's
        df.loc[df["setting"].str.endswith("auto lambda"), "method"] = "anomalysd-auto"
        return df.reset_index(drop=True)

    return _collect(profile, "table1", settings, seeds, write, post=mark_auto, results_dir=results_dir,
                    common=over, workers=workers, shots=list(shots), baselines=list(baselines),
                    auto_shots=auto, zero_shot_seeds=zero)


def table3(profile: str = "mini", seed: int = 0, shots: int = 1, write: bool = True, results_dir=None,
           workers: int | None = None, **over) -> pd.DataFrame:
    """Table 3: which modules are fine-tuned (none / decoder / denoiser / both)."""
    grid = [("none", False, False), ("decoder only", False, True), ("denoiser only", True, False),
            ("both", True, True)]
    settings = [(lab, dict(shots=shots, seed=seed, finetune_unet=u, finetune_decoder=d, **over))
                for lab, u, d in grid]
    return _collect(profile, "table3", settings, [seed], write, results_dir=results_dir, common=over,
                    workers=workers)


def table4(profile: str = "mini", seed: int = 0, shots: int = 1, write: bool = True, results_dir=None,
           workers: int | None = None, **over) -> pd.DataFrame:
    """Table 4: training-mask design (random vs foreground IoU) and prompt design."""
    grid = [("mask: random", dict(mask_design="random")), ("mask: designed", {}),
            ("prompt: none", dict(prompt_design="none")), ("prompt: simple", dict(prompt_design="simple")),
            ("prompt: hierarchical", {})]
    settings = [(lab, dict(shots=shots, seed=seed, **o, **over)) for lab, o in grid]
    return _collect(profile, "table4", settings, [seed], write, results_dir=results_dir, common=over,
                    workers=workers)


def table5(profile: str = "mini", seed: int = 0, shots: int = 1, write: bool = True, results_dir=None,
           **over) -> pd.DataFrame:
    """Table 5: inference masks (one full mask / multi-scale / multi-scale + prototype), one run."""
    settings = [("inference masks", dict(shots=shots, seed=seed, variants=("full", "ms", "ms+proto"), **over))]

    def label(df):
        df["setting"] = df["variant"].where(df["method"] == "anomalysd", df["method"])
        return df

    return _collect(profile, "table5", settings, [seed], write, post=label, results_dir=results_dir,
                    common=over)


def noise_sweep(profile: str = "mini", lambdas=(0.2, 0.4, 0.6, 0.8), seeds=(0,), shots: int = 1,
                write: bool = True, results_dir=None, workers: int | None = None, **over) -> pd.DataFrame:
    """Fig. 4 extended: i/p-AUROC against the noise strength lambda for every seed (each seed's
    fine-tune shared by its lambdas; Table 1's fine-tunes and its lambda when they are cached).

    Every class runs at each lambda: per-class strengths of the profile are cleared unless
    ``noise_strength_per_class`` is passed explicitly.
    """
    over.setdefault("noise_strength_per_class", {})
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    settings = [(f"lambda={lam:g}", dict(shots=shots, seed=s, noise_strength=lam, **over))
                for s in seeds for lam in lambdas]

    def add_lambda(df):
        df["lambda"] = df["setting"].str.split("=").str[1].astype(float)
        return df

    return _collect(profile, "noise_sweep", settings, seeds, write, post=add_lambda,
                    results_dir=results_dir, common=over, workers=workers, lambdas=list(lambdas))


# The mini fine-tune, distance, noise strength and map post-processing of the book before the
# validation studies (notebook 10 compares them with the current defaults, one change at a time)
# eq (15), eq (21) and the image score as in the paper
PAPER_MAP = dict(blur_sigma_512=4.0, proto_floor="none", alpha=0.1, image_score_top=0.0)


EARLIER_MINI = dict(unet_steps=150, decoder_steps=50, lr=1e-4, lr_schedule="constant", noise_strength=0.4,
                    distance="lite0", **PAPER_MAP)


def robustness(profile: str = "mini", classes=None, perturbations=None, severities=(1, 2, 3), seed: int = 0,
               shots: int = 1, baselines=("patchcore", "spade", "padim"), write: bool = True,
               results_dir=None, workers: int | None = None, log=print, test_per_class: int | None = None,
               **over) -> pd.DataFrame:
    """Every method on perturbed test images (``robustness.py``): rows per (perturbation,
    severity, method, class) with image AUROC, pixel AUROC and PRO over the valid pixels, and
    ``i_drop`` / ``p_drop`` from the clean images (severity 0). The shots stay clean; the fine-tune
    is Table 1's for this seed and shot count; AnomalySD's maps are cached per condition and
    scored on ``workers`` processes. ``test_per_class``: that many test images per class
    (``robustness.test_samples``), None: all. Writes ``robustness.csv`` and its provenance."""
    from . import robustness as rb
    from .schedule import config_overrides, default_workers

    t0 = time.perf_counter()
    cfg = get_config(profile, shots=shots, seed=seed, **config_overrides(over))
    backbone, distance = frozen_models(cfg)
    fitted = fit(cfg, progress=False, backbone=backbone, distance=distance)
    classes = list(classes or fitted.classes)
    unknown = sorted(set(classes) - set(fitted.classes))
    if unknown:
        raise ValueError(f"robustness: unknown classes {unknown}; the data has {fitted.classes}")
    conds = [("clean", 0)] + rb.conditions(perturbations, severities)
    n = workers or default_workers(profile, len(conds) * len(classes), shots=shots, seed=seed, **over)
    setting = {**config_overrides(over), "shots": shots, "seed": seed}
    with fitted.timer.stage("score"):
        n_fresh = rb.run_conditions(profile, setting, fitted, classes, conds, n, log, test_per_class)
    skipped: dict = {}
    with fitted.timer.stage("metrics"):
        df = rb.evaluate_conditions(fitted, classes, conds, baselines,
                                    baseline_extractor(fitted), skipped, test_per_class)
    df = rb.with_drops(df)
    df.insert(0, "seed", seed)
    df.insert(0, "shots", shots)
    run = {"setting": "robustness", "shots": shots, "seed": seed, "fit_hash": fitted.fit_hash,
           "shot_files": fitted.shot_files, "overrides": dict(over), "classes": classes,
           "perturbations": {k: list(v[1]) for k, v in rb.PERTURBATIONS.items() if any(k == c for c, _ in conds)},
           "n_fresh_images": n_fresh, "workers": n, "stage_seconds": dict(fitted.timer.stages),
           "test_per_class": test_per_class,
           "skipped_baselines": skipped}
    if write:
        _write(profile, "robustness", df, [run], [seed], t0, out=results_dir, common=over,
               classes=classes, severities=list(severities), baselines=list(baselines))
    df.attrs["runs"] = [run]
    return df


def diagnosis(profile: str = "mini", models=(), seed: int = 0, shots: int = 1, write: bool = True,
              results_dir=None, workers: int | None = None, **over) -> pd.DataFrame:
    """Stage diagnostics (``diagnose.stage_table``) of each model, one (label, overrides) each (they
    take precedence over ``over``), on the test images. Fine-tunes and intermediates are computed on
    the worker pool (and cached); then this process fits each model again from its cached
    fine-tune (about a second) and measures it from the cache. Columns: ``model`` and
    ``diagnose.COLUMNS``."""
    from .diagnose import stage_table
    from .schedule import config_overrides

    t0 = time.perf_counter()
    settings = [(lab, {**over, "shots": shots, "seed": seed, **o}) for lab, o in models]  # o wins
    runs = [info for _, info in run_settings(profile, settings, run_setting, workers)]
    _take_scores(runs)  # the stage table is measured below; the images' scores are not kept
    frames = []
    for lab, o in settings:
        cfg = get_config(profile, **config_overrides(o))
        backbone, distance = frozen_models(cfg)
        st = stage_table(fit(cfg, progress=False, backbone=backbone, distance=distance))
        st.insert(0, "model", lab)
        frames.append(st)
    df = pd.concat(frames, ignore_index=True)
    if write:
        _write(profile, "diagnosis", df, runs, [seed], t0, out=results_dir, common=over,
               models={lab: o for lab, o in models})
    df.attrs["runs"] = runs
    return df


def load_result(name: str, profile: str = "mini", results_dir=None):
    """``(table, provenance)`` of ``results/<profile>/<name>.csv`` (``(None, None)`` when absent)."""
    d = get_results_dir(profile, results_dir)
    csv, prov = d / f"{name}.csv", d / f"{name}.provenance.json"
    if not csv.is_file():
        return None, None
    df = pd.read_csv(csv, keep_default_na=True).fillna({"variant": "", "setting": ""})
    info = json.loads(prov.read_text()) if prov.is_file() else {}
    df.attrs["runs"] = info.get("runs", [])
    return df, info
