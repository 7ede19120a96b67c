"""Measuring for the speed benchmarks: wall time with the device synchronised (``timed``) and
peak memory above a block's start (``PeakMemory``: CUDA's allocator statistics, or the CPU
process's resident set size sampled in a thread), plus ``log`` and ``md_table``."""
from __future__ import annotations

import contextlib
import threading
import time

import pandas as pd
import torch


def log(*a):
    print(*a, flush=True)


def _trim_heap():
    """Give freed heap memory back to the OS (glibc ``malloc_trim``), so RSS tracks live memory."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory of a block above its start. CUDA: ``torch.cuda.max_memory_allocated``. CPU: the
    process's resident set size sampled every ``interval`` s in a thread (psutil), after returning
    freed heap pages to the OS; torch's CPU allocations are invisible to tracemalloc and
    ``ru_maxrss`` only ever rises. CPU figures are approximate (a few MiB)."""

    def __init__(self, device, interval: float = 0.002):
        self.device, self.interval, self.mib = torch.device(device), interval, float("nan")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            import psutil

            _trim_heap()
            self.proc = psutil.Process()
            self.base = self.peak = self.proc.memory_info().rss
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.stop.set()
            self.thread.join()
            peak = max(self.peak, self.proc.memory_info().rss)
        self.mib = (peak - self.base) / 2 ** 20


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, mem: bool = False):
    """(result, seconds, peak MiB or nan)."""
    sync(device)
    with (PeakMemory(device) if mem else contextlib.nullcontext()) as pm:
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        dt = time.perf_counter() - t0
    return out, dt, (pm.mib if mem else float("nan"))


def md_table(df: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-markdown table of ``df`` (floats to ``digits`` significant digits)."""
    def cell(v):
        if isinstance(v, float):
            return "" if v != v else (f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.{digits}g}")
        return str(v).replace("|", "\\|")
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "---|" * len(df.columns)
    return "\n".join([head, sep] + ["| " + " | ".join(cell(v) for v in r) + " |" for r in df.itertuples(index=False)])
