"""End-to-end runs: ``fit`` (shots, fine-tune, prototype banks) and ``evaluate`` (scores, metrics).

``fit`` draws the K-shot normals of every class with a seed, fine-tunes one model on all of them
(``finetune.py``; reused when its configuration hash matches) and builds the prototype banks.
``evaluate`` scores every test image, caches its expensive intermediates (inpainting distance
maps, prototype mask and error map) keyed by the fine-tune and inference settings, fuses every
requested Table-5 variant from the same cache, adds the "prototype map alone" kNN baseline (the
error map of eq 14 on the same features, upsampled and blurred: PatchCore-style) and writes
per-class metrics, per-image scores and provenance atomically.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from filelock import FileLock
from tqdm.auto import tqdm

from ..data import datasets as data_mod
from ..method.baselines import BLUR_SIGMA_512
from ..method.finetune import FINETUNE_KEYS, finetune
from ..method.inpaint import EncodeCache
from ..method.metrics import image_metrics, pixel_metrics
from ..method.scoring import AnomalySD, Intermediates, blur
from ..utils import Timer, provenance, resolve_device, seed_everything, write_csv_atomic, write_json_atomic

INFER_KEYS = ["num_inference_steps", "noise_strength", "noise_strength_per_class", "grid_scales",
              "prompt_design", "distance", "backbone", "image_size", "dtype", "autocast", "proto_floor"]
# lambda is a per-class folder level of the caches (``lambda-<value>``), not part of their hash:
# a class scored at lambda 0.4 is the same work whether 0.4 was set, set for that class or chosen
# by noise_strength="auto"
_LAMBDA_KEYS = ("noise_strength", "noise_strength_per_class")
# the grid latents (eq 11 before the decoder): the inference settings but the distance, the
# backbone and M^(p)'s floor (they only read the decoded images or choose the extra mask), and
# what the base model's U-Net sees (the U-Net itself is keyed by ``unet_id``)
LATENT_KEYS = [k for k in INFER_KEYS if k not in ("distance", "backbone", "proto_floor")] + [
    "dataset", "data_root", "base_model", "text_encoder", "seed"]
# what the choice of noise_strength="auto" depends on besides the model (autolambda.py)
AUTO_KEYS = [k for k in INFER_KEYS if k not in _LAMBDA_KEYS] + [
    "seed", "mask_variant", "alpha", "blur_sigma_512", "image_score_top", "auto_lambdas", "auto_views"]
METRIC_COLUMNS = ["i_auroc", "i_aupr", "i_f1max", "p_auroc", "p_pro", "p_f1max"]


@dataclass
class Fitted:
    cfg: object
    dataset: object
    classes: list
    shots: dict                      # class -> [Sample]
    detector: AnomalySD
    run_dir: Path
    fit_hash: str
    timer: Timer = field(default_factory=Timer)
    finetune_info: dict = field(default_factory=dict)
    skipped_baselines: dict = field(default_factory=dict)  # name -> why it could not run here
    counts: dict = field(default_factory=dict)  # "latents_reused": images scored from stored latents

    @property
    def shot_files(self) -> dict:
        return data_mod.shots_manifest(self.shots)

    def strength(self, cls: str) -> float:
        """Lambda of ``cls`` (chosen on first use with ``noise_strength="auto"``)."""
        return self.detector.strength(cls)

    def auto_records(self) -> dict:
        """{class: choice record} of ``noise_strength="auto"`` for the classes chosen so far."""
        from ..method.autolambda import load_record

        if not self.cfg.auto_strength:
            return {}
        return {c: r for c in self.classes if (r := load_record(auto_dir(self.cfg), c)) is not None}


def open_data(cfg):
    """The dataset of ``cfg`` (building the mini/smoke benchmark on first use)."""
    from ..data.mini import ensure_mini

    root = ensure_mini(cfg)
    ds = data_mod.open_dataset(cfg.dataset, root)
    classes = cfg.classes or ds.classes
    for c in classes:
        ds.train(c)  # raises a clear error for an unknown class
    return ds, list(classes)


def needs_finetune(cfg) -> bool:
    """True when ``fit`` fine-tunes: K > 0 shots and the U-Net or the decoder switched on."""
    return cfg.shots > 0 and (cfg.finetune_unet or cfg.finetune_decoder)


def fit_dir(cfg) -> Path:
    """Folder of the fine-tune of ``cfg`` (``fit-<hash of FINETUNE_KEYS>``; ``done.json`` when finished)."""
    return Path(cfg.out_dir) / cfg.profile / f"fit-{cfg.hash(FINETUNE_KEYS)}"


def fit_hash(cfg) -> str:
    """Key of the model that scores: the fine-tune's hash, or ``<hash>-base`` for the base model
    (no fine-tune: the hash leaves out the keys that only the fine-tune reads)."""
    if needs_finetune(cfg):
        return cfg.hash(FINETUNE_KEYS)
    return cfg.hash([k for k in FINETUNE_KEYS if k not in ("finetune_unet", "finetune_decoder",
                                                            "mask_design", "gammas")]) + "-base"


def fit(cfg, progress: bool = True, comp=None, backbone=None, distance=None) -> Fitted:
    """Shots -> fine-tune (if K > 0 and switched on) -> detector with prototype banks."""
    from ..method.features import build_backbone, build_distance
    from ..method.models import load_components

    seed_everything(cfg.seed)
    timer = Timer()
    device = resolve_device(cfg.device)
    with timer.stage("load"):
        ds, classes = open_data(cfg)
        shots = data_mod.sample_shots(ds, classes, cfg.shots, cfg.seed)
        images = {c: [data_mod.load_image(s.path, cfg.image_size) for s in shots[c]] for c in classes}
        comp = (comp or load_components(cfg, device)).compiled("none")  # fine-tuning runs eagerly
        backbone = backbone or build_backbone(cfg.backbone, device=device)
        distance = distance or build_distance(cfg.distance, device=device)
    run_dir = fit_dir(cfg)
    info = {}
    if needs_finetune(cfg):
        kinds = {c: ds.class_kind(c) for c in classes}
        # one process fine-tunes a configuration; others (parallel table settings) wait and reuse it
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        with timer.stage("finetune"), FileLock(run_dir.parent / f".{run_dir.name}.lock"):
            info = finetune(cfg, comp, images, kinds, run_dir, distance=distance, progress=progress)
        if info["reused"] or info["adopted"]:  # the in-memory comp lacks (some) tuned parts: load them
            comp = load_components(cfg, device, unet_path=info.get("unet"), vae_path=info.get("vae"))
    det = AnomalySD(cfg, comp, backbone, distance, n_images=sum(len(ds.test(c)) for c in classes))
    if cfg.share_encodes:  # the grid's VAE encodes, shared by every setting
        det.encodes = EncodeCache(encode_dir(cfg), det.comp, cfg.infer_batch)
    with timer.stage("prototypes"):
        det.set_shots(images)
    if cfg.auto_strength:
        det.chooser = lambda cls: choose_strength(cfg, det, cls, images[cls], ds.class_kind(cls), timer)
    return Fitted(cfg, ds, classes, shots, det, run_dir, fit_hash(cfg), timer, info)


def encode_dir(cfg) -> Path:
    """Folder of the shared VAE encodes of the test images (``inpaint.EncodeCache``)."""
    return Path(cfg.out_dir) / cfg.profile / "encodes"


def auto_dir(cfg) -> Path:
    """Folder of the per-class choices of ``noise_strength="auto"`` (``<class>.json``): keyed by the
    scoring model, ``AUTO_KEYS`` and the rule's criterion."""
    from ..method.autolambda import CRITERION

    return (Path(cfg.out_dir) / cfg.profile / "auto-lambda" /
            f"{fit_hash(cfg)}-{cfg.hash(AUTO_KEYS)}-{CRITERION}")


