"""Scoring your own images (own.py and `score --normals --name`): the threshold from the normals
alone, the outputs, and every bad input named before any work."""
import json
import shutil

import pandas as pd
import pytest
from PIL import Image

from anomalysd_core import own
from anomalysd_core.config import get_config
from anomalysd_core.data.datasets import DataError


@pytest.fixture
def folders(smoke_data, tmp_path):
    """Three normal photos (renamed, another size than the model's) and two new images."""
    good, new = tmp_path / "good", tmp_path / "new"
    good.mkdir(), new.mkdir()
    for i, p in enumerate(sorted((smoke_data / "brick" / "train" / "good").glob("*.png"))):
        Image.open(p).resize((48, 40)).save(good / f"photo {i}.png")
    normal_test = sorted((smoke_data / "brick" / "test" / "good").glob("*.png"))[0]
    bad_test = sorted(p for p in (smoke_data / "brick" / "test").rglob("*.png") if p.parent.name != "good")[0]
    shutil.copy(normal_test, new / "a.png")
    Image.open(bad_test).resize((80, 72)).save(new / "b.png")
    return good, new


def _cfg(smoke_base, tmp_path, **over):
    return get_config("smoke", base_model=str(smoke_base), out_dir=str(tmp_path / "runs"), grid_scales=(1, 2), **over)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["patchcore", "anomalysd"])
def test_score_own_writes_maps_and_a_calibrated_decision(folders, smoke_base, tmp_path, method):
    good, new = folders
    n_good = len(list(good.iterdir()))
    out = tmp_path / "out"
    df = own.score_own(_cfg(smoke_base, tmp_path), [new], good, "clay brick", out, method=method, views=2,
                       progress=False)
    assert list(df["file"]) == [str(new / "a.png"), str(new / "b.png")]
    res = json.loads((out / "results.json").read_text())
    cal = res["calibration"]
    assert cal["leave_one_out"] and len(cal["scores"]) == 2 * n_good
    assert cal["threshold"] == max(cal["scores"])  # the rule: above every left-out normal view
    assert (df["threshold"] == cal["threshold"]).all()
    assert list(df["decision"]) == ["anomalous" if s > cal["threshold"] else "normal" for s in df["score"]]
    assert pd.read_csv(out / "results.csv").shape[0] == 2
    for stem, size in (("a", Image.open(new / "a.png").size), ("b", (80, 72))):
        assert Image.open(out / f"{stem}_map.png").size == size  # the input's resolution
        assert Image.open(out / f"{stem}_overlay.png").size == size
    if method == "anomalysd":
        prompts = (out / "prompts.yaml").read_text()
        assert "A perfect clay brick." in prompts and "The clay brick is in perfect condition" in prompts
        assert (tmp_path / "runs" / "smoke" / "own").is_dir()  # the fine-tune is cached there
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_bad_inputs_are_named_before_any_work(folders, smoke_base, tmp_path):
    good, new = folders
    cfg = _cfg(smoke_base, tmp_path)
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no images"):
        own.score_own(cfg, [empty], good, "brick", out, method="patchcore", progress=False)
    with pytest.raises(DataError, match="no such file or folder"):
        own.score_own(cfg, [tmp_path / "nope.png"], good, "brick", out, method="patchcore", progress=False)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        own.score_own(cfg, [broken], good, "brick", out, method="patchcore", progress=False)
    with pytest.raises(DataError, match=r"--shots 9: the normals folder holds only \d image"):
        own.score_own(cfg, [new], good, "brick", out, method="patchcore", shots=9, progress=False)
    same = tmp_path / "same"
    same.mkdir()
    shutil.copy(good / "photo 0.png", same / "copy.png")
    with pytest.raises(DataError, match=r"copy.png' is the same image as the normal .*photo 0.png"):
        own.score_own(cfg, [same], good, "brick", out, method="patchcore", progress=False)
    with pytest.raises(DataError, match="--normals .* is not a folder"):
        own.score_own(cfg, [new], tmp_path / "nothing", "brick", out, method="patchcore", progress=False)
    with pytest.raises(DataError, match="--method 'vae'"):
        own.score_own(cfg, [new], good, "brick", out, method="vae", progress=False)
    with pytest.raises(DataError, match="--name '  ' has no letters"):
        own.score_own(cfg, [new], good, "  ", out, method="patchcore", progress=False)
    assert not out.exists()  # nothing written by any failed run


def test_class_id():
    assert own.class_id(" Metal plate #2 ") == "metal_plate_2"


def test_cli_lists_every_method_and_needs_both_options(capsys, folders):
    from anomalysd_core.cli import main

    with pytest.raises(SystemExit):
        main(["score", "--help"])
    text = capsys.readouterr().out
    assert all(m in text for m in own.METHODS) and "--normals" in text and "--name" in text
    good, new = folders
    assert main(["score", str(new), "--normals", str(good)]) == 2
    assert "needs both --normals GOOD_DIR and --name NAME" in capsys.readouterr().err
    assert main(["score", str(new)]) == 2
    assert "--normals GOOD_DIR and --name NAME (or --class" in capsys.readouterr().err
