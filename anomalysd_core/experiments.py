"""The paper's tables as functions: Table 1 (shots x seeds, with baselines), Tables 3-5, Fig. 4.

Each function runs ``evaluate.fit`` + ``evaluate.evaluate`` for its settings (fine-tunes and
per-image intermediates are cached, so shared settings are computed once), returns a long table
(one row per method, variant, class, shots, seed and setting) and, with ``write=True``, stores it as
``results/<profile>/<name>.csv`` with ``<name>.provenance.json`` beside it, both atomically.
The paper's own numbers are in ``PAPER_*`` and are always labelled ``source = "paper"``.

The notebooks (``notebooks/03-09``) and the book's results page share the rest of this module:
``notebook_setup`` (their parameters -> overrides, results folder, base model; a random stand-in
base model for the smoke profile when ``models/mini-base`` is absent), ``sweep_defaults`` (the
shots/seeds/noise strengths per profile), ``load_result`` and the report helpers that put our
numbers beside the paper's (``table1_summary``, ``beside_paper1``, ``per_class_table``,
``timing_table``, ``ablation_table``, ``noise_table``) and write comparison sentences from the
numbers themselves (``*_sentences``), so that no number in the book's prose is typed by hand.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .config import REPO_ROOT, get_config
from .evaluate import METRIC_COLUMNS, class_metrics, evaluate, fit
from .features import frozen_models  # noqa: F401  (notebooks call it as ex.frozen_models)
from .schedule import run_settings
from .utils import provenance, write_csv_atomic, write_json_atomic

# ----------------------------------------------------------------------------- the paper's numbers
_T1 = """shots,method,i_auroc,i_aupr,i_f1max,p_auroc,p_pro,v_i_auroc,v_i_aupr,v_i_f1max,v_p_auroc,v_p_pro
0,SD (no fine-tune),52.3,77.9,84.4,74.2,55.3,55.7,62.5,72.7,75.4,49.2
0,WinCLIP,91.8,96.5,92.9,85.1,64.6,78.1,81.2,79.0,79.6,56.8
0,AnomalySD,86.6,93.7,90.5,87.6,81.5,80.9,83.4,79.8,92.8,90.5
1,SPADE,81.0,90.6,90.3,91.2,83.9,79.5,82.0,80.7,95.6,84.1
1,PaDiM,76.6,88.1,88.2,89.3,73.3,62.8,68.3,75.3,89.9,64.3
1,PatchCore,83.4,92.2,90.5,92.0,79.7,79.9,82.8,81.7,95.4,80.5
1,WinCLIP,93.1,96.5,93.7,95.2,87.1,83.8,85.1,83.1,96.4,85.1
1,AnomalySD,93.6,96.9,94.9,94.8,89.2,86.1,89.1,83.4,96.5,93.9
2,SPADE,82.9,91.7,91.1,92.0,85.7,80.7,82.3,81.7,96.2,85.7
2,PaDiM,78.9,89.3,89.2,91.3,78.2,67.4,71.6,75.7,92.0,70.1
2,PatchCore,86.3,93.8,92.0,93.3,82.3,81.6,84.8,82.5,96.1,82.6
2,WinCLIP,94.4,97.0,94.4,96.0,88.4,84.6,85.8,83.0,96.8,86.2
2,AnomalySD,94.8,97.0,95.2,95.8,90.4,87.4,90.1,83.7,96.8,94.1
4,SPADE,84.8,92.5,91.5,92.7,87.0,81.7,83.4,82.1,96.6,87.3
4,PaDiM,80.4,90.5,90.2,92.6,81.3,72.8,75.6,78.0,93.2,72.6
4,PatchCore,88.8,94.5,92.6,94.3,84.3,85.3,87.5,84.3,96.8,84.9
4,WinCLIP,95.2,97.3,94.7,96.2,89.0,87.3,88.8,84.2,97.2,87.6
4,AnomalySD,95.6,97.6,95.6,96.2,90.8,88.9,90.9,85.4,97.5,94.3
"""


def paper_table1() -> pd.DataFrame:
    """The paper's Table 1 (multi-class; MVTec-AD and VisA, the ``v_`` columns), in percent."""
    from io import StringIO

    df = pd.read_csv(StringIO(_T1))
    df["source"] = "paper"
    return df


PAPER_TABLE3 = pd.DataFrame({  # MVTec 1-shot, i-AUROC / p-AUROC (percent)
    "setting": ["none", "decoder only", "denoiser only", "both"],
    "i_auroc": [86.6, 87.2, 93.2, 93.6], "p_auroc": [87.6, 88.9, 94.1, 94.8], "source": "paper"})
PAPER_TABLE4 = pd.DataFrame({
    "setting": ["mask: random", "mask: designed", "prompt: none", "prompt: simple", "prompt: hierarchical"],
    "i_auroc": [93.0, 93.6, 91.5, 92.4, 93.6], "p_auroc": [93.9, 94.8, 92.7, 93.3, 94.8], "source": "paper"})
PAPER_TABLE5 = pd.DataFrame({
    "setting": ["full", "ms", "ms+proto"], "i_auroc": [84.9, 93.1, 93.6], "p_auroc": [89.6, 94.2, 94.8],
    "source": "paper"})


# ----------------------------------------------------------------------------- labels and defaults
METHOD_LABELS = {"anomalysd": "AnomalySD", "anomalysd-auto": "AnomalySD, automatic λ", "proto-knn": "Prototype kNN map", "patchcore": "PatchCore",
                 "spade": "SPADE", "padim": "PaDiM", "winclip": "WinCLIP"}
METRIC_LABELS = {"i_auroc": "i-AUROC", "i_aupr": "i-AUPR", "i_f1max": "i-F1max", "p_auroc": "p-AUROC",
                 "p_pro": "PRO", "p_f1max": "p-F1max"}
#: The sweeps the notebooks run when their list parameters are left empty (``sweep_defaults``).
#: smoke keeps CI short: two shot counts, one seed, three noise strengths (one of them cached).
SWEEPS = {
    "paper": dict(shots=(0, 1, 2, 4), seeds=(0, 1, 2), lambdas=(0.2, 0.4, 0.6, 0.8),
                  baselines=("patchcore", "spade", "padim", "winclip")),
    "mini": dict(shots=(0, 1, 2, 4), seeds=(0, 1, 2), lambdas=(0.2, 0.4, 0.6, 0.8),
                 baselines=("patchcore", "spade", "padim"), zero_shot_seeds=(0,)),
    "smoke": dict(shots=(0, 1), seeds=(0,), lambdas=(0.2, 0.5, 0.8), baselines=("patchcore", "spade", "padim")),  # 0.5: the profile's own, cached
}
#: Shot counts at which Table 1 adds the row "AnomalySD, automatic λ" (noise_strength="auto")
AUTO_SHOTS = (1,)
#: The robustness chapter's subset (its CPU budget): classes, perturbations (None: all of
#: ``robustness.PERTURBATIONS``) and severities, one seed at one shot. Mini scores the mildest and
#: the strongest severity only: the middle one cost 145 s of the book's 60 minutes.
ROBUSTNESS = {
    "paper": dict(classes=None, perturbations=None, severities=(1, 2, 3), seed=0, shots=1),
    "mini": dict(classes=("brick", "coins"), perturbations=None, severities=(1, 3), seed=0, shots=1),
    "smoke": dict(classes=("brick",), perturbations=("rotation", "gain", "jpeg"), severities=(1, 3),
                  seed=0, shots=1),
}


def sweep_defaults(profile: str) -> dict:
    """Shot counts, seeds, noise strengths and baselines the notebooks use for ``profile`` by default."""
    return dict(SWEEPS.get(profile, SWEEPS["mini"]))


