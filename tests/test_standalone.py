"""A notebook on its own (reproduce/standalone.py): its set-up cell installs the package where it
is missing, and the notebook then runs in an empty folder outside the clone, building its data
there. The book's pages link the sources with that cell."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest

from anomalysd_core.config import REPO_ROOT
from anomalysd_core.reproduce import book, standalone


def test_setup_cell_follows_the_parameters_and_is_added_once():
    nb = standalone.with_setup_cell(book.read_notebook(REPO_ROOT / "notebooks" / "02_masks_and_prompts.py"),
                                    "https://github.com/o/r", "dev")
    tags = [c.metadata.get("tags", []) for c in nb.cells if c.cell_type == "code"]
    assert tags[0] == ["parameters"] and tags[1] == [standalone.SETUP_TAG]
    assert "REPOSITORY, BRANCH = 'https://github.com/o/r', 'dev'" in nb.cells[[c.metadata.get("tags") for c in nb.cells].index(
        [standalone.SETUP_TAG])].source
    assert len(standalone.with_setup_cell(nb).cells) == len(nb.cells)
    compile(standalone.SETUP_CELL.format(repository="", branch="main"), "setup", "exec")  # valid Python as written


def test_setup_cell_without_a_source_says_how_to_install(tmp_path):
    """Run alone with nothing to install from, the cell names what to do (not a bare ImportError)."""
    code = standalone.SETUP_CELL.format(repository="", branch="main").replace('"anomalysd_core"', '"no_such_pkg_xyz"')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "ANOMALYSD_INSTALL_FROM": ""}, timeout=60)
    assert out.returncode != 0 and "ANOMALYSD_INSTALL_FROM" in out.stderr


def test_repository_url_from_the_environment_or_the_config(monkeypatch, tmp_path):
    (tmp_path / "_config.yml").write_text("repository:\n  url: https://github.com/a/b/\n  branch: dev\n")
    monkeypatch.delenv("BOOK_REPOSITORY_URL", raising=False)
    monkeypatch.delenv("BOOK_REPOSITORY_BRANCH", raising=False)
    assert standalone.repository(tmp_path) == ("https://github.com/a/b", "dev")
    monkeypatch.setenv("BOOK_REPOSITORY_URL", "https://github.com/c/d")
    assert standalone.repository(tmp_path) == ("https://github.com/c/d", "dev")
    note = standalone.run_it_yourself("notebooks/05_main_results.py", "https://github.com/c/d", "main")
    assert "mybinder.org/v2/gh/c/d/main?urlpath=lab/tree/notebooks/05_main_results.py" in note
    assert "colab.research.google.com/github/c/d/blob/colab/05_main_results.ipynb" in note
    assert "Binder" not in standalone.run_it_yourself("notebooks/05_main_results.py")


def test_colab_notebooks_are_the_chapters_with_their_set_up_cell(tmp_path, monkeypatch):
    """``python -m anomalysd_core.reproduce.standalone --out DIR`` (what the book workflow pushes to
    the colab branch): one .ipynb per chapter, the same cells as its py:percent source after the
    set-up cell, which clones the repository the book names."""
    monkeypatch.setenv("BOOK_REPOSITORY_URL", "https://github.com/c/d")
    monkeypatch.setenv("BOOK_REPOSITORY_BRANCH", "main")
    standalone.main(["--out", str(tmp_path)])
    chapters = sorted(p.stem for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    assert sorted(p.stem for p in tmp_path.glob("*.ipynb")) == chapters and (tmp_path / "README.md").is_file()
    for stem in chapters:
        nb = nbformat.read(tmp_path / f"{stem}.ipynb", as_version=4)
        src = book.read_notebook(REPO_ROOT / "notebooks" / f"{stem}.py")
        setup = [c for c in nb.cells if standalone.SETUP_TAG in c.metadata.get("tags", [])]
        assert len(setup) == 1 and "REPOSITORY, BRANCH = 'https://github.com/c/d', 'main'" in setup[0].source
        assert [c.source for c in nb.cells if c not in setup] == [c.source for c in src.cells]
        assert "jupytext" not in nb.metadata and nb.metadata["kernelspec"]["name"] == "python3"


def _repository_copy(dest: Path) -> Path:
    """A git repository of this working tree as it is (tracked and untracked files, uncommitted
    edits included) on branch main: what the set-up cell clones in place of GitHub."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO_ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        if (REPO_ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            (dest / f).write_bytes((REPO_ROOT / f).read_bytes())
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(dest)]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "copy"]):
        subprocess.run(git + args, check=True, timeout=120)
    return dest


