"""``results check``: a regenerated table against the committed one, within stated tolerances."""
import shutil
import subprocess

import pandas as pd
import pytest

from anomalysd_core.cli import main
from anomalysd_core.config import REPO_ROOT
from anomalysd_core.reproduce import drift


@pytest.fixture
def committed(tmp_path):
    """The committed mini tables, copied twice: as the 'committed' and the 'regenerated' folder."""
    src = REPO_ROOT / "results" / "mini"
    old, new = tmp_path / "old", tmp_path / "new"
    for d in (old, new):
        d.mkdir()
        for name in ("table1", "diagnosis"):
            shutil.copy(src / f"{name}.csv", d / f"{name}.csv")
    return old, new


def _run(capsys, *args):
    rc = main(["results", "check", *args])
    return rc, capsys.readouterr().out


def test_unchanged_regeneration_exits_0(committed, capsys):
    old, new = committed
    rc, out = _run(capsys, "--results", str(new), "--against", str(old))
    assert rc == 0 and "nothing moved" in out and "0.02" in out


def test_a_moved_cell_exits_1_and_is_named(committed, capsys):
    old, new = committed
    t = pd.read_csv(new / "table1.csv")
    t.loc[3, "i_auroc"] += 0.05       # beyond 0.02
    t.loc[4, "p_auroc"] += 0.01       # float noise: within
    t.to_csv(new / "table1.csv", index=False)
    rc, out = _run(capsys, "--results", str(new), "--against", str(old))
    r = t.loc[3]
    assert rc == 1
    moved = [line for line in out.splitlines() if line.startswith("MOVED")]
    assert len(moved) == 1 and "i_auroc" in moved[0] and f"class={r['class']}" in moved[0]
    assert f"setting={r['setting']}" in moved[0]


def test_a_lost_row_and_psnr_tolerance(committed, capsys):
    old, new = committed
    d = pd.read_csv(new / "diagnosis.csv")
    d.loc[1, "vae_psnr"] += 0.3       # within 0.5 dB
    d.iloc[1:].to_csv(new / "diagnosis.csv", index=False)
    rc, out = _run(capsys, "--results", str(new), "--against", str(old))
    moved = [line for line in out.splitlines() if line.startswith("MOVED")]
    assert rc == 1 and len(moved) == 1 and "only in the committed table" in moved[0]


def test_bad_input_exits_2(tmp_path, capsys):
    assert _run(capsys, "--results", str(tmp_path / "nowhere"))[0] == 2
    assert _run(capsys, "--profile", "nope")[0] == 2
    (tmp_path / "empty").mkdir()
    rc, out = _run(capsys, "--results", str(tmp_path / "empty"), "--against", str(tmp_path / "empty"))
    assert rc == 2 and "no table" in out


def test_against_git_history(tmp_path):
    """Without --against the committed table is ``git show REF:path``."""
    repo = tmp_path / "repo"
    (repo / "results" / "mini").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "results" / "mini" / "table3.csv", repo / "results" / "mini" / "table3.csv")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(git + ["add", "."], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-qm", "x"], cwd=repo, check=True)
    res = repo / "results" / "mini"
    assert drift.check(res, repo=repo, tables=("table3",))[0] == []
    t = pd.read_csv(res / "table3.csv")
    t.loc[0, "p_pro"] -= 0.1
    t.to_csv(res / "table3.csv", index=False)
    moved, compared = drift.check(res, repo=repo, tables=("table3",))
    assert compared == ["table3"] and [m.column for m in moved] == ["p_pro"]
    with pytest.raises(drift.DriftInputError, match="git show"):
        drift.check(res, ref="no-such-rev", repo=repo, tables=("table3",))


def test_no_committed_result_names_a_machine_path():
    """Committed results name paths relative to the repository (``utils.portable``), never the
    clone or temp folder of whichever machine made them. Run logs (``*.log``) are kept verbatim
    as the run printed them and are not checked."""
    import re

    bad = re.compile(r"(?<![\w.])/(?:tmp|home|root|work|Users|private|var/folders)/")
    hits = []
    for p in sorted((REPO_ROOT / "results").rglob("*")):
        if p.suffix in (".csv", ".json", ".md", ".txt") and p.is_file():
            text = p.read_text(errors="replace")
            if bad.search(text) or str(REPO_ROOT) in text:
                hits.append(p.relative_to(REPO_ROOT).as_posix())
    assert not hits, f"machine paths in {hits}"
