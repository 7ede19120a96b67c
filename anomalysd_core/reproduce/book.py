"""Regenerate the book: run every notebook with papermill, then build the Jupyter Book site.

Usage (``python -m anomalysd_core.reproduce.book --help``; the CLI's ``anomalysd book`` calls :func:`main`)::

    python -m anomalysd_core.reproduce.book --profile mini            # run notebooks (cached), build the site
    python -m anomalysd_core.reproduce.book --profile smoke --no-build
    python -m anomalysd_core.reproduce.book --profile mini --only 02 --force -p seed=1

Stages
------
1. **Notebooks** (:func:`run_notebooks`). The sources are py:percent files: ``notebooks/NN_*.py``
   in numeric order, then the book's own ``book/results_tables.py`` (it reads ``results/<profile>``).
   Each is converted in memory with jupytext, executed by papermill with the parameters
   ``profile=<profile>`` (plus ``results_dir`` and any ``-p key=value`` the notebook declares in its
   ``parameters`` cell) and written atomically to ``build/notebooks/<profile>/<name>.ipynb``; the
   sources under ``notebooks/`` are never written. The first failing notebook stops the run
   (:class:`NotebookFailed`, exit status 1, the notebook named; its partial output is kept as
   ``<name>.failed.ipynb``).
   *Stage cache*: ``<name>.hashes.json`` next to the output records hashes of the notebook source,
   the profile and parameters, every ``anomalysd_core`` source file, the base-model folder, the
   Python/package versions, for notebooks that declare ``data_root`` the benchmark's build marker,
   and for notebooks that declare ``results_dir`` the result files; a notebook whose hashes all
   match its last successful run is skipped. ``--force`` re-runs anyway.
   *Times*: the wall time of each executed notebook goes to ``results/<profile>/notebook_times.csv``
   (atomic rewrite; a skipped notebook keeps the time of its last run).
2. **Site** (:func:`build_book`). The sources are staged into ``build/book/<profile>/src``: the
   top-level ``_config.yml`` and ``_toc.yml``, the pages of ``book/``, the method schematic drawn by
   ``book/schematic.py`` and the executed notebooks copied to ``book/notebooks/`` (where ``_toc.yml``
   points). ``jupyter-book build`` then renders them without executing anything (``execute_notebooks:
   off``) into ``build/book/<profile>/_build/html`` (``--out DIR``: ``DIR/_build/html``), with
   ``-W -n --keep-going --all``: any warning (a broken reference, a missing glue key, a missing
   citation) fails the build.

The helpers the notebooks call (``glue``, ``html_table``, ``components_for_notebook``) are in
``display.py``.
"""
from __future__ import annotations

import argparse
import ast
import csv
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import REPO_ROOT, get_config
from ..utils import atomic_path, write_json_atomic, write_text_atomic
from . import standalone

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
BOOK_DIR = REPO_ROOT / "book"
BUILD_DIR = REPO_ROOT / "build"
RESULTS_DIR = REPO_ROOT / "results"
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # anomalysd_core
# notebooks of the book itself, run after notebooks/NN_*.py (they summarise the results files)
BOOK_NOTEBOOKS = (BOOK_DIR / "results_tables.py",)
TIMES_FILE = "notebook_times.csv"
TIMES_COLUMNS = ("notebook", "profile", "seconds", "finished_utc")
KERNEL_NAME = "python3"
PRIVATE_KERNEL = "anomalysd-python3"
# environment of the notebook kernels: offline, no progress bars, inline figures
KERNEL_ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1",
              "TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error",
              "HF_HUB_DISABLE_PROGRESS_BARS": "1",
              "MPLBACKEND": "module://matplotlib_inline.backend_inline",
              "PYTHONWARNINGS": "ignore:IProgress not found"}
BOOK_PAGES_SUFFIXES = (".md", ".bib", ".png", ".svg", ".jpg", ".css")


class NotebookFailed(RuntimeError):
    """A notebook raised while executing; the message names it and its failed-output file."""


class BookBuildError(RuntimeError):
    """``jupyter-book build`` failed (warnings count as errors); the message has its log tail."""


@dataclass
class NotebookRun:
    name: str
    output: Path
    seconds: float
    cached: bool


