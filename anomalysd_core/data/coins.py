"""The object class of the mini benchmark (coins): one crop centred on each coin of
``skimage.data.coins()``, shots and test images from different coins, defects on the coin only.

The source has 24 coins, so the build can hold at most 24 images of this class.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image

from .datasets import DataError
from .defects import OBJECT_DEFECTS, defect_plan, make_defect, save_defective
from .sources import MINI_SEED, class_rng, clean_crop, save_png

COIN_CROP = 80           # source pixels per coin crop (coins are 40-65 px wide)


@functools.lru_cache(maxsize=None)
def find_coins() -> tuple[tuple[np.ndarray, tuple[float, float]], ...]:
    """Per coin: (full-image bool mask, centroid), sorted top-to-bottom then left-to-right.

    Otsu on the smoothed image separates most coins; the dimmer top row merges with the brighter
    background there, so a second pass thresholds the image minus a large grey opening (background
    estimate) and adds the coins the first pass missed. Masks are the regions' convex hulls.
    """
    import skimage.data
    from scipy import ndimage as ndi
    from skimage import filters, measure, morphology

    img = skimage.data.coins().astype(np.float64) / 255.0
    sm = filters.gaussian(img, 1.0)

    def segment(x):
        b = x > filters.threshold_otsu(x)
        b = ndi.binary_fill_holes(ndi.binary_opening(b, structure=morphology.disk(2)))
        return measure.label(b)

    masks: list[np.ndarray] = []
    for r in measure.regionprops(segment(sm)):
        if 800 <= r.area <= 4000 and r.solidity >= 0.95:
            m = np.zeros(img.shape, bool)
            m[r.slice] = r.image_convex
            masks.append(m)
    background = filters.gaussian(ndi.grey_opening(sm, size=(41, 41)), 5)
    for r in measure.regionprops(segment(sm - background)):
        if r.area < 500:
            continue
        m = np.zeros(img.shape, bool)
        m[r.slice] = r.image_convex
        if not any((m & o).any() for o in masks):
            masks.append(m)
    coins = []
    for m in masks:
        ys, xs = np.nonzero(m)
        coins.append((m, (float(ys.mean()), float(xs.mean()))))
    # reading order: split into rows of coins where the sorted centre heights jump by > 30 px
    coins.sort(key=lambda c: c[1][0])
    band, bands, last = 0, [], None
    for _, (cy, _cx) in coins:
        if last is not None and cy - last > 30:
            band += 1
        bands.append(band)
        last = cy
    order = sorted(range(len(coins)), key=lambda i: (bands[i], coins[i][1][1]))
    return tuple(coins[i] for i in order)


def coin_box(centroid, shape) -> tuple[int, int, int, int]:
    h, w = shape
    y0 = int(round(centroid[0] - COIN_CROP / 2))
    x0 = int(round(centroid[1] - COIN_CROP / 2))
    y0 = min(max(y0, 0), h - COIN_CROP)
    x0 = min(max(x0, 0), w - COIN_CROP)
    return (y0, x0, y0 + COIN_CROP, x0 + COIN_CROP)


def coin_region(coin_id: int, box, size: int, erode: bool = True) -> np.ndarray:
    """Bool mask of coin ``coin_id`` inside crop ``box`` at ``size``; eroded by ``size // 40``
    pixels when ``erode`` (the region where coin defects may be painted)."""
    from scipy import ndimage as ndi

    y0, x0, y1, x1 = box
    m = find_coins()[coin_id][0][y0:y1, x0:x1]
    m = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)) > 0
    if erode:
        m = ndi.binary_erosion(m, iterations=max(1, size // 40))
    return m


def coin_ids(rng, n_coins: int, counts) -> dict:
    """Coin ids of the train, normal-test and defective-test images (one coin per image)."""
    need = counts["train"] + counts["test_good"] + counts["test_bad"]
    if n_coins < need:
        raise DataError(f"coins: found {n_coins} coins, need {need} (one per image)")
    order = [int(i) for i in rng.permutation(n_coins)]
    return {"train": order[:counts["train"]],
            "good": order[counts["train"]:counts["train"] + counts["test_good"]],
            "bad": order[counts["train"] + counts["test_good"]:need]}


def val_coin_ids(rng, n_coins: int, counts, test_ids: dict) -> dict:
    """The validation build's coins: the test build's training coins (the shots), and test images
    only from the coins the test build leaves unused: normal ones first, then defects painted on
    the rest of them (on the same ones when too few are left). No test image shows a shot's coin,
    as in the test build."""
    spare = [i for i in range(n_coins) if i not in test_ids["good"] + test_ids["bad"] + test_ids["train"]]
    if not spare:
        raise DataError("coins: no coin is left over for the validation build")
    good = spare[:counts["test_good"]]
    rest = spare[len(good):] or spare
    n = counts["test_bad"]
    bad = [rest[int(i)] for i in rng.choice(len(rest), size=n, replace=len(rest) < n)]
    return {"train": list(test_ids["train"]), "good": good, "bad": bad}


def build_coins(cls, root: Path, size, seed, counts, rng, split="test", base=None):
    coins = find_coins()
    if split == "val":  # ``base``: the counts of the test build whose coins are avoided
        test_ids = coin_ids(class_rng(MINI_SEED, cls), len(coins), base or counts)
        ids = val_coin_ids(rng, len(coins), counts, test_ids)
    else:
        ids = coin_ids(rng, len(coins), counts)
    shape = coins[0][0].shape
    rows = []

    def row(split, label, defect, file, cid, b, mask_file="", area=0.0, detail=""):
        return dict(cls=cls, kind="object", split=split, label=label, defect=defect, file=file,
                    mask_file=mask_file, source="skimage.data.coins()", source_item=f"coin_{cid:02d}",
                    region=f"centred on coin {cid}", crop_box=",".join(map(str, b)), size=size,
                    seed=seed, defect_area=round(float(area), 5), detail=detail, probability="")

    for part, key, folder in (("train", "train", "train/good"), ("test", "good", "test/good")):
        for i, cid in enumerate(ids[key]):
            b = coin_box(coins[cid][1], shape)
            f = f"{cls}/{folder}/{i:03d}.png"
            save_png(root / f, clean_crop(cls, b, size))
            rows.append(row(part, 0, "good", f, cid, b))
    index: dict[str, int] = {}  # images written per defect type
    for defect, cid in zip(defect_plan(rng, OBJECT_DEFECTS, counts["test_bad"]), ids["bad"]):
        b = coin_box(coins[cid][1], shape)
        clean = clean_crop(cls, b, size)
        out, mask, detail = make_defect(clean, defect, rng, allowed=coin_region(cid, b, size))
        f, mf = save_defective(root, cls, defect, index, out, mask)
        rows.append(row("test", 1, defect, f, cid, b, mf, mask.mean(), detail))
    return rows
