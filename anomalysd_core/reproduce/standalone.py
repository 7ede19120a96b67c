"""A notebook outside the clone: the set-up cell that installs the package where it is missing,
and what each notebook page of the book offers a reader who wants to run it (its py:percent
source with that cell; for a GitHub repository, a Binder session and a Colab notebook).

The runner (``book.execute_notebook``) adds the set-up cell after the papermill parameters, so
every executed notebook, the ones the site offers for download included, starts with it; in a
clone after ``make install`` it finds the package and does nothing. Run alone (a download, a
course's hub), it installs the package from ``ANOMALYSD_INSTALL_FROM`` (any pip requirement: a
clone's path, a wheel, ``git+https://...``) or from the repository the book was built from
(``repository``), then the notebook builds the mini or smoke benchmark in the working folder on
first use, as in a clone (``config.project_root``).

Colab opens notebooks from GitHub only as ``.ipynb``, and the repository keeps py:percent sources.
``write_notebooks`` converts them, set-up cell included; the book workflow pushes them to the
repository's ``colab`` branch (``COLAB_BRANCH``), which the pages' Colab links open::

    python -m anomalysd_core.reproduce.standalone --out build/colab
"""
from __future__ import annotations

import os
from pathlib import Path

from ..config import REPO_ROOT

SETUP_TAG = "setup"
COLAB_BRANCH = "colab"  # the branch of .ipynb notebooks that the book workflow pushes
SETUP_CELL = '''# Set-up. In a clone after `make install` this does nothing. A notebook run on its own (Colab, a
# download) installs the package first: from ANOMALYSD_INSTALL_FROM (a pip requirement: a clone's
# path, a wheel, git+https://...) or else from a shallow clone of the repository this book was
# built from, made beside the notebook; its data, models and results then live in that clone.
import importlib.util, os, subprocess, sys  # noqa: E401
REPOSITORY, BRANCH = {repository!r}, {branch!r}
if importlib.util.find_spec("anomalysd_core") is None:
    source = os.environ.get("ANOMALYSD_INSTALL_FROM")
    if source:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", source])
    elif REPOSITORY:
        clone = os.path.abspath("anomalysd-companion")
        if not os.path.isdir(clone):
            subprocess.check_call(["git", "clone", "-q", "--depth", "1", "--branch", BRANCH, REPOSITORY, clone])
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "-e", clone])
        sys.path.insert(0, clone)  # this kernel started before the editable install existed
    else:
        raise RuntimeError("anomalysd_core is not installed: pip install a clone of its repository "
                           "(pip install /path/to/clone), or set ANOMALYSD_INSTALL_FROM to one")
'''


def repository(repo: Path = REPO_ROOT) -> tuple[str, str]:
    """(url, branch) of the repository readers are sent to: ``BOOK_REPOSITORY_URL`` and
    ``BOOK_REPOSITORY_BRANCH`` when set (the book workflow sets them), else ``repository:`` of
    ``_config.yml``; an empty url when neither says."""
    import yaml

    conf_file = Path(repo) / "_config.yml"
    conf = {}
    if conf_file.is_file():
        conf = (yaml.safe_load(conf_file.read_text()) or {}).get("repository") or {}
    url = os.environ.get("BOOK_REPOSITORY_URL") or conf.get("url") or ""
    branch = os.environ.get("BOOK_REPOSITORY_BRANCH") or conf.get("branch") or "main"
    return url.rstrip("/"), branch


def with_setup_cell(nb, url: str = "", branch: str = "main"):
    """``nb`` with the set-up cell (``SETUP_CELL``, installing from ``url`` at ``branch``) after its parameters
    cell (first when it has none); a notebook that has one already keeps it.

    >>> import nbformat
    >>> nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T"),
    ...                                     nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]})])
    >>> [c.metadata.get("tags") for c in with_setup_cell(nb).cells]
    [None, ['parameters'], ['setup']]
    """
    import nbformat

    if any(SETUP_TAG in c.metadata.get("tags", []) for c in nb.cells):
        return nb
    at = next((i + 1 for i, c in enumerate(nb.cells)
               if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])), 0)
    nb.cells.insert(at, nbformat.v4.new_code_cell(SETUP_CELL.format(repository=url, branch=branch),
                                                  metadata={"tags": [SETUP_TAG]}))
    return nb


