"""The embedded mini benchmark: determinism, exact masks, disjoint splits, counts, loader."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from anomalysd_core.config import get_config
from anomalysd_core.data.datasets import DataError, MVTecDataset, class_kind, load_sample, sample_shots
from anomalysd_core.data.coins import coin_region
from anomalysd_core.data.defects import AREA_RANGE, make_defect, quantise_defect
from anomalysd_core.data.mini import MARKER, PROFILES, build_mini, ensure_mini
from anomalysd_core.data.sources import clean_crop


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    return build_mini(tmp_path_factory.mktemp("smoke") / "data", size=32, seed=0, profile="smoke")


def _u8(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_smoke_build_is_byte_identical_for_a_seed(smoke, tmp_path):
    again = build_mini(tmp_path / "again", size=32, seed=0, profile="smoke")
    a, b = _files(smoke), _files(again)
    assert a.keys() == b.keys() and a == b
    assert {"manifest.csv", "samples.png", MARKER} <= set(a)
    other = _files(build_mini(tmp_path / "other", size=32, seed=1, profile="smoke"))
    assert other["brick/train/good/000.png"] != a["brick/train/good/000.png"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_smoke_counts_and_loader(smoke):
    spec = PROFILES["smoke"]
    ds = MVTecDataset(smoke)
    assert ds.classes == sorted(spec["classes"])
    for cls in ds.classes:
        assert len(ds.train(cls)) == spec["train"]
        test = ds.test(cls)
        assert len(test) == spec["test_good"] + spec["test_bad"]
        assert sum(s.label for s in test) == spec["test_bad"]
        im, m = load_sample(next(s for s in test if s.label), size=32)
        assert im.shape == (32, 32, 3)
        if cls.startswith("solar_"):
            assert not ds.has_pixel_masks(cls) and m is None
            assert not (smoke / cls / "ground_truth").exists()
        else:
            assert ds.has_pixel_masks(cls) and m.any()
        meta = json.loads((smoke / cls / "meta.json").read_text())
        assert meta["kind"] == class_kind(cls, smoke) and meta["licence"] and meta["source"]
    assert class_kind("coins", smoke) == "object" and class_kind("brick", smoke) == "texture"
    assert len(sample_shots(ds, None, 2, 0)["coins"]) == 2
    man = pd.read_csv(smoke / "manifest.csv", keep_default_na=False)
    assert len(man) == sum(len(ds.train(c)) + len(ds.test(c)) for c in ds.classes)
    assert all((smoke / f).is_file() for f in man["file"])
    assert all((smoke / f).is_file() for f in man["mask_file"] if f)


def test_masks_are_exactly_the_changed_pixels(smoke):
    man = pd.read_csv(smoke / "manifest.csv", keep_default_na=False)
    bad = man[(man.label == 1) & (man.mask_file != "")]
    assert len(bad) == 6  # brick and coins, 3 each
    for r in bad.itertuples():
        box = tuple(int(v) for v in r.crop_box.split(","))
        clean = clean_crop(r.cls, box, 32)
        if r.cls == "coins":  # a coin shown at a quarter turn
            clean = np.rot90(clean, int(float(r.rotation)) // 90)
        img, mask = _u8(smoke / r.file), _u8(smoke / r.mask_file) != 0
        assert img.shape == clean.shape and mask.shape == (32, 32)
        np.testing.assert_array_equal(mask, np.any(img != clean, axis=-1))
        diff = np.abs(img.astype(float) - clean.astype(float)) / 255.0
        np.testing.assert_array_equal(mask, np.any(diff > 1 / 255 + 1e-9, axis=-1))
        assert 0.005 <= mask.mean() <= 0.1
        assert diff[mask].max() > 0.15           # visible
        if r.cls == "coins":                     # defects only on the coin
            cid = int(r.source_item.split("_")[1])
            coin = np.rot90(coin_region(cid, box, 32, erode=False), int(float(r.rotation)) // 90)
            assert not (mask & ~coin).any()


def test_train_and_test_come_from_disjoint_sources(smoke):
    man = pd.read_csv(smoke / "manifest.csv", keep_default_na=False)
    tex = man[man.cls == "brick"]
    for r in tex.itertuples():
        y0, x0, y1, x1 = (int(v) for v in r.crop_box.split(","))
        assert (y1 <= 256) if r.split == "train" else (y0 >= 256)
    for cls in ("coins", "solar_mono"):
        c = man[man.cls == cls]
        train, test = set(c[c.split == "train"].source_item), set(c[c.split == "test"].source_item)
        assert train and test and not (train & test)
        views = list(zip(c[c.split == "test"].source_item, c[c.split == "test"].rotation))
        assert len(set(views)) == len(views)  # no test image twice (coins: another coin or turn)
    solar = man[man.cls == "solar_mono"]
    assert solar[solar.split == "test"].source_item.is_unique  # every cell a different cell
    assert set(solar[solar.label == 0].probability.astype(float)) == {0.0}
    assert all(p >= 2 / 3 - 1e-3 for p in solar[solar.label == 1].probability.astype(float))


@pytest.mark.parametrize("defect", ["scratch", "stain", "hole", "crack", "foreign"])
def test_make_defect_exact_mask_and_area(defect):
    rng = np.random.default_rng(5)
    clean = clean_crop("gravel", (256, 0, 416, 160), 64)
    donor = ("grass", clean_crop("grass", (0, 0, 160, 160), 64))
    out, mask, _ = make_defect(clean, defect, rng, donor=donor)
    assert out.dtype == np.uint8 and mask.dtype == bool
    np.testing.assert_array_equal(mask, np.any(out != clean, axis=-1))
    assert AREA_RANGE[0] <= mask.mean() <= AREA_RANGE[1]
    allowed = np.zeros((64, 64), bool)
    allowed[16:48, 16:48] = True
    out, mask, _ = make_defect(clean, defect, np.random.default_rng(1), allowed=allowed, donor=donor)
    assert mask.any() and not (mask & ~allowed).any()


def test_quantise_defect_reverts_sub_tolerance_changes():
    clean = np.full((4, 4, 3), 100, np.uint8)
    f = clean / 255.0
    f[0, 0, 0] += 1 / 255   # one level: reverted
    f[1, 1, 1] += 5 / 255   # five levels: kept, and masked
    out, mask = quantise_defect(clean, f)
    assert mask.sum() == 1 and mask[1, 1] and out[0, 0, 0] == 100 and out[1, 1, 1] == 105


def test_a_mistyped_data_root_is_not_built(tmp_path):
    """Away from the profile's default locations a missing data_root fails, naming the path, and
    nothing is created there."""
    from anomalysd_core.data.mini import default_roots

    typo = tmp_path / "dta" / "mini"
    with pytest.raises(DataError, match=rf"data_root '{typo}' does not exist.*data build-mini"):
        ensure_mini(get_config("mini", data_root=str(typo)))
    assert not typo.exists() and not typo.parent.exists()
    root, val = default_roots("mini")
    assert root.name == "mini" and val == root.with_name("mini-val") and root.is_absolute()


def test_ensure_mini_builds_once_and_rebuilds_half_built(tmp_path):
    cfg = get_config("smoke", data_root=str(tmp_path / "smoke_data"))
    root = ensure_mini(cfg, build=True)
    assert root == tmp_path / "smoke_data" and (root / MARKER).is_file()
    stamp = (root / MARKER).stat().st_mtime_ns
    assert ensure_mini(cfg) == root and (root / MARKER).stat().st_mtime_ns == stamp
    (root / MARKER).unlink()                       # looks half-built: rebuilt
    (root / "brick" / "train" / "good" / "000.png").unlink()
    ensure_mini(cfg)
    assert (root / MARKER).is_file() and (root / "brick" / "train" / "good" / "000.png").is_file()
    foreign = tmp_path / "real"
    (foreign / "bottle").mkdir(parents=True)
    cfg2 = get_config("smoke", data_root=str(foreign))
    assert ensure_mini(cfg2) == foreign and not (foreign / MARKER).exists()
    with pytest.raises(DataError, match="not a mini build"):
        build_mini(foreign, size=32, profile="smoke")
    with pytest.raises(DataError, match="does not exist"):
        ensure_mini(get_config("paper", data_root=str(tmp_path / "nothing")))
    with pytest.raises(DataError, match="'huge'"):
        build_mini(tmp_path / "x", profile="huge")


def test_mini_profile_counts_at_small_size(tmp_path):
    root = build_mini(tmp_path / "mini", size=32, seed=0, profile="mini")
    ds = MVTecDataset(root)
    assert ds.classes == sorted(PROFILES["mini"]["classes"])
    for cls in ds.classes:
        assert len(ds.train(cls)) == (12 if cls == "coins" else 16)  # coins: half of its 24 coins
        assert len(ds.test(cls)) == 48 and sum(s.label for s in ds.test(cls)) == 24
        assert ds.has_pixel_masks(cls) == (not cls.startswith("solar_"))
    defects = {s.defect for s in ds.test("grass") if s.label}
    assert defects == {"scratch", "stain", "hole", "crack", "foreign"}
    assert {s.defect for s in ds.test("coins") if s.label} == {"scratch", "stain", "hole"}


def test_validation_build_shares_no_test_pixels(smoke, tmp_path):
    """The validation split (settings are chosen on it) never uses a test image's source: texture
    crops from the top half only, no test coin, no cell of the test build; its coins are the test
    build's training coins, half of them shots and the other half test coins."""
    from anomalysd_core.data.mini import VAL_SEED
    from anomalysd_core.data.sources import MINI_SEED

    val = ensure_mini(get_config("smoke", data_root=str(tmp_path / "smoke-val"), image_size=32), build=True)
    info = json.loads((val / MARKER).read_text())
    assert info["split"] == "val" and info["seed"] == VAL_SEED and info["profile"] == "smoke"
    assert json.loads((smoke / MARKER).read_text())["split"] == "test"
    t, v = (pd.read_csv(r / "manifest.csv") for r in (smoke, val))
    vb = v[(v.cls == "brick") & (v.split == "test")]
    assert len(vb) == 6 and all(int(b.split(",")[2]) <= 256 for b in vb.crop_box)  # y1 within rows 0-255
    tb = t[(t.cls == "brick") & (t.split == "test")]
    assert all(int(b.split(",")[0]) >= 256 for b in tb.crop_box)
    coins_test = set(t[(t.cls == "coins") & (t.split == "test")].source_item)
    assert not coins_test & set(v[v.cls == "coins"].source_item)
    train_coins = set(t[(t.cls == "coins") & (t.split == "train")].source_item)
    val_shots = set(v[(v.cls == "coins") & (v.split == "train")].source_item)
    val_test = set(v[(v.cls == "coins") & (v.split == "test")].source_item)
    assert val_shots and val_test and val_shots | val_test <= train_coins and not val_shots & val_test
    assert not set(t[t.cls == "solar_mono"].source_item) & set(v[v.cls == "solar_mono"].source_item)
    ds = MVTecDataset(val)
    assert len(ds.test("coins")) == 6 and sum(s.label for s in ds.test("coins")) == 3
    assert ensure_mini(get_config("smoke", data_root=str(val), image_size=32)) == val  # reused
    with pytest.raises(DataError, match="'holdout'"):
        build_mini(tmp_path / "x", size=32, profile="smoke", split="holdout")
    assert MINI_SEED != VAL_SEED


