"""What each class of the mini benchmark is made from (``CLASS_INFO``: kind, source, licence,
colour ramp), the clean crops of the scikit-image sources, and the two things every builder
shares: one random generator per (seed, class) and an atomic PNG writer.
"""
from __future__ import annotations

import functools
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from ..utils import atomic_path

MINI_SEED = 0            # the benchmark is fixed; experiment seeds only change the K-shot draws


TEXTURES = ("brick", "grass", "gravel")


_CC0 = "Creative Commons CC0 (per the skimage.data docstring); scikit-image itself is BSD-3-Clause"


CLASS_INFO: dict[str, dict] = {
    "brick": dict(kind="texture", source="skimage.data.brick() - CC0Textures 'Bricks25', "
                  "perspective-corrected, rotated, cropped and scaled by scikit-image",
                  licence=_CC0, ramp=((0.14, 0.07, 0.05), (0.96, 0.70, 0.58))),
    "grass": dict(kind="texture", source="skimage.data.grass() - DeviantArt 'Grass-01' by "
                  "linolafett, cropped and converted to grayscale by scikit-image",
                  licence=_CC0, ramp=((0.05, 0.11, 0.03), (0.74, 0.93, 0.46))),
    "gravel": dict(kind="texture", source="skimage.data.gravel() - CC0Textures 'Gravel04', "
                   "rescaled, cropped and converted to grayscale by scikit-image",
                   licence=_CC0, ramp=((0.07, 0.065, 0.06), (0.97, 0.93, 0.86))),
    "coins": dict(kind="object", source="skimage.data.coins() - Greek coins from Pompeii, "
                  "Brooklyn Museum Collection (image 51611)",
                  licence="No known copyright restrictions (per the skimage.data docstring); "
                  "scikit-image itself is BSD-3-Clause",
                  ramp=((0.09, 0.085, 0.08), (0.99, 0.94, 0.84))),
    "solar_mono": dict(kind="texture", source="elpv-dataset (PyPI): electroluminescence images of "
                       "mono-crystalline solar cells, Buerhop-Lutz et al. 2018, Deitsch et al. 2019",
                       licence="CC BY-NC-SA 4.0 (data); package code Apache-2.0", elpv_type="mono"),
    "solar_poly": dict(kind="texture", source="elpv-dataset (PyPI): electroluminescence images of "
                       "poly-crystalline solar cells, Buerhop-Lutz et al. 2018, Deitsch et al. 2019",
                       licence="CC BY-NC-SA 4.0 (data); package code Apache-2.0", elpv_type="poly"),
}


def class_rng(seed: int, cls: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(cls.encode())]))


@functools.lru_cache(maxsize=None)
def source_rgb(cls: str) -> np.ndarray:
    """Colourised source image (float64 H x W x 3 in [0, 1]) of a texture or the coins."""
    import skimage.data

    gray = getattr(skimage.data, cls)().astype(np.float64) / 255.0
    dark, light = (np.asarray(c, dtype=np.float64) for c in CLASS_INFO[cls]["ramp"])
    rgb = dark + gray[..., None] * (light - dark)
    rgb.setflags(write=False)
    return rgb


def clean_crop(cls: str, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """The clean 8-bit RGB crop ``box = (y0, x0, y1, x1)`` of a texture/coins source, resized to
    ``size x size`` (bilinear, antialiased). The builder and the tests both use it."""
    y0, x0, y1, x1 = (int(v) for v in box)
    crop = source_rgb(cls)[y0:y1, x0:x1]
    u8 = np.round(crop * 255.0).astype(np.uint8)
    if u8.shape[:2] != (size, size):
        u8 = np.asarray(Image.fromarray(u8).resize((size, size), Image.BILINEAR))
    return u8


def save_png(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
