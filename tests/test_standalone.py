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
                                    "https://github.com/o/r")
    tags = [c.metadata.get("tags", []) for c in nb.cells if c.cell_type == "code"]
    assert tags[0] == ["parameters"] and tags[1] == [standalone.SETUP_TAG]
    assert "REPOSITORY = 'https://github.com/o/r'" in nb.cells[[c.metadata.get("tags") for c in nb.cells].index(
        [standalone.SETUP_TAG])].source
    assert len(standalone.with_setup_cell(nb).cells) == len(nb.cells)
    compile(standalone.SETUP_CELL.format(repository=""), "setup", "exec")  # valid Python as written


def test_setup_cell_without_a_source_says_how_to_install(tmp_path):
    """Run alone with nothing to install from, the cell names what to do (not a bare ImportError)."""
    code = standalone.SETUP_CELL.format(repository="").replace('"anomalysd_core"', '"no_such_pkg_xyz"')
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
    assert "Binder" not in standalone.run_it_yourself("notebooks/05_main_results.py")


@pytest.mark.slow
def test_a_notebook_runs_alone_in_an_empty_folder(tmp_path):
    """A fresh environment that has the dependencies but not the package (the editable install's
    finder is not in it), a notebook copied alone into an empty folder: the set-up cell installs
    the package from the clone (ANOMALYSD_INSTALL_FROM), the notebook builds the smoke data in
    that folder and runs to the end."""
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
    nb = standalone.with_setup_cell(book.read_notebook(REPO_ROOT / "notebooks" / "02_masks_and_prompts.py"))
    nb.metadata["kernelspec"] = {"name": "alone", "display_name": "alone", "language": "python"}
    nbformat.write(nb, work / "02_masks_and_prompts.ipynb")
    env = {"JUPYTER_PATH": str(tmp_path / "jupyter"), "ANOMALYSD_INSTALL_FROM": str(REPO_ROOT),
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
    assert where.startswith(str(site)), where  # the installed copy, not the clone
    assert (work / "data" / "smoke").is_dir()  # built in the working folder
    out = nbformat.read(work / "out.ipynb", as_version=4)
    assert not [o for c in out.cells for o in c.get("outputs", []) if o.output_type == "error"]