def parse_list(value, default, conv=int) -> list:
    """A notebook list parameter: ``None``/``""`` -> ``default``; ``"0,1"`` or ``[0, 1]`` -> ``[0, 1]``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return [conv(v) for v in default]
    if isinstance(value, str):
        return [conv(v) for v in value.replace(",", " ").split()]
    if isinstance(value, (int, float)):
        return [conv(value)]
    return [conv(v) for v in value]


# ----------------------------------------------------------------------------- notebook set-up
def resolve_base_model(profile: str, base_model: str = "", out_dir: str = "") -> tuple[str, str]:
    """The base model a run of ``profile`` should use, and a sentence saying which.

    ``base_model`` when given; else the profile's own (``models/mini-base`` for mini and smoke).
    For the ``smoke`` profile only, when that folder is absent, a randomly initialised model of the
    mini architecture is written once to ``<out_dir>/smoke/random-base-<size>`` (atomically) and
    used instead, so that CI runs every notebook without the pre-trained weights.
    """
    cfg = get_config(profile, **({"out_dir": out_dir} if out_dir else {}))
    if base_model:
        return str(base_model), f"Base model: `{base_model}` (set by the `base_model` parameter)."
    if Path(cfg.base_model).exists() or profile != "smoke":
        return cfg.base_model, f"Base model: `{cfg.base_model}` (the profile's)."
    import os
    import shutil
    import tempfile

    from .models import CARD_NAME, new_mini_components, save_base

    stand = Path(cfg.out_dir) / profile / f"random-base-{cfg.image_size}"
    if not (stand / CARD_NAME).is_file():
        stand.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{stand.name}.", dir=stand.parent))
        try:
            comp = new_mini_components(cfg.image_size, text_kind=cfg.text_encoder, seed=0)
            comp.vae.register_to_config(scaling_factor=1.0)
            save_base(comp, tmp, {"name": "random stand-in", "random": True, "size": cfg.image_size})
            if stand.exists():
                shutil.rmtree(stand)
            os.replace(tmp, stand)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    note = (f"The base model `{cfg.base_model}` is absent, so this smoke run uses a RANDOMLY "
            f"INITIALISED stand-in of the same architecture (`{stand}`): the code paths are real, "
            "the images and numbers are not meaningful.")
    return str(stand), note


def notebook_setup(profile: str, data_root: str = "", base_model: str = "", out_dir: str = "",
                   results_dir: str = "") -> tuple[dict, Path, str]:
    """Overrides, results folder and base-model sentence from a notebook's parameters.

    Empty strings mean "the profile's own": ``data_root`` and ``out_dir`` of the profile,
    ``results/<profile>`` and the base model of :func:`resolve_base_model`. The overrides are meant
    for ``get_config(profile, **over)`` and for the table functions of this module.
    """
    over = {}
    if data_root:
        over["data_root"] = str(data_root)
    if out_dir:
        over["out_dir"] = str(out_dir)
    over["base_model"], note = resolve_base_model(profile, base_model, out_dir)
    return over, get_results_dir(profile, results_dir), note


# ----------------------------------------------------------------------------- running settings
def get_results_dir(profile: str, override=None) -> Path:
    """``override`` when given (non-empty), else ``results/<profile>`` under the repository root."""
    return Path(override) if override else REPO_ROOT / "results" / profile


results_dir = get_results_dir  # the original name


def _anomalysd_seconds(fitted, items, n_fresh: int) -> float:
    """Seconds per test image of AnomalySD's expensive part (inpaintings, distances, M^(p)).

    Measured on the ``n_fresh`` images whose intermediates were computed in this run from the
    start (cache reads take milliseconds; images decoded from stored latents are left out) and
    stored as ``timing.json`` in the cache folder of these settings, so a fully cached re-run
    reports the time of the run that computed them (NaN if none is known).
    """
    from .evaluate import timing_file

    if not items:
        return float("nan")
    path = timing_file(fitted.cfg)
    if n_fresh:
        s = fitted.timer.stages.get("score", 0.0) / n_fresh
        write_json_atomic(path, {"seconds_per_image": s, "n_images": n_fresh,
                                 "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        return s
    if path.is_file():
        return float(json.loads(path.read_text()).get("seconds_per_image", float("nan")))
    return float("nan")


def run_setting(profile: str, setting: str = "", variants=("ms+proto",), baselines=(),
                progress: bool = False, time_only=("protoknn",), prior: dict | None = None, **overrides):
    """fit + evaluate one configuration; returns (metrics table, run info).

    The run info holds the shots, seed, fit hash, shot files, stage seconds and
    ``seconds_per_image`` per method: AnomalySD's (see ``_anomalysd_seconds``), each baseline's
    ``predict`` and, when baselines are run, the prototype kNN map's (timed with
    ``baselines.ProtoKNN``; its metrics come from the evaluation itself). ``prior`` is the work
    that other processes did for this setting before (``schedule.py``: the fine-tune, scored
    images and their seconds); it is added to the run info.
    """
    from .evaluate import cache_file, test_items

    cfg = get_config(profile, **overrides)
    t0 = time.perf_counter()
    backbone, distance = frozen_models(cfg)
    fitted = fit(cfg, progress=progress, backbone=backbone, distance=distance)
    items = test_items(fitted)
    n_fresh = sum(not cache_file(fitted.cfg, s, fitted.strength(c)).is_file() for c, s in items)
    df, scores = evaluate(fitted, variants=variants, progress=progress, return_scores=True)
    score_rows = scores.to_dict("records")
    if baselines:
        df = pd.concat([df, run_baselines(fitted, baselines, time_only=time_only, score_rows=score_rows)],
                       ignore_index=True)
    df.insert(0, "setting", setting)
    st = fitted.timer.stages
    prior = prior or {}
    n_fresh += prior.get("n_fresh", 0)
    n_reused = fitted.counts.get("latents_reused", 0) + prior.get("n_latents_reused", 0)
    st["score"] = st.get("score", 0.0) + prior.get("score_seconds", 0.0)
    if prior.get("finetune_seconds"):
        st["finetune"] = st.get("finetune", 0.0) + prior["finetune_seconds"]
    # automatic lambda scores at other lambdas than the fixed row: its own entry in the timing table
    secs = {"anomalysd-auto" if cfg.auto_strength else "anomalysd": _anomalysd_seconds(fitted, items, n_fresh - n_reused)}
    for name in list(baselines) + list(time_only if baselines else ()):
        if f"{name}_per_image_s" in st:
            secs["proto-knn" if name == "protoknn" else name] = st[f"{name}_per_image_s"]
    done = fitted.run_dir / "done.json"
    ft_times = json.loads(done.read_text()).get("times", {}) if done.is_file() and cfg.shots > 0 else {}
    info = {"setting": setting, "shots": cfg.shots, "seed": cfg.seed, "fit_hash": fitted.fit_hash,
            "shot_files": fitted.shot_files, "stage_seconds": dict(st),
            "wall_seconds": time.perf_counter() - t0 + prior.get("worker_seconds", 0.0),
            "overrides": {k: v for k, v in overrides.items()},
            "n_test_images": len(items), "n_fresh_images": n_fresh,
            "n_latents_reused": n_reused, "seconds_per_image": secs,
            "finetune_seconds": ft_times,
            "finetune_reused": bool(prior.get("finetune_reused", fitted.finetune_info.get("reused"))),
            "finetune_adopted": dict(fitted.finetune_info.get("adopted", {})),
            "skipped_baselines": dict(fitted.skipped_baselines)}
    if cfg.auto_strength:
        info["auto_lambda"] = fitted.auto_records()
    info["image_scores"] = score_rows  # taken out by ``_collect`` into <table>_scores.csv
    return df, info


def baseline_extractor(fitted):
    """Features for PatchCore/SPADE/PaDiM: AnomalySD's own backbone unless ``cfg.baseline_backbone``
    names another (paper profile: WideResNet-50 with PatchCore's layers 2-3 as its patch feature)."""
    from .features import build_backbone, frozen
    from .utils import resolve_device

    cfg = fitted.cfg
    name = cfg.baseline_backbone or cfg.backbone
    if name == cfg.backbone:
        return fitted.detector.backbone
    return frozen("baseline_backbone", name, resolve_device(cfg.device),
                  lambda dev: build_backbone(name, device=dev, psi_layers=(1, 2)))


def run_baselines(fitted, names=("patchcore", "spade", "padim"), time_only=(),
                  score_rows: list | None = None) -> pd.DataFrame:
    """The few-shot baselines on the same data, shots and seeds (class-wise banks).

    ``score_rows``, when given, receives one dict per baseline and test image (``method``,
    ``variant``, ``class``, ``file``, ``label``, ``score``: the rows of ``evaluate``'s scores).

    ``time_only`` names baselines that are timed (``<name>_per_image_s`` in the stage times) but
    add no metric rows. A baseline that cannot run here (WinCLIP without its weights) is skipped
    with a warning carrying its message, kept in ``fitted.skipped_baselines`` (and so in the run
    info of ``run_setting`` and the results' provenance).
    """
    import warnings

    from . import data as data_mod
    from .baselines import ZERO_SHOT_BASELINES, BaselineUnavailable, build_baseline

    cfg, ds = fitted.cfg, fitted.dataset
    rows = []
    for name in list(names) + [n for n in time_only if n not in names]:
        if cfg.shots == 0 and name not in ZERO_SHOT_BASELINES:
            continue  # memory-bank methods need at least one normal image
        extractor = None if name in ZERO_SHOT_BASELINES else baseline_extractor(fitted)
        t_img, n_img = 0.0, 0
        try:
            for cls in fitted.classes:
                normals = [torch.from_numpy(data_mod.load_image(s.path, cfg.image_size)).permute(2, 0, 1)
                           for s in fitted.shots[cls]]
                normals = torch.stack(normals) if normals else torch.zeros(0, 3, cfg.image_size, cfg.image_size)
                kw = {"class_name": cls} if name in ZERO_SHOT_BASELINES else {}
                model = build_baseline(name, extractor, **kw).fit(normals)
                samples = ds.test(cls)
                labels, gts, scores, maps = [], [], [], []
                for s in samples:
                    img, mask = data_mod.load_sample(s, cfg.image_size)
                    t0 = time.perf_counter()
                    sc, mp = model.predict(torch.from_numpy(img).permute(2, 0, 1)[None])
                    t_img += time.perf_counter() - t0
                    n_img += 1
                    labels.append(s.label), gts.append(mask)
                    scores.append(float(sc[0])), maps.append(mp[0].cpu().numpy())
                if name in time_only and name not in names:
                    continue
                if score_rows is not None:
                    score_rows += [{"method": name, "variant": "", "class": cls, "file": s.relpath,
                                    "label": s.label, "score": sc} for s, sc in zip(samples, scores)]
                r = {"method": name, "variant": "", "class": cls, "shots": cfg.shots, "seed": cfg.seed,
                     "n_test": len(labels), "n_anomalous": int(sum(labels))}
                r.update(class_metrics(labels, scores, gts if ds.has_pixel_masks(cls) else None, maps))
                rows.append(r)
        except BaselineUnavailable as e:
            warnings.warn(str(e), stacklevel=2)
            print(str(e))
            fitted.skipped_baselines[name] = str(e)
            rows = [r for r in rows if r["method"] != name]
            if score_rows is not None:
                score_rows[:] = [r for r in score_rows if r["method"] != name]
            continue
        fitted.timer.stages[f"{name}_per_image_s"] = t_img / max(n_img, 1)
    df = pd.DataFrame(rows)
    if len(df):
        means = df.groupby("method", sort=False)[METRIC_COLUMNS].mean().reset_index()
        means["variant"], means["class"], means["shots"], means["seed"] = "", "mean", cfg.shots, cfg.seed
        means["n_test"] = df.groupby("method", sort=False)["n_test"].sum().values
        means["n_anomalous"] = df.groupby("method", sort=False)["n_anomalous"].sum().values
        df = pd.concat([df, means], ignore_index=True)
    return df


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


def auto_lambda_table(runs: list) -> pd.DataFrame:
    """The choices of ``noise_strength="auto"`` in run infos (``df.attrs["runs"]`` or a provenance's
    ``runs``): one row per (shots, seed, class, candidate lambda) with the selection curves
    (``pixel``, ``image``, ``criterion``), ``chosen`` (bool) and the class's selection seconds."""
    rows = []
    for r in runs or []:
        for cls, rec in (r.get("auto_lambda") or {}).items():
            for lam, crit in rec.get("criterion", {}).items():
                rows.append({"shots": r["shots"], "seed": r["seed"], "class": cls, "lambda": float(lam),
                             "pixel": rec["pixel"][lam], "image": rec["image"][lam], "criterion": crit,
                             "chosen": np.isclose(float(lam), rec["lambda"]), "seconds": rec["seconds"]})
    cols = ["shots", "seed", "class", "lambda", "pixel", "image", "criterion", "chosen", "seconds"]
    return pd.DataFrame(rows, columns=cols)


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
               results_dir=None, workers: int | None = None, log=print, **over) -> pd.DataFrame:
    """Every method on perturbed test images (``robustness.py``): rows per (perturbation,
    severity, method, class) with image AUROC, pixel AUROC and PRO over the valid pixels, and
    ``i_drop`` / ``p_drop`` from the clean images (severity 0). The shots stay clean; the fine-tune
    is Table 1's for this seed and shot count; AnomalySD's maps are cached per condition and
    scored on ``workers`` processes. Writes ``robustness.csv`` and its provenance."""
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
        n_fresh = rb.run_conditions(profile, setting, fitted, classes, conds, n, log)
    skipped: dict = {}
    with fitted.timer.stage("metrics"):
        df = rb.evaluate_conditions(fitted, classes, conds, baselines,
                                    baseline_extractor(fitted), skipped)
    df = rb.with_drops(df)
    df.insert(0, "seed", seed)
    df.insert(0, "shots", shots)
    run = {"setting": "robustness", "shots": shots, "seed": seed, "fit_hash": fitted.fit_hash,
           "shot_files": fitted.shot_files, "overrides": dict(over), "classes": classes,
           "perturbations": {k: list(v[1]) for k, v in rb.PERTURBATIONS.items() if any(k == c for c, _ in conds)},
           "n_fresh_images": n_fresh, "workers": n, "stage_seconds": dict(fitted.timer.stages),
           "skipped_baselines": skipped}
    if write:
        _write(profile, "robustness", df, [run], [seed], t0, out=results_dir, common=over,
               classes=classes, severities=list(severities), baselines=list(baselines))
    df.attrs["runs"] = [run]
    return df


