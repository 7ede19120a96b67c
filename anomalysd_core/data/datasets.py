"""Image loading, the two dataset layouts the paper uses, and few-shot sampling.

The paper evaluates on MVTec-AD and VisA (Sec. 5.1) in a few-shot, multi-class setting: K normal
images per class, one model for every class (``METHOD.md``, "Setting"). This module reads

* the MVTec-AD folder layout ``root/<class>/{train/good, test/<defect>, ground_truth/<defect>}``,
  which is also the layout of the embedded ``mini`` benchmark written by :mod:`anomalysd_core.data.mini`;
* the VisA ``split_csv/1cls.csv`` split (columns ``object, split, label, image, mask``);

and draws the K-shot normal sets reproducibly (:func:`sample_shots`).

Conventions
-----------
* Images are float32 ``H x W x 3`` RGB arrays in ``[0, 1]``; masks are ``bool`` ``H x W``.
* Label 1 means anomalous. A test image of MVTec layout is normal iff its folder is ``good``.
* Every problem with the input data raises :class:`DataError` (a ``ValueError``) whose message
  names the offending path or value.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MVTEC_TEXTURES = frozenset({"carpet", "grid", "leather", "tile", "wood"})
# Textures of the embedded mini benchmark (also recorded in each class's meta.json). Solar cells
# fill the whole frame (no background), so they count as textures: the whole image is foreground.
MINI_TEXTURES = frozenset({"brick", "grass", "gravel", "solar_mono", "solar_poly"})
VISA_COLUMNS = ("object", "split", "label", "image", "mask")


class DataError(ValueError):
    """Bad or missing input data; the message names the path or value at fault."""


@dataclass
class Sample:
    """One image of a dataset. ``label`` is 1 for anomalous, 0 for normal.

    ``path`` and ``mask_path`` are absolute paths (strings); ``mask_path`` is None for normal
    images and for anomalous images without a pixel annotation. ``defect`` is the defect type
    (``"good"`` for normal images). ``root`` is the dataset root, used for relative names.
    """

    path: str
    cls: str
    label: int
    defect: str
    mask_path: str | None
    root: str | None = None

    @property
    def relpath(self) -> str:
        """Path relative to the dataset root (POSIX separators) when the root is known."""
        return _relative_name(self.path, self.cls, self.root)


# --------------------------------------------------------------------------- images and masks

def _open(path) -> Image.Image:
    path = Path(path)
    try:
        img = Image.open(path)
        img.load()
    except (FileNotFoundError, IsADirectoryError) as e:
        raise DataError(f"cannot read image {str(path)!r}: file not found") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot read image {str(path)!r}: {e}") from e
    return img


def image_size(path) -> tuple[int, int]:
    """``(width, height)`` of an image file, read from its header only."""
    try:
        with Image.open(path) as img:
            return img.size
    except (FileNotFoundError, IsADirectoryError) as e:
        raise DataError(f"cannot read image {str(path)!r}: file not found") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot read image {str(path)!r}: {e}") from e


def _to_float_rgb(img: Image.Image) -> np.ndarray:
    """PIL image of any common mode -> float32 H x W x 3 in [0, 1].

    Alpha (RGBA, LA, palette with transparency) is composited on black, i.e. the colour is
    multiplied by alpha: fully transparent pixels become black. 16-bit images are divided by 65535.
    """
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float64)
        if mode == "I" and arr.size and arr.max() > 65535:
            arr = arr / float(2 ** 32 - 1)  # a genuine 32-bit integer image
        else:
            arr = arr / 65535.0
        arr = np.clip(arr, 0.0, 1.0)
        return np.repeat(arr[..., None], 3, axis=-1).astype(np.float32)
    if mode == "F":
        arr = np.clip(np.asarray(img, dtype=np.float64), 0.0, 1.0)
        return np.repeat(arr[..., None], 3, axis=-1).astype(np.float32)
    if mode in ("1", "L"):
        arr = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
        return np.repeat(arr[..., None], 3, axis=-1)
    if mode in ("LA", "La", "PA"):
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "RGBa"):
        arr = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        return np.ascontiguousarray(arr[..., :3] * arr[..., 3:4])
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def _resize_float(arr: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of each channel to size x size; Pillow widens the filter when
    downscaling, so this is antialiased."""
    if arr.shape[0] == size and arr.shape[1] == size:
        return arr
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(arr[..., c], dtype=np.float32))
                        .resize((size, size), Image.BILINEAR)) for c in range(arr.shape[-1])]
    return np.clip(np.stack(chans, axis=-1), 0.0, 1.0).astype(np.float32)


