"""Data-parallel evaluation (``parallel.py``): 2 CPU processes give the 1-process metrics table.

Both runs are subprocesses with one CPU thread per process, so that floating-point reductions
happen in the same order. The 2-process run reuses the 1-process run's fine-tune (copied, so it
is not trained twice) but not its cache of intermediates: every test image is scored again, in a
shard, and the main process summarises the gathered records.
"""
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd, cwd, env, timeout=300):
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))}\nSTDOUT\n{p.stdout[-3000:]}\nSTDERR\n{p.stderr[-5000:]}"
    return p


@pytest.mark.slow
def test_two_cpu_processes_give_the_one_process_table(smoke_base, smoke_data, tmp_path):
    from accelerate.utils import write_basic_config

    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "ACCELERATE_USE_CPU": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    common = ["--profile", "smoke", "--device", "cpu", "--base-model", str(smoke_base),
              "--data-root", str(smoke_data), "--quiet", "--variants", "ms,ms+proto",
              "--classes", "brick,coins"]
    one, two = tmp_path / "one", tmp_path / "two"
    _run([sys.executable, "-m", "anomalysd_core.parallel", *common, "--out-dir", str(one / "runs"),
          "--results", str(one / "res")], repo, env)
    # reuse the fine-tune (a folder with done.json), not the cache of intermediates
    (two / "runs" / "smoke").mkdir(parents=True)
    for fit_dir in (d for d in (one / "runs" / "smoke").glob("fit-*") if d.is_dir()):
        shutil.copytree(fit_dir, two / "runs" / "smoke" / fit_dir.name)
    cfg_file = tmp_path / "accelerate.yaml"
    write_basic_config(mixed_precision="no", save_location=str(cfg_file))
    # `accelerate launch --cpu --num_processes 2` starts ONE process unless MPI is set up (its
    # multi-CPU mode runs through mpirun); `--multi_gpu` starts 2 processes through torchrun and,
    # with ACCELERATE_USE_CPU=1 (and PartialState(cpu=True) in parallel.py), they use gloo on the CPU.
    p = _run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(cfg_file),
              "--multi_gpu", "--num_processes", "2", "--num_cpu_threads_per_process", "1",
              "--main_process_port", str(_free_port()), "-m", "anomalysd_core.parallel", *common,
              "--out-dir", str(two / "runs"), "--results", str(two / "res")], repo, env)
    assert "2 process(es)" in p.stdout
    assert list((two / "runs" / "smoke" / "cache").rglob("*.npz")), "the 2-process run scored nothing"
    a = pd.read_csv(one / "res" / "metrics.csv")
    b = pd.read_csv(two / "res" / "metrics.csv")
    assert len(a) > 0 and set(a["class"]) >= {"brick", "coins", "mean"}
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    sa = pd.read_csv(one / "res" / "scores.csv")
    sb = pd.read_csv(two / "res" / "scores.csv")
    pd.testing.assert_frame_equal(sa, sb, check_exact=True)