def run_it_yourself(source: str, url: str = "", branch: str = "main") -> str:
    """The note each notebook page opens with: download its py:percent source (``source``: its
    path in the repository) and, for a GitHub ``url``, open it on Binder or Colab or read it on GitHub.

    >>> print(run_it_yourself("notebooks/05_main_results.py"))  # doctest: +ELLIPSIS
    ```{admonition} Run it yourself
    ...{download}`py:percent source <sources/05_main_results.py>`...
    """
    name = source.rsplit("/", 1)[-1]
    lines = [f"{{download}}`py:percent source <sources/{name}>` (open it as a notebook with Jupytext, "
             "or run it with `python`) or the executed notebook (the download button at the top of the "
             "page): either runs on its own (uploaded to Colab, a course hub, a fresh folder), as its "
             "set-up cell installs the package when it is missing and the notebook builds its data in "
             "the working folder."]
    if url.startswith("https://github.com/"):
        owner_repo = url.removeprefix("https://github.com/")
        stem = name.rsplit(".", 1)[0]
        lines.append(f"[Launch on Binder](https://mybinder.org/v2/gh/{owner_repo}/{branch}?urlpath=lab/tree/{source}) "
                     f"(the repository's `environment.yml`, Jupytext included), "
                     f"[open it in Colab](https://colab.research.google.com/github/{owner_repo}/blob/{COLAB_BRANCH}/"
                     f"{stem}.ipynb) (its set-up cell clones the repository and installs the package, a few "
                     f"minutes; mini runs on Colab's CPU as here) or "
                     f"[read the source on GitHub]({url}/blob/{branch}/{source}).")
    return "```{admonition} Run it yourself\n:class: tip\n" + "\n\n".join(lines) + "\n```"


def source_notebook(source: Path, url: str = "", branch: str = "main"):
    """The py:percent chapter ``source`` read as a notebook, with the set-up cell."""
    import jupytext

    return with_setup_cell(jupytext.reads(Path(source).read_text(), fmt="py:percent"), url, branch)


def stage_notebook(executed: Path, source: Path, nb_dest: Path, url: str = "", branch: str = "main") -> None:
    """Put one executed notebook on the book's page tree ``nb_dest`` with the "run it yourself"
    note after its title, and its py:percent source, set-up cell included, in ``nb_dest/sources``."""
    import jupytext
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    at = 1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0
    rel = source.relative_to(REPO_ROOT).as_posix() if source.is_relative_to(REPO_ROOT) else source.name
    nb.cells.insert(at, nbformat.v4.new_markdown_cell(run_it_yourself(rel, url, branch)))
    nbformat.write(nb, nb_dest / executed.name)
    src_nb = source_notebook(source, url, branch)
    (nb_dest / "sources").mkdir(parents=True, exist_ok=True)
    (nb_dest / "sources" / source.name).write_text(jupytext.writes(src_nb, fmt="py:percent"))


def write_notebooks(out: Path, url: str = "", branch: str = "main") -> list[Path]:
    """Every chapter (``notebooks/NN_*.py``) as an unexecuted ``.ipynb`` with the set-up cell
    (installing from ``url`` at ``branch``) in the folder ``out``, each written whole or not at
    all, and a README saying where they come from; returns the notebooks written."""
    import nbformat

    from ..utils import write_text_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for src in sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.py")):
        nb = source_notebook(src, url, branch)
        nb.metadata.pop("jupytext", None)  # a plain notebook here, not a pair of the .py
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        dest = out / f"{src.stem}.ipynb"
        write_text_atomic(dest, nbformat.writes(nb))
        written.append(dest)
    where = f"{url} ({branch})" if url else "its repository"
    write_text_atomic(out / "README.md",
                      f"# Notebooks for Colab\n\nGenerated from the py:percent sources of {where} by "
                      "`python -m anomalysd_core.reproduce.standalone`; do not edit them here. Each one's "
                      "set-up cell clones that repository and installs the package when it is missing.\n")
    return written


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m anomalysd_core.reproduce.standalone",
                                 description="write the notebooks as .ipynb with their set-up cell (for Colab)")
    ap.add_argument("--out", required=True, help="folder to write them to")
    args = ap.parse_args(argv)
    url, branch = repository()
    for p in write_notebooks(Path(args.out), url, branch):
        print(p)


if __name__ == "__main__":
    main()