def _check_size(size):
    if size is not None and (not isinstance(size, (int, np.integer)) or size < 1):
        raise DataError(f"image size must be a positive integer or None, got {size!r}")


def load_image(path, size: int | None = None) -> np.ndarray:
    """Read an image as float32 ``H x W x 3`` RGB in ``[0, 1]``.

    Grayscale, palette and 16-bit images are converted to RGB (16-bit values divided by 65535);
    RGBA is composited on black (colour times alpha). With ``size`` the image is resized to
    ``size x size`` (bilinear, antialiased when shrinking). Raises :class:`DataError` naming the
    path when the file is missing or unreadable.
    """
    _check_size(size)
    arr = _to_float_rgb(_open(path))
    if size is not None:
        arr = _resize_float(arr, int(size))
    return arr


#: What ``_to_float_rgb`` does to an image that is not 8-bit RGB or grey, as ``load_photo`` says it
_SIXTEEN = "16-bit image, scaled to [0, 1] (divided by 65535)"
CONVERSIONS = {
    "P": "palette image, converted to RGB", "PA": "palette image with alpha, composited on black",
    "1": "1-bit image, converted to grey", "LA": "grey with alpha, composited on black",
    "RGBA": "alpha channel composited on black", "RGBa": "alpha channel composited on black",
    "I;16": _SIXTEEN, "I;16L": _SIXTEEN, "I;16B": _SIXTEEN, "I;16N": _SIXTEEN,
    "I": "32-bit integer image, scaled to [0, 1]", "F": "32-bit float image, clipped to [0, 1]",
    "CMYK": "CMYK image, converted to RGB", "YCbCr": "YCbCr image, converted to RGB",
}


def load_photo(path, size: int | None = None) -> tuple[np.ndarray, list[str], tuple[int, int]]:
    """A photo as a viewer shows it: ``(array, notes, (width, height))``.

    Like :func:`load_image`, and also turned upright by its EXIF orientation (a phone photo taken
    sideways is stored sideways with a tag that says so). ``notes`` says in words what was done
    to the file (turned, converted from 16 bits or a palette, alpha composited, first frame of
    several); ``(width, height)`` is the upright size before any resize. Datasets use
    :func:`load_image`, which ignores EXIF: their masks are aligned with the stored pixels.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> f = Path(tempfile.mkdtemp()) / "p.png"
    >>> Image.new("P", (40, 30)).save(f)
    >>> arr, notes, wh = load_photo(f)
    >>> arr.shape, notes, wh
    ((30, 40, 3), ['palette image, converted to RGB'], (40, 30))
    """
    _check_size(size)
    img = _open(path)
    notes = []
    frames = getattr(img, "n_frames", 1)
    if frames > 1:
        notes.append(f"first of {frames} frames")
    orientation = img.getexif().get(0x0112, 1)
    if orientation not in (None, 1):
        img = ImageOps.exif_transpose(img)
        notes.append(f"turned upright by its EXIF orientation ({orientation})")
    if img.mode in CONVERSIONS:
        notes.append(CONVERSIONS[img.mode])
    wh = img.size
    arr = _to_float_rgb(img)
    if size is not None:
        arr = _resize_float(arr, int(size))
    return arr, notes, wh


def load_mask(path, size: int | None = None) -> np.ndarray:
    """Read a ground-truth mask as ``bool H x W``: a pixel is anomalous iff its value is non-zero
    (in any channel). VisA masks store small non-zero values, hence ``!= 0`` rather than a
    threshold at 128. Resizing uses nearest neighbour."""
    _check_size(size)
    img = _open(path)
    if img.mode == "P":
        img = img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        img = img.convert("RGB")
    arr = np.asarray(img)
    m = arr != 0
    if m.ndim == 3:
        m = m.any(axis=-1)
    if size is not None and m.shape != (size, size):
        m = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((int(size), int(size)),
                                                                          Image.NEAREST)) != 0
    return m


