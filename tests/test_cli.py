"""Command line: data build, error handling (exit 2 naming the bad value), device fallback, score."""
import json
import subprocess
import sys
import warnings

import pandas as pd
import pytest
import torch
from PIL import Image

from anomalysd_core import cli
from anomalysd_core.config import REPO_ROOT
from anomalysd_core.utils import resolve_device


def _smoke_args(smoke_base, smoke_data, tmp_path, *extra):
    # no fine-tune: these tests check the command line, not the training
    return ["--profile", "smoke", "--base-model", str(smoke_base), "--data-root", str(smoke_data),
            "--out-dir", str(tmp_path / "runs"), "--set", "grid_scales=1,2",
            "--set", "finetune_unet=false", "--set", "finetune_decoder=false", *extra]


def test_build_mini_subprocess(tmp_path):
    out = tmp_path / "smoke32"
    r = subprocess.run([sys.executable, "-m", "anomalysd_core", "data", "build-mini", "--out", str(out),
                        "--profile", "smoke", "--size", "32"], cwd=REPO_ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout
    info = json.loads((out / "build_complete.json").read_text())
    assert info["profile"] == "smoke" and info["size"] == 32
    for cls in ("brick", "coins", "solar_mono"):
        imgs = sorted((out / cls / "train" / "good").glob("*.png"))
        assert len(imgs) == 2 and Image.open(imgs[0]).size == (32, 32)
    assert (out / "manifest.csv").is_file()


def test_score_empty_folder_and_missing_path(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["score", str(empty), "--class", "brick", "--profile", "smoke"]) == 2
    assert f"folder {str(empty)!r} holds no images" in capsys.readouterr().err
    missing = tmp_path / "nothing.png"
    assert cli.main(["score", str(missing), "--class", "brick", "--profile", "smoke"]) == 2
    assert str(missing) in capsys.readouterr().err


def test_missing_base_model_exits_2(smoke_data, tmp_path, capsys):
    img = tmp_path / "x.png"
    Image.new("RGB", (64, 64), (120, 60, 30)).save(img)
    missing = tmp_path / "no-such-model"
    code = cli.main(["score", str(img), "--class", "brick", "--profile", "smoke",
                     "--base-model", str(missing), "--data-root", str(smoke_data),
                     "--out-dir", str(tmp_path / "runs")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and str(missing) in err and "does not exist" in err


def test_bad_override_and_unknown_profile_field(capsys):
    assert cli.main(["fit", "--profile", "smoke", "--set", "no_such_field=1"]) == 2
    assert "no_such_field" in capsys.readouterr().err
    assert cli.main(["fit", "--profile", "smoke", "--set", "noise_strength=strong"]) == 2
    assert "'strong'" in capsys.readouterr().err


def test_resolve_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.warns(UserWarning, match="'cuda' was asked for but CUDA is not available"):
        assert resolve_device("cuda") == torch.device("cpu")
    with pytest.warns(UserWarning, match="cuda:1"):
        assert resolve_device("cuda:1") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_device("cuda") == torch.device("cuda")


def test_score_unknown_class_and_a_real_score(smoke_base, smoke_data, tmp_path, capsys):
    """``--device cuda`` without a GPU warns and runs on the CPU; an unknown class exits 2 naming
    it and the known classes; a known class writes overlays and scores.csv."""
    src = sorted((smoke_data / "brick" / "test").rglob("*.png"))[:2]
    folder = tmp_path / "mine"
    folder.mkdir()
    for p in src:
        (folder / f"{p.parent.name}_{p.name}").write_bytes(p.read_bytes())
    args = _smoke_args(smoke_base, smoke_data, tmp_path)
    code = cli.main(["score", str(folder), "--class", "nope", *args])  # fails before any fitting
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown class 'nope'" in err and "brick, coins, solar_mono" in err

    out = tmp_path / "scored"
    if torch.cuda.is_available():
        code = cli.main(["score", str(folder), "--class", "brick", "--out", str(out), *args])
    else:
        with pytest.warns(UserWarning, match="CUDA is not available"):
            code = cli.main(["score", str(folder), "--class", "brick", "--out", str(out),
                             "--device", "cuda", *args])
    assert code == 0
    df = pd.read_csv(out / "scores.csv")
    assert len(df) == 2 and df["score"].notna().all() and set(df["class"]) == {"brick"}
    for p in folder.iterdir():
        assert (out / f"{p.stem}_map.png").is_file()


def test_typo_and_bad_value_fail_before_any_model_is_loaded(tmp_path):
    """A mistyped --data-root and an out-of-range --set fail at the front door: exit status 2, a
    message naming them, no folder made, and torch never imported (so it takes a fraction of a
    second, not minutes of fine-tuning)."""
    typo = tmp_path / "dat" / "mini"
    code = ("import sys; from anomalysd_core.cli import main; "
            f"rc = main(['evaluate', '--profile', 'mini', '--data-root', {str(typo)!r}]); "
            "rc2 = main(['evaluate', '--profile', 'mini', '--set', 'noise_strength=1.5']); "
            "print(rc, rc2, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["2", "2", "False"], r.stderr
    assert f"data_root '{typo}' does not exist" in r.stderr and "data build-mini" in r.stderr
    assert "noise_strength must be in (0, 1], got 1.5" in r.stderr
    assert not typo.parent.exists()
