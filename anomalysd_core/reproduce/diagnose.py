"""Stage-by-stage diagnostics: where AnomalySD's signal is made and where it is lost.

AnomalySD's anomaly map is a chain: the VAE must reconstruct a normal image (else every pixel
differs), the inpainting must repaint normal content faithfully and anomalous content as normal
(eq 11), the distance D must then be larger on anomalous pixels than on normal ones (eq 16-17),
the prototype mask M^(p) must cover the anomaly and little else (eq 12-15), and the image score
S_I (eq 21: max S_map, or the mean of its top few percent) must come from the anomaly rather than
from the worst normal pixel.
``stage_table`` measures each link per class from the cached intermediates of ``evaluate``, so a
reader can see which link breaks:

========================  ==================================================================
column                    meaning
========================  ==================================================================
``vae_psnr``              PSNR (dB) of D(E(x)) against x on the class's normal test images
``d_normal``              mean S_ms on the pixels of normal test images
``d_defect``              mean S_ms on ground-truth defect pixels (classes with masks)
``d_ratio``               ``d_defect / d_normal``: above 1 when D sees the defects at all
``pixel_auroc_ms``        pixel AUROC of S_ms (before the prototype term and the blur)
``proto_cover_normal``    fraction of a normal image inside M^(p) (0 is ideal)
``proto_cover_anomal``    fraction of an anomalous image inside M^(p)
``proto_hit``             fraction of defect pixels inside M^(p) (1 is ideal)
``max_on_defect``         fraction of anomalous images whose S_map maximum lies on the defect
``i_auroc``               image AUROC of S_I (eq 21: max S_map, or the config's top fraction)
========================  ==================================================================

Examples
--------
>>> from anomalysd_core.config import get_config
>>> from anomalysd_core.reproduce.evaluate import fit
>>> from anomalysd_core.reproduce.diagnose import stage_table
>>> fitted = fit(get_config("smoke"), progress=False)      # doctest: +SKIP
>>> stage_table(fitted)[["class", "vae_psnr", "d_ratio"]]  # doctest: +SKIP
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from ..data import datasets as data_mod
from .evaluate import intermediates_cached
from ..method.scoring import to_tensor

COLUMNS = ["class", "vae_psnr", "d_normal", "d_defect", "d_ratio", "pixel_auroc_ms", "proto_cover_normal",
           "proto_cover_anomal", "proto_hit", "max_on_defect", "i_auroc"]


@torch.no_grad()
def vae_psnr(comp, images) -> np.ndarray:
    """PSNR (dB, peak 1) of the VAE's reconstruction D(E(x)) of each HxWx3 image in [0, 1]."""
    out = []
    for img in images:
        x = to_tensor(img).to(comp.device)
        mse = float(((comp.decode(comp.encode(x)) - x.clamp(0, 1)) ** 2).mean())
        out.append(10 * np.log10(1.0 / max(mse, 1e-12)))
    return np.asarray(out)


def _auroc(labels, scores) -> float:
    labels = np.asarray(labels)
    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < labels.size else float("nan")