def load_sample(sample: Sample, size: int | None = None):
    """``(image, mask)`` of a sample.

    The mask is all False for a normal image, None for an anomalous image without a mask file,
    and otherwise the binarised ground truth. A mask whose size differs from its image (before any
    resizing) raises :class:`DataError` naming both paths and sizes.
    """
    if sample.label and sample.mask_path:
        isz, msz = image_size(sample.path), image_size(sample.mask_path)
        if isz != msz:
            raise DataError(f"mask {sample.mask_path!r} is {msz[0]}x{msz[1]} (WxH) but image "
                            f"{sample.path!r} is {isz[0]}x{isz[1]}")
    image = load_image(sample.path, size)
    if not sample.label:
        mask = np.zeros(image.shape[:2], dtype=bool)
    elif sample.mask_path:
        mask = load_mask(sample.mask_path, size)
    else:
        mask = None
    return image, mask


# --------------------------------------------------------------------------- datasets

def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _is_image(p))


def class_kind(cls: str, root=None) -> str:
    """``"texture"`` or ``"object"``.

    ``root/<cls>/meta.json`` (written by :mod:`anomalysd_core.data.mini`) wins when present; otherwise
    the MVTec-AD textures (carpet, grid, leather, tile, wood) and the mini textures are
    ``"texture"`` and everything else is ``"object"``.
    """
    if root is not None:
        meta = Path(root) / cls / "meta.json"
        if meta.is_file():
            try:
                kind = json.loads(meta.read_text()).get("kind")
            except (OSError, ValueError) as e:
                raise DataError(f"cannot read {str(meta)!r}: {e}") from e
            if kind in ("texture", "object"):
                return kind
            raise DataError(f"{str(meta)!r}: 'kind' must be 'texture' or 'object', got {kind!r}")
    return "texture" if cls in MVTEC_TEXTURES or cls in MINI_TEXTURES else "object"


class _Base:
    root: Path
    classes: list[str]
    _train: dict[str, list[Sample]]
    _test: dict[str, list[Sample]]

    def _check_class(self, cls: str) -> None:
        if cls not in self._train:
            raise DataError(f"unknown class {cls!r} in {str(self.root)!r}; known classes: "
                            f"{', '.join(self.classes)}")

    def train(self, cls: str) -> list[Sample]:
        """Normal training images (the pool K-shot sets are drawn from)."""
        self._check_class(cls)
        return list(self._train[cls])

    def test(self, cls: str) -> list[Sample]:
        """Test images, normal and anomalous, in a stable (sorted) order."""
        self._check_class(cls)
        return list(self._test[cls])

    def has_pixel_masks(self, cls: str) -> bool:
        """True when every anomalous test image of ``cls`` has a mask file (pixel metrics can be
        computed); False e.g. for the solar-cell classes of the mini benchmark."""
        return all(s.mask_path for s in self.test(cls) if s.label)

    def class_kind(self, cls: str) -> str:
        self._check_class(cls)
        return class_kind(cls, self.root)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, classes={self.classes})"


