"""One setting of a table: ``evaluate.fit`` + ``evaluate.evaluate`` for AnomalySD and the
few-shot baselines on the same data, shots and seeds, with the run info that the results'
provenance records (shot files, fit hash, seconds per image per method).
"""
from __future__ import annotations

import json
import time

import pandas as pd
import torch

from ..config import get_config
from ..method.features import frozen_models
from ..utils import write_json_atomic
from .evaluate import METRIC_COLUMNS, class_metrics, compile_info, evaluate, fit


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
            "skipped_baselines": dict(fitted.skipped_baselines),
            "compile": compile_info(fitted.detector)}
    if cfg.auto_strength:
        info["auto_lambda"] = fitted.auto_records()
    info["image_scores"] = score_rows  # taken out by ``_collect`` into <table>_scores.csv
    return df, info


def baseline_extractor(fitted):
    """Features for PatchCore/SPADE/PaDiM: AnomalySD's own backbone unless ``cfg.baseline_backbone``
    names another (paper profile: WideResNet-50 with PatchCore's layers 2-3 as its patch feature)."""
    from ..method.features import build_backbone, frozen
    from ..utils import resolve_device

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

    from ..data import datasets as data_mod
    from ..method.baselines import (OWN_BACKBONE_BASELINES, ZERO_SHOT_BASELINES, BaselineUnavailable,
                                    build_baseline, class_kwargs)
    from ..utils import resolve_device

    cfg, ds = fitted.cfg, fitted.dataset
    rows = []
    for name in list(names) + [n for n in time_only if n not in names]:
        if cfg.shots == 0 and name not in ZERO_SHOT_BASELINES:
            continue  # memory-bank methods need at least one normal image
        extractor = None if name in OWN_BACKBONE_BASELINES else baseline_extractor(fitted)
        t_img, n_img = 0.0, 0
        try:
            for cls in fitted.classes:
                normals = [torch.from_numpy(data_mod.load_image(s.path, cfg.image_size)).permute(2, 0, 1)
                           for s in fitted.shots[cls]]
                normals = torch.stack(normals) if normals else torch.zeros(0, 3, cfg.image_size, cfg.image_size)
                kw = class_kwargs(name, cls, ds.class_kind(cls), resolve_device(cfg.device))
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
