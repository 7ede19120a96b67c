"""Table (4) of ``inference_speed.py``: the paper's size on this CPU. SD-1.5-inpainting-size
U-Net and VAE with random weights (the time does not depend on the weights), per-call costs
measured on a few masks and projected to the paper's 86 masks x 50 steps at lambda 0.4."""
from __future__ import annotations

import time

import pandas as pd
import torch
from speed_timing import log, timed

from anomalysd_core.method.inpaint import inpaint
from anomalysd_core.reproduce import cost as cost_mod

PAPER_MASKS, PAPER_STEPS, PAPER_LAMBDA, PAPER_SIZE = 86, 50, 0.4, 512


# SD-1.5-inpainting's U-Net (9 input channels, 768-d cross-attention) and SD's VAE
SD_UNET = dict(in_channels=9, out_channels=4, cross_attention_dim=768, sample_size=64)


SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=512,
              down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
              block_out_channels=(128, 256, 512, 512), layers_per_block=2)


def random_models(unet_kw: dict, vae_kw: dict, device, seed: int = 0):
    """A ``UNet2DConditionModel`` and an ``AutoencoderKL`` with random weights on ``device``, built
    without the default initialisers' cost (timing only: the time does not depend on the weights)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    with torch.device("meta"):
        unet, vae = UNet2DConditionModel(**unet_kw), AutoencoderKL(**vae_kw)
    gen = torch.Generator(device=device).manual_seed(seed)
    for m in (unet, vae):
        m.to_empty(device=device)
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0, 0.02, generator=gen)
            for b in m.buffers():
                b.zero_()
        m.requires_grad_(False).eval()
    return unet, vae


def paper_size(args, n_masks: int = 1):
    from diffusers import DDIMScheduler

    from anomalysd_core.method.features import build_backbone, build_distance
    from anomalysd_core.method.models import Components, scheduler_config

    t_start = time.perf_counter()
    unet, vae = random_models(SD_UNET, SD_VAE, "cpu")
    n_unet = sum(p.numel() for p in unet.parameters()) / 1e6
    n_vae = sum(p.numel() for p in vae.parameters()) / 1e6
    log(f"  UNet2DConditionModel default config, in_channels=9, cross_attention_dim=768: {n_unet:.0f}M params; "
        f"AutoencoderKL SD config: {n_vae:.0f}M params (built in {time.perf_counter() - t_start:.0f} s)")
    comp = Components(vae, unet, None, DDIMScheduler(**scheduler_config()), torch.device("cpu"))
    ctx = torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(0))
    x = torch.rand(1, 3, PAPER_SIZE, PAPER_SIZE, generator=torch.Generator().manual_seed(1))
    from anomalysd_core.method.masks import grid_masks

    masks = grid_masks(PAPER_SIZE, (2,))[0][:n_masks].float()
    steps, lam = 5, 0.2  # floor(0.2 x 5) + 1 = 2 U-Net calls per mask
    with cost_mod.StageTimer(cost_mod.engine_modules(comp)) as st:
        _, t_eng, mib = timed(lambda: inpaint(comp, x, masks, ctx, lam, steps, batch=n_masks), "cpu", mem=True)
    per_item = st.per_item()
    dist = build_distance("lpips_alex", pretrained=False)
    xh = torch.rand(2, 3, PAPER_SIZE, PAPER_SIZE)
    with torch.inference_mode():
        dist(x, xh)
        t_dist = timed(lambda: dist(x, xh), "cpu")[1] / 2
        bb = build_backbone("efficientnet_b6", pretrained=False)
        bb.psi(x)
        t_psi = timed(lambda: bb.psi(x), "cpu")[1]
    costs = cost_mod.CallCosts(unet=per_item["unet"], vae_encode=per_item["vae_encode"], vae_decode=per_item["vae_decode"],
                               distance=t_dist, fixed=t_psi, batch=2, image_size=PAPER_SIZE,
                               note="random weights, CPU")
    counts = cost_mod.calls_per_image(PAPER_MASKS, PAPER_LAMBDA, PAPER_STEPS)
    pred = cost_mod.predict_breakdown(counts, costs)
    hours = cost_mod.project_dataset_hours(pred["total"])
    log(f"  measured on this CPU ({n_masks} mask(s), {steps} steps at lambda {lam} = 2 U-Net calls each, batch {n_masks}, "
        f"{t_eng:.0f} s, peak +{mib:.0f} MiB): U-Net {per_item['unet']:.2f} s/item, VAE encode "
        f"{per_item['vae_encode']:.2f} s/image, decode {per_item['vae_decode']:.2f} s/image, LPIPS-Alex {t_dist:.2f} s/pair, "
        f"EfficientNet-B6 psi {t_psi:.2f} s/image")
    per = cost_mod.unet_calls_per_mask(PAPER_LAMBDA, PAPER_STEPS)
    log(f"  projected paper setting (86 masks x (floor(0.4 x 50) + 1) = {per} U-Net calls = {counts.unet} U-Net items, "
        f"{counts.vae_encode} encodes, {counts.vae_decode} decodes, 512 px): {pred['total']:.0f} s/image on this CPU "
        f"(U-Net {pred['unet']:.0f} s, VAE {pred['vae_encode'] + pred['vae_decode']:.0f} s, "
        f"distance {pred['distance']:.0f} s, prototype features {pred['fixed']:.0f} s)")
    log(f"  MVTec-AD test set ({cost_mod.MVTEC_TEST_IMAGES} images): {hours:.0f} CPU-hours on this machine "
        f"({hours / 24:.1f} days)")
    log("  GPU numbers need a lent GPU: none was available in this task, so none are reported.")
    log(f"  (paper-size section took {time.perf_counter() - t_start:.0f} s)")
    return pd.DataFrame([{**costs.as_dict(), **{f"pred_{k}_s": v for k, v in pred.items()},
                          "unet_items": counts.unet, "vae_encodes": counts.vae_encode,
                          "vae_decodes": counts.vae_decode, "mvtec_test_images": cost_mod.MVTEC_TEST_IMAGES,
                          "projected_cpu_hours": hours, "measured_engine_s_2masks": t_eng,
                          "unet_params_m": n_unet, "vae_params_m": n_vae, "threads": torch.get_num_threads(),
                          "device": "cpu", "n_masks_timed": n_masks, "section_s": time.perf_counter() - t_start}])