class MVTecDataset(_Base):
    """MVTec-AD folder layout (also the mini benchmark's):
    ``root/<class>/train/good/*``, ``root/<class>/test/<defect>/*`` and
    ``root/<class>/ground_truth/<defect>/<stem>_mask.png``. A folder under ``root`` that holds
    ``train`` or ``test`` is a class; other folders and files are ignored.
    """

    def __init__(self, root):
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise DataError(f"dataset root {str(root)!r} does not exist or is not a folder")
        candidates = sorted(p for p in self.root.iterdir()
                            if p.is_dir() and not p.name.startswith(".")
                            and ((p / "train").is_dir() or (p / "test").is_dir()))
        if not candidates:
            raise DataError(f"no class folders under {str(self.root)!r}: expected "
                            "<class>/train/good and <class>/test/<defect> (MVTec-AD layout)")
        self._train, self._test = {}, {}
        for cdir in candidates:
            cls = cdir.name
            good, test = cdir / "train" / "good", cdir / "test"
            for needed in (good, test):
                if not needed.is_dir():
                    raise DataError(f"class {cls!r}: missing folder {str(needed)!r}")
            train = _images_in(good)
            if not train:
                raise DataError(f"class {cls!r}: no images in {str(good)!r}")
            self._train[cls] = [Sample(str(p), cls, 0, "good", None, str(self.root)) for p in train]
            defects = sorted(p for p in test.iterdir() if p.is_dir() and not p.name.startswith("."))
            if not defects:
                raise DataError(f"class {cls!r}: no defect folders in {str(test)!r}")
            samples = []
            for ddir in defects:
                imgs = _images_in(ddir)
                if not imgs:
                    raise DataError(f"class {cls!r}: no images in {str(ddir)!r}")
                label = 0 if ddir.name == "good" else 1
                for p in imgs:
                    mask = self._find_mask(cdir, ddir.name, p.stem) if label else None
                    samples.append(Sample(str(p), cls, label, ddir.name, mask, str(self.root)))
            self._test[cls] = samples
        self.classes = sorted(self._train)

    @staticmethod
    def _find_mask(cdir: Path, defect: str, stem: str) -> str | None:
        gdir = cdir / "ground_truth" / defect
        if not gdir.is_dir():
            return None
        for name in (f"{stem}_mask", stem):
            for ext in IMAGE_EXTENSIONS:
                for cand in (gdir / f"{name}{ext}", gdir / f"{name}{ext.upper()}"):
                    if cand.is_file():
                        return str(cand)
        return None


class VisADataset(_Base):
    """VisA through its ``root/split_csv/1cls.csv`` (columns ``object, split, label, image,
    mask``; label ``normal``/``anomaly``; paths relative to ``root``). Anomalous samples get the
    defect name ``"anomaly"`` (the 1cls split has no defect types), normal ones ``"good"``.
    """

    def __init__(self, root, csv_name: str = "split_csv/1cls.csv"):
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise DataError(f"dataset root {str(root)!r} does not exist or is not a folder")
        csv_path = self.root / csv_name
        self.csv_path = csv_path
        if not csv_path.is_file():
            raise DataError(f"VisA split file {str(csv_path)!r} not found")
        try:
            with open(csv_path, newline="") as f:
                reader = csv.DictReader(f)
                header = [h.strip() for h in (reader.fieldnames or [])]
                missing = [c for c in VISA_COLUMNS if c not in header]
                if missing:
                    raise DataError(f"{str(csv_path)!r}: missing column(s) {missing}; found "
                                    f"{header}, expected {list(VISA_COLUMNS)}")
                rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()}
                        for r in reader]
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"cannot read {str(csv_path)!r}: {e}") from e
        self._train, self._test = {}, {}
        for i, r in enumerate(rows, start=2):  # line 1 is the header
            where = f"{str(csv_path)!r} line {i}"
            cls, split, label_s = r["object"], r["split"].lower(), r["label"].lower()
            if not cls:
                raise DataError(f"{where}: empty 'object'")
            if label_s not in ("normal", "anomaly"):
                raise DataError(f"{where}: label {r['label']!r} is neither 'normal' nor 'anomaly'")
            if split not in ("train", "test"):
                raise DataError(f"{where}: split {r['split']!r} is neither 'train' nor 'test'")
            img = self.root / r["image"]
            if not r["image"] or not img.is_file():
                raise DataError(f"{where}: image {str(img)!r} not found")
            label = int(label_s == "anomaly")
            mask = None
            if label and r["mask"]:
                mask = self.root / r["mask"]
                if not mask.is_file():
                    raise DataError(f"{where}: mask {str(mask)!r} not found")
                mask = str(mask)
            s = Sample(str(img), cls, label, "anomaly" if label else "good", mask, str(self.root))
            self._train.setdefault(cls, [])
            self._test.setdefault(cls, [])
            if split == "train":
                if not label:  # training anomalies (absent from 1cls) are never few-shot normals
                    self._train[cls].append(s)
            else:
                self._test[cls].append(s)
        if not self._train:
            raise DataError(f"{str(csv_path)!r} has no rows")
        for cls in sorted(self._train):
            if not self._train[cls]:
                raise DataError(f"{str(csv_path)!r}: class {cls!r} has no normal train images")
            if not self._test[cls]:
                raise DataError(f"{str(csv_path)!r}: class {cls!r} has no test images")
            self._train[cls].sort(key=lambda s: s.path)
            self._test[cls].sort(key=lambda s: (s.label, s.path))
        self.classes = sorted(self._train)