def robustness_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per method (class means, percent): clean image / pixel AUROC, the mean over every
    perturbation at the highest severity, the worst condition and the clean-to-worst drop."""
    d = df[df["class"] == "mean"]
    top = d["severity"].max()
    rows = []
    for m in [m for m in METHOD_LABELS if m in set(d["method"])]:
        x = d[d["method"] == m]
        clean = x[x["severity"] == 0].iloc[0]
        pert = x[x["severity"] > 0]
        worst = pert.loc[pert["i_auroc"].idxmin()]
        hi = pert[pert["severity"] == top]
        rows.append({"method": _label(m), "clean i-AUROC": fmt(clean["i_auroc"] * 100),
                     "clean p-AUROC": fmt(clean["p_auroc"] * 100),
                     f"mean i-AUROC, severity {top}": fmt(hi["i_auroc"].mean() * 100),
                     f"mean p-AUROC, severity {top}": fmt(hi["p_auroc"].mean() * 100),
                     "worst condition": f"{worst['perturbation']} {int(worst['severity'])}",
                     "worst i-AUROC": fmt(worst["i_auroc"] * 100),
                     "clean-to-worst drop": fmt((clean["i_auroc"] - worst["i_auroc"]) * 100)})
    return pd.DataFrame(rows)


MEMORY_BANKS = ("patchcore", "spade", "padim", "proto-knn")


def robustness_sentences(df: pd.DataFrame, profile: str = "mini") -> dict:
    """What the robustness table says, computed from it: the ranking by mean image-AUROC drop at the
    highest severity, whether the memory-bank methods drop less than AnomalySD (RAD's finding),
    and where AnomalySD breaks (its largest drops, by perturbation group)."""
    d = df[(df["class"] == "mean") & (df["severity"] > 0)]
    top = d["severity"].max()
    hi = d[d["severity"] == top]
    drop = hi.groupby("method")["i_drop"].mean().sort_values()
    out = {}
    if not len(drop):
        return out
    out["ranking"] = (f"Mean drop of image AUROC over the perturbations at severity {top} on {profile}, "
                      "smallest first: " + ", ".join(f"{_label(m)} {v:+.1f}" for m, v in drop.items())
                      + " points.")
    banks = [m for m in MEMORY_BANKS if m in drop.index]
    if "anomalysd" in drop.index and banks:
        lower = [m for m in banks if drop[m] < drop["anomalysd"]]
        out["rad"] = (f"RAD's finding, memory banks hold up best: {len(lower)} of the {len(banks)} "
                      f"memory-bank methods here ({', '.join(_label(m) for m in banks)}) drop less than "
                      f"AnomalySD ({drop['anomalysd']:+.1f}) at severity {top}"
                      + (", so it holds on this data." if len(lower) == len(banks) else
                         "; it does not hold for " + ", ".join(_label(m) for m in banks if m not in lower) + "."))
    a = d[d["method"] == "anomalysd"]
    if len(a):
        g = a[a["severity"] == top].groupby("group")["i_drop"].mean().sort_values(ascending=False)
        w = a.loc[a["i_drop"].idxmax()]
        out["anomalysd"] = (f"AnomalySD loses most under {w['perturbation']} at severity {int(w['severity'])} "
                            f"({w['i_drop']:+.1f} points of image AUROC); by group at severity {top}: "
                            + ", ".join(f"{k} {v:+.1f}" for k, v in g.items()) + ".")
    return out


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


# ----------------------------------------------------------------------------- summaries and reports
def fmt(x, digits: int = 1) -> str:
    """A number as text for tables and glue ('n/a' for NaN/None)."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if not np.isfinite(x) else f"{x:.{digits}f}"


def summarise(df: pd.DataFrame, by=("method", "variant", "shots")) -> pd.DataFrame:
    """Mean and std over seeds of the class-mean rows, in percent ('93.1 ± 0.4')."""
    m = df[df["class"] == "mean"].groupby(list(by), sort=False)[METRIC_COLUMNS]
    mean, std = m.mean() * 100, m.std(ddof=0).fillna(0) * 100
    out = mean.round(1).astype(str) + " ± " + std.round(1).astype(str)
    return out.where(~mean.isna(), "n/a").reset_index()


def mean_std(df: pd.DataFrame, by=("method", "shots")) -> pd.DataFrame:
    """Long table of the class-mean rows: ``by`` columns, then ``<metric>``, ``<metric>_std`` (percent,
    population std over seeds) and ``n_seeds``."""
    d = df[df["class"] == "mean"]
    g = d.groupby(list(by), sort=False)
    mean, std = g[METRIC_COLUMNS].mean() * 100, g[METRIC_COLUMNS].std(ddof=0).fillna(0) * 100
    out = mean.join(std.add_suffix("_std"))
    out["n_seeds"] = g["seed"].nunique()
    return out.reset_index()


def _label(m: str) -> str:
    return METHOD_LABELS.get(m, m)


def table1_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Table 1 as in the paper: one row per (shots, method), metrics as 'mean ± std' over seeds."""
    s = summarise(df, by=("shots", "method"))
    seeds = df[df["class"] == "mean"].groupby(["shots", "method"], sort=False)["seed"].nunique()
    s["seeds"] = [int(seeds.get((k, m), 0)) for k, m in zip(s["shots"], s["method"])]
    order = {m: i for i, m in enumerate(METHOD_LABELS)}
    s = s.assign(_o=s["method"].map(order)).sort_values(["shots", "_o"], kind="stable").drop(columns="_o")
    s["method"] = s["method"].map(_label)
    return s.rename(columns=METRIC_LABELS).reset_index(drop=True)


def gap_table(scores: pd.DataFrame | None, key: str, ref: str, n: int = 1000, labels=None,
              **where) -> pd.DataFrame:
    """How sure is each difference in image AUROC to ``ref``, on these test images?

    ``scores`` are a table's per-image scores (``load_scores``), restricted to the rows where each
    column of ``where`` has its value (e.g. ``shots=1``); ``key`` names what is compared (``method``,
    ``setting``). ``metrics.bootstrap_gain`` draws the test images of each class again (paired:
    the same draw for every value and seed). Columns: the compared value (labelled with
    ``labels``, default ``METHOD_LABELS``), ``difference`` (points of class-mean image AUROC,
    averaged over the seeds), ``bootstrap sd``, ``95% interval``, ``seeds``, and ``sure`` ("yes"
    when the interval leaves out 0). Empty when there are no scores."""
    from .metrics import bootstrap_gain

    cols = [key, "difference", "bootstrap sd", "95% interval", "seeds", "sure"]
    if scores is None or not len(scores):
        return pd.DataFrame(columns=cols)
    d = scores
    for k, v in where.items():
        d = d[d[k] == v]
    if ref not in set(d[key]):
        raise ValueError(f"gap_table: {key} {ref!r} is not in the scores (have {sorted(set(d[key]))})")
    # only the seeds at which every compared value was run (the paired draw needs the same images)
    seeds = set.intersection(*(set(g["seed"]) for _, g in d.groupby(key)))
    d = d[d["seed"].isin(seeds)]
    lab = METHOD_LABELS if labels is None else labels
    order = {v: i for i, v in enumerate(dict.fromkeys(list(lab) + list(d[key])))}  # labels' order, then the table's
    b = bootstrap_gain(d, key, ref, n)
    b = b[b[key] != ref].sort_values(key, key=lambda c: c.map(order), kind="stable")
    return pd.DataFrame({key: [lab.get(v, v) for v in b[key]],
                         "difference": [f"{g * 100:+.1f}" for g in b["gain"]],
                         "bootstrap sd": [fmt(x * 100) for x in b["sd"]],
                         "95% interval": [f"[{lo * 100:+.1f}, {hi * 100:+.1f}]" for lo, hi in zip(b["lo"], b["hi"])],
                         "seeds": len(seeds),
                         "sure": ["yes" if lo > 0 or hi < 0 else "no" for lo, hi in zip(b["lo"], b["hi"])]},
                        columns=cols).reset_index(drop=True)


def table1_gaps(scores: pd.DataFrame | None, n: int = 1000) -> tuple[int | None, pd.DataFrame]:
    """``gap_table`` of Table 1: every method against AnomalySD at 1 shot (the largest shot count
    when 1 was not run); returns ``(shots, table)`` (``(None, empty)`` without scores)."""
    if scores is None or not len(scores):
        return None, gap_table(None, "method", "anomalysd")
    shots = 1 if 1 in set(scores["shots"]) else int(scores["shots"].max())
    return shots, gap_table(scores, "method", "anomalysd", n, shots=shots)


#: What each ablation's settings are compared with (the full method) and the rows left out:
#: Table 4's "prompt: hierarchical" is the same run as "mask: designed"; Table 5 compares
#: AnomalySD's inference-mask variants only.
ABLATION_REFS = {"table3": ("both", {"method": "anomalysd"}, ()),
                 "table4": ("mask: designed", {"method": "anomalysd"}, ("prompt: hierarchical",)),
                 "table5": ("ms+proto", {"method": "anomalysd"}, ())}


def ablation_gaps(name: str, scores: pd.DataFrame | None, n: int = 1000) -> pd.DataFrame:
    """``gap_table`` of an ablation (``ABLATION_REFS``): each setting's difference in image AUROC
    to the full method, with its bootstrap interval over the test images."""
    ref, where, drop = ABLATION_REFS[name]
    if scores is not None:
        scores = scores[~scores["setting"].isin(drop)]
    return gap_table(scores, "setting", ref, n, labels={}, **where)


def noise_gaps(scores: pd.DataFrame | None, default: float, n: int = 1000) -> pd.DataFrame:
    """``gap_table`` of the noise sweep: AnomalySD at each lambda against the profile's ``default``."""
    return gap_table(scores, "setting", f"lambda={float(default):g}", n, labels={}, method="anomalysd")


def gap_sentence(gaps: pd.DataFrame, key: str, ref_label: str) -> str:
    """One sentence from a ``gap_table``: which differences to ``ref_label`` the test images can
    tell from zero, and which they cannot."""
    if not len(gaps):
        return "No per-image scores: the differences were not bootstrapped."
    said = {"yes": [], "no": []}
    for _, r in gaps.iterrows():
        said[r["sure"]].append(f"{r[key]} ({r['difference']}, {r['95% interval']})")
    sure, unsure = said["yes"], said["no"]
    out = [f"Against {ref_label}, in points of image AUROC with the 95% bootstrap interval over the test images:"]
    if sure:
        out.append("clearly different: " + "; ".join(sure) + ".")
    if unsure:
        out.append("not distinguishable from 0 on these images: " + "; ".join(unsure) + ".")
    return " ".join(out)


def per_class_table(df: pd.DataFrame, shots: int | None = None) -> pd.DataFrame:
    """i-AUROC / p-AUROC per class and method (mean over seeds, percent) at ``shots`` (default:
    the largest shot count in ``df``). Classes without pixel masks show 'n/a' for p-AUROC."""
    d = df[df["class"] != "mean"]
    shots = int(d["shots"].max()) if shots is None else shots
    d = d[d["shots"] == shots]
    g = d.groupby(["class", "method"], sort=False)[["i_auroc", "p_auroc"]].mean() * 100
    cell = g["i_auroc"].map(fmt) + " / " + g["p_auroc"].map(fmt)
    t = cell.unstack("method")
    t = t[[m for m in METHOD_LABELS if m in t.columns]].rename(columns=METHOD_LABELS)
    t.columns.name = f"{shots}-shot, i-AUROC / p-AUROC"
    return t


def beside_paper1(df: pd.DataFrame, profile: str = "mini") -> pd.DataFrame:
    """Ours (``profile``, mean ± std over seeds) beside the paper's Table 1 (MVTec-AD and VisA)
    for i-AUROC, p-AUROC and PRO; methods that only one side ran show '—' on the other."""
    ours = table1_summary(df)
    paper = paper_table1()
    keys = pd.concat([ours[["shots", "method"]], paper[["shots", "method"]]]).drop_duplicates()
    order = {v: i for i, v in enumerate(list(METHOD_LABELS.values()) + ["SD (no fine-tune)"])}
    keys = keys.sort_values(["shots", "method"], key=lambda c: c.map(order) if c.name == "method" else c,
                            kind="stable")
    out = keys.merge(ours, on=["shots", "method"], how="left").merge(paper, on=["shots", "method"], how="left")
    cols = {"i-AUROC": f"i-AUROC ({profile})", "p-AUROC": f"p-AUROC ({profile})", "PRO": f"PRO ({profile})",
            "i_auroc": "i-AUROC (paper, MVTec)", "p_auroc": "p-AUROC (paper, MVTec)", "p_pro": "PRO (paper, MVTec)",
            "v_i_auroc": "i-AUROC (paper, VisA)", "v_p_auroc": "p-AUROC (paper, VisA)"}
    out = out[["shots", "method"] + list(cols)].rename(columns=cols)
    return out.astype(object).where(out.notna(), "—").reset_index(drop=True)


def timing_table(runs: list) -> pd.DataFrame:
    """Seconds per test image per method (mean over the runs that timed it) from run infos."""
    rows = [{"method": m, "shots": r.get("shots"), "seconds": s} for r in runs or []
            for m, s in (r.get("seconds_per_image") or {}).items() if s is not None and np.isfinite(s)]
    if not rows:
        return pd.DataFrame(columns=["method", "seconds per image", "runs"])
    d = pd.DataFrame(rows)
    g = d.groupby("method", sort=False)["seconds"]
    out = pd.DataFrame({"seconds per image": g.mean(), "runs": g.size()}).reset_index()
    ref = out.loc[out["method"] == "patchcore", "seconds per image"]
    if len(ref):
        out["x PatchCore"] = (out["seconds per image"] / float(ref.iloc[0])).map(lambda v: f"{v:,.0f}")
    out["seconds per image"] = out["seconds per image"].map(lambda v: f"{v:.3g}")
    order = {m: i for i, m in enumerate(METHOD_LABELS)}
    out = out.sort_values("method", key=lambda c: c.map(order)).reset_index(drop=True)
    out["method"] = out["method"].map(_label)
    return out


def cost_table(profile: str = "mini", results_dir=None) -> pd.DataFrame | None:
    """Seconds per test image per stage, from the inference-speed benchmark's CSVs in
    ``results/<profile>`` (``benchmarks/inference_speed.py``): one row per measured mask set
    (``bench_scaling.csv``) with the cost model's split (U-Net, VAE encode+decode, distance, the
    rest) beside the measured total, and the SD-1.5-size projection (``bench_paper_size*.csv``,
    random weights: timings only). ``None`` when the benchmark has not been run."""
    rdir = get_results_dir(profile, results_dir)
    rows = []
    speed = rdir / "bench_speed.csv"
    dev = "cpu"
    if speed.is_file():
        sp = pd.read_csv(speed).iloc[0]
        dev = f"{sp['device']} ({int(sp['threads'])} thread{'s' if int(sp['threads']) != 1 else ''})" \
            if str(sp["device"]) == "cpu" else str(sp["device"])
    scaling = rdir / "bench_scaling.csv"
    if scaling.is_file():
        d = pd.read_csv(scaling)
        for r in d[d["table"] == "mask set K"].itertuples():
            rows.append({"model": f"{profile} base model", "device": dev, "px": int(r.image_size),
                         "masks": int(r.n_masks), "U-Net calls": int(r.unet_calls),
                         "U-Net s": r.pred_unet_s, "VAE s": r.pred_vae_s, "distance s": r.pred_distance_s,
                         "other s": r.pred_fixed_s, "predicted s": r.predicted_s_per_image,
                         "measured s": r.measured_s_per_image})
    for f in sorted(rdir.glob("bench_paper_size*.csv")):
        for r in pd.read_csv(f).itertuples():
            d = str(r.device) + (f" ({int(r.threads)} threads)" if str(r.device) == "cpu" and hasattr(r, "threads") else "")
            rows.append({"model": "SD-1.5-inpainting size, random weights", "device": d,
                         "px": int(r.image_size), "masks": int(r.vae_decodes), "U-Net calls": int(r.unet_items),
                         "U-Net s": r.pred_unet_s, "VAE s": r.pred_vae_encode_s + r.pred_vae_decode_s,
                         "distance s": r.pred_distance_s, "other s": r.pred_fixed_s,
                         "predicted s": r.pred_total_s, "measured s": float("nan")})
    if not rows:
        return None
    out = pd.DataFrame(rows)
    num = ["U-Net s", "VAE s", "distance s", "other s", "predicted s", "measured s"]
    out[num] = out[num].apply(lambda c: c.map(lambda v: "—" if not np.isfinite(v) else
                                              f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"))
    return out


def _shots(k) -> str:
    return f"{int(k)} shot{'s' if int(k) != 1 else ''}"


def _seed_std(df1: pd.DataFrame | None, shots: int = 1, metric: str = "i_auroc") -> float:
    """Std over seeds (percent) of AnomalySD's class-mean ``metric`` at ``shots`` in Table 1."""
    if df1 is None or not len(df1):
        return float("nan")
    d = df1[(df1["class"] == "mean") & (df1["method"] == "anomalysd") & (df1["shots"] == shots)]
    return float(d[metric].std(ddof=0) * 100) if d["seed"].nunique() > 1 else float("nan")


def table1_sentences(df: pd.DataFrame, profile: str = "mini") -> dict:
    """Comparison sentences for Table 1, computed from ``df`` (true whatever the numbers are)."""
    ms = mean_std(df)
    paper = paper_table1()
    ran = [m for m in METHOD_LABELS if m in set(ms["method"])]
    out = {}
    a = ms[ms["method"] == "anomalysd"].sort_values("shots")
    pa = paper[paper["method"] == "AnomalySD"].sort_values("shots")
    if len(a) > 1:
        lo, hi = a.iloc[0], a.iloc[-1]
        trend = ("rises" if hi["i_auroc"] > lo["i_auroc"] else "falls" if hi["i_auroc"] < lo["i_auroc"]
                 else "stays the same")
        p_lo = pa.loc[pa["shots"] == lo["shots"], "i_auroc"]
        p_hi = pa.loc[pa["shots"] == hi["shots"], "i_auroc"]
        paper_part = (f"; in the paper it goes from {fmt(p_lo.iloc[0])} to {fmt(p_hi.iloc[0])} on MVTec-AD "
                      "over the same shot counts" if len(p_lo) and len(p_hi) else "")
        out["shots_trend"] = (
            f"On {profile}, AnomalySD's image AUROC {trend} from {fmt(lo['i_auroc'])} at "
            f"{_shots(lo['shots'])} to {fmt(hi['i_auroc'])} at {_shots(hi['shots'])} (mean over "
            f"{int(hi['n_seeds'])} seed{'s' if hi['n_seeds'] != 1 else ''}){paper_part}.")
    elif len(a):
        out["shots_trend"] = (f"On {profile}, AnomalySD was run at {_shots(a['shots'].iloc[0])} only "
                              f"(image AUROC {fmt(a['i_auroc'].iloc[0])}).")
    best = []
    for k, g in ms[ms["shots"] > 0].groupby("shots"):
        top = g.sort_values("i_auroc", ascending=False).iloc[0]
        p = paper[(paper["shots"] == k) & paper["method"].isin([_label(m) for m in ran])]
        ptop = p.sort_values("i_auroc", ascending=False).iloc[0]["method"] if len(p) else "n/a"
        best.append(f"at {_shots(k)} the best image AUROC here is {_label(top['method'])}'s "
                    f"({fmt(top['i_auroc'])}), in the paper {ptop}'s")
    if best:
        out["best_method"] = ("Among the methods run here, " + "; ".join(best) +
                              " (the paper's ranking is on MVTec-AD).")
    gaps = []
    for k, g in ms[ms["shots"] > 0].groupby("shots"):
        base = g[g["method"].isin(["patchcore", "spade", "padim"])]
        a_ = g[g["method"] == "anomalysd"]
        pb = paper[(paper["shots"] == k) & paper["method"].isin(["PatchCore", "SPADE", "PaDiM"])]
        pa = paper[(paper["shots"] == k) & (paper["method"] == "AnomalySD")]
        if len(base) and len(a_) and len(pb) and len(pa):
            d_ours = float(a_["i_auroc"].iloc[0] - base["i_auroc"].max())
            d_pap = float(pa["i_auroc"].iloc[0] - pb["i_auroc"].max())
            gaps.append(f"{_shots(k)}: {d_ours:+.1f} here, {d_pap:+.1f} in the paper")
    if gaps:
        out["gap"] = ("Image AUROC of AnomalySD minus the best of PatchCore, SPADE and PaDiM, in points: "
                      + "; ".join(gaps) + ".")
    s = _seed_std(df, 1)
    out["seed_std"] = (f"Across seeds, AnomalySD's 1-shot image AUROC varies with a standard deviation of "
                       f"{fmt(s)} points on {profile}." if np.isfinite(s) else
                       "Only one seed was run, so the spread over shot draws is unknown.")
    same = same_draw_shots(df.attrs.get("runs", []))
    if same:
        ks = ", ".join(map(str, same))
        out["same_draws"] = (f"At {ks} shot(s) every seed drew the same normal images, so "
                             f"the spread there comes from AnomalySD's noise draw "
                             f"alone, and the feature baselines have none.")
    else:
        out["same_draws"] = "Every seed drew different normal images at every shot count run."
    return out


def same_draw_shots(runs: list) -> list[int]:
    """Shot counts > 0 at which every seed of ``runs`` (run infos with ``shot_files``) drew the same
    images for every class, and more than one seed was run."""
    by_k: dict[int, list] = {}
    for r in runs or []:
        if r.get("shots") and r.get("shot_files") is not None:
            files = {c: sorted(v) for c, v in r["shot_files"].items()}  # the same set, in any order
            by_k.setdefault(int(r["shots"]), []).append(json.dumps(files, sort_keys=True))
    return sorted(k for k, v in by_k.items() if len(v) > 1 and len(set(v)) == 1)


PAPER_ABLATIONS = {"table3": PAPER_TABLE3, "table4": PAPER_TABLE4, "table5": PAPER_TABLE5}
REFERENCE_SETTING = {"table3": "both", "table4": "mask: designed", "table5": "ms+proto"}


def _delta(x) -> str:
    """A signed difference in points ('+1.2', '-0.4', '0.0'), 'n/a' for NaN."""
    x = float(x)
    if not np.isfinite(x):
        return "n/a"
    return "0.0" if round(x, 1) == 0 else f"{x:+.1f}"


def ablation_table(df: pd.DataFrame, name: str, profile: str = "mini") -> pd.DataFrame:
    """Ours (AnomalySD, class mean, percent) beside the paper's Table 3/4/5 numbers, with each side's
    difference to its full method (``REFERENCE_SETTING``)."""
    paper = PAPER_ABLATIONS[name].set_index("setting")
    d = df[(df["class"] == "mean") & (df["method"] == "anomalysd")]
    ours = d.groupby("setting", sort=False)[["i_auroc", "p_auroc"]].mean() * 100
    ref = REFERENCE_SETTING[name]
    rows = []
    for s in paper.index:
        o = ours.loc[s] if s in ours.index else pd.Series({"i_auroc": np.nan, "p_auroc": np.nan})
        r = {"setting": s, f"i-AUROC ({profile})": fmt(o["i_auroc"]), f"p-AUROC ({profile})": fmt(o["p_auroc"]),
             "i-AUROC (paper, MVTec)": fmt(paper.loc[s, "i_auroc"]),
             "p-AUROC (paper, MVTec)": fmt(paper.loc[s, "p_auroc"])}
        if ref in ours.index:
            r[f"Δ i-AUROC ({profile})"] = _delta(o["i_auroc"] - ours.loc[ref, "i_auroc"])
        r["Δ i-AUROC (paper)"] = _delta(paper.loc[s, "i_auroc"] - paper.loc[ref, "i_auroc"])
        rows.append(r)
    return pd.DataFrame(rows)


def ablation_long(df: pd.DataFrame, name: str, profile: str = "mini") -> pd.DataFrame:
    """Long table for plots: setting, source ('<profile>' / 'paper (MVTec)'), metric, value (percent)."""
    paper = PAPER_ABLATIONS[name]
    d = df[(df["class"] == "mean") & (df["method"] == "anomalysd")]
    ours = (d.groupby("setting", sort=False)[["i_auroc", "p_auroc"]].mean() * 100).reset_index()
    ours = ours[ours["setting"].isin(paper["setting"])]
    rows = []
    for src, t in ((profile, ours), ("paper (MVTec)", paper)):
        for _, r in t.iterrows():
            rows += [{"setting": r["setting"], "source": src, "metric": "image AUROC", "value": r["i_auroc"]},
                     {"setting": r["setting"], "source": src, "metric": "pixel AUROC", "value": r["p_auroc"]}]
    out = pd.DataFrame(rows)
    out["setting"] = pd.Categorical(out["setting"], categories=list(paper["setting"]), ordered=True)
    return out.sort_values(["metric", "setting", "source"]).reset_index(drop=True)


def per_class_by(df: pd.DataFrame, by: str = "setting", method: str = "anomalysd") -> pd.DataFrame:
    """i-AUROC / p-AUROC (percent) per class and ``by`` value for one method ('n/a': no pixel masks)."""
    d = df[(df["class"] != "mean") & (df["method"] == method)]
    g = d.groupby(["class", by], sort=False)[["i_auroc", "p_auroc"]].mean() * 100
    t = (g["i_auroc"].map(fmt) + " / " + g["p_auroc"].map(fmt)).unstack(by)
    t = t[list(dict.fromkeys(d[by]))]
    t.columns.name = f"{METHOD_LABELS.get(method, method)}, i-AUROC / p-AUROC"
    return t


def prototype_term_table(table5_df: pd.DataFrame, stage: pd.DataFrame) -> pd.DataFrame:
    """Per class: what the prototype term of eq (21) adds to the image AUROC (``ms+proto`` minus
    ``ms`` of Table 5) beside where its mask M^(p) falls (``diagnose.stage_table`` of the same
    model): the share of a normal and of a defective test image inside M^(p), and the share of the
    defect inside it. Percent; one row per class, then the class mean.

    Examples
    --------
    >>> t5 = pd.DataFrame({"method": "anomalysd", "class": ["a", "a"], "setting": ["ms", "ms+proto"],
    ...                    "i_auroc": [0.9, 0.6]})
    >>> st = pd.DataFrame({"class": ["a"], "proto_cover_normal": [0.05], "proto_cover_anomal": [0.02],
    ...                    "proto_hit": [0.2]})
    >>> prototype_term_table(t5, st).loc[0, ["ms", "ms+proto", "gain"]].tolist()
    [90.0, 60.0, -30.0]
    """
    d = table5_df[(table5_df["method"] == "anomalysd") & (table5_df["class"] != "mean")]
    i = d.groupby(["class", "setting"], sort=False)["i_auroc"].mean().unstack("setting") * 100
    out = pd.DataFrame({"ms": i["ms"], "ms+proto": i["ms+proto"], "gain": i["ms+proto"] - i["ms"]})
    cover = stage[stage["class"] != "mean"].set_index("class")[
        ["proto_cover_normal", "proto_cover_anomal", "proto_hit"]] * 100
    cover.columns = ["M(p) of a normal image", "M(p) of a defective image", "defect inside M(p)"]
    out = out.join(cover, how="left").reset_index().rename(columns={"index": "class"})
    mean = out.drop(columns="class").mean(numeric_only=True)
    return pd.concat([out, pd.DataFrame([{"class": "mean", **mean.to_dict()}])], ignore_index=True)


def prototype_term_sentence(table: pd.DataFrame, alpha: float | None = None) -> str:
    """Which classes the prototype term helps and hurts, and where M^(p) falls on them
    (``prototype_term_table``), as one paragraph computed from the numbers; ``alpha`` is the
    weight of S_pg in eq (21)."""
    t = table[table["class"] != "mean"].dropna(subset=["gain"])
    if t.empty:
        return "No class has both `ms` and `ms+proto` rows yet."
    lose, win = t[t["gain"] < 0], t[t["gain"] > 0]
    cn, ca, hit = "M(p) of a normal image", "M(p) of a defective image", "defect inside M(p)"

    def where(r) -> str:
        if not np.isfinite(r[cn]):
            return f"{r['class']} {r['gain']:+.1f}"
        h = f", {r[hit]:.0f} % of the defect" if np.isfinite(r[hit]) else ""
        return f"{r['class']} {r['gain']:+.1f} (M(p): {r[cn]:.1f} % of a normal image, {r[ca]:.1f} % of a defective one{h})"

    parts = []
    if len(win):
        parts.append("The prototype term raises the image AUROC on "
                     + "; ".join(where(r) for _, r in win.sort_values("gain", ascending=False).iterrows()))
    if len(lose):
        parts.append("it lowers it on " + "; ".join(where(r) for _, r in lose.sort_values("gain").iterrows()))
    text = ", and ".join(parts) + "."
    text = text[0].upper() + text[1:]
    inverted = lose[lose[cn] > lose[ca]]
    if len(inverted):
        text += (f" On {', '.join(inverted['class'])} the mask covers more of a normal test image than of a "
                 "defective one: these normal images hold patches far from every patch of the shot (what "
                 "M^(p) marks), and the repainting error inside it becomes the image's score.")
    missed = lose[(lose[cn] <= lose[ca]) & (lose[hit] < 50)]
    if len(missed):
        keep = f" keeps only {1 - alpha:.0%} of S_ms there (alpha = {alpha:g})" if alpha is not None else \
            " weights S_ms down there"
        text += (f" On {', '.join(missed['class'])} the mask falls on the defective images but holds less "
                 f"than half of the defect, and the fused map{keep}, while S_ms alone scores "
                 + ", ".join(f"{r['ms']:.1f}" for _, r in missed.iterrows()) + ".")
    return text


def _concordant(ours: pd.Series, paper: pd.Series) -> tuple[int, int]:
    """Pairs of settings ordered the same way by both sides (pairs tied on either side skipped)."""
    keys = [k for k in paper.index if k in ours.index and np.isfinite(ours[k])]
    agree = n = 0
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            so, sp = np.sign(ours[a] - ours[b]), np.sign(paper[a] - paper[b])
            if so == 0 or sp == 0:
                continue
            n += 1
            agree += int(so == sp)
    return agree, n


def ablation_sentences(df: pd.DataFrame, name: str, profile: str = "mini", table1_df=None) -> dict:
    """Comparison sentences for an ablation table, computed from the numbers."""
    paper = PAPER_ABLATIONS[name].set_index("setting")
    d = df[(df["class"] == "mean") & (df["method"] == "anomalysd")]
    ours = d.groupby("setting", sort=False)[["i_auroc", "p_auroc"]].mean() * 100
    ours = ours[ours.index.isin(paper.index)]
    out = {}
    for col, what in (("i_auroc", "image"), ("p_auroc", "pixel")):
        o = ours[col].dropna()
        if not len(o):
            out[f"best_{col}"] = f"No {what} AUROC is available for this ablation on {profile} yet."
            continue
        tops = sorted(o[o == o.max()].index)
        ptops = sorted(paper[col][paper[col] == paper[col].max()].index)
        a, n = _concordant(o, paper[col])
        out[f"best_{col}"] = (
            f"Highest {what} AUROC on {profile}: {' = '.join(tops)} ({fmt(o.max())}); in the paper: "
            f"{' = '.join(ptops)} ({fmt(paper[col].max())}). The two sides order the settings the same way "
            f"in {a} of {n} pairs.")
    o = ours["i_auroc"].dropna()
    if len(o) > 1:
        spread = float(o.max() - o.min())
        s = _seed_std(table1_df, 1)
        out["spread"] = (f"The settings span {fmt(spread)} points of image AUROC on {profile} (the paper: "
                         f"{fmt(paper['i_auroc'].max() - paper['i_auroc'].min())})"
                         + (f"; for scale, changing only the seed of the shot draw moves the 1-shot image "
                            f"AUROC with a standard deviation of {fmt(s)} points (Table 1)." if np.isfinite(s)
                            else "; Table 1's seed spread is not available for scale."))
    return out


def noise_table(df: pd.DataFrame) -> pd.DataFrame:
    """AnomalySD's class-mean i/p-AUROC (percent) per noise strength lambda: mean over seeds, their
    population std (``… std``) and the number of seeds."""
    d = df[(df["class"] == "mean") & (df["method"] == "anomalysd")]
    g = d.groupby("lambda")
    t = g[["i_auroc", "p_auroc"]].mean() * 100
    sd = g[["i_auroc", "p_auroc"]].std(ddof=0).fillna(0) * 100
    t = t.rename(columns=METRIC_LABELS).join(sd.rename(columns={k: METRIC_LABELS[k] + " std" for k in sd}))
    t["seeds"] = g["seed"].nunique()
    return t.reset_index()


def auto_lambda_summary(table1_df: pd.DataFrame | None, sweep_df: pd.DataFrame | None,
                        shots: int = 1) -> tuple[pd.DataFrame, dict]:
    """Automatic lambda against fixed lambdas at ``shots``: a table (percent, mean ± std over
    seeds) of Table 1's fixed-lambda row, its automatic-lambda row and the best single fixed lambda
    of the sweep in hindsight (by image AUROC), and sentences that state how they compare."""
    rows, out = [], {}
    if table1_df is not None and len(table1_df):
        ms = mean_std(table1_df)
        for m in ("anomalysd", "anomalysd-auto"):
            r = ms[(ms["method"] == m) & (ms["shots"] == shots)]
            if len(r):
                r = r.iloc[0]
                rows.append({"AnomalySD": "fixed λ (Table 1)" if m == "anomalysd" else "automatic λ (Table 1)",
                             "i": r["i_auroc"], "i_std": r["i_auroc_std"], "p": r["p_auroc"],
                             "p_std": r["p_auroc_std"], "seeds": int(r["n_seeds"])})
    if sweep_df is not None and len(sweep_df):
        t = noise_table(sweep_df[sweep_df["shots"] == shots] if "shots" in sweep_df else sweep_df)
        if len(t):
            b = t.loc[t["i-AUROC"].idxmax()]
            rows.append({"AnomalySD": f"best fixed λ in hindsight (sweep: λ = {b['lambda']:g})",
                         "i": b["i-AUROC"], "i_std": b["i-AUROC std"], "p": b["p-AUROC"],
                         "p_std": b["p-AUROC std"], "seeds": int(b["seeds"])})
    tab = pd.DataFrame(rows, columns=["AnomalySD", "i", "i_std", "p", "p_std", "seeds"])
    show = pd.DataFrame({"AnomalySD": tab["AnomalySD"],
                         "i-AUROC": [f"{fmt(a)} ± {fmt(b)}" for a, b in zip(tab["i"], tab["i_std"])],
                         "p-AUROC": [f"{fmt(a)} ± {fmt(b)}" for a, b in zip(tab["p"], tab["p_std"])],
                         "seeds": tab["seeds"]})
    get = {r["AnomalySD"].split(" (")[0]: r for _, r in tab.iterrows()}
    fixed, auto = get.get("fixed λ"), get.get("automatic λ")
    best = next((r for k, r in get.items() if k.startswith("best")), None)
    if fixed is not None and auto is not None:
        di, dp = auto["i"] - fixed["i"], auto["p"] - fixed["p"]
        verdict = ("at or above the fixed λ on both metrics" if di >= 0 and dp >= 0 else
                   "below the fixed λ on " + " and ".join(n for n, d in (("image", di), ("pixel", dp)) if d < 0)
                   + " AUROC")
        out["vs_fixed"] = (f"At {_shots(shots)}, automatic λ scores {fmt(auto['i'])} / {fmt(auto['p'])} image / "
                           f"pixel AUROC against {fmt(fixed['i'])} / {fmt(fixed['p'])} with the fixed λ "
                           f"({di:+.1f} / {dp:+.1f} points): {verdict}.")
    if auto is not None and best is not None:
        gap = best["i"] - auto["i"]
        within = gap <= best["i_std"] + 1e-9
        out["vs_best"] = (f"The best single fixed λ in hindsight reaches {fmt(best['i'])} ± {fmt(best['i_std'])} "
                          f"image AUROC on the test images; automatic λ is {abs(gap):.1f} points "
                          f"{'below' if gap > 0 else 'above'} it, "
                          f"{'within' if within else 'outside'} one seed-std of it.")
    return show, out


def noise_per_class(df: pd.DataFrame) -> pd.DataFrame:
    """Per class: image AUROC at every lambda and the lambda that maximises it."""
    d = df[(df["class"] != "mean") & (df["method"] == "anomalysd")]
    t = (d.groupby(["class", "lambda"], sort=False)["i_auroc"].mean() * 100).unstack("lambda")
    best = t.idxmax(axis=1)
    out = t.apply(lambda c: c.map(fmt))
    out.columns = [f"λ={c:g}" for c in out.columns]
    out["best λ"] = best.map(lambda v: f"{v:g}" if np.isfinite(v) else "n/a")
    return out.reset_index()


def noise_sentences(df: pd.DataFrame, profile: str = "mini", default: float | None = None) -> dict:
    t = noise_table(df).set_index("lambda")
    out = {}
    for col, what in (("i-AUROC", "image"), ("p-AUROC", "pixel")):
        c = t[col].dropna()
        if not len(c):
            out[col] = f"No {what} AUROC is available for the sweep on {profile} yet."
            continue
        best = [f"{v:g}" for v in c[c == c.max()].index]
        out[col] = (f"On {profile} the {what} AUROC is highest at λ = {' and '.join(best)} ({fmt(c.max())}) and "
                    f"lowest at λ = {c.idxmin():g} ({fmt(c.min())}).")
    pc = noise_per_class(df)
    if len(pc):
        counts = pc["best λ"].value_counts()
        out["per_class"] = ("Per class, the best λ is " + ", ".join(
            f"{v} for {n} class{'es' if n != 1 else ''}" for v, n in counts.items()) + ".")
    if default is not None:
        out["default"] = f"The {profile} profile runs every class at λ = {default:g}."
    return out