# ---------------------------------------------------------------------------------------------
# Notebook sources, parameters and hashes
# ---------------------------------------------------------------------------------------------
def notebook_sources(only: list[str] | None = None) -> list[Path]:
    """The notebooks in run order: ``notebooks/NN_*.py`` sorted, then :data:`BOOK_NOTEBOOKS`.

    ``only`` keeps the notebooks whose name starts with one of the given prefixes (``["02"]``).
    """
    srcs = sorted(p for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))
    srcs += [p for p in BOOK_NOTEBOOKS if p.is_file()]
    if only:
        keep = [p for p in srcs if any(p.stem.startswith(o) or p.stem == o for o in only)]
        missing = [o for o in only if not any(p.stem.startswith(o) for p in srcs)]
        if missing:
            raise ValueError(f"no notebook matches {missing}; known: {[p.stem for p in srcs]}")
        srcs = keep
    return srcs


def read_notebook(src: Path, kernel_name: str = KERNEL_NAME):
    """py:percent -> nbformat notebook (in memory), with a kernelspec for papermill."""
    import jupytext

    nb = jupytext.reads(Path(src).read_text(), fmt="py:percent")
    nb.metadata["kernelspec"] = {"name": kernel_name, "display_name": "Python 3",
                                 "language": "python"}
    return nb