def test_a_larger_validation_build_keeps_its_shots_and_avoids_the_test_build(smoke, tmp_path):
    from anomalysd_core.data.mini import VAL_SEED

    one = build_mini(tmp_path / "one-val", size=32, seed=VAL_SEED, profile="smoke", split="val")
    big = build_mini(tmp_path / "big-val", size=32, seed=VAL_SEED, profile="smoke", split="val", val_scale=3)
    assert json.loads((big / MARKER).read_text())["val_scale"] == 3
    t, o, v = (pd.read_csv(r / "manifest.csv") for r in (smoke, one, big))
    n = lambda m, cls, lab: len(m[(m.cls == cls) & (m.split == "test") & (m.label == lab)])  # noqa: E731
    assert (n(v, "brick", 0), n(v, "brick", 1)) == (3 * n(o, "brick", 0), 3 * n(o, "brick", 1))
    assert n(v, "solar_mono", 1) == 3 * n(o, "solar_mono", 1)
    assert n(v, "coins", 1) == 3 * n(o, "coins", 1)
    spare = 24 - sum(n(t, "coins", lab) for lab in (0, 1)) - len(t[(t.cls == "coins") & (t.split == "train")])
    assert n(v, "coins", 0) == min(3 * n(o, "coins", 0), spare)  # normals only from the spare coins
    # the textures' shots are the same crops as in the plain validation build
    for f in o[(o.cls == "brick") & (o.split == "train")].file:
        assert (one / f).read_bytes() == (big / f).read_bytes()
    # still nothing of the test build
    assert not set(t[t.cls == "solar_mono"].source_item) & set(v[v.cls == "solar_mono"].source_item)
    assert not set(t[(t.cls == "coins") & (t.split == "test")].source_item) & set(v[v.cls == "coins"].source_item)
    assert all(int(b.split(",")[2]) <= 256 for b in v[(v.cls == "brick") & (v.split == "test")].crop_box)
    with pytest.raises(DataError, match="val_scale"):
        build_mini(tmp_path / "x", size=32, profile="smoke", split="test", val_scale=2)


