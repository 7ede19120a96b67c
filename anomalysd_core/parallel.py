"""Data-parallel evaluation with Hugging Face ``accelerate``: test images sharded across processes.

Scoring is embarrassingly parallel over test images (each image's 86 inpaintings depend only on
that image, its class's prompt embedding and prototype bank). Every process

1. fits the same detector (the main process first, so that a fine-tune runs once and the other
   processes reuse it from disk; ``evaluate.fit``);
2. takes its contiguous shard of the test images (``PartialState().split_between_processes``)
   and scores it with ``evaluate.collect`` (which uses the per-image cache,
   ``evaluate.intermediates_cached``);
3. sends its per-image records (label, ground truth, score and map of every variant) to every
   process (``accelerate.utils.gather_object``);

and the main process computes the metrics table with ``evaluate.summarise``: the same function,
on the same records, as the single-process ``evaluate.evaluate``, so the table is the same.

Command line (``--profile``, ``--set key=value`` and the data options as for
``python -m anomalysd_core evaluate``)::

    python -m anomalysd_core.parallel --profile smoke                      # one process
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 \
        -m anomalysd_core.parallel --profile smoke --device cpu            # two CPU processes
    accelerate launch --num_processes 4 -m anomalysd_core.parallel        # four GPUs

Note: ``accelerate launch --num_processes 2 --cpu`` starts ONE process (accelerate 1.x runs its
multi-CPU mode through ``mpirun``, which needs an MPI installation and ``--mpirun_hostfile``);
``--multi_gpu`` starts the processes through ``torchrun`` and, on a machine without GPUs (or with
``ACCELERATE_USE_CPU=1`` / ``--device cpu``), they talk over gloo on the CPU. ``torchrun
--nproc_per_node 2 -m anomalysd_core.parallel ...`` works too. With one process the module runs
``evaluate.evaluate`` itself.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd


def evaluate_parallel(fitted, variants=("ms+proto",), alphas=None, with_baseline: bool = True,
                      progress: bool = True, out_dir: str | Path | None = None, tag: str = "",
                      state=None) -> pd.DataFrame | None:
    """``evaluate.evaluate`` with the test images sharded over the ``accelerate`` processes.

    Returns the metrics table on the main process (and writes ``metrics/scores/provenance`` to
    ``out_dir`` there) and None on the others. With one process this is ``evaluate.evaluate``.
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from .reproduce.evaluate import collect, evaluate, summarise, test_items, write_outputs

    state = state or PartialState()
    if state.num_processes == 1:
        return evaluate(fitted, variants, alphas, with_baseline, progress, out_dir, tag)
    t0 = time.perf_counter()
    items = test_items(fitted)
    with state.split_between_processes(list(range(len(items)))) as mine:
        records = collect(fitted, [items[i] for i in mine], variants, alphas, with_baseline,
                          progress and state.is_main_process)
    shard_seconds = time.perf_counter() - t0
    records = gather_object(records)
    seconds_by_rank = gather_object([shard_seconds])
    if not state.is_main_process:
        return None
    if len(records) != len(items):
        raise RuntimeError(f"gathered {len(records)} records for {len(items)} test images")
    df, scores = summarise(fitted, records, variants, alphas, with_baseline)
    seconds = time.perf_counter() - t0
    if out_dir is not None:
        write_outputs(fitted, df, scores, out_dir, tag, len(records), variants, alphas, seconds,
                      num_processes=state.num_processes, shard_seconds=seconds_by_rank)
    return df


def fit_on_all(cfg, progress: bool = True, state=None):
    """``evaluate.fit`` on every process, the main one first (a fine-tune runs once, then is reused)."""
    from accelerate import PartialState

    from .reproduce.evaluate import fit

    state = state or PartialState()
    with state.main_process_first():
        return fit(cfg, progress=progress and state.is_main_process)


def main(argv=None) -> int:
    from accelerate import PartialState

    from .cli import _cfg, _common, _print_table

    ap = argparse.ArgumentParser(prog="python -m anomalysd_core.parallel", description=__doc__.split("\n")[0])
    _common(ap)
    ap.add_argument("--variants", default="ms+proto", help="comma-separated: full, ms, ms+proto")
    ap.add_argument("--results", default=None, help="folder for metrics.csv (default: runs/<profile>/eval-<fit>)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the prototype-kNN baseline rows")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    cfg = _cfg(args)
    state = PartialState(cpu=cfg.device == "cpu")
    if cfg.device == "auto" and state.device.type != "cpu":
        cfg.device = str(state.device)  # each process on its own accelerator
    fitted = fit_on_all(cfg, progress=not args.quiet, state=state)
    out = Path(args.results) if args.results else Path(cfg.out_dir) / cfg.profile / f"eval-{fitted.fit_hash}"
    df = evaluate_parallel(fitted, tuple(args.variants.split(",")), with_baseline=not args.no_baseline,
                           progress=not args.quiet, out_dir=out, state=state)
    if state.is_main_process:
        _print_table(df)
        print(f"\n{state.num_processes} process(es); wrote {out}/metrics.csv, scores.csv, provenance.json")
    state.wait_for_everyone()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
