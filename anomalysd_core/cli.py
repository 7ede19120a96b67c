"""Command line: ``python -m anomalysd_core <command>`` (or the ``anomalysd`` console script).

Commands: ``data build-mini``, ``pretrain``, ``fit``, ``evaluate``, ``score``, ``book``.
Every config field can be set with ``--set key=value`` (repeatable), e.g. ``--set noise_strength=0.6``.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path


def _cfg(args):
    from .config import get_config, parse_overrides

    over = parse_overrides(args.set)
    for name in ("data_root", "dataset", "shots", "seed", "device", "base_model", "out_dir"):
        v = getattr(args, name, None)
        if v is not None:
            over[name] = v
    if getattr(args, "classes", None):
        over["classes"] = args.classes
    return get_config(args.profile, **over)


def _common(p, data=True):
    p.add_argument("--profile", default="mini", choices=["paper", "mini", "smoke"])
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    p.add_argument("--out-dir", dest="out_dir", default=None, help="runs folder (default: runs)")
    if data:
        p.add_argument("--data-root", dest="data_root", default=None)
        p.add_argument("--dataset", default=None, choices=["mvtec", "visa"])
        p.add_argument("--shots", type=int, default=None)
        p.add_argument("--seed", type=int, default=None)
        p.add_argument("--classes", default=None, help="comma-separated subset of classes")
        p.add_argument("--base-model", dest="base_model", default=None)


def cmd_build_mini(args):
    from .config import get_config
    from .data.mini import build_mini
    from .utils import Timer

    size = args.size or get_config(args.profile).image_size  # what ensure_mini expects: no rebuild
    with Timer() as t:
        out = build_mini(args.out, size=size, seed=args.seed, profile=args.profile, split=args.split,
                         val_scale=args.val_scale, holdout=args.holdout)
    print(f"wrote {out} (manifest.csv, samples.png) in {t.seconds:.1f} s")


def cmd_pretrain(args):
    from .reproduce.pretrain import pretrain

    out = pretrain(args.out, stage=args.stage, size=args.size, vae_minutes=args.vae_minutes,
                   unet_minutes=args.unet_minutes, vae_steps=args.vae_steps, unet_steps=args.unet_steps,
                   work=args.work, seed=args.seed, device=args.device, vae_batch=args.vae_batch,
                   unet_batch=args.unet_batch, vae_lr=args.vae_lr, unet_lr=args.unet_lr, amp=not args.no_amp)
    print(f"base model written to {out}")


def _print_table(df):
    import pandas as pd

    cols = ["method", "variant", "class", "i_auroc", "i_aupr", "i_f1max", "p_auroc", "p_pro", "p_f1max"]
    with pd.option_context("display.width", 160, "display.max_rows", 500,
                           "display.float_format", lambda v: f"{100 * v:.1f}"):
        print(df[cols].to_string(index=False))


def _data_cfg(args):
    """The config, with its data root checked (and the mini benchmark built at its default
    location) before torch and the models are imported: a typo fails at once."""
    from .data.mini import ensure_mini

    cfg = _cfg(args)
    ensure_mini(cfg)
    return cfg


def cmd_fit(args):
    cfg = _data_cfg(args)
    from .reproduce.evaluate import fit

    f = fit(cfg)
    print(f"fitted {cfg.shots}-shot model for {len(f.classes)} classes (seed {cfg.seed}); "
          f"run folder {f.run_dir}; stages " + ", ".join(f"{k} {v:.1f}s" for k, v in f.timer.stages.items()))
    return f


def cmd_evaluate(args):
    cfg = _data_cfg(args)
    from .reproduce.evaluate import evaluate, fit

    f = fit(cfg)
    out = Path(args.results) if args.results else Path(cfg.out_dir) / cfg.profile / f"eval-{f.fit_hash}"
    variants = tuple(args.variants.split(","))
    df = evaluate(f, variants=variants, out_dir=out)
    _print_table(df)
    if cfg.auto_strength:
        print("\nnoise strength chosen per class from the shots (autolambda.py): " + ", ".join(
            f"{c} {r['lambda']:g}" for c, r in f.auto_records().items()))
    print(f"\nwrote {out}/metrics.csv, scores.csv, provenance.json")


def cmd_score(args):
    """Score a user's images: against their own normals (``own.score_own``) or a data set's class."""
    if args.normals is not None or args.name is not None:
        return cmd_score_own(args)
    if args.cls is None:
        from .data.datasets import DataError

        raise DataError("score needs --normals GOOD_DIR and --name NAME (or --class CLASS of the data set)")
    return cmd_score_class(args)


def cmd_score_own(args):
    from .data.datasets import DataError
    from .own import score_own

    if args.normals is None or args.name is None:
        raise DataError("score with your own normals needs both --normals GOOD_DIR and --name NAME")
    cfg = _cfg(argparse.Namespace(**{**vars(args), "shots": None}))
    df = score_own(cfg, args.paths, args.normals, args.name, args.out, method=args.method, shots=args.shots,
                   kind=args.kind, views=args.views, size=args.size, strict=args.strict)
    import pandas as pd

    with pd.option_context("display.width", 160, "display.max_colwidth", 60):
        print(df[["file", "score", "threshold", "decision", "seconds"]].to_string(index=False))
    print(f"wrote {len(df)} maps and overlays, results.csv, results.json to {args.out}")


def cmd_score_class(args):
    """Score a user's images of a named class: heat-map overlays (PNG) and a CSV of image scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from .data.datasets import DataError, load_image
    from .reproduce.evaluate import fit, open_data
    from .own import image_files, skipped_warning
    from .utils import atomic_path, write_csv_atomic

    files, skipped = image_files(args.paths, args.strict)
    if skipped:
        print(skipped_warning(skipped))
    cfg = _data_cfg(args)
    _, classes = open_data(cfg)
    if args.cls not in classes:  # fail before the (expensive) fit
        raise DataError(f"unknown class {args.cls!r}; the model knows: {', '.join(classes)}")
    f = fit(cfg)
    out = Path(args.out)
    rows = []
    for p in files:
        img = load_image(p, cfg.image_size)
        sm = f.detector.score(img, args.cls, seed=cfg.seed)
        rows.append({"file": str(p), "class": args.cls, "score": sm.score})
        fig, ax = plt.subplots(1, 2, figsize=(6, 3))
        ax[0].imshow(img), ax[0].set_title(p.name)
        ax[1].imshow(img), ax[1].imshow(sm.S_map, cmap="jet", alpha=0.5)
        ax[1].set_title(f"score {sm.score:.3g}")
        for a in ax:
            a.axis("off")
        with atomic_path(out / f"{p.stem}_map.png") as tmp:
            fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
    write_csv_atomic(out / "scores.csv", pd.DataFrame(rows))
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"wrote {len(rows)} overlays and scores.csv to {out}")