def choose_strength(cfg, det: AnomalySD, cls: str, shots: list, kind: str, timer: Timer | None = None) -> float:
    """Lambda of ``cls`` by the rule of ``autolambda.py``; the record (curve, seconds) is stored in
    ``auto_dir`` and reused. Processes that need the same class wait for the one choosing it."""
    from ..method.autolambda import FALLBACK, load_record, record_path, select

    root = auto_dir(cfg)
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(root / f".{cls}.lock"):
        rec = load_record(root, cls)
        if rec is None:
            with (timer.stage("choose_lambda") if timer else nullcontext()):
                rec = select(det, cls, shots, kind, cfg, FALLBACK)
            write_json_atomic(record_path(root, cls), rec)
    return float(rec["lambda"])


def proto_map(E: np.ndarray, size: int) -> np.ndarray:
    """Prototype map alone (kNN baseline): eq 14's error map, bilinearly upsampled and blurred with
    the baselines' sigma (``baselines.BLUR_SIGMA_512``), not AnomalySD's ``Config.blur_sigma_512``."""
    t = torch.from_numpy(np.asarray(E, np.float32))[None, None]
    up = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()
    return blur(up, BLUR_SIGMA_512 * size / 512.0)


def _hash_but_lambda(cfg, keys: list) -> str:
    return cfg.hash([k for k in keys if k not in _LAMBDA_KEYS])


