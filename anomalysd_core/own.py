"""Scoring your own images: a folder of normal photos, new images, one detector, a threshold.

``python -m anomalysd_core score NEW_IMAGES... --normals GOOD_DIR --name "metal plate"`` runs
``score_own``. No dataset layout is needed:

1. **Normals and new images.** Every image in ``GOOD_DIR`` (any file names), or the first
   ``shots`` of them in name order: the K shots of one class named ``name``. Photos are read as a
   viewer shows them (``datasets.load_photo``): turned upright by their EXIF orientation, 16-bit,
   palette and alpha images converted to 8-bit-range RGB, each conversion noted per image. An
   image under ``MIN_SIDE`` (32) px on a side is refused by name; a folder entry that is not an
   image the loader takes (a ``.gif``, a text file, a hidden file, a sub-folder) is listed in a
   warning and in ``results.json`` (``skipped``), or refused with ``strict``.
2. **Size** (``scoring_size``). The memory-bank methods score at ``size`` px, by default
   ``BANK_SIZE`` (256): small defects need the pixels. AnomalySD scores at its base model's
   training size (64 px on mini) unless ``size`` overrides it, with a warning. The size used and
   why is said in the log and in ``results.json``.
3. **Prompts.** The class is unknown to ``prompts.yaml``, so its prompt set is the coarse prompt
   built from the name plus the file's generic fine-grained set (``prompts.prompt_set``); the set
   used is written to ``prompts.yaml`` in the output folder.
4. **Fit.** ``method`` picks the detector: ``anomalysd`` (fine-tune on the normals, cached under
   ``runs/<profile>/own/`` by the normals' content and the settings, then the prototype bank),
   or ``patchcore``, ``spade``, ``padim``, ``protoknn`` (a memory bank of the normals' features).
5. **Threshold from the normals alone.** Each normal is left out in turn: the detector's bank is
   rebuilt from the other normals (AnomalySD: its prototype bank; the diffusion model stays the
   one fine-tuned on all of them), and the left-out normal is scored in ``views`` variants of
   its lighting (``autolambda.relit``: the fine-tune's brightness and contrast jitter). The threshold is the
   highest of these calibration scores: an image scores above every relit normal seen from the
   others, so "anomalous" means "less normal than any normal looked". The rule is conservative:
   a bank of K - 1 normals makes a normal look less normal than a bank of K does at test time.
   On the mini validation build of build version 3 (4 normals per class, 6 classes;
   ``benchmarks/own_threshold_validation.py``) it flagged 4-8 % of the normal test images and
   23-48 % of the anomalous ones (PatchCore 23 %, PaDiM 44 %, prototype kNN 48 %); adding flips and
   quarter turns raised the threshold (0-2 % and 15-46 %). With one normal there is no other to
   build a bank from, and its views are scored against its own bank, which gives a lower,
   optimistic threshold (said in ``results.json``).
6. **Outputs.** Per image: the score, the threshold, the decision, the scoring size and the
   seconds the scoring took, the conversion notes; ``<stem>_map.png`` (the anomaly map at the
   input's upright resolution, 8-bit, the threshold at grey level 128) and ``<stem>_overlay.png``;
   for all images ``results.csv`` and ``results.json``. Everything is written into a temporary
   folder first and moved into place at the end: a failed run leaves nothing half-written.

Bad input stops before any work, with the file or value named: no new images, an unreadable or
too small file, fewer normals than ``shots``, a new image identical to a normal, a bad size.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .data.datasets import IMAGE_EXTENSIONS, DataError, load_photo

METHODS = ("anomalysd", "patchcore", "spade", "padim", "protoknn")
#: the memory-bank methods' scoring size when ``--size`` is not given (px; see ``scoring_size``)
BANK_SIZE = 256
#: the smallest side an image may have: the backbones' coarsest feature map is 1/32 of the input
MIN_SIDE = 32


def image_files(paths, strict: bool = False) -> tuple[list[Path], list[dict]]:
    """The image files of ``paths`` (files, or folders: their images in name order) and the
    entries of those folders that are passed over, each ``{"file", "reason"}`` (another file type,
    a hidden file, a sub-folder). With ``strict`` a folder entry that would be passed over is an
    error instead. A file named on its own must be an image type the loader takes."""
    files, skipped = [], []
    takes = ", ".join(IMAGE_EXTENSIONS)
    for p in map(Path, paths):
        if p.is_dir():
            found = []
            for q in sorted(p.iterdir()):
                if q.is_dir():
                    skipped.append({"file": str(q), "reason": "a folder (folders are not searched)"})
                elif q.name.startswith("."):
                    skipped.append({"file": str(q), "reason": "a hidden file"})
                elif q.suffix.lower() not in IMAGE_EXTENSIONS:
                    skipped.append({"file": str(q), "reason": f"not an image type the loader takes ({takes})"})
                else:
                    found.append(q)
            if not found:
                raise DataError(f"folder {str(p)!r} holds no images ({takes})")
            files += found
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_EXTENSIONS:
                raise DataError(f"{str(p)!r} is not an image type the loader takes ({takes})")
            files.append(p)
        else:
            raise DataError(f"no such file or folder: {str(p)!r}")
    if strict and skipped:
        raise DataError("--strict: these files are not images the loader takes: "
                        + "; ".join(f"{d['file']} ({d['reason']})" for d in skipped))
    if not files:
        raise DataError("no images to score were given")
    return files, skipped


def skipped_warning(skipped: list[dict]) -> str:
    """One message listing the passed-over files (empty when there are none)."""
    if not skipped:
        return ""
    return (f"warning: {len(skipped)} file(s) in the folders were not scored (--strict refuses them): "
            + "; ".join(f"{Path(d['file']).name}: {d['reason']}" for d in skipped))


def scoring_size(cfg, method: str, size: int | None = None) -> tuple[int, str]:
    """The size (px) that ``method`` scores at, and a sentence saying why.

    AnomalySD scores at ``cfg.image_size``, the size its base model was trained at (64 px on mini,
    512 on paper), unless ``size`` asks for another, which is allowed with a warning. The
    memory-bank methods compare backbone features and work at any size: they score at ``size``,
    else at ``BANK_SIZE`` (256 px). Small defects need the pixels: on three real sets of
    industrial photos, 256 px raised the prototype kNN map's PRO from 0.64 to 0.84 and from 0.28
    to 0.63 over 64 px; the validation build (``benchmarks/own_size_validation.py``, the README's
    table) is where the default was checked. Maps always come back at the input's resolution.

    Examples
    --------
    >>> from anomalysd_core.config import get_config
    >>> scoring_size(get_config("mini"), "protoknn")[0], scoring_size(get_config("mini"), "anomalysd")[0]
    (256, 64)
    """
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or not MIN_SIDE <= size <= 2048):
        raise DataError(f"--size must be a whole number of pixels from {MIN_SIDE} to 2048, got {size!r}")
    train = int(cfg.image_size)
    if method == "anomalysd":
        if size is None or size == train:
            return train, (f"AnomalySD scores at {train} px, the size its base model was trained at "
                           "(--size N overrides it).")
        return size, (f"AnomalySD scores at {size} px as asked (--size), but its base model was trained at "
                      f"{train} px: expect poorer inpaintings and maps at another size.")
    if size is None:
        return BANK_SIZE, (f"{method} scores at {BANK_SIZE} px, the memory-bank methods' default "
                           "(--size N to change it).")
    return size, f"{method} scores at {size} px (--size)."


def class_id(name: str) -> str:
    """``"metal plate"`` -> ``"metal_plate"`` (the id the prompts and caches use)."""
    cid = re.sub(r"[^0-9a-zA-Z]+", "_", name.strip()).strip("_").lower()
    if not cid:
        raise DataError(f"--name {name!r} has no letters or digits")
    return cid


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_inputs(files: list[Path], normals: list[Path], shots: int | None, size: int):
    """Load and check everything before any work: (new images, normal images, normal files used,
    their content digests, per new image its notes and upright (width, height)).

    Photos are read upright (EXIF orientation) and converted to RGB (``load_photo``), each
    conversion noted. Raises :class:`DataError` naming the file or value: an unreadable image, one
    smaller than ``MIN_SIDE`` px on a side, fewer normals than ``shots``, a new image that is
    byte-identical (or pixel-identical after resizing) to a normal.
    """
    if shots is not None and shots < 1:
        raise DataError(f"--shots must be at least 1, got {shots}")
    if shots is not None and shots > len(normals):
        raise DataError(f"--shots {shots}: the normals folder holds only {len(normals)} image(s)")
    used = normals[:shots] if shots else normals

    def read(p):
        arr, notes, wh = load_photo(p, size)  # DataError names an unreadable file
        if min(wh) < MIN_SIDE:
            raise DataError(f"image {str(p)!r} is {wh[0]} x {wh[1]} pixels: too small to score "
                            f"(at least {MIN_SIDE} x {MIN_SIDE})")
        return arr, notes, wh

    normal_imgs = [read(p)[0] for p in used]
    new = [read(p) for p in files]
    digests = {_digest(p): p for p in used}
    for p, (img, _, _) in zip(files, new):
        same = digests.get(_digest(p)) or next((q for q, n in zip(used, normal_imgs) if np.array_equal(img, n)), None)
        if same is not None:
            raise DataError(f"new image {str(p)!r} is the same image as the normal {str(same)!r}: "
                            "a normal cannot be scored against itself")
    return [a for a, _, _ in new], normal_imgs, used, list(digests), [(n, wh) for _, n, wh in new]


def _to_tensor(imgs) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.asarray(i, np.float32)).permute(2, 0, 1) for i in imgs])


class OwnDetector:
    """One detector of ``METHODS`` fitted on a list of normal images, with ``refit(normals)`` for
    the leave-one-out calibration and ``score(img) -> (score, map)``."""

    def __init__(self, cfg, method: str, cls: str, kind: str, normals: list, run_dir: Path, progress=True):
        if method not in METHODS:
            raise ValueError(f"--method {method!r} is not one of {list(METHODS)}")
        from .method.features import frozen_models

        self.cfg, self.method, self.cls, self.kind = cfg, method, cls, kind
        backbone, distance = frozen_models(cfg)
        self.info = {}
        if method == "anomalysd":
            from .method.finetune import finetune
            from .method.models import load_components
            from .method.scoring import AnomalySD
            from .utils import resolve_device

            device = resolve_device(cfg.device)
            comp = load_components(cfg, device)
            if cfg.finetune_unet or cfg.finetune_decoder:
                self.info = finetune(cfg, comp, {cls: list(normals)}, {cls: kind}, run_dir, distance=distance,
                                     progress=progress)
                if self.info["reused"] or self.info["adopted"]:
                    comp = load_components(cfg, device, unet_path=self.info.get("unet"),
                                           vae_path=self.info.get("vae"))
            self.det = AnomalySD(cfg, comp, backbone, distance)
        else:
            from .method.baselines import build_baseline

            self.det = None
            self._build = lambda: build_baseline(method, backbone)
        self.refit(normals)

    def refit(self, normals: list) -> None:
        """Rebuild the memory bank (AnomalySD: the prototype bank) from ``normals``."""
        if self.det is not None:
            self.det.set_shots({self.cls: list(normals)})
        else:
            self.model = self._build().fit(_to_tensor(normals))

    def score(self, img) -> tuple[float, np.ndarray]:
        if self.det is not None:
            sm = self.det.score(img, self.cls, seed=self.cfg.seed)
            return float(sm.score), np.asarray(sm.S_map, np.float32)
        s, m = self.model.predict(_to_tensor([img]))
        return float(s[0]), m[0].cpu().numpy().astype(np.float32)


def calibrate(detector: OwnDetector, normals: list, views: int = 4, seed: int = 0, progress=True) -> dict:
    """The threshold of the module docstring (step 4): {"threshold", "scores", "rule"}."""
    from .method.autolambda import relit

    rng = np.random.default_rng(seed)
    scores = []
    loo = len(normals) > 1
    for i in tqdm(range(len(normals)), desc="calibrate", disable=not progress):
        if loo:
            detector.refit(normals[:i] + normals[i + 1:])
        for _ in range(views):
            scores.append(detector.score(relit(normals[i], rng))[0])
    detector.refit(normals)
    rule = ("highest score of the normals, each relit and scored against a bank of the others" if loo else
            "highest score of the single normal, relit, against its own bank (optimistic: use more normals)")
    return {"threshold": float(max(scores)), "scores": [float(s) for s in scores], "rule": rule,
            "views_per_normal": views, "leave_one_out": loo}


def _map_png(m: np.ndarray, threshold: float, size: tuple[int, int]) -> Image.Image:
    """The anomaly map at ``size`` (W, H), 8-bit, with the threshold at grey 128."""
    t = torch.from_numpy(m)[None, None]
    up = F.interpolate(t, size=(size[1], size[0]), mode="bilinear", align_corners=False)[0, 0].numpy()
    return Image.fromarray(np.clip(up / (2 * max(threshold, 1e-12)) * 255, 0, 255).astype(np.uint8))


def _overlay(path: Path, grey: Image.Image) -> Image.Image:
    """The photo (upright, at its own size) under the map ``grey`` in a jet colour map."""
    import matplotlib

    rgb = load_photo(path)[0]
    heat = matplotlib.colormaps["jet"](np.asarray(grey, np.float32) / 255)[..., :3]
    a = 0.45 * (np.asarray(grey, np.float32) / 255)[..., None] + 0.15
    return Image.fromarray((np.clip(rgb * (1 - a) + heat * a, 0, 1) * 255).astype(np.uint8))


def score_own(cfg, files, normals_dir, name: str, out, method: str = "anomalysd", shots: int | None = None,
              kind: str = "texture", views: int = 4, progress: bool = True, size: int | None = None,
              strict: bool = False, log=print) -> pd.DataFrame:
    """Score ``files`` against the normals of ``normals_dir`` (module docstring); returns the table
    written to ``out/results.csv``. ``size`` is the scoring size (``scoring_size``); ``strict``
    refuses folder entries that are not images instead of listing them; ``log`` receives the
    messages a user should read (the scoring size, the files passed over)."""
    from .method.finetune import FINETUNE_KEYS
    from .method.prompts import prompt_set

    if method not in METHODS:
        raise DataError(f"--method {method!r} is not one of {list(METHODS)}")
    if kind not in ("texture", "object"):
        raise DataError(f"--kind {kind!r} is not 'texture' or 'object'")
    if views < 1:
        raise DataError(f"--views must be at least 1, got {views}")
    size, size_note = scoring_size(cfg, method, size)
    files, skipped = image_files(files, strict)
    normals_dir = Path(normals_dir)
    if not normals_dir.is_dir():
        raise DataError(f"--normals {str(normals_dir)!r} is not a folder")
    normal_files, skipped_normals = image_files([normals_dir], strict)
    skipped += skipped_normals
    cls = class_id(name)
    new_imgs, normal_imgs, used, digests, info = check_inputs(files, normal_files, shots, size)
    log(size_note)
    if skipped:
        log(skipped_warning(skipped))
    for p, (notes, _) in zip(files, info):
        if notes:
            log(f"note: {p.name}: {'; '.join(notes)}")
    cfg = dataclasses.replace(cfg, shots=len(used), classes=[cls], data_root=str(normals_dir.resolve()),
                              image_size=size)
    # the fine-tune is keyed by the normals' content and the settings that shape it
    key = hashlib.sha256("".join(digests).encode() + cls.encode() + kind.encode()
                         + cfg.hash([k for k in FINETUNE_KEYS if k not in ("data_root", "classes", "dataset", "shots")]
                                    ).encode()).hexdigest()[:12]
    run_dir = Path(cfg.out_dir) / cfg.profile / "own" / f"fit-{key}"
    det = OwnDetector(cfg, method, cls, kind, normal_imgs, run_dir, progress)
    cal = calibrate(det, normal_imgs, views, cfg.seed, progress)
    out = Path(out)
    tmp = out.parent / f".{out.name}.tmp-{key}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        rows = []
        for p, img, (notes, wh) in tqdm(list(zip(files, new_imgs, info)), desc=f"score ({method})",
                                        disable=not progress):
            t0 = time.perf_counter()
            s, m = det.score(img)
            seconds = time.perf_counter() - t0
            grey = _map_png(m, cal["threshold"], wh)
            grey.save(tmp / f"{p.stem}_map.png")
            _overlay(p, grey).save(tmp / f"{p.stem}_overlay.png")
            rows.append({"file": str(p), "score": s, "threshold": cal["threshold"],
                         "decision": "anomalous" if s > cal["threshold"] else "normal", "method": method,
                         "size": size, "seconds": seconds, "map": f"{p.stem}_map.png",
                         "overlay": f"{p.stem}_overlay.png", "notes": "; ".join(notes)})
        df = pd.DataFrame(rows)
        df.to_csv(tmp / "results.csv", index=False)
        (tmp / "results.json").write_text(json.dumps({
            "name": name, "class_id": cls, "kind": kind, "method": method, "normals": [str(p) for p in used],
            "size": size, "size_note": size_note, "skipped": skipped,
            "prompts": prompt_set(cls, cfg.prompt_design) if method == "anomalysd" else None,
            "calibration": cal, "images": rows, "fit": str(run_dir) if method == "anomalysd" else None,
            "config": cfg.to_dict()}, indent=2, default=str))
        if method == "anomalysd":
            import yaml

            (tmp / "prompts.yaml").write_text(yaml.safe_dump(
                {"class": cls, "name": name, "kind": kind, "prompts": prompt_set(cls, cfg.prompt_design)},
                sort_keys=False))
        out.mkdir(parents=True, exist_ok=True)
        for f in sorted(tmp.iterdir()):
            f.replace(out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return df
