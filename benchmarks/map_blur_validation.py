"""How mini's anomaly-map blur was chosen: on the *validation* build (never the test images).

The last step of eq (21) blurs S_map with a Gaussian of sigma 4 at 512 px, and the image score is
its maximum. On mini (64 px) that is sigma 0.5 px, while AnomalySD's colour distance (eq 16-17,
``distance="pixel"``) is a per-pixel map. For each seed (1 shot, the profile's defaults,
``data/mini-val``, the paper's threshold of eq 15 unless ``--proto-floor shots``) this fuses
AnomalySD's cached maps (``evaluate.intermediates_cached``: the inpaintings are made once, then
each blur is only a filter) at every ``--sigmas`` value, and runs
PatchCore, SPADE, PaDiM and the prototype kNN map at the same values, to see whether the blur
favours one method. Rows go to ``results/<profile>/map_blur_validation.csv`` with the run's
provenance; mini's ``blur_sigma_512`` in ``config.PROFILES`` was set from it.

    python benchmarks/map_blur_validation.py --seeds 0 1
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import _validation  # noqa: E402  (benchmarks/_validation.py)

BASELINE_NAMES = ("patchcore", "spade", "padim", "protoknn")


def main(argv=None) -> None:
    ap = _validation.parser(__doc__.splitlines()[0])
    ap.add_argument("--proto-floor", default="none", choices=("none", "shots"),
                    help="M^(p)'s threshold while the blur is compared (the blur was chosen first, with "
                         "the paper's eq 15; proto_floor_validation.py then chose the floor at this blur)")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[4.0, 6.0, 8.0, 12.0, 16.0],
                    help="blur sigma at 512 px (the paper: 4)")
    args = _validation.checked(ap.parse_args(argv))
    import pandas as pd
    import torch

    from anomalysd_core.data import datasets as data_mod
    from anomalysd_core.method.baselines import build_baseline
    from anomalysd_core.reproduce.evaluate import class_metrics, intermediates_cached, test_items
    from anomalysd_core.method.scoring import fuse

    t0 = time.perf_counter()
    rows = []

    def add(seed, method, s512, per_class):
        for cls, rec in per_class.items():
            g = None if rec["g"][0] is None else rec["g"]
            m = class_metrics(rec["l"], rec["s"], g, rec["m"] if g else None)
            rows.append({"seed": seed, "method": method, "blur_sigma_512": s512, "class": cls,
                         "i_auroc": m["i_auroc"], "p_auroc": m["p_auroc"]})

    for seed in args.seeds:
        fitted = _validation.fitted(args, seed, proto_floor=args.proto_floor)
        cfg = fitted.cfg
        det, size = fitted.detector, cfg.image_size
        per = {s: {} for s in args.sigmas}
        for cls, sample in test_items(fitted):
            img, gt = data_mod.load_sample(sample, size)
            inter = intermediates_cached(fitted, sample, img)
            for s512 in args.sigmas:
                sm = fuse(inter, det.grid_np, cfg.mask_variant, cfg.alpha, s512 * size / 512.0)
                rec = per[s512].setdefault(cls, {"l": [], "s": [], "g": [], "m": []})
                rec["l"].append(sample.label), rec["s"].append(sm.score)
                rec["g"].append(gt), rec["m"].append(sm.S_map)
        for s512 in args.sigmas:
            add(seed, "anomalysd", s512, per[s512])
        for name in BASELINE_NAMES:
            per = {s: {} for s in args.sigmas}
            for cls in fitted.classes:
                normals = torch.stack([torch.from_numpy(data_mod.load_image(s.path, size)).permute(2, 0, 1)
                                       for s in fitted.shots[cls]])
                model = build_baseline(name, det.backbone).fit(normals)  # the blur is only post-processing
                for sample in fitted.dataset.test(cls):
                    img, gt = data_mod.load_sample(sample, size)
                    x = torch.from_numpy(img).permute(2, 0, 1)[None]
                    for s512 in args.sigmas:
                        model.blur_sigma_512 = s512
                        sc, mp = model.predict(x)
                        rec = per[s512].setdefault(cls, {"l": [], "s": [], "g": [], "m": []})
                        rec["l"].append(sample.label), rec["s"].append(float(sc[0]))
                        rec["g"].append(gt), rec["m"].append(mp[0].cpu().numpy())
            for s512 in args.sigmas:
                add(seed, name, s512, per[s512])
    df = pd.DataFrame(rows)
    _validation.write(args, "map_blur_validation", df, _validation.config(args, proto_floor=args.proto_floor),
                      seeds=args.seeds, sigmas=args.sigmas, wall_seconds=time.perf_counter() - t0)
    mean = df.groupby(["method", "blur_sigma_512", "seed"])[["i_auroc", "p_auroc"]].mean()
    print((mean.groupby(["method", "blur_sigma_512"]).mean() * 100).round(1).to_string())


if __name__ == "__main__":
    main()