def declared_parameters(nb) -> list[str]:
    """Names assigned in the cell tagged ``parameters`` (papermill's convention)."""
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            names = []
            for node in ast.parse(cell.source).body:
                targets = node.targets if isinstance(node, ast.Assign) else (
                    [node.target] if isinstance(node, ast.AnnAssign) else [])
                names += [t.id for t in targets if isinstance(t, ast.Name)]
            return names
    return []


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _files_hash(paths) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.name).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _folder_fingerprint(folder: Path) -> str:
    """Cheap fingerprint of a (model) folder: relative names, sizes and mtimes of its files."""
    if not folder.is_dir():
        return "absent"
    rows = sorted(f"{p.relative_to(folder)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                  for p in folder.rglob("*") if p.is_file())
    return _sha("\n".join(rows).encode())


def _times_fingerprint(path: Path, exclude: str) -> str:
    """Hash of the notebook-times file without the row of ``exclude`` (a notebook's own time must
    not invalidate its own cache)."""
    if not path.is_file():
        return "absent"
    rows = [r for r in _read_times(path) if r["notebook"] != exclude]
    return _sha(json.dumps(rows, sort_keys=True).encode())


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = [platform.python_version()]
    for name in ("torch", "diffusers", "transformers", "numpy", "matplotlib", "pandas"):
        try:
            out.append(f"{name}={version(name)}")
        except PackageNotFoundError:
            pass
    return ";".join(out)


def notebook_hashes(src: Path, profile: str, params: dict, results_dir: Path | None) -> dict:
    """Everything a notebook's output depends on, hashed (see the module docstring)."""
    cfg = get_config(profile, **{k: v for k, v in params.items() if k == "data_root" and v})
    from ..data.mini import MARKER, resolve_data_root

    marker = resolve_data_root(cfg.data_root) / MARKER
    h = {
        "source": _sha(Path(src).read_bytes()),
        "profile": profile,
        "parameters": _sha(json.dumps(params, sort_keys=True, default=str).encode()),
        "anomalysd_core": _files_hash(sorted(p for p in PACKAGE_DIR.rglob("*")
                                              if p.suffix in (".py", ".yaml") and p.is_file())),
        "base_model": _folder_fingerprint(Path(cfg.base_model)),
        "versions": _versions(),
    }
    if "data_root" in params:  # notebooks that read the benchmark declare a data_root parameter
        h["data_marker"] = _sha(marker.read_bytes()) if marker.is_file() else "absent"
    # only the pages that read other notebooks' results depend on them (the notebooks that
    # write results would otherwise re-run after every run of their own)
    if results_dir is not None and "results_dir" in params and Path(src).resolve() in {
            p.resolve() for p in BOOK_NOTEBOOKS}:
        files = sorted(p for p in results_dir.rglob("*") if p.is_file() and p.name != TIMES_FILE
                       and p.suffix in (".csv", ".json") and not p.name.startswith("."))  # val-x3/ too
        h["results"] = _files_hash(files) if files else "absent"
        h["notebook_times"] = _times_fingerprint(results_dir / TIMES_FILE, Path(src).stem)
    return h


# ---------------------------------------------------------------------------------------------
# Kernel
# ---------------------------------------------------------------------------------------------
def _runs_this_python(argv: list[str]) -> bool:
    exe = argv[0] if argv else ""
    if exe in ("python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"):
        return True  # jupyter_client replaces a bare "python" by sys.executable
    try:
        return os.path.samefile(exe, sys.executable) or os.path.abspath(exe) == os.path.abspath(sys.executable)
    except OSError:
        return False


def ensure_kernel(name: str = KERNEL_NAME, scratch: Path | None = None) -> str:
    """The name of a kernelspec that runs THIS interpreter (so ``anomalysd_core`` imports).

    ``name`` is used when it resolves to ``sys.executable`` (a venv's own ``python3`` spec, or
    ipykernel's built-in one). Otherwise (e.g. a user-level ``python3`` spec pointing at another
    Python) a private spec ``anomalysd-python3`` is written under ``scratch/jupyter/kernels`` and
    put on ``JUPYTER_PATH`` for this process and its children.
    """
    import importlib.util

    if importlib.util.find_spec("ipykernel") is None:
        raise RuntimeError("the notebooks need ipykernel: pip install -e '.[book]'")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(name)
        if _runs_this_python(spec.argv):
            return name
    except NoSuchKernel:
        pass
    root = Path(scratch or BUILD_DIR) / "jupyter"
    kdir = root / "kernels" / PRIVATE_KERNEL
    kdir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(kdir / "kernel.json", {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (anomalysd)", "language": "python"})
    paths = [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    if str(root) not in paths:
        os.environ["JUPYTER_PATH"] = os.pathsep.join([str(root)] + paths)
    return PRIVATE_KERNEL


# ---------------------------------------------------------------------------------------------
# Running notebooks
# ---------------------------------------------------------------------------------------------
def _read_times(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [dict(r) for r in csv.DictReader(f)]


def record_time(results_dir: Path, name: str, profile: str, seconds: float) -> Path:
    """Set the row of ``name`` in ``results_dir/notebook_times.csv`` (atomic rewrite)."""
    path = Path(results_dir) / TIMES_FILE
    rows = [r for r in _read_times(path) if r.get("notebook") != name]
    rows.append({"notebook": name, "profile": profile, "seconds": f"{seconds:.1f}",
                 "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    rows.sort(key=lambda r: r["notebook"])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=TIMES_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows({k: r.get(k, "") for k in TIMES_COLUMNS} for r in rows)
    return write_text_atomic(path, buf.getvalue())


def execute_notebook(src: Path, out: Path, parameters: dict, kernel_name: str = KERNEL_NAME,
                     cwd: Path = REPO_ROOT, timeout: int | None = None) -> float:
    """Run one py:percent notebook with papermill into ``out`` (atomically); returns seconds.

    On failure the partial output is kept as ``<out stem>.failed.ipynb`` and :class:`NotebookFailed`
    names the notebook and the failing cell's error.
    """
    import nbformat
    import papermill as pm

    nb = standalone.with_setup_cell(read_notebook(src, kernel_name), *standalone.repository())
    out = Path(out)
    failed = out.with_name(out.stem + ".failed.ipynb")
    env_before = {k: os.environ.get(k) for k in KERNEL_ENV}
    os.environ.update(KERNEL_ENV)  # the kernel inherits this process's environment
    t0 = time.perf_counter()
    try:
        with atomic_path(out) as tmp:
            try:
                pm.execute_notebook(nb, str(tmp), parameters=parameters, kernel_name=kernel_name,
                                    cwd=str(cwd), progress_bar=False, log_output=False,
                                    execution_timeout=timeout)
            except Exception as e:
                if Path(tmp).is_file() and Path(tmp).stat().st_size > 0:
                    shutil.copyfile(tmp, failed)
                msg = str(e).strip().splitlines()
                tail = "\n".join(msg[-12:]) if msg else type(e).__name__
                raise NotebookFailed(f"notebook {Path(src).stem} ({src}) failed; partial output in "
                                     f"{failed}:\n{tail}") from e
            # tidy the stored kernelspec (a private kernel name means nothing elsewhere)
            done = nbformat.read(tmp, as_version=4)
            done.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Python 3",
                                           "language": "python"}
            nbformat.write(done, tmp)
    finally:
        for k, v in env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if failed.exists():
        failed.unlink()
    return time.perf_counter() - t0


def notebook_parameters(declared, profile: str, results_dir: Path, params: dict) -> dict:
    """The papermill parameters of a notebook that declares ``declared``: the profile, the results
    folder ("" for the notebook's own default, ``results/<profile>``, so that no published page
    names this clone), the profile's own data_root, and each of ``params`` it declares."""
    nb_params = {"profile": profile}
    if "results_dir" in declared:
        nb_params["results_dir"] = ("" if Path(results_dir).resolve() == (RESULTS_DIR / profile).resolve()
                                    else str(Path(results_dir).resolve()))
    if "data_root" in declared:
        nb_params["data_root"] = ""  # the profile's own data_root unless -p data_root=...
    nb_params.update({k: v for k, v in params.items() if k in declared})
    return nb_params


def run_notebooks(profile: str = "mini", *, only: list[str] | None = None,
                  build_dir: Path | str | None = None, results_dir: Path | str | None = None,
                  params: dict | None = None, force: bool = False,
                  kernel_name: str = KERNEL_NAME, timeout: int | None = None,
                  log=print) -> list[NotebookRun]:
    """Execute the notebooks for ``profile`` in order (stage-cached); see the module docstring.

    ``build_dir`` (default ``build/``) receives ``notebooks/<profile>/*.ipynb``; ``results_dir``
    (default ``results/<profile>``) receives ``notebook_times.csv``; ``params`` are extra papermill
    parameters, each passed to the notebooks that declare it. Raises :class:`NotebookFailed`.
    """
    get_config(profile)  # validates the profile name early
    build_dir = Path(build_dir) if build_dir is not None else BUILD_DIR
    results_dir = Path(results_dir) if results_dir is not None else RESULTS_DIR / profile
    out_dir = build_dir / "notebooks" / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    params = dict(params or {})
    kernel = ensure_kernel(kernel_name, build_dir)
    runs: list[NotebookRun] = []
    used: set[str] = set()
    for src in notebook_sources(only):
        name = src.stem
        declared = declared_parameters(read_notebook(src))
        nb_params = notebook_parameters(declared, profile, results_dir, params)
        used |= set(params) & set(declared)
        out = out_dir / f"{name}.ipynb"
        stamp = out_dir / f"{name}.hashes.json"
        hashes = notebook_hashes(src, profile, nb_params, results_dir)
        if not force and out.is_file() and stamp.is_file():
            try:
                old = json.loads(stamp.read_text())
            except ValueError:
                old = {}
            if old.get("hashes") == hashes:
                log(f"[book] {name}: unchanged, skipped (last run {old.get('seconds', 0):.1f} s)")
                runs.append(NotebookRun(name, out, float(old.get("seconds", 0.0)), True))
                continue
        log(f"[book] {name}: running (profile {profile}) ...")
        seconds = execute_notebook(src, out, nb_params, kernel, timeout=timeout)
        # a notebook may build the benchmark it reads (ensure_mini): record the marker as it is
        # now; everything else keeps its pre-run hash, so an edit made during the run re-runs it
        if "data_marker" in hashes:
            hashes["data_marker"] = notebook_hashes(src, profile, nb_params, results_dir)["data_marker"]
        write_json_atomic(stamp, {"hashes": hashes, "seconds": round(seconds, 2),
                                  "parameters": nb_params,
                                  "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        record_time(results_dir, name, profile, seconds)
        log(f"[book] {name}: done in {seconds:.1f} s -> {out}")
        runs.append(NotebookRun(name, out, seconds, False))
    unused = sorted(set(params) - used)
    if unused:
        log(f"[book] warning: no notebook declares the parameter(s) {unused}")
    return runs


# ---------------------------------------------------------------------------------------------
# Building the site
# ---------------------------------------------------------------------------------------------
def toc_files(toc_path: Path) -> list[str]:
    """Every ``file:`` entry of a Jupyter Book ``_toc.yml`` (root included), without suffix."""
    import yaml

    toc = yaml.safe_load(Path(toc_path).read_text())
    out = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                out.append(node["file"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk({k: v for k, v in toc.items() if k != "root"})
    return [str(Path(f).with_suffix("")) if Path(f).suffix in (".md", ".ipynb") else f for f in out]


def stage_book(executed_dir: Path | str, dest: Path | str, repo: Path = REPO_ROOT) -> Path:
    """Assemble the book sources in ``dest`` (replaced): config, toc, pages, schematic, notebooks.

    The executed notebooks of ``executed_dir`` go to ``dest/book/notebooks/``, where ``_toc.yml``
    expects them. Raises ``FileNotFoundError`` naming any toc entry that has no source.
    """
    executed_dir, dest = Path(executed_dir), Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "book").mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(repo / name, dest / name)
    book = repo / "book"
    for p in book.rglob("*"):
        rel = p.relative_to(book)
        if (p.is_file() and p.suffix in BOOK_PAGES_SUFFIXES and rel.parts[0] not in ("_build", "notebooks")
                and not any(part.startswith(".") for part in rel.parts)):
            (dest / "book" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dest / "book" / rel)
    nb_dest = dest / "book" / "notebooks"
    (nb_dest / "sources").mkdir(parents=True)
    sources = {p.stem: p for p in notebook_sources()}
    url, branch = standalone.repository(repo)
    for p in sorted(executed_dir.glob("*.ipynb")):
        if p.name.endswith(".failed.ipynb"):
            continue
        if p.stem in sources:  # its page offers the source and a launch link
            standalone.stage_notebook(p, sources[p.stem], nb_dest, url, branch)
        else:
            shutil.copy2(p, nb_dest / p.name)
    schematic = book / "schematic.py"
    if schematic.is_file():
        import runpy

        runpy.run_path(str(schematic))["draw"](dest / "book" / "figures" / "anomalysd_schematic.png")
    missing = [f for f in toc_files(dest / "_toc.yml")
               if not any((dest / f).with_suffix(s).is_file() for s in (".md", ".ipynb"))]
    if missing:
        raise FileNotFoundError(
            f"the table of contents names {missing}, which do not exist in the staged book; "
            f"executed notebooks are taken from {executed_dir} (run the notebooks first: "
            "python -m anomalysd_core.reproduce.book --profile <profile>)")
    return dest


def jupyter_book_build(src: Path | str, out: Path | str, strict: bool = True,
                       timeout: int = 900) -> subprocess.CompletedProcess:
    """``jupyter-book build src --path-output out`` (HTML). ``strict``: ``-W -n --keep-going --all``,
    so any warning fails the build. Raises :class:`BookBuildError` with the log's tail on failure."""
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build",
           str(src), "--path-output", str(out), "--builder", "html"]
    if strict:
        cmd += ["-W", "-n", "--keep-going", "--all"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYDEVD_DISABLE_FILE_VALIDATION="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        log = (proc.stdout + "\n" + proc.stderr).strip().splitlines()
        warn = [ln for ln in log if "WARNING" in ln or "ERROR" in ln]
        raise BookBuildError(f"jupyter-book build failed (exit {proc.returncode}):\n"
                             + "\n".join((warn or log)[-30:]))
    return proc


def build_book(profile: str = "mini", *, build_dir: Path | str | None = None,
               out: Path | str | None = None, strict: bool = True, log=print) -> Path:
    """Stage and build the site from ``build/notebooks/<profile>``; returns the HTML folder,
    ``<out>/_build/html`` (``out`` defaults to ``build/book/<profile>``)."""
    build_dir = Path(build_dir) if build_dir is not None else BUILD_DIR
    root = build_dir / "book" / profile
    out = Path(out) if out is not None else root
    src = stage_book(build_dir / "notebooks" / profile, root / "src")
    t0 = time.perf_counter()
    jupyter_book_build(src, out, strict=strict)
    html = out / "_build" / "html"
    log(f"[book] site built in {time.perf_counter() - t0:.1f} s: {html / 'index.html'}")
    return html


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m anomalysd_core.reproduce.book",
                                 description="Run the notebooks (papermill, cached) and build the book.")
    ap.add_argument("--profile", default="mini", choices=["paper", "mini", "smoke"])
    ap.add_argument("--only", action="append", metavar="PREFIX",
                    help="run only notebooks whose name starts with PREFIX (repeatable)")
    ap.add_argument("-p", "--param", action="append", metavar="KEY=VALUE", default=[],
                    help="extra papermill parameter for the notebooks that declare it")
    ap.add_argument("--force", action="store_true", help="ignore the stage cache")
    ap.add_argument("--no-build", action="store_true", help="run the notebooks only")
    ap.add_argument("--no-execute", action="store_true", help="build the site from existing outputs")
    ap.add_argument("--not-strict", action="store_true", help="do not turn warnings into errors")
    ap.add_argument("--build-dir", default=None, help="default: build/")
    ap.add_argument("--results-dir", default=None, help="default: results/<profile>")
    ap.add_argument("--out", default=None,
                    help="site output: OUT/_build/html (default: build/book/<profile>)")
    args = ap.parse_args(argv)
    params = {}
    for kv in args.param:
        if "=" not in kv:
            ap.error(f"parameter {kv!r} is not KEY=VALUE")
        k, v = kv.split("=", 1)
        params[k.strip()] = v.strip()
    try:
        if not args.no_execute:
            t0 = time.perf_counter()
            runs = run_notebooks(args.profile, only=args.only, build_dir=args.build_dir,
                                 results_dir=args.results_dir, params=params, force=args.force)
            print(f"[book] notebooks: {sum(not r.cached for r in runs)} run, "
                  f"{sum(r.cached for r in runs)} unchanged, {time.perf_counter() - t0:.1f} s")
        if not args.no_build:
            build_book(args.profile, build_dir=args.build_dir, out=args.out,
                       strict=not args.not_strict)
    except (NotebookFailed, BookBuildError, FileNotFoundError, ValueError) as e:
        print(f"[book] ERROR: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
