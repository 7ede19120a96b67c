"""Perturbed test images for the robustness chapter (RAD-style shifts; ours, not the paper's).

Inspection photos are rarely taken the way the few normal shots were. Each perturbation of
``PERTURBATIONS`` changes a test image (never the shots) at three severities, in four groups:

* viewpoint: ``rotation`` (degrees) and ``perspective`` (how far each corner may move, in or out,
  as a fraction of the side), both with ``torchvision.transforms.v2.functional``;
* illumination: ``gain`` (a global brightness factor), ``gradient`` (a linear ramp of the
  brightness across the image, in a random direction) and ``vignette`` (a radial fall-off);
* blur: ``gaussian_blur`` (sigma) and ``defocus`` (a disk kernel of ``skimage.morphology.disk``);
* noise: ``sensor_noise`` (Gaussian, sigma) and ``jpeg`` (quality, Pillow's encoder).

Sizes are given for 64 px and scale with the image. A geometric perturbation moves the ground-truth
mask with the same warp (nearest neighbour) and returns ``valid``, the pixels that come from
inside the original image: the pixel metrics leave the others out (``metrics.pixel_metrics``'s
``valid``) instead of counting them as normal. Those pixels are filled with the mirrored image
(as a camera would see more of the part or the surface, not a black corner), and they do enter
the image score: a detector that flags them is fooled by the view, as it would be on a line. Every random choice (the sign of a rotation, the
corner shifts, the ramp's direction, the noise) comes from ``rng``, so a perturbed image is the
same in every run and for every method.

Examples
--------
>>> import numpy as np
>>> img = np.full((32, 32, 3), 0.5, np.float32)
>>> mask = np.zeros((32, 32), bool); mask[10:14, 10:14] = True
>>> out, m, valid = perturb(img, mask, "rotation", 3, np.random.default_rng(0))
>>> out.shape, m.dtype.name, bool(valid.all())
((32, 32, 3), 'bool', False)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

#: name -> (group, values at severities 1, 2, 3)
PERTURBATIONS: dict[str, tuple[str, tuple]] = {
    "rotation": ("viewpoint", (4.0, 8.0, 15.0)),
    "perspective": ("viewpoint", (0.03, 0.06, 0.10)),
    "gain": ("illumination", (0.85, 0.7, 0.55)),
    "gradient": ("illumination", (0.2, 0.4, 0.6)),
    "vignette": ("illumination", (0.25, 0.45, 0.65)),
    "gaussian_blur": ("blur", (0.5, 1.0, 1.6)),
    "defocus": ("blur", (1.0, 2.0, 3.0)),
    "sensor_noise": ("noise", (0.02, 0.05, 0.09)),
    "jpeg": ("noise", (50, 25, 10)),
}
GEOMETRIC = ("rotation", "perspective")
SEVERITIES = (1, 2, 3)


def level(name: str, severity: int) -> float:
    """The parameter of ``name`` at ``severity`` (1-3); clear errors for anything else."""
    if name not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {name!r}; choose from {sorted(PERTURBATIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    return PERTURBATIONS[name][1][severity - 1]


def _warp(x: torch.Tensor, name: str, value: float, rng: np.random.Generator, nearest: bool,
          reflect: bool):
    """One geometric warp of a (C, H, W) tensor; the same ``rng`` state gives the same warp.

    The tensor is padded by a quarter of its size on each side first (mirrored for an image, so
    that what comes into view looks like more of the scene rather than a black corner; zeros for a
    mask), warped about the same centre, and cropped back.
    """
    mode = TF.InterpolationMode.NEAREST if nearest else TF.InterpolationMode.BILINEAR
    h, w = x.shape[-2:]
    p = max(1, min(h, w) // 4)
    x = F.pad(x[None], (p, p, p, p), mode="reflect" if reflect else "constant")[0]
    if name == "rotation":
        x = TF.rotate(x, float(value) * rng.choice([-1.0, 1.0]), interpolation=mode, fill=0.0)
    else:
        corners = [[p, p], [p + w - 1, p], [p + w - 1, p + h - 1], [p, p + h - 1]]
        # each corner of the image moves by up to ``value`` of the side, in or out, in each direction
        moved = [[int(round(cx + value * w * rng.uniform(-1, 1))), int(round(cy + value * h * rng.uniform(-1, 1)))]
                 for cx, cy in corners]
        x = TF.perspective(x, corners, moved, interpolation=mode, fill=0.0)
    return x[:, p:p + h, p:p + w]


def perturb(img: np.ndarray, mask: np.ndarray | None, name: str, severity: int, rng: np.random.Generator):
    """(image, mask, valid) of ``img`` (H, W, 3 float in [0, 1]) under ``name`` at ``severity``.

    ``mask`` (H, W) is the ground truth (None: an image without one; an all-False mask is returned);
    ``valid`` is True where the perturbed pixel comes from inside the original image.
    """
    value = level(name, severity)
    img = np.asarray(img, np.float32)
    h, w = img.shape[:2]
    scale = min(h, w) / 64.0
    mask = np.zeros((h, w), bool) if mask is None else np.asarray(mask).astype(bool)
    valid = np.ones((h, w), bool)
    x = torch.from_numpy(img).permute(2, 0, 1).contiguous()
    if name in GEOMETRIC:
        state = rng.bit_generator.state  # one warp for the image, its mask and its valid pixels
        x = _warp(x, name, value, rng, nearest=False, reflect=True)
        rng.bit_generator.state = state
        mask = _warp(torch.from_numpy(mask)[None].float(), name, value, rng, nearest=True, reflect=False)[0].numpy() > 0.5
        rng.bit_generator.state = state
        valid = _warp(torch.ones(1, h, w), name, value, rng, nearest=True, reflect=False)[0].numpy() > 0.5
        mask &= valid
    elif name == "gain":
        x = TF.adjust_brightness(x, value)
    elif name == "gradient":
        t = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[:h, :w] / max(h - 1, 1) - 0.5
        ramp = 1.0 + value * (np.cos(t) * xx + np.sin(t) * yy) / 0.7071  # 1 -/+ value at the corners
        x = x * torch.from_numpy(ramp.astype(np.float32))
    elif name == "vignette":
        yy, xx = np.mgrid[:h, :w] / max(h - 1, 1) - 0.5
        x = x * torch.from_numpy((1.0 - value * (xx ** 2 + yy ** 2) / 0.5).astype(np.float32))
    elif name == "gaussian_blur":
        sigma = value * scale
        k = 2 * int(np.ceil(3 * sigma)) + 1
        x = TF.gaussian_blur(x, kernel_size=[k, k], sigma=[sigma, sigma])
    elif name == "defocus":
        from skimage.morphology import disk

        r = max(1, int(round(value * scale)))
        kern = torch.from_numpy(disk(r).astype(np.float32))
        kern = (kern / kern.sum())[None, None].repeat(3, 1, 1, 1)
        x = F.conv2d(F.pad(x[None], (r, r, r, r), mode="reflect"), kern, groups=3)[0]
    elif name == "sensor_noise":
        x = x + torch.from_numpy(rng.normal(0.0, value, x.shape).astype(np.float32))
    elif name == "jpeg":  # Pillow's encoder (torchvision's is deprecated from 0.29 on)
        import io

        from PIL import Image

        buf = io.BytesIO()
        u8 = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(u8).save(buf, format="JPEG", quality=int(value))
        x = torch.from_numpy(np.asarray(Image.open(buf).convert("RGB"), np.float32) / 255.0).permute(2, 0, 1)
    out = x.clamp(0, 1).permute(1, 2, 0).numpy().astype(np.float32)
    return out, mask, valid


def conditions(names=None, severities=SEVERITIES) -> list[tuple[str, int]]:
    """[(perturbation, severity)] for ``names`` (default: all of ``PERTURBATIONS``), checked."""
    names = list(PERTURBATIONS) if names is None else list(names)
    for n in names:
        for s in severities:
            level(n, s)
    return [(n, s) for n in names for s in severities]


def image_rng(seed: int, relpath: str, name: str, severity: int) -> np.random.Generator:
    """The random stream of one perturbed test image: the same in every process and run."""
    import zlib

    return np.random.default_rng([seed, zlib.crc32(f"{relpath}|{name}|{severity}".encode())])


# ----------------------------------------------------------------------------- evaluation
METHODS = ("anomalysd", "proto-knn")  # from AnomalySD's own run; the baselines are added by name


def cache_root(cfg) -> Path:
    """Folder of the perturbed test images' maps of ``cfg`` (model, inference settings and the
    perturbations' definition): ``<condition>/<class>/<file>.npz``."""
    import hashlib
    import json

    from .evaluate import INFER_KEYS, fit_hash

    table = hashlib.sha256(json.dumps(PERTURBATIONS, sort_keys=True).encode()).hexdigest()[:8]
    key = f"{fit_hash(cfg)}-{cfg.hash(INFER_KEYS + ['seed', 'mask_variant', 'alpha', 'blur_sigma_512'])}-{table}"
    return Path(cfg.out_dir) / cfg.profile / "robustness" / key


