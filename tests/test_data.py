"""Loaders, dataset layouts and few-shot sampling on tiny folders built in tmp_path."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalysd_core.data.datasets import (DataError, MVTecDataset, Sample, VisADataset, class_kind,
                                 load_image, load_mask, load_sample, open_dataset, sample_shots,
                                 shots_manifest)


def _png(path: Path, arr, mode=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.asarray(arr)) if mode is None else Image.fromarray(np.asarray(arr)).convert(mode)
    img.save(path)
    return path


def _rgb(seed, h=8, w=8):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def make_mvtec(root: Path, classes=("bottle", "carpet"), n_train=6, mask_for_all=True) -> Path:
    for c, cls in enumerate(classes):
        for i in range(n_train):
            _png(root / cls / "train" / "good" / f"{i:03d}.png", _rgb(100 * c + i))
        for i in range(2):
            _png(root / cls / "test" / "good" / f"{i:03d}.png", _rgb(100 * c + 50 + i))
        for d, defect in enumerate(("broken", "crack")):
            for i in range(2):
                _png(root / cls / "test" / defect / f"{i:03d}.png", _rgb(100 * c + 60 + 10 * d + i))
                if mask_for_all or defect == "broken":
                    m = np.zeros((8, 8), np.uint8)
                    m[2:4, 2:5] = 255
                    _png(root / cls / "ground_truth" / defect / f"{i:03d}_mask.png", m)
    return root


# --------------------------------------------------------------------------- images and masks

def test_load_image_rgb_round_trip_and_resize(tmp_path):
    arr = _rgb(0, 10, 12)
    p = _png(tmp_path / "a.png", arr)
    img = load_image(p)
    assert img.dtype == np.float32 and img.shape == (10, 12, 3)
    np.testing.assert_allclose(img, arr / 255.0, atol=1e-6)
    small = load_image(p, size=4)
    assert small.shape == (4, 4, 3) and small.dtype == np.float32
    assert 0.0 <= small.min() and small.max() <= 1.0


def test_load_image_grayscale_palette_rgba_16bit(tmp_path):
    g = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    img = load_image(_png(tmp_path / "g.png", g))
    assert img.shape == (8, 8, 3)
    np.testing.assert_allclose(img[..., 0], g / 255.0, atol=1e-6)
    assert np.array_equal(img[..., 0], img[..., 2])

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[...] = (200, 100, 50, 128)
    img = load_image(_png(tmp_path / "rgba.png", rgba))  # composited on black: colour * alpha
    np.testing.assert_allclose(img[0, 0], np.array([200, 100, 50]) / 255.0 * 128 / 255.0, atol=1e-6)

    pal = Image.fromarray(_rgb(3, 6, 6)).convert("P", palette=Image.ADAPTIVE, colors=8)
    pal.save(tmp_path / "p.png")
    img = load_image(tmp_path / "p.png")
    np.testing.assert_allclose(img, np.asarray(pal.convert("RGB")) / 255.0, atol=1e-6)

    v16 = np.array([[0, 32768], [65535, 1000]], dtype=np.uint16)
    Image.fromarray(v16).save(tmp_path / "16.png")
    img = load_image(tmp_path / "16.png")
    np.testing.assert_allclose(img[..., 1], v16 / 65535.0, atol=1e-6)
    assert img[1, 0, 0] == pytest.approx(1.0)


def test_load_image_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match="nope.png"):
        load_image(tmp_path / "nope.png")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.png"):
        load_image(bad)
    with pytest.raises(DataError, match="broken.png"):
        load_mask(bad)
    assert issubclass(DataError, ValueError)


def test_load_mask_binarises_small_values_and_resizes_nearest(tmp_path):
    m = np.zeros((8, 8), np.uint8)
    m[1:3, 1:3] = 1          # VisA style: small non-zero values
    m[5, 5] = 2
    out = load_mask(_png(tmp_path / "m.png", m))
    assert out.dtype == bool and out.sum() == 5
    big = load_mask(tmp_path / "m.png", size=16)
    assert big.shape == (16, 16) and big.sum() == 20 and set(np.unique(big)) <= {False, True}
    rgbm = np.zeros((4, 4, 3), np.uint8)
    rgbm[0, 0, 2] = 7
    assert load_mask(_png(tmp_path / "c.png", rgbm)).sum() == 1


def test_load_sample_normal_missing_mask_and_size_mismatch(tmp_path):
    img = _png(tmp_path / "i.png", _rgb(1, 8, 8))
    im, m = load_sample(Sample(str(img), "x", 0, "good", None), size=4)
    assert im.shape == (4, 4, 3) and m.shape == (4, 4) and not m.any()
    im, m = load_sample(Sample(str(img), "x", 1, "crack", None))
    assert m is None
    mk = _png(tmp_path / "mk.png", np.full((6, 8), 255, np.uint8))
    with pytest.raises(DataError) as e:
        load_sample(Sample(str(img), "x", 1, "crack", str(mk)))
    assert "i.png" in str(e.value) and "mk.png" in str(e.value) and "8x6" in str(e.value)


# --------------------------------------------------------------------------- MVTec layout

def test_mvtec_round_trip(tmp_path):
    root = make_mvtec(tmp_path / "mv", mask_for_all=False)
    (root / "notes").mkdir()          # a folder without train/test is ignored
    ds = MVTecDataset(root)
    assert ds.classes == ["bottle", "carpet"]
    assert len(ds.train("bottle")) == 6 and all(s.label == 0 for s in ds.train("bottle"))
    test = ds.test("bottle")
    assert len(test) == 6 and sum(s.label for s in test) == 4
    assert {s.defect for s in test} == {"good", "broken", "crack"}
    for s in test:
        assert (s.label == 0) == (s.defect == "good")
        if s.defect == "broken":
            assert s.mask_path and s.mask_path.endswith("_mask.png")
        if s.defect == "crack":
            assert s.mask_path is None
    assert not ds.has_pixel_masks("bottle")
    assert MVTecDataset(make_mvtec(tmp_path / "full")).has_pixel_masks("bottle")
    im, m = load_sample(next(s for s in test if s.defect == "broken"), size=8)
    assert m.sum() == 6
    assert test[0].relpath.startswith("bottle/test/")
    assert open_dataset("mvtec", root).classes == ds.classes


def test_mvtec_accepts_other_extensions(tmp_path):
    root = make_mvtec(tmp_path / "mv", classes=("bottle",))
    Image.fromarray(_rgb(9)).save(root / "bottle" / "train" / "good" / "extra.JPG")
    Image.fromarray(_rgb(9)).save(root / "bottle" / "train" / "good" / "extra2.bmp")
    (root / "bottle" / "train" / "good" / "readme.txt").write_text("x")
    assert len(MVTecDataset(root).train("bottle")) == 8


def test_mvtec_errors(tmp_path):
    with pytest.raises(DataError, match="missing_root"):
        MVTecDataset(tmp_path / "missing_root")
    (tmp_path / "empty" / "something").mkdir(parents=True)
    with pytest.raises(DataError, match="no class folders"):
        MVTecDataset(tmp_path / "empty")

    root = make_mvtec(tmp_path / "a", classes=("bottle",))
    (root / "cable" / "test" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match=r"cable.*train"):
        MVTecDataset(root)

    root = make_mvtec(tmp_path / "b", classes=("bottle",))
    (root / "cable" / "train" / "good").mkdir(parents=True)
    _png(root / "cable" / "train" / "good" / "0.png", _rgb(0))
    with pytest.raises(DataError, match=r"cable.*test"):
        MVTecDataset(root)

    root = make_mvtec(tmp_path / "c", classes=("bottle",))
    (root / "cable" / "train" / "good").mkdir(parents=True)
    (root / "cable" / "test" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no images in .*cable.*good"):
        MVTecDataset(root)

    root = make_mvtec(tmp_path / "d", classes=("bottle",))
    (root / "bottle" / "test" / "hole").mkdir()
    with pytest.raises(DataError, match=r"no images in .*hole"):
        MVTecDataset(root)

    ds = MVTecDataset(make_mvtec(tmp_path / "e"))
    with pytest.raises(DataError) as e:
        ds.train("zipper")
    assert "zipper" in str(e.value) and "bottle" in str(e.value) and "carpet" in str(e.value)
    with pytest.raises(DataError, match="zipper"):
        ds.test("zipper")
    with pytest.raises(DataError, match="'foo'"):
        open_dataset("foo", tmp_path)


# --------------------------------------------------------------------------- VisA layout

def make_visa(root: Path) -> Path:
    rows = ["object,split,label,image,mask"]
    for cls in ("candle", "pcb1"):
        for i in range(5):
            rel = f"{cls}/Data/Images/Normal/{i:03d}.JPG"
            Image.fromarray(_rgb(i)).save(_mkparent(root / rel), format="JPEG")
            rows.append(f"{cls},{'train' if i < 3 else 'test'},normal,{rel},")
        for i in range(2):
            rel = f"{cls}/Data/Images/Anomaly/{i:03d}.JPG"
            mrel = f"{cls}/Data/Masks/Anomaly/{i:03d}.png"
            Image.fromarray(_rgb(10 + i)).save(_mkparent(root / rel), format="JPEG")
            m = np.zeros((8, 8), np.uint8)
            m[0:2, 0:4] = 1 + i  # VisA masks: small non-zero values
            _png(root / mrel, m)
            rows.append(f"{cls},test,anomaly,{rel},{mrel}")
    _mkparent(root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    return root


def _mkparent(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def test_visa_round_trip_and_mask_binarisation(tmp_path):
    ds = VisADataset(make_visa(tmp_path / "visa"))
    assert ds.classes == ["candle", "pcb1"]
    assert len(ds.train("candle")) == 3 and len(ds.test("candle")) == 4
    anomalies = [s for s in ds.test("pcb1") if s.label]
    assert len(anomalies) == 2 and all(s.defect == "anomaly" for s in anomalies)
    assert ds.has_pixel_masks("pcb1")
    for s in anomalies:
        im, m = load_sample(s, size=8)
        assert im.shape == (8, 8, 3) and m.sum() == 8
    assert open_dataset("visa", tmp_path / "visa").classes == ds.classes
    assert shots_manifest(sample_shots(ds, ["candle"], 1, 0))["candle"][0].startswith("candle/Data/")


def test_visa_errors(tmp_path):
    (tmp_path / "v").mkdir()
    with pytest.raises(DataError, match="1cls.csv"):
        VisADataset(tmp_path / "v")
    root = make_visa(tmp_path / "w")
    csv = root / "split_csv" / "1cls.csv"
    text = csv.read_text()
    csv.write_text(text.replace("object,split,label,image,mask", "object,split,label,img,mask"))
    with pytest.raises(DataError) as e:
        VisADataset(root)
    assert "1cls.csv" in str(e.value) and "image" in str(e.value)
    csv.write_text(text.replace("candle,test,anomaly", "candle,test,broken", 1))
    with pytest.raises(DataError, match=r"1cls.csv.*'broken'"):
        VisADataset(root)
    csv.write_text(text + "candle,test,anomaly,candle/missing.JPG,\n")
    with pytest.raises(DataError, match="missing.JPG"):
        VisADataset(root)


# --------------------------------------------------------------------------- few-shot sampling

def test_sample_shots_reproducible_disjoint_and_errors(tmp_path):
    ds = MVTecDataset(make_mvtec(tmp_path / "mv"))
    a = sample_shots(ds, ds.classes, 2, seed=3)
    b = sample_shots(ds, ds.classes, 2, seed=3)
    assert shots_manifest(a) == shots_manifest(b)
    assert set(a) == {"bottle", "carpet"} and all(len(v) == 2 for v in a.values())
    assert all(s.label == 0 and "/train/good/" in s.relpath for v in a.values() for s in v)
    assert len({s.path for s in a["bottle"]}) == 2
    # one class's draw does not depend on the other classes asked for
    assert shots_manifest(sample_shots(ds, ["carpet"], 2, 3))["carpet"] == shots_manifest(a)["carpet"]
    # AnomalyDINO's protocol: sorted pool, seed s takes [s*K, (s+1)*K): disjoint while it fits (6 images)
    pool = sorted(s.relpath for s in ds.train("bottle"))
    draws = [shots_manifest(sample_shots(ds, ["bottle"], 2, s))["bottle"] for s in range(3)]
    assert draws == [pool[0:2], pool[2:4], pool[4:6]]
    assert shots_manifest(sample_shots(ds, ["bottle"], 4, 1))["bottle"] == pool[4:6] + pool[0:2]  # wraps
    with pytest.raises(DataError, match="seed"):
        sample_shots(ds, None, 1, -2)
    assert sample_shots(ds, ds.classes, 0, 0) == {"bottle": [], "carpet": []}
    with pytest.raises(DataError) as e:
        sample_shots(ds, ["carpet"], 7, 0)
    assert "carpet" in str(e.value) and "6" in str(e.value)
    with pytest.raises(DataError, match="-1"):
        sample_shots(ds, None, -1, 0)
    m = shots_manifest(a)
    assert all(name.startswith(f"{cls}/train/good/") for cls, v in m.items() for name in v)
    json.dumps(m)


def test_class_kind(tmp_path):
    assert class_kind("carpet") == "texture" and class_kind("bottle") == "object"
    assert class_kind("brick") == "texture" and class_kind("coins") == "object"
    (tmp_path / "bottle").mkdir()
    (tmp_path / "bottle" / "meta.json").write_text(json.dumps({"kind": "texture", "source": "x"}))
    assert class_kind("bottle", tmp_path) == "texture"
    (tmp_path / "bottle" / "meta.json").write_text(json.dumps({"kind": "blob"}))
    with pytest.raises(DataError, match="meta.json"):
        class_kind("bottle", tmp_path)
