"""The embedded ``mini`` benchmark: small, real images in MVTec-AD layout, built offline in seconds.

MVTec-AD and VisA (the paper's benchmarks, Sec. 5.1) cannot be downloaded here, so the default data
of this project is built from images that ship inside pip packages:

=============  =======  ====================================================  ==================
class          kind     source                                                defects / masks
=============  =======  ====================================================  ==================
brick          texture  ``skimage.data.brick()`` (CC0Textures Bricks25, CC0)   synthetic, exact
grass          texture  ``skimage.data.grass()`` (DeviantArt Grass-01, CC0)    synthetic, exact
gravel         texture  ``skimage.data.gravel()`` (CC0Textures Gravel04, CC0)  synthetic, exact
coins          object   ``skimage.data.coins()`` (Brooklyn Museum, no known    synthetic, exact,
                        copyright restrictions)                               on the coin only
solar_mono     texture  ``elpv-dataset`` mono-crystalline cells (CC BY-NC-SA)  real, image labels
solar_poly     texture  ``elpv-dataset`` poly-crystalline cells (CC BY-NC-SA)  real, image labels
=============  =======  ====================================================  ==================

* **Textures** (brick, grass, gravel; 512 x 512 gray, colourised with a fixed two-colour ramp per
  class): every crop is ``textures.TEXTURE_CROP`` source pixels square, resized to ``size``. Training crops
  come from the top half of the source (rows 0-255) and test crops from the bottom half (rows
  256-511), so no training pixel is ever seen at test time; the manifest records each crop box.
* **Coins** (object class): coins are found by thresholding and labelling (with a background
  correction for the dimmer top row), each crop is centred on one coin, and training and test
  images come from different coins. Defects are drawn only on the (eroded) coin, so the background
  of an anomalous image is normal.
* **Synthetic defects** (named by their folder): ``scratch`` (thin bright or dark polyline),
  ``stain`` (smooth, irregular discoloured blob), ``hole`` (dark shaded ellipse), ``crack`` (jagged
  dark line with branches), ``foreign`` (patch pasted from another texture). Each covers roughly
  1-8% of the image. Defects are painted at the output resolution on the 8-bit clean crop; the
  ground-truth mask is then *exactly* the set of pixels that differ: any channel change of more
  than ``defects.TOL_LEVELS``/255 sets the mask pixel, smaller changes are undone, so
  ``mask == any(defective != clean)`` holds by construction (images are saved as 8-bit PNG).
* **Solar cells** (electroluminescence images from ``elpv-dataset``, 300 x 300 gray): normals
  are cells with defect probability 0, anomalies cells with probability >= 2/3. The dataset has
  **image labels only**: these classes have no ``ground_truth`` folder, so
  :meth:`~anomalysd_core.data.datasets.MVTecDataset.has_pixel_masks` is False and pixel metrics (pixel
  AUROC, PRO) skip them; image metrics include them.

Profiles: ``mini`` (build version 4) has six classes, a pool of 16 training normals per class
(12 for coins, which has only 24 coins) and 48 test images (24 normal, 24 anomalous) per class;
``smoke`` (CI) has three classes (brick, coins, solar_mono), 2 training normals and 6 test images
(3 + 3). K-shot sets are drawn by ``datasets.SHOT_PROTOCOL`` (AnomalyDINO's): with 16 (12)
images, the three seeds' shots are disjoint for every K up to 4 (5 for the textures and cells),
so a spread over seeds is a spread over shot draws. Every random choice comes from
``np.random.default_rng`` seeded with ``(seed, crc32(class))``: the same seed gives
byte-identical PNGs.

How independent the test images are, recorded per class as ``test_overlap`` in ``meta.json``:
the solar cells are all different cells (none seen twice); the 48 coin images are four views of
each of 12 coins (``coins.py``); the texture crops, 48 of 160 px on an even 4 x 12 grid over a
256 x 512 half of one photo, are 32 px apart, so nearly every pixel of a crop appears in another
crop and neighbours share 80 % of their pixels. Only the solar classes' 48 images are 48
independent samples; the bootstrap intervals of the book treat every image as one, and are
therefore too narrow for the textures and coins.

Output: ``<out>/<class>/{train/good, test/<defect>, ground_truth/<defect>}``, ``<class>/meta.json``
(kind, source, licence), ``manifest.csv`` (one row per image), ``samples.png`` (a normal test image,
an anomalous one and its mask per class) and, written last, ``build_complete.json``.

This module builds and checks the whole benchmark; each source has its own builder
(``textures.py``, ``coins.py``, ``solar.py``), on the shared pieces of ``sources.py`` (class
table, clean crops, random generators, PNG writer) and ``defects.py`` (the synthetic defects).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..utils import atomic_path, write_csv_atomic, write_json_atomic
from .coins import build_coins
from .datasets import SHOT_PROTOCOL, DataError
from .solar import build_solar
from .sources import CLASS_INFO, MINI_SEED, class_rng
from .textures import build_texture, test_overlap as crop_overlap

MARKER = "build_complete.json"


BUILD_VERSION = 4  # 3: the validation split; 4: 16 training normals and 48 test images per class,
#                    texture crops on an even grid, coins at quarter turns (issue 27)


VAL_SEED = 1             # the validation build (``split="val"``) that settings are chosen on


VAL_SUFFIX = "-val"      # ``ensure_mini`` builds the validation split into a folder named like this


PROFILES = {
    "mini": dict(classes=("brick", "grass", "gravel", "coins", "solar_mono", "solar_poly"),
                 train=16, test_good=24, test_bad=24),
    "smoke": dict(classes=("brick", "coins", "solar_mono"), train=2, test_good=3, test_bad=3),
}


def _samples_png(root: Path, rows: list[dict], classes, size: int) -> None:
    """One row per class: a normal test image, an anomalous one and its mask."""
    tile, label_w, head = max(size, 112), 120, 22
    font = ImageFont.load_default(size=12)
    sheet = Image.new("RGB", (label_w + 3 * tile + 4 * 4, head + len(classes) * (tile + 4)),
                      (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(("normal (test)", "anomalous (test)", "ground truth")):
        draw.text((label_w + 4 + c * (tile + 4), 4), title, fill=(0, 0, 0), font=font)
    for r, cls in enumerate(classes):
        y = head + r * (tile + 4)
        good = next(x for x in rows if x["cls"] == cls and x["split"] == "test" and x["label"] == 0)
        bad = next(x for x in rows if x["cls"] == cls and x["label"] == 1)
        draw.text((4, y + tile // 2 - 14), cls, fill=(0, 0, 0), font=font)
        draw.text((4, y + tile // 2 + 2), bad["defect"], fill=(90, 90, 90), font=font)
        for c, rel in enumerate((good["file"], bad["file"], bad["mask_file"])):
            x = label_w + 4 + c * (tile + 4)
            if rel:
                im = Image.open(root / rel).convert("RGB").resize((tile, tile), Image.NEAREST)
                sheet.paste(im, (x, y))
            else:
                draw.rectangle([x, y, x + tile - 1, y + tile - 1], fill=(200, 200, 200))
                draw.text((x + 6, y + tile // 2 - 7), "no pixel mask", fill=(0, 0, 0), font=font)
    with atomic_path(root / "samples.png") as tmp:
        sheet.save(tmp, format="PNG")


MANIFEST_COLUMNS = ["cls", "kind", "split", "label", "defect", "file", "mask_file", "source",
                    "source_item", "region", "crop_box", "rotation", "size", "seed", "defect_area",
                    "detail", "probability"]


def test_overlap(rows: list[dict]) -> dict:
    """How independent one class's test images are. Texture crops: ``textures.test_overlap`` of
    their boxes (the share of each crop's pixels that another test crop shows, and the largest
    share with one other crop). Coins and solar cells: ``items`` (distinct coins or cells) and
    ``seen_in_another``, the share of test images whose coin or cell another test image shows
    too (0 for the cells: each is a different cell)."""
    test = [r for r in rows if r["split"] == "test"]
    if test and not test[0]["source_item"]:  # texture crops of one photo
        return {"method": "pixels of each test crop shown by another test crop",
                **crop_overlap([tuple(int(v) for v in r["crop_box"].split(",")) for r in test])}
    items = [r["source_item"] for r in test]
    return {"method": "test images whose coin or cell another test image shows", "items": len(set(items)),
            "images": len(items), "seen_in_another": round(sum(items.count(i) > 1 for i in items) / max(len(items), 1), 3)}


def _is_mini_build(path: Path) -> bool:
    return (path / MARKER).is_file() or (path / "manifest.csv").is_file()


def build_mini(out_dir, size: int = 128, seed: int = 0, profile: str = "mini", split: str = "test",
               val_scale: int = 1, holdout: bool = False) -> Path:
    """Build the benchmark into ``out_dir`` (MVTec-AD layout) and return its path.

    ``split="val"`` builds the *validation* benchmark that settings are chosen on, with the same
    classes, counts and defect painters but none of the test build's (``MINI_SEED``) test pixels:
    texture test crops come from the top half (the training region), coins are the test build's
    training coins, test images from the coins it leaves unused (4 of the 24 for ``mini``: normal
    images from them, defects painted on them), and solar cells are cells the test build does not
    use at all. ``val_scale`` multiplies the validation build's test images per class (its shots
    stay as many): a larger build resolves smaller differences between settings. The coins' normal
    test images come only from the coins the test build leaves unused (4 in ``mini``), so beyond
    those only their defective images multiply.

    ``holdout`` (validation only) takes the textures' shots and test crops from disjoint regions
    (the top half's left and right columns), so that, as in the test build, no test crop shows a
    pixel of a shot; without it they come from the same rows and often overlap, which can favour
    the memory-bank methods (a test crop that shows part of a shot finds exact matches in the
    memory). Coins and solar cells are the same either way: their shots and test images are other
    coins and other cells already.

    The build goes into a hidden sibling folder, the marker ``build_complete.json`` is written
    last, and only then is the folder renamed onto ``out_dir``: an interrupted build never leaves a
    half-written ``out_dir``. An existing ``out_dir`` is replaced only if it is an earlier mini
    build (has a marker or a ``manifest.csv``) or empty; anything else raises :class:`DataError`.
    """
    if profile not in PROFILES:
        raise DataError(f"unknown mini profile {profile!r}; choose one of {sorted(PROFILES)}")
    if split not in ("test", "val"):
        raise DataError(f"unknown mini split {split!r}; choose 'test' or 'val'")
    if not isinstance(val_scale, (int, np.integer)) or val_scale < 1 or (val_scale > 1 and split != "val"):
        raise DataError(f"val_scale must be an integer >= 1, and above 1 only for split='val'; got {val_scale!r}")
    if holdout and split != "val":
        raise DataError("holdout applies to the validation build only (split='val'); "
                        "the test build's textures are held out by rows already")
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise DataError(f"mini image size must be an integer >= 16, got {size!r}")
    size, seed = int(size), int(seed)
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not (out.is_dir() and (_is_mini_build(out) or not any(out.iterdir()))):
        raise DataError(f"{str(out)!r} exists and is not a mini build; refusing to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    base = PROFILES[profile]  # the test build's counts (the validation build avoids its images)
    spec = {**base, "test_good": base["test_good"] * val_scale, "test_bad": base["test_bad"] * val_scale}
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        rows: list[dict] = []
        for cls in spec["classes"]:
            rng = class_rng(seed, cls)
            info = CLASS_INFO[cls]
            if cls.startswith("solar_"):
                new = build_solar(cls, tmp, size, seed, spec, rng, split, base)
            elif cls == "coins":
                new = build_coins(cls, tmp, size, seed, spec, rng, split, base)
            else:
                new = build_texture(cls, tmp, size, seed, spec, rng, split, holdout)
            rows += new
            write_json_atomic(tmp / cls / "meta.json", {
                "kind": info["kind"], "source": info["source"], "licence": info["licence"],
                "pixel_masks": not cls.startswith("solar_"),
                "defects": sorted({r["defect"] for r in new if r["label"]}),
                "test_overlap": test_overlap(new),
                "shot_protocol": SHOT_PROTOCOL,
                "split": split,
                "train_test_split": (
                    ("different coins" if cls == "coins" else "different cells"
                     if cls.startswith("solar_") else "train crops from rows 0-255, test crops from rows 256-511")
                    if split == "test" else
                    ("half of the test build's training coins as shots, the other half as test coins"
                     if cls == "coins" else "cells unused by the test build" if cls.startswith("solar_")
                     else "train crops from rows 0-255 and columns 0-255, test crops from rows 0-255 and "
                     "columns 256-511" if holdout else "train and test crops both from rows 0-255 (may overlap)")),
            })
        import pandas as pd

        write_csv_atomic(tmp / "manifest.csv", pd.DataFrame(rows, columns=MANIFEST_COLUMNS))
        _samples_png(tmp, rows, spec["classes"], size)
        write_json_atomic(tmp / MARKER, {
            "profile": profile, "split": split, "size": size, "seed": seed, "version": BUILD_VERSION,
            "val_scale": int(val_scale), "holdout": bool(holdout),
            "classes": list(spec["classes"]), "n_images": len(rows)})
        os.chmod(tmp, 0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.replace(tmp, out)
            except OSError:
                # another process finished the same build first: keep theirs if complete
                if (out / MARKER).is_file():
                    shutil.rmtree(tmp, ignore_errors=True)
                    return out
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def resolve_data_root(path) -> Path:
    """Absolute path of a config ``data_root``: relative paths are taken from the repository root
    (where ``pyproject.toml`` is) in a source checkout, else from the working directory."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    from ..config import project_root

    return (project_root() / p).resolve()


def default_roots(profile: str) -> tuple[Path, Path]:
    """Where the benchmark of ``profile`` is built on first use: its default ``data_root`` and the
    validation build beside it (``data/mini`` and ``data/mini-val``)."""
    from ..config import get_config

    root = resolve_data_root(get_config(profile).data_root)
    return root, root.with_name(root.name + VAL_SUFFIX)


def ensure_mini(cfg, build: bool = False) -> Path:
    """``cfg.data_root`` as an absolute path, building the mini/smoke benchmark there when needed.

    For profiles ``mini`` and ``smoke`` (dataset ``mvtec``) the folder is (re)built with
    ``cfg.image_size``, the profile and the fixed seed ``MINI_SEED`` (a folder whose name ends in
    ``-val``, such as ``data/mini-val``: the validation split with ``VAL_SEED``) when it has no
    completion marker while looking like a mini build (half-built), or was built with another size
    or profile. A missing folder is built only at the profile's default locations
    (``default_roots``) or with ``build=True`` (``data build-mini``): anywhere else a missing
    ``data_root`` is most likely a typo, and raises :class:`DataError` naming it rather than
    making up data there. A folder that is not a mini build (e.g. real MVTec-AD) is returned
    untouched. Other profiles never build: a missing root raises :class:`DataError`.
    """
    root = resolve_data_root(cfg.data_root)
    profile = cfg.profile if cfg.profile in PROFILES else None
    if profile is None or cfg.dataset != "mvtec":
        if not root.exists():
            raise DataError(f"data_root {str(root)!r} does not exist; only the mini and smoke "
                            f"profiles build their data (profile {cfg.profile!r}, dataset "
                            f"{cfg.dataset!r})")
        return root
    if not root.exists() and not build and root not in default_roots(profile):
        raise DataError(
            f"data_root {str(root)!r} does not exist. The {profile} benchmark is built on first use "
            f"only at {', '.join(str(p) for p in default_roots(profile))}; to build it elsewhere run "
            f"`python -m anomalysd_core data build-mini --profile {profile} --out {cfg.data_root}`, "
            "or correct the path")
    size = int(cfg.image_size)
    split = "val" if root.name.endswith(VAL_SUFFIX) else "test"
    marker = root / MARKER
    if marker.is_file():
        try:
            info = json.loads(marker.read_text())
        except (OSError, ValueError):
            info = {}
        if (info.get("size") == size and info.get("profile") == profile
                and info.get("version") == BUILD_VERSION and info.get("split", "test") == split):
            return root
    elif root.exists() and any(root.iterdir()) and not _is_mini_build(root):
        return root  # somebody's own dataset: leave it alone
    return build_mini(root, size=size, seed=VAL_SEED if split == "val" else MINI_SEED, profile=profile,
                      split=split)


__all__ = ["build_mini", "ensure_mini", "resolve_data_root", "default_roots", "PROFILES", "MARKER",
           "BUILD_VERSION", "VAL_SEED", "VAL_SUFFIX", "MANIFEST_COLUMNS"]