def main(argv=None):
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(prog="anomalysd", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="datasets").add_subparsers(dest="data_cmd", required=True)
    b = d.add_parser("build-mini", help="write the mini (or smoke) benchmark in MVTec-AD layout")
    b.add_argument("--out", default="data/mini")
    b.add_argument("--size", type=int, default=None, help="image size (default: the profile's image_size)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--profile", default="mini", choices=["mini", "smoke"])
    b.add_argument("--split", default="test", choices=["test", "val"],
                   help="val: the validation build that settings are chosen on (use --seed 1, as data/mini-val)")
    b.add_argument("--val-scale", type=int, default=1,
                   help="with --split val: this many times the test images per class (default 1)")
    b.add_argument("--holdout", action="store_true",
                   help="with --split val: textures' shots and test crops from disjoint regions, as in the test build")
    b.set_defaults(fn=cmd_build_mini)

    p = sub.add_parser("pretrain", help="pre-train the mini base model (VAE, then inpainting U-Net)")
    p.add_argument("--out", default="models/mini-base")
    p.add_argument("--stage", default="all", choices=["vae", "unet", "all"])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--vae-minutes", type=float, default=16)
    p.add_argument("--unet-minutes", type=float, default=40)
    p.add_argument("--vae-steps", type=int, default=2500)
    p.add_argument("--unet-steps", type=int, default=20000)
    p.add_argument("--work", default="runs/pretrain")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--vae-batch", type=int, default=8, help="VAE batch (GPU: 128)")
    p.add_argument("--unet-batch", type=int, default=8, help="U-Net batch (GPU: 256)")
    p.add_argument("--vae-lr", type=float, default=1e-3, help="VAE AdamW lr (GPU, batch 128: 5e-4)")
    p.add_argument("--unet-lr", type=float, default=3e-4)
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast on a GPU")
    p.set_defaults(fn=cmd_pretrain)

    p = sub.add_parser("fit", help="sample K shots, fine-tune (eq 8-10), build prototype banks")
    _common(p)
    p.set_defaults(fn=cmd_fit)

    p = sub.add_parser("evaluate", help="fit (reused when cached) and evaluate every test image")
    _common(p)
    p.add_argument("--variants", default="ms+proto,ms,full", help="Table-5 inference-mask variants")
    p.add_argument("--results", default=None, help="folder for metrics.csv/scores.csv/provenance.json")
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser(
        "score", help="score your own images: against a folder of normal photos (--normals, --name), "
                      "or against a class of the data set (--class)",
        description="With --normals GOOD_DIR --name NAME: fit the detector of --method on the normal "
                    "photos, calibrate a threshold from them alone (leave-one-out, re-lit; see "
                    "anomalysd_core/own.py) and write, per image, the score, the decision, the anomaly map "
                    "at the input's resolution and an overlay, and results.csv / results.json for all. "
                    "With --class: AnomalySD's score and overlay against a class of --data-root.")
    _common(p)
    p.add_argument("paths", nargs="+", help="image files or folders of the new images")
    p.add_argument("--normals", default=None, help="folder of normal photos of the part (any file names)")
    p.add_argument("--name", default=None, help='what the part is, e.g. "metal plate" (builds the prompts)')
    p.add_argument("--method", default="anomalysd", choices=["anomalysd", "patchcore", "spade", "padim", "protoknn"],
                   help="detector: anomalysd (fine-tuned on the normals) or a memory-bank baseline on "
                        "the same features (default anomalysd)")
    p.add_argument("--kind", default="texture", choices=["texture", "object"],
                   help="texture: the whole image is the part; object: segment it from the border colour")
    p.add_argument("--views", type=int, default=4, help="calibration views per normal (default 4)")
    p.add_argument("--size", type=int, default=None,
                   help="scoring size in px. Memory-bank methods: default 256 (own.BANK_SIZE), since small defects "
                        "need the pixels (on real industrial photos 256 px raised the prototype kNN map's "
                        "PRO from 0.64 to 0.84 over 64 px; checked on the validation build, see the README). "
                        "AnomalySD: default its base model's training size (64 px on mini). Maps come back "
                        "at each input's own resolution")
    p.add_argument("--strict", action="store_true",
                   help="refuse files in the folders that are not images the loader takes "
                        "(default: list them in a warning and in results.json, and score the rest)")
    p.add_argument("--class", dest="cls", default=None, help="a class of the data set instead of --normals")
    p.add_argument("--out", default="runs/score")
    p.set_defaults(fn=cmd_score)

    sub.add_parser("book", add_help=False,
                   help="run every notebook with papermill, then build the site "
                        "(options: `python -m anomalysd_core book --help`)")

    r = sub.add_parser("results", help="committed results").add_subparsers(dest="results_cmd", required=True)
    r.add_parser("check", add_help=False,
                 help="compare regenerated tables with the committed ones within a stated tolerance; exit 1 "
                      "when a cell moved (options: `python -m anomalysd_core results check --help`)")

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["book"]:  # the book runner has its own options
        from .reproduce import book

        return book.main(argv[1:])
    if argv[:2] == ["results", "check"]:  # the drift check has its own options
        from .reproduce import drift

        return drift.main(argv[2:])
    args = ap.parse_args(argv)
    if getattr(args, "classes", None):
        args.classes = [c for c in args.classes.split(",") if c]
    from .data.datasets import DataError

    try:
        rc = args.fn(args)
    except Exception as e:
        # bad input, named in the message (models.ModelError is a ValueError): no traceback
        if not isinstance(e, (DataError, FileNotFoundError, KeyError, ValueError)):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
