"""Our batched inpainting engine (``inpaint.inpaint``, eq 11) computes what diffusers'
``StableDiffusionInpaintPipeline`` computes, on the tiny random-weight SD-inpainting checkpoint:
both loaded from the same folder (ours by ``models.load_components``, diffusers' by its own
``from_pretrained``), fed the same latents (z = E(x) as the posterior mean, z_o = E((1 - m) x)),
timesteps, prompt embedding, guidance 1 and seed (``benchmarks/naive_pipeline.engine_vs_pipeline``).
The sampler is DDIM (eta 0) on both sides: the paper's profile runs DDIM, so the pipeline gets a
``DDIMScheduler`` made from the checkpoint's scheduler config.
"""
import sys
from pathlib import Path

import pytest
import torch

from anomalysd_core.method import inpaint as ip
from anomalysd_core.method.masks import grid_masks

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from naive_pipeline import engine_vs_pipeline  # noqa: E402

#: float32 on a CPU: the paths differ by rounding only, 2e-6 on one thread; on two threads the
#: reduction order depends on the batch and moved x^ by up to 4e-4 here. A swapped channel order
#: moves it by more than 0.1.
TOLERANCE = 1e-3
STEPS = 10


@pytest.fixture(scope="module")
def setting(tiny_sd, tiny_comp):
    from diffusers import DDIMScheduler, StableDiffusionInpaintPipeline

    pipe = StableDiffusionInpaintPipeline.from_pretrained(str(tiny_sd), safety_checker=None,
                                                          requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    size = tiny_comp.unet.config.sample_size * 8
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, size, size, generator=gen)
    masks = grid_masks(size, (1, 2))[0].float()  # 5 masks, on the latent grid
    ctx = torch.randn(1, 77, tiny_comp.unet.config.cross_attention_dim, generator=gen)
    return pipe, x, masks, ctx


@pytest.mark.parametrize("strength", [0.3, 0.6])
def test_the_engine_equals_the_diffusers_pipeline(setting, tiny_comp, strength):
    pipe, x, masks, ctx = setting
    r = engine_vs_pipeline(tiny_comp, pipe, x, masks, ctx, strength, STEPS, seed=3)
    assert r["engine_vs_pipeline"] < TOLERANCE, r
    assert r["batched_vs_one_at_a_time"] < TOLERANCE, r
    assert r["masks"] == 5 and ip.unet_calls(strength, STEPS) == int(strength * STEPS) + 1


def test_the_check_fails_on_a_swapped_channel_order(setting, tiny_comp, monkeypatch):
    """[z_t ; z_o ; m~], the paper's written order, is not what the checkpoints were trained on."""
    pipe, x, masks, ctx = setting
    right = ip.unet_input

    def paper_order(zt, zo, m):
        stacked = right(zt, zo, m)  # [z_t ; m~ ; z_o]
        return torch.cat([stacked[:, :4], stacked[:, 5:], stacked[:, 4:5]], dim=1)

    monkeypatch.setattr(ip, "unet_input", paper_order)
    r = engine_vs_pipeline(tiny_comp, pipe, x, masks, ctx, 0.6, STEPS, seed=3)
    assert r["engine_vs_pipeline"] > 30 * TOLERANCE, r
