"""The paper's tables as functions: Table 1 (shots x seeds, with baselines), Tables 3-5, Fig. 4.

Each function runs ``evaluate.fit`` + ``evaluate.evaluate`` for its settings (fine-tunes and
per-image intermediates are cached, so shared settings are computed once), returns a long table
(one row per method, variant, class, shots, seed and setting) and, with ``write=True``, stores it as
``results/<profile>/<name>.csv`` with ``<name>.provenance.json`` beside it, both atomically.
The paper's own numbers are in ``PAPER_*`` and are always labelled ``source = "paper"``.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .config import REPO_ROOT, get_config
from .evaluate import METRIC_COLUMNS, class_metrics, evaluate, fit
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


# ----------------------------------------------------------------------------- running settings
def results_dir(profile: str) -> Path:
    return REPO_ROOT / "results" / profile


def run_setting(profile: str, setting: str = "", variants=("ms+proto",), baselines=(),
                progress: bool = False, **overrides):
    """fit + evaluate one configuration; returns (metrics table, provenance dict)."""
    cfg = get_config(profile, **overrides)
    t0 = time.perf_counter()
    fitted = fit(cfg, progress=progress)
    df = evaluate(fitted, variants=variants, progress=progress)
    if baselines:
        df = pd.concat([df, run_baselines(fitted, baselines)], ignore_index=True)
    df.insert(0, "setting", setting)
    info = {"setting": setting, "shots": cfg.shots, "seed": cfg.seed, "fit_hash": fitted.fit_hash,
            "shot_files": fitted.shot_files, "stage_seconds": fitted.timer.stages,
            "wall_seconds": time.perf_counter() - t0, "overrides": overrides}
    return df, info


def run_baselines(fitted, names=("patchcore", "spade", "padim")) -> pd.DataFrame:
    """The few-shot baselines on the same data, shots and features (class-wise banks)."""
    from . import data as data_mod
    from .baselines import build_baseline

    cfg, ds = fitted.cfg, fitted.dataset
    extractor = fitted.detector.backbone
    rows = []
    for name in names:
        if cfg.shots == 0:
            continue  # memory-bank methods need at least one normal image
        t_img, n_img = 0.0, 0
        for cls in fitted.classes:
            normals = torch.stack([torch.from_numpy(data_mod.load_image(s.path, cfg.image_size)).permute(2, 0, 1)
                                   for s in fitted.shots[cls]])
            model = build_baseline(name, extractor).fit(normals)
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
            r = {"method": name, "variant": "", "class": cls, "shots": cfg.shots, "seed": cfg.seed,
                 "n_test": len(labels), "n_anomalous": int(sum(labels))}
            r.update(class_metrics(labels, scores, gts if ds.has_pixel_masks(cls) else None, maps))
            rows.append(r)
        fitted.timer.stages[f"{name}_per_image_s"] = t_img / max(n_img, 1)
    df = pd.DataFrame(rows)
    if len(df):
        means = df.groupby("method", sort=False)[METRIC_COLUMNS].mean().reset_index()
        means["variant"], means["class"], means["shots"], means["seed"] = "", "mean", cfg.shots, cfg.seed
        means["n_test"] = df.groupby("method", sort=False)["n_test"].sum().values
        means["n_anomalous"] = df.groupby("method", sort=False)["n_anomalous"].sum().values
        df = pd.concat([df, means], ignore_index=True)
    return df


def _write(profile: str, name: str, df: pd.DataFrame, runs: list, seeds, t0: float, **extra) -> None:
    out = results_dir(profile)
    cfg = get_config(profile)
    write_json_atomic(out / f"{name}.provenance.json", provenance(
        cfg, name=name, seeds=list(seeds), runs=runs, wall_seconds=time.perf_counter() - t0, **extra))
    write_csv_atomic(out / f"{name}.csv", df)


def _collect(profile, name, settings, seeds, write, post=None, **extra):
    """Run every (setting label, overrides), concatenate, apply ``post``; write once at the end."""
    t0 = time.perf_counter()
    frames, runs = [], []
    for label, over in settings:
        df, info = run_setting(profile, setting=label, **over)
        frames.append(df)
        runs.append(info)
    df = pd.concat(frames, ignore_index=True)
    if post is not None:
        df = post(df)
    if write:
        _write(profile, name, df, runs, seeds, t0, **extra)
    return df


def table1(profile: str = "mini", shots=(0, 1, 2, 4), seeds=(0, 1, 2),
           baselines=("patchcore", "spade", "padim"), write: bool = True, **over) -> pd.DataFrame:
    """Table 1 analog: every shot count and seed, AnomalySD, the kNN map alone and the baselines."""
    settings = [(f"{k}-shot", dict(shots=k, seed=s, baselines=baselines, **over))
                for k in shots for s in seeds]
    return _collect(profile, "table1", settings, seeds, write)


def table3(profile: str = "mini", seed: int = 0, shots: int = 1, write: bool = True, **over) -> pd.DataFrame:
    """Table 3: which modules are fine-tuned (none / decoder / denoiser / both)."""
    grid = [("none", False, False), ("decoder only", False, True), ("denoiser only", True, False),
            ("both", True, True)]
    settings = [(lab, dict(shots=shots, seed=seed, finetune_unet=u, finetune_decoder=d, **over))
                for lab, u, d in grid]
    return _collect(profile, "table3", settings, [seed], write)


def table4(profile: str = "mini", seed: int = 0, shots: int = 1, write: bool = True, **over) -> pd.DataFrame:
    """Table 4: training-mask design (random vs foreground IoU) and prompt design."""
    grid = [("mask: random", dict(mask_design="random")), ("mask: designed", {}),
            ("prompt: none", dict(prompt_design="none")), ("prompt: simple", dict(prompt_design="simple")),
            ("prompt: hierarchical", {})]
    settings = [(lab, dict(shots=shots, seed=seed, **o, **over)) for lab, o in grid]
    return _collect(profile, "table4", settings, [seed], write)


def table5(profile: str = "mini", seed: int = 0, shots: int = 1, write: bool = True, **over) -> pd.DataFrame:
    """Table 5: inference masks (one full mask / multi-scale / multi-scale + prototype), one run."""
    settings = [("inference masks", dict(shots=shots, seed=seed, variants=("full", "ms", "ms+proto"), **over))]

    def label(df):
        df["setting"] = df["variant"].where(df["method"] == "anomalysd", df["method"])
        return df

    return _collect(profile, "table5", settings, [seed], write, post=label)


def noise_sweep(profile: str = "mini", lambdas=(0.2, 0.4, 0.6, 0.8), seed: int = 0, shots: int = 1,
                write: bool = True, **over) -> pd.DataFrame:
    """Fig. 4 extended: i/p-AUROC against the noise strength lambda (fine-tune shared, cached)."""
    settings = [(f"lambda={lam:g}", dict(shots=shots, seed=seed, noise_strength=lam, **over))
                for lam in lambdas]

    def add_lambda(df):
        df["lambda"] = df["setting"].str.split("=").str[1].astype(float)
        return df

    return _collect(profile, "noise_sweep", settings, [seed], write, post=add_lambda)


def summarise(df: pd.DataFrame, by=("method", "variant", "shots")) -> pd.DataFrame:
    """Mean and std over seeds of the class-mean rows, in percent ('93.1 ± 0.4')."""
    m = df[df["class"] == "mean"].groupby(list(by), sort=False)[METRIC_COLUMNS]
    mean, std = m.mean() * 100, m.std(ddof=0).fillna(0) * 100
    out = mean.round(1).astype(str) + " ± " + std.round(1).astype(str)
    return out.where(~mean.isna(), "n/a").reset_index()
