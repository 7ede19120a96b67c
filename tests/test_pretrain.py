"""Pre-training of the mini base model: the GPU path's mask sampler and a tiny CPU run end to end."""
from __future__ import annotations

import json

import pytest
import torch

from anomalysd_core.reproduce import pretrain as pt


def test_device_masks_draw_cells_rectangles_and_discs():
    gen = torch.Generator().manual_seed(0)
    m = pt.device_masks(400, 32, gen)
    assert m.shape == (400, 1, 32, 32) and set(m.unique().tolist()) <= {0.0, 1.0}
    area = m.mean(dim=(1, 2, 3))
    assert (area > 0).all()  # every mask hides something
    # the k x k grid cells of inference (k = 1, 2, 4, 8) are among them: areas 1, 1/4, 1/16, 1/64
    for a in (1.0, 0.25, 1 / 16, 1 / 64):
        assert (area - a).abs().min() < 1e-6
    assert len(area.unique()) > 20  # rectangles and discs of many sizes
    again = pt.device_masks(400, 32, torch.Generator().manual_seed(0))
    assert torch.equal(m, again)


def test_tiny_pretrain_writes_a_loadable_base(tmp_path):
    """Both stages with a tiny budget (the same code path a GPU takes, on the CPU); resumable: a
    second call continues from the checkpoints."""
    from anomalysd_core.config import get_config
    from anomalysd_core.method.models import load_components

    out = tmp_path / "base"
    pt.pretrain(out, size=32, vae_steps=2, unet_steps=2, work=tmp_path / "work", vae_batch=2,
                unet_batch=3, device="cpu")
    card = json.loads((out / "anomalysd.json").read_text())
    assert card["vae"]["steps"] == 2 and card["unet"]["steps"] == 2
    assert card["unet"]["batch"] == 3 and card["amp"] is False and card["device"] == "cpu"
    for f in ("unet/config.json", "vae/config.json", "README.md", "losses.csv", "inpainting.png"):
        assert (out / f).is_file(), f
    comp = load_components(get_config("smoke", base_model=str(out), image_size=32), torch.device("cpu"))
    assert comp.unet.config.in_channels == 9
    pt.pretrain(out, stage="unet", size=32, vae_steps=2, unet_steps=3, work=tmp_path / "work",
                unet_batch=3)
    assert json.loads((out / "anomalysd.json").read_text())["unet"]["steps"] == 3  # resumed: 1 more


def test_pretrain_rejects_a_bad_batch(tmp_path):
    with pytest.raises(ValueError, match="unet_batch must be >= 1"):
        pt.pretrain(tmp_path / "b", unet_batch=0, work=tmp_path / "w")
