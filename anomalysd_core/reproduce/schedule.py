"""Running the settings of a table on worker processes: fine-tunes, per-class scoring, evaluation.

A setting of a table (a shot count and seed of Table 1, a variant of an ablation) costs a
fine-tune (if it has shots) and the scoring of every test image; both are cached on disk, the
fine-tune per configuration (``evaluate.fit_dir``) and the intermediates per image
(``evaluate.cache_file``). ``run_settings`` splits that work into tasks for a pool of spawned
processes instead of giving each process a whole setting:

1. ``fit``: one task per fine-tune still to be made (settings that share one wait for the same task;
   a fine-tune of one module waits for a pending fine-tune of both that trains the same module, and
   takes it from there: ``finetune.module_donor``);
2. ``score``: one task per class whose test images are not all cached, queued once its setting's
   fine-tune exists, so that both cores stay busy until the last few images of a table; a class
   whose grid latents another pending task is computing (same U-Net: ``evaluate.latent_dir``)
   waits for it and then only decodes them (Table 3's one-module rows);
3. ``final``: the caller's ``final`` function (``settings.run_setting``) once its scoring is
   done; it reads the cache, fuses the maps, computes the metrics and runs the baselines. The time
   of the tasks before it is passed in (``prior``), so the run info reports the work of all of them.

This module knows nothing of the tables: ``tables`` imports it, never the other way round.

Every image is scored with the same seed and the same batch of masks whichever process scores it,
so the tables equal a one-process run's (``tests/test_tables.py``). A GPU gets one process
(``default_workers``): scale out across GPUs with ``parallel.py`` instead.
"""
from __future__ import annotations

import json
import os
import time

import torch

from ..config import get_config

RUN_ARGS = ("variants", "baselines", "time_only", "progress")  # run_setting's, not Config's
_FITTED: dict = {}  # per worker process: the setting it scored last (its shards come in a row)


def _cores() -> int:
    """CPU cores this process may use (its affinity where the OS reports one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers(profile: str, n_tasks: int, **over) -> int:
    """Processes for a table: ``ANOMALYSD_WORKERS`` if set, else one per CPU core (at most 8 and
    at most one per task) on a CPU device, and 1 on a GPU (one device, one process)."""
    from ..utils import resolve_device

    env = os.environ.get("ANOMALYSD_WORKERS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"ANOMALYSD_WORKERS must be an integer, got {env!r}") from None
        return max(1, min(n, n_tasks))
    if resolve_device(get_config(profile, **config_overrides(over)).device).type != "cpu":
        return 1
    return max(1, min(_cores(), 8, n_tasks))


def config_overrides(over: dict) -> dict:
    """The Config fields of a setting's overrides: all but ``run_setting``'s own arguments, so
    that ``get_config`` names a misspelt field instead of ignoring it."""
    return {k: v for k, v in over.items() if k not in RUN_ARGS}


def _key(over: dict) -> str:
    """A setting's identity: its overrides, as stable JSON."""
    return json.dumps(over, sort_keys=True, default=str)


def plan(profile: str, over: dict) -> tuple[str | None, dict, list[str], dict]:
    """(fine-tune folder still to be made or None, {class: its cache folder}, classes not all
    cached there, {class: its latent folder}). A class whose noise_strength="auto" lambda is not
    chosen yet gets the placeholder folders of ``evaluate.cache_dir(cfg, None)``."""
    from .evaluate import cache_dir, cache_file, fit_dir, known_strength, latent_dir, needs_finetune, open_data

    cfg = get_config(profile, **config_overrides(over))
    d = fit_dir(cfg)
    todo = str(d) if needs_finetune(cfg) and not (d / "done.json").is_file() else None
    ds, classes = open_data(cfg)
    lams = {c: known_strength(cfg, c) for c in classes}
    missing = [c for c in classes
               if lams[c] is None or not all(cache_file(cfg, s, lams[c]).is_file() for s in ds.test(c))]
    return (todo, {c: str(cache_dir(cfg, lams[c])) for c in classes}, missing,
            {c: str(latent_dir(cfg, lams[c])) for c in classes})


