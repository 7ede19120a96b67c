"""Shared, session-scoped fixtures: each is built once per pytest run.

* ``tiny_sd``: a random-weight SD inpainting checkpoint in diffusers' layout (``tiny.py``), the
  stand-in for the paper's ``stable-diffusion-inpainting`` base model; 64 px images.
* ``tiny_comp``: its components loaded through ``models.load_components`` (read-only: tests that
  train load their own copy).
* ``smoke_base``: a random-weight *mini* base model (MiniLM text encoder), as ``pretrain`` writes,
  at the smoke profile's image size (``SMOKE_SIZE``).
* ``smoke_data``: the smoke benchmark (3 classes, ``SMOKE_SIZE`` px), built by ``mini.build_mini``;
  ``get_config("smoke", data_root=...)`` uses it as it is (same size and profile: no rebuild).
"""
import os
import warnings

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", category=FutureWarning)
# Tiny models on a shared CPU: one intra-op thread is several times faster than oversubscribed
# cores (and leaves the other core to whatever else runs). ANOMALYSD_TEST_THREADS overrides.
torch.set_num_threads(int(os.environ.get("ANOMALYSD_TEST_THREADS", "1")))
# Table functions run their settings in one process here (the parallel path has its own test).
os.environ.setdefault("ANOMALYSD_WORKERS", "1")

SIZE = 64  # the tiny SD checkpoint (paper profile tests)


def _smoke_size() -> int:
    from anomalysd_core.config import get_config

    return get_config("smoke").image_size


SMOKE_SIZE = _smoke_size()


@pytest.fixture(scope="session")
def device():
    from anomalysd_core.utils import resolve_device

    return resolve_device("auto")


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    from anomalysd_core.data.tiny import save_tiny_sd_inpainting

    return save_tiny_sd_inpainting(tmp_path_factory.mktemp("tiny-sd") / "sd-inpainting", image_size=SIZE)


@pytest.fixture(scope="session")
def tiny_cfg(tiny_sd, tmp_path_factory):
    from anomalysd_core.config import get_config

    return get_config("paper", base_model=str(tiny_sd), image_size=SIZE, num_inference_steps=4,
                      grid_scales=(1, 2), batch_size=2, out_dir=str(tmp_path_factory.mktemp("runs")))


@pytest.fixture(scope="session")
def tiny_comp(tiny_cfg):
    from anomalysd_core.method.models import load_components

    return load_components(tiny_cfg)


@pytest.fixture(scope="session")
def smoke_base(tmp_path_factory):
    from anomalysd_core.method.models import new_mini_components, save_base

    comp = new_mini_components(SMOKE_SIZE, seed=0)
    comp.vae.register_to_config(scaling_factor=1.0)
    return save_base(comp, tmp_path_factory.mktemp("mini") / "mini-base", {"stage": "test", "random": True})


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory):
    from anomalysd_core.data.mini import build_mini
    from anomalysd_core.data.sources import MINI_SEED

    return build_mini(tmp_path_factory.mktemp("data") / "smoke", size=SMOKE_SIZE, seed=MINI_SEED,
                      profile="smoke")
