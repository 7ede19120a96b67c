"""The object class of the mini benchmark (coins): crops centred on the coins of
``skimage.data.coins()``, shots and test images from different coins, defects on the coin only.

The source has only 24 coins, fewer than the other classes' images, and the build uses what it
has: in the test build, 12 coins are the training pool (enough for three disjoint 4-shot draws)
and the other 12 the test coins. Each test coin is shown four times, once at each quarter turn
(``np.rot90``): two of the turns as normal images and the other two with a defect, drawn per
coin, so that across the class every turn is as often normal as defective and the pose tells
nothing about the label. The 48 test images are therefore views of 12 coins, not 48 independent
objects; the build records that in ``meta.json`` (``mini.test_overlap``). Training coins are shown at a random
quarter turn as well.
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
    """Coin ids of the training pool and of the test images: half the coins (at most
    ``counts["train"]``) for training, the rest for testing; ``views`` (coin, turn) pairs for the
    normal and the defective test images (``test_views``)."""
    order = [int(i) for i in rng.permutation(n_coins)]
    n_train = min(counts["train"], n_coins // 2)
    if n_coins - n_train < 1:
        raise DataError(f"coins: found {n_coins} coins, too few for a training pool and a test set")
    return {"train": order[:n_train], **test_views(rng, order[n_train:], counts)}


def test_views(rng, coins: list[int], counts) -> dict:
    """(coin, quarter turns) of the normal (``good``) and defective (``bad``) test images: coin
    after coin, each coin's four turns in a random order, the first half of a coin's turns for
    normal images and the second half for defective ones, so that turns are balanced across the
    labels. With more images than ``4 * len(coins) / 2`` per label, the turns repeat."""
    turns = {c: [int(t) for t in rng.permutation(4)] for c in coins}
    n = len(coins)
    good = [(coins[i % n], turns[coins[i % n]][(i // n) % 2]) for i in range(counts["test_good"])]
    bad = [(coins[i % n], turns[coins[i % n]][2 + (i // n) % 2]) for i in range(counts["test_bad"])]
    return {"good": good, "bad": bad}


def val_coin_ids(rng, counts, test_ids: dict) -> dict:
    """The validation build's coins: only the test build's training coins, none of its test
    coins. Half of them (at most ``counts["train"]``) are the validation shots, the others its test
    coins, shown at quarter turns as in the test build."""
    pool = list(test_ids["train"])
    if len(pool) < 2:
        raise DataError("coins: too few training coins in the test build for a validation build")
    n_train = min(counts["train"], len(pool) // 2)
    return {"train": pool[:n_train], **test_views(rng, pool[n_train:], counts)}


def build_coins(cls, root: Path, size, seed, counts, rng, split="test", base=None):
    """The coin images of one build (``split`` "test" or "val"); returns their manifest rows."""
    coins = find_coins()
    if split == "val":  # ``base``: the counts of the test build whose test coins are avoided
        ids = val_coin_ids(rng, counts, coin_ids(class_rng(MINI_SEED, cls), len(coins), base or counts))
    else:
        ids = coin_ids(rng, len(coins), counts)
    shape = coins[0][0].shape
    rows = []

    def row(split, label, defect, file, cid, turn, b, mask_file="", area=0.0, detail=""):
        return dict(cls=cls, kind="object", split=split, label=label, defect=defect, file=file,
                    mask_file=mask_file, source="skimage.data.coins()", source_item=f"coin_{cid:02d}",
                    region=f"centred on coin {cid}", crop_box=",".join(map(str, b)), rotation=90 * turn,
                    size=size, seed=seed, defect_area=round(float(area), 5), detail=detail, probability="")

    def view(cid, turn):
        b = coin_box(coins[cid][1], shape)
        return b, np.ascontiguousarray(np.rot90(clean_crop(cls, b, size), turn)), \
            np.ascontiguousarray(np.rot90(coin_region(cid, b, size), turn))

    train = [(cid, int(rng.integers(4))) for cid in ids["train"]]
    for part, views, folder in (("train", train, "train/good"), ("test", ids["good"], "test/good")):
        for i, (cid, turn) in enumerate(views):
            b, img, _ = view(cid, turn)
            f = f"{cls}/{folder}/{i:03d}.png"
            save_png(root / f, img)
            rows.append(row(part, 0, "good", f, cid, turn, b))
    index: dict[str, int] = {}  # images written per defect type
    for defect, (cid, turn) in zip(defect_plan(rng, OBJECT_DEFECTS, counts["test_bad"]), ids["bad"]):
        b, clean, allowed = view(cid, turn)
        out, mask, detail = make_defect(clean, defect, rng, allowed=allowed)
        f, mf = save_defective(root, cls, defect, index, out, mask)
        rows.append(row("test", 1, defect, f, cid, turn, b, mf, mask.mean(), detail))
    return rows