def _fitted(profile: str, over: dict):
    """``evaluate.fit`` of a setting, kept for the next task of this process on the same setting."""
    from .evaluate import fit
    from ..method.features import frozen_models

    if _key(over) not in _FITTED:
        _FITTED.clear()
        cfg = get_config(profile, **config_overrides(over))
        backbone, distance = frozen_models(cfg)
        _FITTED[_key(over)] = fit(cfg, progress=False, backbone=backbone, distance=distance)
    return _FITTED[_key(over)]


def score_class(fitted, cls: str) -> dict:
    """Compute (and cache) the intermediates of the test images of ``cls`` not cached yet: how
    many, how many of them from stored grid latents, and the seconds of the others."""
    from ..data.datasets import load_sample
    from .evaluate import cache_file, intermediates_cached

    st, counts = fitted.timer.stages, fitted.counts
    secs0, reused0, n = st.get("score", 0.0), counts.get("latents_reused", 0), 0
    lam = fitted.strength(cls)  # with noise_strength="auto" the class's lambda is chosen here
    for s in fitted.dataset.test(cls):
        if cache_file(fitted.cfg, s, lam).is_file():
            continue
        img, _ = load_sample(s, fitted.cfg.image_size)
        intermediates_cached(fitted, s, img)
        n += 1
    return {"n_fresh": n, "n_latents_reused": counts.get("latents_reused", 0) - reused0,
            "score_seconds": st.get("score", 0.0) - secs0}