def _lambda_folder(cfg, lam) -> str:
    """``lambda-<lam>``; ``lam=None``: ``cfg.noise_strength`` (``lambda-auto`` before a choice)."""
    lam = cfg.noise_strength if lam is None else lam
    return "lambda-auto" if lam == "auto" else f"lambda-{float(lam):g}"


def cache_dir(cfg, lam: float | None = None) -> Path:
    """Folder of the cached intermediates of ``cfg`` at noise strength ``lam``: keyed by the scoring
    model and the inference settings, so settings that differ only in how the maps are fused share
    it. ``lam=None``: ``cfg.noise_strength`` (with "auto": a placeholder, never written, for a
    class whose lambda is not chosen yet)."""
    key = fit_hash(cfg) + "-" + _hash_but_lambda(cfg, INFER_KEYS + ["seed"])
    return Path(cfg.out_dir) / cfg.profile / "cache" / key / _lambda_folder(cfg, lam)


def timing_file(cfg) -> Path:
    """Seconds per image of the setting ``cfg`` (``settings._anomalysd_seconds``)."""
    return cache_dir(cfg).parent / f"timing-{cfg.hash(list(_LAMBDA_KEYS))}.json"


def _file_name(sample) -> str:
    """One test image's file name in a per-class folder of the cache or the latents."""
    return Path(sample.relpath).as_posix().replace("/", "__") + ".npz"


def known_strength(cfg, cls: str) -> float | None:
    """Lambda of ``cls`` under ``cfg`` without choosing: None when "auto" has not chosen it yet."""
    if cfg.auto_strength and cls not in cfg.noise_strength_per_class:
        from ..method.autolambda import load_record

        rec = load_record(auto_dir(cfg), cls)
        return None if rec is None else float(rec["lambda"])
    return cfg.strength_for(cls)


def cache_file(cfg, sample, lam: float | None = None) -> Path:
    """Cache file of one test image; ``lam`` defaults to ``known_strength`` of its class."""
    lam = known_strength(cfg, sample.cls) if lam is None else lam
    return cache_dir(cfg, lam) / sample.cls / _file_name(sample)


def unet_id(cfg) -> str:
    """Which U-Net scores with ``cfg``: the hash of its fine-tune (``finetune.MODULE_KEYS``) or "base"."""
    from ..method.finetune import module_hashes

    return (module_hashes(cfg).get("unet") if needs_finetune(cfg) else None) or "base"


def latent_dir(cfg, lam: float | None = None) -> Path:
    """Folder of the grid masks' denoised latents of ``cfg`` at ``lam`` (eq 11 before the decoder),
    keyed by what they depend on: the U-Net, the data, the prompt and the inference settings, not
    the decoder, the shots of M^(p) or the distance. Table 3's "decoder only" decodes the latents
    of the base model (Table 1's zero-shot run of its seed) and "denoiser only" those of the full
    method, instead of denoising again."""
    key = _hash_but_lambda(cfg, LATENT_KEYS) + "-" + unet_id(cfg)
    return Path(cfg.out_dir) / cfg.profile / "latents" / key / _lambda_folder(cfg, lam)


