"""The GitHub Actions workflows (.github/workflows): actionlint and zizmor pass on each, and
each catches what it should (a broken workflow fails both); the steps call the same make
targets and commands a person runs, so the suite that runs those tests them."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def tool(name: str) -> str:
    """The checker installed beside this interpreter by ``pip install -e .[dev]``."""
    path = Path(sys.executable).parent / name
    if not path.is_file():
        pytest.fail(f"{name} is not installed beside {sys.executable}; run `pip install -e .[dev]`")
    return str(path)


def actionlint(*files) -> subprocess.CompletedProcess:
    return subprocess.run([tool("actionlint"), "-config-file", str(REPO / ".github" / "actionlint.yaml"),
                           "-no-color", *map(str, files)], capture_output=True, text=True, timeout=120)


def zizmor(*paths) -> subprocess.CompletedProcess:
    return subprocess.run([tool("zizmor"), "--offline", "--no-progress", *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


def steps(name: str) -> list[dict]:
    wf = yaml.safe_load((REPO / ".github" / "workflows" / name).read_text())
    return [s for job in wf["jobs"].values() for s in job.get("steps", [])]


def runs(name: str) -> str:
    return "\n".join(s.get("run", "") for s in steps(name))


def test_the_three_workflows_exist():
    assert [p.name for p in WORKFLOWS] == ["book.yml", "paper.yml", "tests.yml"]


def test_actionlint_passes_on_every_workflow():
    out = actionlint(*WORKFLOWS)
    assert out.returncode == 0, out.stdout + out.stderr


def test_zizmor_passes_on_every_workflow():
    out = zizmor(*WORKFLOWS)
    assert out.returncode == 0, out.stdout + out.stderr


def test_both_checkers_fail_on_a_broken_workflow(tmp_path):
    """A step that pastes an untrusted issue title into a shell and an action pinned to a branch:
    each checker must say no, or its passing above means nothing."""
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text("on: issues\npermissions: {}\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - uses: actions/checkout@main\n"
                   "      - run: echo \"${{ github.event.issue.title }}\"\n")
    out = actionlint(bad)
    assert out.returncode != 0 and "untrusted" in out.stdout, out.stdout
    out = zizmor(bad)
    found = out.stdout + out.stderr
    assert out.returncode != 0 and "template-injection" in found and "unpinned-uses" in found, found


def test_steps_call_the_commands_a_person_runs():
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, re.M))
    for name in ("tests.yml", "book.yml", "paper.yml"):
        for target in re.findall(r"\bmake (\w+)", runs(name)):
            assert target in targets, (name, target)
    assert "make test" in runs("tests.yml")
    assert (REPO / ".ci" / "run").read_text().strip().endswith("make test")
    book = runs("book.yml")
    assert "make book" in book and "anomalysd_core results check --profile mini" in book
    assert "make book PROFILE=paper" in runs("paper.yml")
    assert "BOOK_ARGS" in makefile  # the paper workflow's data_root reaches the notebooks through it


def test_book_workflow_publishes_the_site_and_uploads_the_results():
    wf = yaml.safe_load((REPO / ".github" / "workflows" / "book.yml").read_text())
    on = wf[True] if True in wf else wf["on"]  # YAML 1.1 reads the key `on` as True
    assert "schedule" in on and on["push"]["branches"] == ["main"]
    uses = [s.get("uses", "").split("@")[0] for s in steps("book.yml")]
    assert {"actions/upload-pages-artifact", "actions/upload-artifact", "actions/deploy-pages"} <= set(uses)
    assert wf["jobs"]["deploy"]["permissions"] == {"pages": "write", "id-token": "write"}
    assert wf["permissions"] == {"contents": "read"}
    # the Colab links' notebooks: written by the documented command, pushed only from main
    colab = wf["jobs"]["colab"]
    assert colab["permissions"] == {"contents": "write"} and colab["if"] == "github.ref == 'refs/heads/main'"
    script = "\n".join(s.get("run", "") for s in colab["steps"])
    assert "python -m anomalysd_core.reproduce.standalone --out" in script and " colab\n" in script + "\n"


def test_paper_workflow_runs_on_a_gpu_runner_by_hand():
    wf = yaml.safe_load((REPO / ".github" / "workflows" / "paper.yml").read_text())
    on = wf[True] if True in wf else wf["on"]
    assert list(on) == ["workflow_dispatch"] and on["workflow_dispatch"]["inputs"]["data_root"]["required"]
    assert "self-hosted" in wf["jobs"]["paper"]["runs-on"] and "gpu" in wf["jobs"]["paper"]["runs-on"]
    # inputs reach the shell through the environment, never pasted into the script
    assert "${{" not in runs("paper.yml")
