"""Small shared helpers: atomic writes, seeding, device choice, provenance."""
from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    A failed or interrupted writer leaves the old file (or nothing) in place, never half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give results the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)


def write_json_atomic(path, obj) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_csv_atomic(path, df) -> Path:
    """Write a pandas DataFrame as CSV atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto"):
    """``auto`` -> cuda if available else cpu; ``cuda`` without a GPU falls back with a warning."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        warnings.warn(f"device {name!r} was asked for but CUDA is not available; using the CPU")
        return torch.device("cpu")
    return torch.device(name)


def resolve_dtype(name: str, device):
    """The compute dtype of the config's ``dtype`` on ``device``.

    ``auto`` is bfloat16 on a GPU that supports it, float16 on other GPUs and float32 on a CPU;
    float16 or bfloat16 asked for on a CPU also give float32 (slower and less stable there).

    Examples
    --------
    >>> import torch
    >>> resolve_dtype("auto", torch.device("cpu")), resolve_dtype("bfloat16", torch.device("cpu"))
    (torch.float32, torch.float32)
    """
    import torch

    if name not in ("auto", "float32", "float16", "bfloat16"):
        raise ValueError(f"dtype {name!r} is not 'auto', 'float32', 'float16' or 'bfloat16'")
    device = torch.device(device)
    if device.type != "cuda" or name == "float32":
        return torch.float32
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, name)


#: ``compile="auto"`` compiles only runs of at least this many images: on an H200 at the paper's
#: size, compiling (102 s) saved 2.45 s per image (6.96 -> 4.51 s), so it paid after about 40
COMPILE_MIN_IMAGES = 40


def resolve_compile(mode: str, device, n_images: int | None = None) -> str:
    """The torch.compile mode that the config's ``compile`` asks for on ``device``.

    ``auto`` is ``default`` on a CUDA device for a run of at least ``COMPILE_MIN_IMAGES`` images
    (or of an unknown number) and ``none`` (eager) otherwise: on a CPU, and for a few images,
    where the compile would cost more than it saves. Any other mode is returned as it is.

    Examples
    --------
    >>> import torch
    >>> resolve_compile("auto", torch.device("cpu")), resolve_compile("default", torch.device("cpu"))
    ('none', 'default')
    """
    import torch

    if mode != "auto":
        return mode
    if torch.device(device).type != "cuda" or (n_images is not None and n_images < COMPILE_MIN_IMAGES):
        return "none"
    return "default"


def autocast(device, dtype):
    """Mixed precision for training in ``dtype`` on a CUDA ``device`` (the weights and the
    optimiser stay float32), else a no-op context."""
    import torch

    if torch.device(device).type == "cuda" and dtype in (torch.float16, torch.bfloat16):
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def git_commit(repo: str | os.PathLike | None = None) -> str:
    """Short commit of the code, with ``+dirty`` when tracked files outside ``results/`` differ from
    it (a regeneration rewrites the committed results while it runs; those are outputs, not code)."""
    repo = repo or Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True,
                             text=True, timeout=10)
        sha = out.stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ["torch", "diffusers", "transformers", "numpy", "scikit-learn", "lpips", "timm"]:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def portable(obj, root=None):
    """``obj`` (nested dicts, lists, strings) with every absolute path inside the repository
    written relative to it, so that a results file names no machine's clone.

    >>> from pathlib import Path
    >>> portable({"base_model": "/clone/models/mini-base", "x": ["/clone", "/other/p", 3]}, root=Path("/clone"))
    {'base_model': 'models/mini-base', 'x': ['.', '/other/p', 3]}
    """
    from pathlib import Path

    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    if isinstance(obj, dict):
        return {k: portable(v, root) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(portable(v, root) for v in obj)
    if isinstance(obj, str) and obj.startswith("/"):
        try:
            return Path(obj).relative_to(root).as_posix()
        except ValueError:
            return obj
    return obj


def provenance(cfg=None, **extra) -> dict:
    """What a results file needs to be trusted: profile, config, commit, versions, device. Paths
    inside the repository are written relative to it (``portable``)."""
    import torch

    d = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": git_commit(),
        "versions": package_versions(),
        "device": (torch.cuda.get_device_name(0) if torch.cuda.is_available() else
                   f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"),
    }
    if cfg is not None:
        d["profile"] = cfg.profile
        d["config"] = cfg.to_dict()
    d.update(extra)
    return portable(d)


class Timer:
    """``with Timer() as t: ...; t.seconds``; also collects named stages in ``t.stages``."""

    def __init__(self):
        self.stages: dict[str, float] = {}

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0

    @contextlib.contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - t0