def latent_file(cfg, sample, lam: float | None = None) -> Path:
    lam = known_strength(cfg, sample.cls) if lam is None else lam
    return latent_dir(cfg, lam) / sample.cls / _file_name(sample)


def latents_array(z: torch.Tensor) -> np.ndarray:
    """``z`` as a numpy array to store: bfloat16 (a GPU's default, which numpy lacks) as float16,
    which holds every bfloat16 value between 6e-5 and 65504 exactly; other dtypes as they are.

    >>> z = torch.tensor([0.1, -3.5, 12.25]).to(torch.bfloat16)
    >>> a = latents_array(z); a.dtype, bool((torch.from_numpy(a).to(torch.bfloat16) == z).all())
    (dtype('float16'), True)
    """
    z = z.detach().cpu()
    return (z.to(torch.float16) if z.dtype == torch.bfloat16 else z).numpy()


def _save_npz(path: Path, **arrays) -> None:
    from ..utils import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def _scale_maps(inter: Intermediates, grid: np.ndarray) -> tuple[list, np.ndarray]:
    per = inter.scale_maps(grid)
    return sorted(per), np.stack([per[k] for k in sorted(per)])


def intermediates_cached(fitted: Fitted, sample, img) -> Intermediates:
    """Intermediates of one test image, from the cache when the same settings made them before.

    The cache holds what fusing needs: the per-scale maps S^(k) of eq 18 (float16; each pixel of
    S^(k) is one grid inpainting's distance, so this equals fusing the rounded distance maps),
    D(x, x^_p), M^(p) and E. On a miss the grid latents are taken from ``latent_file`` when a
    setting with the same U-Net stored them (counted in ``fitted.counts["latents_reused"]``),
    else computed and stored there.
    """
    lam = fitted.strength(sample.cls)
    p = cache_file(fitted.cfg, sample, lam)
    grid = fitted.detector.grid_np
    if p.is_file():
        z = np.load(p, allow_pickle=False)
        if "S" in z:
            per = {int(k): m.astype(np.float32) for k, m in zip(z["scales"], z["S"])}
        else:  # written before the per-scale format: the N distance maps
            per = Intermediates(z["D_grid"].astype(np.float32), [tuple(r) for r in z["index"]]).scale_maps(grid)
        return Intermediates(D_grid=None, index=fitted.detector.index, per_scale=per,
                             D_proto=z["D_proto"].astype(np.float32) if "D_proto" in z else None,
                             proto_mask=z["proto_mask"] if "proto_mask" in z else None,
                             error_map=z["error_map"] if "error_map" in z else None)
    lf = latent_file(fitted.cfg, sample, lam)
    lat = torch.from_numpy(np.load(lf, allow_pickle=False)["z"]) if lf.is_file() else None
    if lat is not None and lat.shape[0] != len(fitted.detector.index):
        raise ValueError(f"{lf} holds latents of {lat.shape[0]} masks, the grid has "
                         f"{len(fitted.detector.index)}; delete it to recompute")
    with fitted.timer.stage("score" if lat is None else "score_from_latents"):
        inter = fitted.detector.intermediates(img, sample.cls, seed=fitted.cfg.seed, grid_latents=lat)
    if lat is None:
        _save_npz(lf, z=latents_array(inter.grid_latents))
    else:
        fitted.counts["latents_reused"] = fitted.counts.get("latents_reused", 0) + 1
    scales, S = _scale_maps(inter, grid)
    arrays = {"S": S.astype(np.float16), "scales": np.array(scales)}
    if inter.D_proto is not None:
        arrays.update(D_proto=inter.D_proto.astype(np.float16), proto_mask=inter.proto_mask,
                      error_map=inter.error_map)
    _save_npz(p, **arrays)
    # return what the cache holds (float16-rounded maps), so a cached re-run gives the same numbers
    return Intermediates(D_grid=None, index=inter.index,
                         per_scale={k: m.astype(np.float32) for k, m in zip(scales, arrays["S"])},
                         D_proto=arrays["D_proto"].astype(np.float32) if "D_proto" in arrays else None,
                         proto_mask=inter.proto_mask, error_map=inter.error_map)