def test_a_holdout_validation_build_keeps_texture_shots_and_test_crops_apart(smoke, tmp_path):
    from anomalysd_core.data.mini import VAL_SEED

    plain = build_mini(tmp_path / "plain-val", size=32, seed=VAL_SEED, profile="smoke", split="val")
    held = build_mini(tmp_path / "held-val", size=32, seed=VAL_SEED, profile="smoke", split="val", holdout=True)
    assert json.loads((held / MARKER).read_text())["holdout"] is True
    m, p = pd.read_csv(held / "manifest.csv"), pd.read_csv(plain / "manifest.csv")
    boxes = lambda df, split: [tuple(map(int, b.split(","))) for b in df[(df.cls == "brick") & (df.split == split)].crop_box]  # noqa: E731
    train, test = boxes(m, "train"), boxes(m, "test")
    assert train and test
    assert all(b[2] <= 256 and b[3] <= 256 for b in train)  # top left
    assert all(b[2] <= 256 and b[1] >= 256 for b in test)  # top right: no pixel of any shot
    assert "columns 256-511" in json.loads((held / "brick" / "meta.json").read_text())["train_test_split"]
    # the other classes are the plain validation build's
    for f in p[p.cls == "coins"].file:
        assert (plain / f).read_bytes() == (held / f).read_bytes()
    with pytest.raises(DataError, match="holdout"):
        build_mini(tmp_path / "x", size=32, profile="smoke", split="test", holdout=True)
