"""The baselines of Table 1 by name: ``build_baseline("patchcore", extractor)``.

The memory-bank methods (PatchCore, SPADE, PaDiM and the prototype kNN map, on AnomalySD's own
features) are in ``memory_bank.py``; the peers that bring their own foundation model (WinCLIP,
AnomalyDINO) in ``peers.py``. Every one is fitted per class on the K few-shot normals and exposes
``fit(normal_images)`` -> ``self`` and ``predict(images)`` -> ``(image_scores (B,), maps (B, H, W))``,
maps at the input size.

The prototype kNN map (``protoknn``) is eq (14)'s error map on its own: the squared distance of
each patch feature psi (EfficientNet, eq 12) to its nearest neighbour among the rotated shots'
patches, i.e. AnomalySD without Stable Diffusion. It belongs to AnomalyDINO's family (patch kNN on
frozen features, no training) but is not AnomalyDINO, which uses DINOv2 ViT-S/14 at 448 px, the
cosine distance, the mean of the top 1 % of patch scores and foreground masking (``anomalydino``).
"""
from __future__ import annotations

from .memory_bank import (BLUR_SIGMA_512, PaDiM, PatchCore, ProtoKNN, SPADE, augment_normals,  # noqa: F401
                          concat_layers, dihedral, gaussian_blur, greedy_coreset, knn, ledoit_wolf_batched,
                          pairwise_sqdist, patchcore_reweight)
from .peers import AnomalyDINO, BaselineUnavailable, WinCLIP  # noqa: F401

BASELINES = {"patchcore": PatchCore, "spade": SPADE, "padim": PaDiM, "protoknn": ProtoKNN,
             "winclip": WinCLIP, "anomalydino": AnomalyDINO}
ZERO_SHOT_BASELINES = ("winclip",)  # the others need at least one normal image
#: the baselines that bring their own backbone (no extractor) and are told the class's kind
OWN_BACKBONE_BASELINES = ("winclip", "anomalydino")


def class_kwargs(name: str, cls: str, kind: str, device=None) -> dict:
    """What ``build_baseline`` needs to know of a class for ``name`` beyond its normals: WinCLIP its
    name (for its prompts), AnomalyDINO its kind (objects are masked) and, for both, the device
    their own backbone runs on; nothing for the memory-bank methods."""
    if name == "winclip":
        return {"class_name": cls, "device": device}
    if name == "anomalydino":
        return {"kind": kind, "device": device}
    return {}


def build_baseline(name: str, extractor, **kwargs):
    """``name`` in ``BASELINES`` (case-insensitive), built on ``extractor`` (``None`` for the peers
    that bring their own backbone)."""
    key = name.lower()
    if key not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}")
    return BASELINES[key](extractor, **kwargs)


__all__ = ["PatchCore", "SPADE", "PaDiM", "ProtoKNN", "WinCLIP", "AnomalyDINO", "BaselineUnavailable",
           "build_baseline", "class_kwargs", "BASELINES", "BLUR_SIGMA_512", "ZERO_SHOT_BASELINES", "OWN_BACKBONE_BASELINES",
           "knn", "greedy_coreset", "patchcore_reweight", "ledoit_wolf_batched", "gaussian_blur", "dihedral",
           "augment_normals", "concat_layers", "pairwise_sqdist"]