def class_metrics(labels, scores, masks, maps) -> dict:
    out = {"i_" + k.replace("f1_max", "f1max"): v for k, v in image_metrics(labels, scores).items()}
    if masks is None:
        out.update(p_auroc=np.nan, p_pro=np.nan, p_f1max=np.nan)
    else:
        masks, maps = np.stack(masks), np.stack(maps)
        big = masks.size > 20_000_000
        pm = pixel_metrics(masks, maps, bins=2000 if big else None)
        out.update(p_auroc=pm["auroc"], p_pro=pm["pro"], p_f1max=pm["f1_max"])
    return out


def combos(cfg, variants=("ms+proto",), alphas=None) -> tuple[list, list]:
    """The (variant, alpha) pairs to fuse (alpha only for ``ms+proto``) and the alphas used."""
    alphas = [cfg.alpha] if alphas is None else list(alphas)
    return [(v, a) for v in variants for a in (alphas if v == "ms+proto" else [None])], alphas


def test_items(fitted: Fitted) -> list:
    """Every test image of the fitted classes as ``(class, sample)``, in evaluation order."""
    return [(cls, s) for cls in fitted.classes for s in fitted.dataset.test(cls)]


def score_item(fitted: Fitted, sample, combos_, with_baseline: bool = True) -> dict:
    """Score one test image: label, ground truth and (score, S_map) of every fused variant.

    The record is what ``summarise`` needs and no more, so that records made in other processes
    (``parallel.py``) can be gathered and summarised by one process.
    """
    cfg, det = fitted.cfg, fitted.detector
    img, mask = data_mod.load_sample(sample, cfg.image_size)
    inter = intermediates_cached(fitted, sample, img)
    fused = {}
    for v, a in combos_:
        sm = det.fuse(inter, variant=v, alpha=a)
        fused[(v, a)] = (sm.score, sm.S_map)
    if with_baseline and inter.error_map is not None:
        m = proto_map(inter.error_map, cfg.image_size)
        fused[("knn", None)] = (float(m.max()), m)
    return {"cls": sample.cls, "sample": sample, "label": sample.label, "gt": mask, "fused": fused}


def collect(fitted: Fitted, items=None, variants=("ms+proto",), alphas=None, with_baseline: bool = True,
            progress: bool = True) -> list[dict]:
    """``score_item`` over ``items`` (default: ``test_items(fitted)``), in order."""
    combos_, _ = combos(fitted.cfg, variants, alphas)
    items = test_items(fitted) if items is None else list(items)
    return [score_item(fitted, s, combos_, with_baseline)
            for _, s in tqdm(items, desc="score", disable=not progress, mininterval=5)]