def _init_worker(parent: int) -> None:
    """Make a worker exit with the process that started it (Linux), so that a killed notebook or
    run leaves no worker computing on; elsewhere a worker stops after its current task."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _task(job):
    """One task in a worker process (see the module docstring); errors name the setting."""
    kind, profile, label, over, arg, threads, final = job
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        if kind == "final":
            return final(profile, setting=label, prior=arg, **over)
        fitted = _fitted(profile, over)
        if kind == "fit":
            out = {"finetune_reused": bool(fitted.finetune_info.get("reused")),
                   "finetune_seconds": fitted.timer.stages.get("finetune", 0.0)}
        else:
            out = score_class(fitted, arg)
        return {**out, "seconds": time.perf_counter() - t0}
    except Exception as e:
        what = f"{kind} of class {arg!r}" if kind == "score" else kind
        raise RuntimeError(f"setting {label!r} of profile {profile!r} failed ({what}): "
                           f"{type(e).__name__}: {e}") from e


def run_settings(profile: str, settings: list, final, workers: int | None = None, log=print) -> list:
    """``final(profile, setting=label, **overrides)`` for every (label, overrides), which returns
    (table, run info) (``settings.run_setting``; a module-level function, so that worker
    processes can be sent it); returns [(table, run info)] in input order. Settings with identical
    overrides are computed once (Table 4's "designed" and "hierarchical" rows are the same run).
    With more than one worker the work is split into tasks as the module docstring describes,
    ``cores // workers`` torch threads per process.
    """
    unique: dict[str, tuple[str, dict]] = {}
    for label, over in settings:
        unique.setdefault(_key(over), (label, over))
    n = workers or default_workers(profile, 64, **settings[0][1])
    if n > 1:  # as many processes as there are tasks at most
        plans = {k: plan(profile, over) for k, (_, over) in unique.items()}
        n = min(n, len({p[0] for p in plans.values()} - {None}) + len(_shards(plans)))
    if n <= 1:
        done = {k: final(profile, setting=label, **over) for k, (label, over) in unique.items()}
    else:
        done = _run_pool(profile, unique, plans, n, final, log)
    out = []
    for label, over in settings:
        df, info = done[_key(over)]
        df = df.copy()
        df["setting"] = label
        out.append((df, {**info, "setting": label}))
    return out


def _shards(plans: dict) -> set:
    """The (cache folder, class) pairs still to score: one task each, whatever shares them."""
    return {(folders[c], c) for _, folders, missing, _ in plans.values() for c in missing}


def _fit_order(profile: str, unique: dict, fits: dict) -> dict:
    """{fine-tune folder: the pending one-module fine-tunes that should wait for it}: those whose
    module it trains too (Table 3's one-module rows wait for "both" and adopt its module)."""
    from ..method.finetune import module_hashes

    mods = {d: module_hashes(get_config(profile, **config_overrides(unique[ks[0]][1]))) for d, ks in fits.items()}
    after: dict[str, list[str]] = {}
    for d in fits:
        for g in fits:
            if len(mods[g]) > len(mods[d]) and set(mods[d].items()) <= set(mods[g].items()):
                after.setdefault(g, []).append(d)
                break
    return after


def _run_pool(profile: str, unique: dict, plans: dict, n: int, final, log) -> dict:
    """The task graph of the module docstring on ``n`` spawned processes; {setting key: result}."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from multiprocessing import get_context

    threads = max(1, _cores() // n)
    fits: dict[str, list[str]] = {}      # fine-tune folder -> settings that wait for it
    for k, (d, _, _, _) in plans.items():
        if d is not None:
            fits.setdefault(d, []).append(k)
    after = _fit_order(profile, unique, fits)  # fine-tune folder -> those that take a module from it
    busy: dict[tuple, list[str]] = {}    # (latent folder, class) being scored -> settings deferred
    waiting: dict[tuple, list[str]] = {}  # (cache folder, class) in the queue -> settings waiting
    scored: set = set()
    prior = {k: {"n_fresh": 0, "n_latents_reused": 0, "score_seconds": 0.0, "worker_seconds": 0.0}
             for k in unique}
    left = {k: len(plans[k][2]) for k in unique}
    done: dict[str, tuple] = {}
    log(f"{len(unique)} settings: {len(fits)} fine-tunes, {len(_shards(plans))} classes to score, in {n} worker processes ({threads} torch thread(s) each)")
    with ProcessPoolExecutor(n, mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=(os.getpid(),)) as pool:
        futs = {}

        def submit(kind, k, arg=None):
            label, over = unique[k]
            futs[pool.submit(_task, (kind, profile, label, over, arg, threads, final))] = (kind, k, arg)

        def shard_done(k, c):
            left[k] -= 1
            if left[k] == 0:
                submit("final", k, prior[k])

        def scoring(k):  # the setting's model exists: queue its classes (once per cache folder)
            for c in plans[k][2]:
                sk = (plans[k][1][c], c)
                if sk in scored:
                    shard_done(k, c)
                elif sk in waiting:
                    waiting[sk].append(k)
                else:
                    waiting[sk] = [k]
                    lk = (plans[k][3][c], c)
                    if lk in busy:  # its latents are on their way: decode them when they are there
                        busy[lk].append(k)
                    else:
                        busy[lk] = []
                        submit("score", k, c)
            if not plans[k][2]:
                submit("final", k, prior[k])

        for d, ks in fits.items():
            if not any(d in later for later in after.values()):
                submit("fit", ks[0])
        for k in unique:
            if plans[k][0] is None:
                scoring(k)
        while futs:
            finished, _ = wait(futs, return_when=FIRST_COMPLETED)
            for f in finished:
                kind, k, arg = futs.pop(f)
                try:
                    r = f.result()
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
                if kind == "final":
                    done[k] = r
                    log(f"  done: {r[1]['setting']} ({r[1]['wall_seconds']:.0f} s of worker time)")
                    continue
                prior[k]["worker_seconds"] += r["seconds"]
                if kind == "fit":
                    prior[k]["finetune_seconds"] = r["finetune_seconds"]
                    for k2 in fits[plans[k][0]]:
                        prior[k2]["finetune_reused"] = k2 != k or r["finetune_reused"]
                        scoring(k2)
                    for d in after.get(plans[k][0], []):
                        submit("fit", fits[d][0])
                else:
                    prior[k]["n_fresh"] += r["n_fresh"]
                    prior[k]["n_latents_reused"] += r["n_latents_reused"]
                    prior[k]["score_seconds"] += r["score_seconds"]
                    sk = (plans[k][1][arg], arg)
                    scored.add(sk)
                    for k2 in busy.pop((plans[k][3][arg], arg), []):
                        submit("score", k2, arg)
                    for k2 in waiting.pop(sk):
                        shard_done(k2, arg)
    return done
