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


def test_scoring_size_says_which_size_and_why():
    mini = get_config("mini")
    size, note = own.scoring_size(mini, "anomalysd")
    assert size == mini.image_size == 64 and "64 px, the size its base model was trained at" in note
    size, note = own.scoring_size(mini, "anomalysd", 128)
    assert size == 128 and "trained at 64 px" in note
    assert own.scoring_size(mini, "protoknn") == (own.BANK_SIZE, own.scoring_size(mini, "protoknn")[1])
    assert own.scoring_size(mini, "padim", 96)[0] == 96
    for bad in (8, 0, 4096, 2.5, "256"):
        with pytest.raises(DataError, match="--size must be"):
            own.scoring_size(mini, "patchcore", bad)


def test_the_cli_states_the_default_size():
    """``score --help`` gives the memory-bank default that ``own.BANK_SIZE`` holds, and its reason."""
    import contextlib
    import io

    from anomalysd_core.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        main(["score", "--help"])
    text = " ".join(buf.getvalue().split())
    assert f"default {own.BANK_SIZE} (own.BANK_SIZE)" in text and "--strict" in text
    assert "64 px on mini" in text and "own resolution" in text


def test_score_at_256_px_returns_maps_at_the_input_size(folders, smoke_base, tmp_path, monkeypatch):
    good, new = folders
    seen, said = [], []
    score = own.OwnDetector.score
    monkeypatch.setattr(own.OwnDetector, "score", lambda self, img: seen.append(img.shape) or score(self, img))
    out = tmp_path / "out"
    df = own.score_own(_cfg(smoke_base, tmp_path), [new], good, "brick", out, method="protoknn", views=1,
                       size=256, progress=False, log=said.append)
    assert set(seen) == {(256, 256, 3)}  # calibration and new images alike
    assert (df["size"] == 256).all() and (df["seconds"] > 0).all()
    assert "protoknn scores at 256 px" in said[0]
    for stem, size in (("a", Image.open(new / "a.png").size), ("b", (80, 72))):
        assert Image.open(out / f"{stem}_map.png").size == size
    res = json.loads((out / "results.json").read_text())
    assert res["size"] == 256 and res["skipped"] == [] and "seconds" in pd.read_csv(out / "results.csv")


def test_every_file_is_accounted_for(folders, smoke_base, tmp_path):
    """A one-pixel image is refused by name; a .gif and a text file in the folder are listed as
    passed over (in the log and results.json), or refused with strict; a .gif named on its own is
    refused."""
    good, new = folders
    cfg, out = _cfg(smoke_base, tmp_path), tmp_path / "out"
    frames = [Image.new("RGB", (40, 40), c) for c in ("red", "blue")]
    frames[0].save(new / "moving.gif", save_all=True, append_images=frames[1:])
    (new / "notes.txt").write_text("not an image")
    said = []
    df = own.score_own(cfg, [new], good, "brick", out, method="patchcore", views=1, size=64, progress=False,
                       log=said.append)
    assert len(df) == 2
    skipped = json.loads((out / "results.json").read_text())["skipped"]
    assert [d["file"] for d in skipped] == [str(new / "moving.gif"), str(new / "notes.txt")]
    assert all("not an image type the loader takes" in d["reason"] for d in skipped)
    assert any("moving.gif" in s and "not scored" in s for s in said)
    with pytest.raises(DataError, match="--strict.*moving.gif"):
        own.score_own(cfg, [new], good, "brick", tmp_path / "o2", method="patchcore", size=64, strict=True,
                      progress=False, log=said.append)
    with pytest.raises(DataError, match="moving.gif.*not an image type"):
        own.score_own(cfg, [new / "moving.gif"], good, "brick", tmp_path / "o3", method="patchcore",
                      progress=False, log=said.append)
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    Image.new("RGB", (1, 1), "white").save(tiny / "dot.png")
    with pytest.raises(DataError, match=r"dot.png.*1 x 1 pixels: too small to score \(at least 32 x 32\)"):
        own.score_own(cfg, [tiny], good, "brick", tmp_path / "o4", method="patchcore", progress=False,
                      log=said.append)
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists() and not (tmp_path / "o4").exists()


def test_a_sideways_phone_photo_is_scored_upright(folders, smoke_base, tmp_path):
    """A JPEG stored sideways with EXIF orientation 6 (turn 90 degrees clockwise to view) is read
    upright: its map has the upright size and the pixels match the upright picture."""
    import numpy as np

    from anomalysd_core.data.datasets import load_photo

    good, _ = folders
    upright = np.zeros((48, 64, 3), np.uint8)
    upright[:12] = (220, 30, 30)  # a red band on top: wrong if the photo stays sideways
    upright[12:] = (40, 120, 200)
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # as the phone wrote it: 48 x 64
    exif = Image.Exif()
    exif[0x0112] = 6
    phone = tmp_path / "phone"
    phone.mkdir()
    stored.save(phone / "IMG_0001.jpg", exif=exif, quality=95)
    arr, notes, wh = load_photo(phone / "IMG_0001.jpg")
    assert wh == (64, 48) and arr.shape == (48, 64, 3) and "EXIF orientation (6)" in notes[0]
    assert np.abs(arr * 255 - upright).mean() < 4  # JPEG's loss only
    out = tmp_path / "out"
    df = own.score_own(_cfg(smoke_base, tmp_path), [phone], good, "brick", out, method="patchcore", views=1,
                       size=64, progress=False, log=lambda s: None)
    assert Image.open(out / "IMG_0001_map.png").size == (64, 48)
    assert Image.open(out / "IMG_0001_overlay.png").size == (64, 48)
    assert "upright" in df["notes"].iloc[0]


def test_16_bit_and_palette_images_are_converted_with_a_note(tmp_path):
    import numpy as np

    from anomalysd_core.data.datasets import load_photo

    ramp = (np.linspace(0, 65535, 64 * 40).reshape(40, 64)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    arr, notes, _ = load_photo(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    assert notes == ["16-bit image, scaled to [0, 1] (divided by 65535)"]
    assert arr.min() == 0 and abs(arr.max() - 1) < 1e-6 and 0.45 < arr.mean() < 0.55  # not clipped white
    Image.new("RGB", (40, 40), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "pal.png")
    arr, notes, _ = load_photo(tmp_path / "pal.png")
    assert notes == ["palette image, converted to RGB"] and np.allclose(arr[0, 0] * 255, (10, 200, 30), atol=1)