def open_dataset(kind: str, root):
    """``"mvtec"`` (folder layout, also the mini benchmark) or ``"visa"`` (1cls split csv)."""
    k = str(kind).lower()
    if k == "mvtec":
        return MVTecDataset(root)
    if k == "visa":
        return VisADataset(root)
    raise DataError(f"unknown dataset kind {kind!r}; choose 'mvtec' or 'visa'")


# --------------------------------------------------------------------------- few-shot sampling

#: How ``sample_shots`` draws the K-shot sets; recorded in each mini build's ``meta.json``.
SHOT_PROTOCOL = ("AnomalyDINO's: the training images sorted by file name, seed s takes images "
                 "s*K .. (s+1)*K - 1 (cyclically past the end), so the seeds' shot sets are disjoint "
                 "while (s+1)*K <= the pool")


def shot_indices(n: int, k: int, seed: int) -> list[int]:
    """Indices into a sorted pool of ``n`` images of seed ``seed``'s ``k`` shots (``SHOT_PROTOCOL``).

    >>> shot_indices(16, 4, 0), shot_indices(16, 4, 2), shot_indices(16, 1, 3), shot_indices(5, 2, 2)
    ([0, 1, 2, 3], [8, 9, 10, 11], [3], [4, 0])
    """
    return [(int(seed) * k + j) % n for j in range(k)]


def sample_shots(ds, classes=None, k: int = 1, seed: int = 0) -> dict[str, list[Sample]]:
    """K normal training images per class, for all ``classes`` at once (multi-class setting).

    The protocol of AnomalyDINO (Damm et al., 2025; ``SHOT_PROTOCOL``): each class's pool sorted
    by file name, seed s takes the K images from s*K on, so different seeds draw disjoint shot
    sets as long as the pool has (s+1)*K images, a seed's spread measures different shots, and a
    class's shots do not depend on which other classes are asked for. Past the end of the pool
    the indices wrap around (the sets then overlap, but still differ while K < the pool). K=0
    gives empty lists; K larger than the pool raises :class:`DataError` naming the class. Which
    images a seed takes is ``shot_indices`` (with runnable examples).
    """
    if classes is None:
        classes = ds.classes
    if isinstance(classes, str):
        classes = [classes]
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 0:
        raise DataError(f"number of shots must be a non-negative integer, got {k!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    out: dict[str, list[Sample]] = {}
    for cls in classes:
        pool = sorted(ds.train(cls), key=lambda s: s.path)
        if k > len(pool):
            raise DataError(f"class {cls!r} has only {len(pool)} normal training images, "
                            f"cannot draw k={k} shots")
        out[cls] = [pool[i] for i in shot_indices(len(pool), int(k), int(seed))] if k else []
    return out


def _relative_name(path: str, cls: str, root: str | None) -> str:
    p = Path(path)
    if root:
        try:
            return p.resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            pass
    parts = p.parts
    if cls in parts:
        i = len(parts) - 1 - parts[::-1].index(cls)
        return Path(*parts[i:]).as_posix()
    return p.name


def shots_manifest(shots: dict[str, list[Sample]]) -> dict[str, list[str]]:
    """``{class: [file names relative to the dataset root]}`` for provenance files."""
    return {cls: [s.relpath for s in samples] for cls, samples in shots.items()}


__all__ = [
    "DataError", "Sample", "load_image", "load_mask", "load_sample", "image_size",
    "MVTecDataset", "VisADataset", "open_dataset", "sample_shots", "shot_indices", "SHOT_PROTOCOL", "shots_manifest",
    "class_kind", "IMAGE_EXTENSIONS", "MVTEC_TEXTURES", "MINI_TEXTURES",
]
