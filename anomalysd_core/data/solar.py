"""The solar-cell classes of the mini benchmark (solar_mono, solar_poly): real
electroluminescence images with real defects from ``elpv-dataset``, image labels only.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image

from .datasets import DataError
from .sources import CLASS_INFO, MINI_SEED, class_rng, save_png


@functools.lru_cache(maxsize=None)
def elpv_table():
    """(file names, probabilities, types, data folder) of elpv-dataset, read from the package's
    ``labels.csv`` the way ``elpv_dataset.utils.load_dataset`` reads it, without decoding all
    2,624 images (load_dataset takes seconds; we open only the cells we use)."""
    try:
        import elpv_dataset
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise DataError("the solar classes need the PyPI package 'elpv-dataset' "
                        "(pip install elpv-dataset)") from e
    data_dir = Path(elpv_dataset.__file__).resolve().parent / "data"
    labels = data_dir / "labels.csv"
    if not labels.is_file():
        raise DataError(f"elpv-dataset labels file {str(labels)!r} not found")
    t = np.genfromtxt(labels, dtype=["|S19", "<f8", "|S4"], names=["path", "probability", "type"])
    return (tuple(np.char.decode(t["path"])), np.asarray(t["probability"], dtype=np.float64),
            tuple(np.char.decode(t["type"])), data_dir)


def solar_picks(cls, counts, rng, exclude=()):
    """Indices into elpv-dataset of the normal cells (train first) and the defective test cells."""
    _names, probs, types, _ = elpv_table()
    kind = CLASS_INFO[cls]["elpv_type"]
    is_type = np.array([t == kind for t in types])
    normal = np.setdiff1d(np.flatnonzero(is_type & (probs == 0.0)), exclude)
    defect = np.setdiff1d(np.flatnonzero(is_type & (probs >= 2.0 / 3.0 - 1e-6)), exclude)
    n_norm = counts["train"] + counts["test_good"]
    if len(normal) < n_norm or len(defect) < counts["test_bad"]:
        raise DataError(f"{cls}: elpv-dataset has too few {kind} cells")
    pick_n = [int(i) for i in rng.choice(normal, size=n_norm, replace=False)]
    pick_d = [int(i) for i in rng.choice(defect, size=counts["test_bad"], replace=False)]
    return pick_n, pick_d


def build_solar(cls, root: Path, size, seed, counts, rng, split="test", base=None):
    names, probs, _types, data_dir = elpv_table()
    kind = CLASS_INFO[cls]["elpv_type"]
    if split == "val":  # other cells than every cell of the test build (made with ``base`` counts)
        t_n, t_d = solar_picks(cls, base or counts, class_rng(MINI_SEED, cls))
        pick_n, pick_d = solar_picks(cls, counts, rng, exclude=t_n + t_d)
    else:
        pick_n, pick_d = solar_picks(cls, counts, rng)
    rows = []
    plan = ([("train", 0, "good", "train/good", i) for i in pick_n[:counts["train"]]]
            + [("test", 0, "good", "test/good", i) for i in pick_n[counts["train"]:]]
            + [("test", 1, "defective", "test/defective", i) for i in pick_d])
    index: dict[str, int] = {}
    for split, label, dname, folder, idx in plan:
        with Image.open(data_dir / names[idx]) as im:
            im = im.convert("L")
            w, h = im.size
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            arr = np.asarray(im)
        j = index[folder] = index.get(folder, -1) + 1
        f = f"{cls}/{folder}/{j:03d}.png"
        save_png(root / f, arr)
        rows.append(dict(cls=cls, kind="texture", split=split, label=label, defect=dname, file=f,
                         mask_file="", source="elpv-dataset", source_item=names[idx],
                         region="whole cell", crop_box=f"0,0,{h},{w}", size=size, seed=seed,
                         defect_area="", detail=f"type {kind}", probability=round(float(probs[idx]), 4)))
    return rows
