"""The texture classes of the mini benchmark (brick, grass, gravel): crops of scikit-image's
512 x 512 textures, the shots and the test crops from disjoint regions of the source.
"""
from __future__ import annotations

from pathlib import Path


from .defects import TEXTURE_DEFECTS, defect_plan, make_defect, save_defective
from .sources import TEXTURES, clean_crop, save_png

TEXTURE_CROP = 160       # source pixels per texture crop (of 512)


def build_texture(cls, root: Path, size, seed, counts, rng, split="test", holdout=False):
    """Texture crops. The test build's shots come from rows 0-255 and its test crops from rows
    256-511. The validation build never reads rows 256-511: its crops all come from rows 0-255,
    where test crops may overlap the shots, or, with ``holdout``, its shots come from columns
    0-255 and its test crops from columns 256-511, disjoint regions as in the test build."""
    rows = []
    span = 256 - TEXTURE_CROP
    test_top = 0 if split == "val" else 256  # the validation build never reads the bottom half

    def box(region):
        y0 = int(rng.integers(0, span + 1)) + (0 if region == "train" else test_top)
        if holdout:  # split == "val": left and right quarters of the top half
            x0 = int(rng.integers(0, span + 1)) + (0 if region == "train" else 256)
        else:
            x0 = int(rng.integers(0, 512 - TEXTURE_CROP + 1))
        return (y0, x0, y0 + TEXTURE_CROP, x0 + TEXTURE_CROP)

    if holdout:
        regions = {"train": "top left (rows 0-255, columns 0-255)",
                   "test": "top right (rows 0-255, columns 256-511)"}
    else:
        regions = {"train": "top half (rows 0-255)",
                   "test": "top half (rows 0-255)" if split == "val" else "bottom half (rows 256-511)"}

    def row(split, label, defect, file, b, mask_file="", area=0.0, detail=""):
        return dict(cls=cls, kind="texture", split=split, label=label, defect=defect, file=file,
                    mask_file=mask_file, source=f"skimage.data.{cls}()", source_item="",
                    region=regions[split], crop_box=",".join(map(str, b)), size=size, seed=seed,
                    defect_area=round(float(area), 5), detail=detail, probability="")

    for i in range(counts["train"]):
        b = box("train")
        f = f"{cls}/train/good/{i:03d}.png"
        save_png(root / f, clean_crop(cls, b, size))
        rows.append(row("train", 0, "good", f, b))
    for i in range(counts["test_good"]):
        b = box("test")
        f = f"{cls}/test/good/{i:03d}.png"
        save_png(root / f, clean_crop(cls, b, size))
        rows.append(row("test", 0, "good", f, b))
    index: dict[str, int] = {}  # images written per defect type
    for defect in defect_plan(rng, TEXTURE_DEFECTS, counts["test_bad"]):
        b = box("test")
        clean = clean_crop(cls, b, size)
        donor = None
        if defect == "foreign":
            others = [t for t in TEXTURES if t != cls]
            dname = others[int(rng.integers(len(others)))]
            y0, x0 = (int(v) for v in rng.integers(0, 512 - TEXTURE_CROP + 1, size=2))
            donor = (dname, clean_crop(dname, (y0, x0, y0 + TEXTURE_CROP, x0 + TEXTURE_CROP), size))
        out, mask, detail = make_defect(clean, defect, rng, donor=donor)
        f, mf = save_defective(root, cls, defect, index, out, mask)
        rows.append(row("test", 1, defect, f, b, mf, mask.mean(), detail))
    return rows