@pytest.mark.slow
@pytest.mark.parametrize("install", ["clone", "pip"])
def test_a_notebook_runs_alone_in_an_empty_folder(tmp_path, install):
    """A fresh environment that has the dependencies but not the package (the editable install's
    finder is not in it), a notebook copied alone into an empty folder, its set-up cell left to
    install the package: ``clone`` as on Colab (git clone of the book's repository beside the
    notebook, an editable install, data built in that clone); ``pip`` from ANOMALYSD_INSTALL_FROM
    (data built in the working folder). Either way the notebook runs to the end."""
    import papermill as pm

    env_dir, work = tmp_path / "env", tmp_path / "work"
    work.mkdir()
    # no pip or setuptools of its own (ensurepip's older ones would shadow the dependencies')
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=300)
    py = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # the dependencies of this interpreter as plain path entries: their .pth files (the editable
    # install of anomalysd_core among them) are not run, so the package itself is not importable
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe = subprocess.run([str(py), "-c", "import importlib.util as u; print(u.find_spec('anomalysd_core'), "
                            "u.find_spec('torch') is not None)"], capture_output=True, text=True, cwd=work)
    assert probe.stdout.split() == ["None", "True"], probe.stdout + probe.stderr
    kernels = tmp_path / "jupyter" / "kernels" / "alone"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(py), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "alone", "language": "python"}))
    origin = str(_repository_copy(tmp_path / "origin")) if install == "clone" else ""
    nb = standalone.with_setup_cell(book.read_notebook(REPO_ROOT / "notebooks" / "02_masks_and_prompts.py"),
                                    origin, "main")
    nb.metadata["kernelspec"] = {"name": "alone", "display_name": "alone", "language": "python"}
    nbformat.write(nb, work / "02_masks_and_prompts.ipynb")
    env = {"JUPYTER_PATH": str(tmp_path / "jupyter"), "ANOMALYSD_INSTALL_FROM": str(REPO_ROOT) if install == "pip" else "",
           # the install builds the package with this environment's setuptools and keeps its
           # dependencies (a clean machine would fetch them from the index)
           "PIP_NO_BUILD_ISOLATION": "0", "PIP_NO_DEPS": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        pm.execute_notebook(str(work / "02_masks_and_prompts.ipynb"), str(work / "out.ipynb"),
                            parameters={"profile": "smoke"}, kernel_name="alone", cwd=str(work),
                            progress_bar=False, execution_timeout=600)
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    where = subprocess.run([str(py), "-c", "import anomalysd_core; print(anomalysd_core.__file__)"],
                           capture_output=True, text=True, cwd=work).stdout.strip()
    clone = work / "anomalysd-companion"
    if install == "clone":  # the editable install of the clone beside the notebook, its data there
        assert where == str(clone / "anomalysd_core" / "__init__.py"), where
        assert (clone / "data" / "smoke").is_dir() and not (work / "data").exists()
    else:  # the installed copy, not the clone; its data in the working folder
        assert where.startswith(str(site)), where
        assert (work / "data" / "smoke").is_dir() and not clone.exists()
    out = nbformat.read(work / "out.ipynb", as_version=4)
    assert not [o for c in out.cells for o in c.get("outputs", []) if o.output_type == "error"]