def stage_table(fitted, variant: str = "ms+proto", classes=None) -> pd.DataFrame:
    """One row per class (see the module docstring); intermediates come from (and go to) the cache."""
    det, cfg = fitted.detector, fitted.cfg
    rows = []
    for cls in classes or fitted.classes:
        normal_imgs, d_norm, d_def, px_lab, px_s = [], [], [], [], []
        cov_n, cov_a, hit, on_def, labels, scores = [], [], [], [], [], []
        pixel = fitted.dataset.has_pixel_masks(cls)
        for s in fitted.dataset.test(cls):
            img, gt = data_mod.load_sample(s, cfg.image_size)
            inter = intermediates_cached(fitted, s, img)
            s_ms = det.fuse(inter, variant="ms").S_ms  # eq (19), before the prototype term and the blur
            sm = det.fuse(inter, variant=variant)
            labels.append(s.label)
            scores.append(sm.score)
            pm = inter.proto_mask
            if s.label == 0:
                normal_imgs.append(img)
                d_norm.append(float(s_ms.mean()))
                if pm is not None:
                    cov_n.append(float(pm.mean()))
            elif pm is not None:
                cov_a.append(float(pm.mean()))
            if pixel and gt is not None:
                px_lab.append(gt.ravel())
                px_s.append(s_ms.ravel())
                if s.label == 1 and gt.any():
                    d_def.append(float(s_ms[gt].mean()))
                    if pm is not None:
                        hit.append(float(pm[gt].mean()))
                    on_def.append(bool(gt.ravel()[int(np.argmax(sm.S_map))]))
        mean = lambda v: float(np.mean(v)) if len(v) else float("nan")  # noqa: E731
        dn, dd = mean(d_norm), mean(d_def)
        rows.append({
            "class": cls,
            "vae_psnr": mean(vae_psnr(det.comp, normal_imgs)) if normal_imgs else float("nan"),
            "d_normal": dn, "d_defect": dd, "d_ratio": dd / dn if dn > 0 else float("nan"),
            "pixel_auroc_ms": _auroc(np.concatenate(px_lab), np.concatenate(px_s)) if px_lab else float("nan"),
            "proto_cover_normal": mean(cov_n), "proto_cover_anomal": mean(cov_a), "proto_hit": mean(hit),
            "max_on_defect": mean(on_def), "i_auroc": _auroc(labels, scores)})
    df = pd.DataFrame(rows, columns=COLUMNS)
    means = df.drop(columns="class").mean(numeric_only=True)
    return pd.concat([df, pd.DataFrame([{"class": "mean", **means.to_dict()}])], ignore_index=True)


def shot_quality(cfg, method: str = "protoknn", classes=None) -> pd.DataFrame:
    """How good a shot is each training normal? For every class and every normal of its training
    pool, ``method`` (a memory-bank baseline, 0.01 s per image) fitted on that one normal and
    scored on the class's test images: one row per (class, shot) with its image AUROC (percent)
    and the shot's file and source (an elpv cell, a coin, a crop box).

    A normal unlike the test normals (a darker cell, another busbar layout, a crop of unusual
    texture) gives a bank that calls every test normal anomalous; with K shots it is one of the
    bank's K images. This reads the test images, so it diagnoses and chooses nothing.
    """
    from pathlib import Path

    from ..data import datasets as data_mod
    from ..data.mini import ensure_mini
    from ..method.baselines import build_baseline
    from ..method.features import build_backbone
    from ..method.metrics import image_metrics

    root = ensure_mini(cfg)
    ds = data_mod.open_dataset(cfg.dataset, root)
    manifest = {}
    if (Path(root) / "manifest.csv").is_file():
        m = pd.read_csv(Path(root) / "manifest.csv", keep_default_na=False)
        manifest = {r.file: (r.source_item or r.crop_box) for r in m.itertuples()}
    extractor = build_backbone(cfg.backbone, device="cpu")
    size = cfg.image_size

    def batch(samples):
        return torch.from_numpy(np.stack([data_mod.load_image(s.path, size) for s in samples])).permute(0, 3, 1, 2)

    rows = []
    for cls in classes or ds.classes:
        test = ds.test(cls)
        x, labels = batch(test), [s.label for s in test]
        for shot in sorted(ds.train(cls), key=lambda s: s.path):
            scores, _ = build_baseline(method, extractor).fit(batch([shot])).predict(x)
            au = image_metrics(labels, [float(v) for v in np.asarray(scores)])["auroc"]
            rows.append({"class": cls, "shot": shot.relpath, "source": manifest.get(shot.relpath, ""),
                         "i_auroc": 100 * au})
    out = pd.DataFrame(rows, columns=["class", "shot", "source", "i_auroc"])
    out.attrs["method"], out.attrs["data_root"] = method, str(root)
    return out


def shot_quality_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per class: the 1-shot image AUROC of its best, median and worst training normal, and which
    normal is the worst."""
    rows = []
    for cls, g in df.groupby("class", sort=False):
        worst = g.loc[g["i_auroc"].idxmin()]
        rows.append({"class": cls, "shots in pool": len(g), "best": round(g["i_auroc"].max(), 1),
                     "median": round(g["i_auroc"].median(), 1), "worst": round(worst["i_auroc"], 1),
                     "worst shot": f"{worst['shot']} ({worst['source']})" if worst["source"] else worst["shot"]})
    return pd.DataFrame(rows)