def perturbed_sample(cfg, sample, name: str, severity: int):
    """(image, mask, valid) of one test sample under a condition (``severity`` 0: clean)."""
    from ..data.datasets import load_sample

    img, mask = load_sample(sample, cfg.image_size)
    if severity == 0:
        h = img.shape[0]
        return img, (np.zeros((h, h), bool) if mask is None else mask.astype(bool)), np.ones((h, h), bool)
    return perturb(img, mask, name, severity, image_rng(cfg.seed, sample.relpath, name, severity))


def test_samples(dataset, cls: str, n: int | None = None) -> list:
    """The test images of ``cls`` the chapter perturbs: all of them (``n`` None), or ``n``: half
    normal and half anomalous, each half evenly spaced through the sorted files (on mini's grid of
    texture crops, every other crop: the ones that overlap least)."""
    tests = list(dataset.test(cls))
    if n is None:
        return tests
    if int(n) != n or n < 2:
        raise ValueError(f"robustness: test_per_class must be an integer of at least 2, got {n!r}")
    out = []
    for want, label in ((n - n // 2, 0), (n // 2, 1)):
        group = [s for s in tests if s.label == label]
        idx = np.linspace(0, len(group) - 1, min(want, len(group))).round().astype(int)
        out += [group[i] for i in sorted(set(idx))]
    return out


def _file(root: Path, name: str, severity: int, sample) -> Path:
    from .evaluate import _file_name

    return root / f"{name}-{severity}" / sample.cls / _file_name(sample)


def score_condition(fitted, cls: str, name: str, severity: int, n_test: int | None = None) -> int:
    """AnomalySD's anomaly map and score and the prototype kNN map of the test images of ``cls``
    (``test_samples``) under one condition (severity 0: the clean images), cached (npz); returns
    how many were computed."""
    from .evaluate import _save_npz, intermediates_cached, proto_map

    cfg, det, root = fitted.cfg, fitted.detector, cache_root(fitted.cfg)
    n = 0
    for s in test_samples(fitted.dataset, cls, n_test):
        p = _file(root, name, severity, s)
        if p.is_file():
            continue
        img, _, _ = perturbed_sample(cfg, s, name, severity)
        # clean images: the evaluation cache of Table 1 (the same numbers as there)
        if severity == 0:
            inter = intermediates_cached(fitted, s, img)
        else:  # a perturbed image is scored once: its encodes are not worth keeping (same numbers)
            inter = det.intermediates(img, cls, seed=cfg.seed, share_encodes=False)
        sm = det.fuse(inter)
        arrays = {"S": sm.S_map.astype(np.float16), "score": np.float32(sm.score)}
        if inter.error_map is not None:
            arrays["knn"] = proto_map(inter.error_map, cfg.image_size).astype(np.float16)
        _save_npz(p, **arrays)
        n += 1
    return n


def _task(job):
    profile, over, cls, name, severity, threads, n_test = job
    from .schedule import _fitted

    torch.set_num_threads(threads)
    try:
        return score_condition(_fitted(profile, over), cls, name, severity, n_test)
    except Exception as e:
        raise RuntimeError(f"robustness: {name} at severity {severity}, class {cls!r}: "
                           f"{type(e).__name__}: {e}") from e


def run_conditions(profile: str, over: dict, fitted, classes, conds, workers: int = 1, log=print,
                   n_test: int | None = None) -> int:
    """Score every (class, condition) not cached yet, on ``workers`` spawned processes (1: here);
    ``n_test``: the test images per class (``test_samples``)."""
    import os
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from .schedule import _cores, _init_worker

    root = cache_root(fitted.cfg)
    todo = [(c, n, s) for n, s in conds for c in classes
            if not all(_file(root, n, s, x).is_file() for x in test_samples(fitted.dataset, c, n_test))]
    log(f"robustness: {len(todo)} of {len(conds) * len(classes)} (condition, class) pairs to score, "
        f"{workers} worker process(es)")
    if workers <= 1 or len(todo) <= 1:
        return sum(score_condition(fitted, c, n, s, n_test) for c, n, s in todo)
    threads = max(1, _cores() // workers)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=(os.getpid(),)) as pool:
        return sum(pool.map(_task, [(profile, over, c, n, s, threads, n_test) for c, n, s in todo]))


def condition_metrics(labels, scores, masks, maps, valid, pixel: bool) -> dict:
    """Image AUROC and pixel AUROC / PRO (valid pixels only) of one class under one condition."""
    from ..method.metrics import image_metrics, pixel_metrics

    out = {"i_auroc": image_metrics(labels, scores)["auroc"], "p_auroc": np.nan, "p_pro": np.nan}
    if pixel:
        pm = pixel_metrics(np.stack(masks), np.stack(maps), valid=np.stack(valid))
        out.update(p_auroc=pm["auroc"], p_pro=pm["pro"])
    return out


def evaluate_conditions(fitted, classes, conds, baselines=(), extractor=None, skipped=None,
                        n_test: int | None = None) -> pd.DataFrame:
    """Per (condition, method, class) metrics from the cache (AnomalySD, the prototype kNN map)
    and from the baselines, fitted on the clean shots and run on the same perturbed images.
    ``conds`` holds ("clean", 0) for the unperturbed images. A baseline that cannot run here
    (WinCLIP without its weights) is left out and its reason put in ``skipped``."""
    from ..data import datasets as data_mod
    from ..method.baselines import OWN_BACKBONE_BASELINES, BaselineUnavailable, build_baseline, class_kwargs
    from ..utils import resolve_device

    cfg, ds, root = fitted.cfg, fitted.dataset, cache_root(fitted.cfg)
    skipped = {} if skipped is None else skipped
    rows = []
    for cls in classes:
        normals = torch.stack([torch.from_numpy(data_mod.load_image(s.path, cfg.image_size)).permute(2, 0, 1)
                               for s in fitted.shots[cls]])
        models = {}
        for b in baselines:
            if b in skipped:
                continue
            try:
                kw = class_kwargs(b, cls, ds.class_kind(cls), resolve_device(cfg.device))
                models[b] = build_baseline(b, None if b in OWN_BACKBONE_BASELINES else extractor, **kw).fit(normals)
            except BaselineUnavailable as e:
                skipped[b] = str(e)
        pixel = ds.has_pixel_masks(cls)
        for name, sev in conds:
            per = {m: ([], []) for m in (*METHODS, *models)}
            labels, masks, valid = [], [], []
            for s in test_samples(ds, cls, n_test):
                img, m, v = perturbed_sample(cfg, s, name, sev)
                labels.append(s.label), masks.append(m), valid.append(v)
                z = np.load(_file(root, name, sev, s))
                per["anomalysd"][0].append(float(z["score"])), per["anomalysd"][1].append(z["S"].astype(np.float32))
                if "knn" in z:
                    k = z["knn"].astype(np.float32)
                    per["proto-knn"][0].append(float(k.max())), per["proto-knn"][1].append(k)
                for b, model in models.items():
                    sc, mp = model.predict(torch.from_numpy(img).permute(2, 0, 1)[None])
                    per[b][0].append(float(sc[0])), per[b][1].append(mp[0].cpu().numpy())
            for method, (scores, maps) in per.items():
                if not scores:
                    continue
                r = {"perturbation": name, "group": PERTURBATIONS.get(name, ("none",))[0], "severity": sev,
                     "method": method, "class": cls, "n_test": len(labels)}
                r.update(condition_metrics(labels, scores, masks, maps, valid, pixel))
                rows.append(r)
    df = pd.DataFrame(rows)
    keys = ["perturbation", "group", "severity", "method"]
    means = df.groupby(keys, sort=False)[["i_auroc", "p_auroc", "p_pro"]].mean().reset_index()
    means["class"], means["n_test"] = "mean", df.groupby(keys, sort=False)["n_test"].sum().values
    return pd.concat([df, means], ignore_index=True)


def with_drops(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``i_drop`` / ``p_drop``: the clean value minus this condition's, per method and
    class (points of AUROC, positive = worse)."""
    clean = df.loc[df["severity"] == 0, ["method", "class", "i_auroc", "p_auroc"]]
    out = df.merge(clean, on=["method", "class"], how="left", suffixes=("", "_clean"))
    out["i_drop"] = (out["i_auroc_clean"] - out["i_auroc"]) * 100
    out["p_drop"] = (out["p_auroc_clean"] - out["p_auroc"]) * 100
    return out.drop(columns=["i_auroc_clean", "p_auroc_clean"])