def summarise(fitted: Fitted, records: list[dict], variants=("ms+proto",), alphas=None,
              with_baseline: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-class and mean metrics (the table ``evaluate`` returns) and the per-image score rows.

    ``records`` (from ``collect``, in any order and from any number of processes) are grouped by
    class in ``fitted.classes`` order and kept in the dataset's test order within a class.
    """
    cfg = fitted.cfg
    combos_, alphas = combos(cfg, variants, alphas)
    order = {(s.cls, s.path): i for i, (_, s) in enumerate(test_items(fitted))}
    records = sorted(records, key=lambda r: order.get((r["cls"], r["sample"].path), len(order)))
    rows, score_rows = [], []
    for cls in fitted.classes:
        recs = [r for r in records if r["cls"] == cls]
        samples = [r["sample"] for r in recs]
        labels = [r["label"] for r in recs]
        gts = [r["gt"] for r in recs]
        pixel = fitted.dataset.has_pixel_masks(cls)
        for key in combos_ + ([("knn", None)] if with_baseline else []):
            got = [r["fused"][key] for r in recs if key in r["fused"]]
            if not got:
                continue
            scores, maps = [g[0] for g in got], [g[1] for g in got]
            v, a = key
            method = "proto-knn" if v == "knn" else "anomalysd"
            variant = "" if v == "knn" else (v if a is None or len(alphas) == 1 else f"{v}@alpha={a:g}")
            r = {"method": method, "variant": variant, "class": cls, "shots": cfg.shots, "seed": cfg.seed,
                 "n_test": len(labels), "n_anomalous": int(sum(labels))}
            r.update(class_metrics(labels, scores, gts if pixel else None, maps))
            rows.append(r)
            score_rows += [{"method": method, "variant": variant, "class": cls, "file": s.relpath,
                            "label": s.label, "score": sc} for s, sc in zip(samples, scores)]
    df = pd.DataFrame(rows)
    if len(df):
        means = (df.groupby(["method", "variant"], sort=False)[METRIC_COLUMNS].mean().reset_index())
        means["class"], means["shots"], means["seed"] = "mean", cfg.shots, cfg.seed
        means["n_test"] = df.groupby(["method", "variant"], sort=False)["n_test"].sum().values
        means["n_anomalous"] = df.groupby(["method", "variant"], sort=False)["n_anomalous"].sum().values
        df = pd.concat([df, means], ignore_index=True)
    return df, pd.DataFrame(score_rows)


def compile_info(det) -> dict:
    """The torch.compile mode the detector's inference calls ran in (``cfg.compile`` resolved) and
    the seconds of their first calls per input shape, the compile included."""
    comp = det.comp
    if comp is None:
        return {"mode": "none", "seconds": 0.0}
    return {"mode": comp.compile_mode, "seconds": round(sum(comp.compile_seconds.values()), 3),
            "calls": {k: round(v, 3) for k, v in comp.compile_seconds.items()}}


def write_outputs(fitted: Fitted, df: pd.DataFrame, scores: pd.DataFrame, out_dir, tag: str = "",
                  n_imgs: int = 0, variants=("ms+proto",), alphas=None, seconds: float = 0.0,
                  **extra) -> None:
    """``metrics{tag}.csv``, ``scores{tag}.csv`` and ``provenance{tag}.json`` in ``out_dir``, atomically."""
    cfg = fitted.cfg
    _, alphas = combos(cfg, variants, alphas)
    out_dir = Path(out_dir)
    write_csv_atomic(out_dir / f"scores{tag}.csv", scores)
    write_json_atomic(out_dir / f"provenance{tag}.json", provenance(
        cfg, seeds=[cfg.seed], shot_files=fitted.shot_files, fit_hash=fitted.fit_hash,
        classes=fitted.classes, n_test_images=n_imgs, variants=list(variants), alphas=alphas,
        stage_seconds={**fitted.timer.stages, "evaluate_total": seconds},
        seconds_per_image=seconds / max(n_imgs, 1), finetune=fitted.finetune_info,
        compile=compile_info(fitted.detector),
        **({"auto_lambda": fitted.auto_records()} if cfg.auto_strength else {}), **extra))
    write_csv_atomic(out_dir / f"metrics{tag}.csv", df)


def evaluate(fitted: Fitted, variants=("ms+proto",), alphas=None, with_baseline: bool = True,
             progress: bool = True, out_dir: str | Path | None = None, tag: str = "",
             return_scores: bool = False) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Score every test image; per-class + mean metrics for every variant (and the kNN baseline).

    Returns the metrics table (columns: method, variant, class, shots, seed, n_test, n_anomalous
    and ``METRIC_COLUMNS``; ``class == "mean"`` rows average the classes, pixel metrics over the
    classes that have masks). With ``out_dir`` writes ``metrics{tag}.csv``, ``scores{tag}.csv`` and
    ``provenance{tag}.json`` there, each atomically. With ``return_scores`` returns ``(table,
    per-image scores)``, the scores as ``summarise`` makes them. ``collect`` + ``summarise`` do the
    work; the data-parallel ``parallel.evaluate_parallel`` shards ``collect`` across processes.
    """
    t0 = time.perf_counter()
    records = collect(fitted, None, variants, alphas, with_baseline, progress)
    df, scores = summarise(fitted, records, variants, alphas, with_baseline)
    seconds = time.perf_counter() - t0
    if out_dir is not None:
        write_outputs(fitted, df, scores, out_dir, tag, len(records), variants, alphas, seconds)
    return (df, scores) if return_scores else df
