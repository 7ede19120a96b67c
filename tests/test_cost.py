"""The cost model counts the calls the batched engine really makes."""
import math

import pytest
import torch

from anomalysd_core.reproduce import cost
from anomalysd_core.method.inpaint import inpaint, start_timesteps
from anomalysd_core.method.models import scheduler_config


def test_unet_calls_match_engine_timesteps():
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(**scheduler_config())
    for steps in (1, 2, 4, 5, 10, 20, 50):
        for lam in (0.05, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7, 0.8, 1.0):
            assert cost.unet_calls_per_mask(lam, steps) == len(start_timesteps(sched, steps, lam))


def test_we_start_at_lambda_T_one_step_above_diffusers():
    # ours keeps the steps at or below lambda*T (floor + 1); diffusers keeps int(lambda*steps)
    for steps, lam in [(10, 0.4), (5, 0.4), (20, 0.4), (50, 0.4), (4, 0.5), (5, 0.3)]:
        assert cost.unet_calls_per_mask(lam, steps) == cost.diffusers_calls_per_mask(lam, steps) + 1
    assert cost.unet_calls_per_mask(1.0, 10) == cost.diffusers_calls_per_mask(1.0, 10) == 10


def test_paper_counts():
    c = cost.calls_per_image(cost.n_grid_masks((1, 2, 4, 8)) + 1, 0.4, 50)
    assert c.n_masks == 86 and c.unet == 86 * 21 and c.vae_encode == 87
    assert c.vae_decode == 86 and c.distance == 86
    costs = cost.CallCosts(unet=1.0, vae_encode=0.5, vae_decode=2.0, distance=0.25, fixed=3.0)
    b = cost.predict_breakdown(c, costs)
    assert b["total"] == pytest.approx(86 * 21 + 43.5 + 172 + 21.5 + 3)
    assert cost.project_dataset_hours(3600.0, 10) == pytest.approx(10.0)
    with pytest.raises(ValueError):
        cost.calls_per_image(0, 0.4, 10)
    with pytest.raises(ValueError):
        cost.unet_calls_per_mask(0.0, 10)


def test_stage_timer_counts_engine_calls():
    """A run of the engine makes exactly the predicted number of U-Net/VAE items."""
    from anomalysd_core.method.masks import grid_masks
    from anomalysd_core.method.models import mini_unet_config, mini_vae_config, Components
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    vae = AutoencoderKL(**mini_vae_config(32)).eval()
    unet = UNet2DConditionModel(**mini_unet_config(4, 16)).eval()
    comp = Components(vae, unet, None, DDIMScheduler(**scheduler_config()), torch.device("cpu"))
    masks, _ = grid_masks(32, (1, 2))
    ctx = torch.randn(1, 3, 16)
    lam, steps, batch = 0.5, 4, 2
    with cost.StageTimer(cost.engine_modules(comp)) as st:
        inpaint(comp, torch.rand(1, 3, 32, 32), masks, ctx, lam, steps, batch=batch)
    want = cost.calls_per_image(masks.shape[0], lam, steps)
    assert st.items == {"unet": want.unet, "vae_encode": want.vae_encode, "vae_decode": want.vae_decode}
    n_chunks = math.ceil(masks.shape[0] / batch)
    assert st.calls["unet"] == n_chunks * cost.unet_calls_per_mask(lam, steps)
    assert all(v > 0 for v in st.per_item().values())
    c = cost.measure_call_costs(comp, None, image_size=32, batch=2, context=ctx, repeats=1)
    assert c.unet > 0 and c.vae_encode > 0 and c.vae_decode > 0 and math.isnan(c.distance)
