"""The ``paper`` profile end to end on a tiny random-weight SD inpainting checkpoint.

Exactly the code path of a run on ``stable-diffusion-v1-5/stable-diffusion-inpainting`` with
EfficientNet-B6 prototypes and LPIPS-Alex distances: diffusers folder layout, CLIP tokenizer and
text encoder, fine-tune of U-Net and decoder, save, reload through the same loader, score, metrics.
Only the sizes (64 px, 4 DDIM steps, grid scales 1 and 2) and the weights (random) differ.
"""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from anomalysd_core.reproduce import evaluate as ev
from anomalysd_core.method import features, models
from anomalysd_core.config import get_config
from anomalysd_core.data.tiny import save_tiny_t2i
from anomalysd_core.utils import resolve_device

SIZE = 64


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype(np.uint8)).save(path)


def make_mvtec(root, size=SIZE, n_train=2, n_good=2, n_bad=2, seed=0):
    """A tiny MVTec-AD-layout dataset: ``bottle`` (object: a disc on a light background) and
    ``wood`` (texture: noisy stripes); anomalies are painted spots with exact masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size

    def bottle():
        cy, cx = 0.5 + rng.uniform(-0.05, 0.05, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 0.09
        img = np.full((size, size, 3), 0.85)
        img[disc] = [0.25, 0.35, 0.3]
        return img + 0.02 * rng.standard_normal(img.shape)

    def wood():
        v = 0.5 + 0.25 * np.sin(30 * yy + 2 * np.sin(5 * xx) + rng.uniform(0, 6))
        img = np.stack([0.6 * v + 0.3, 0.45 * v + 0.2, 0.25 * v + 0.1], -1)
        return img + 0.02 * rng.standard_normal(img.shape)

    for cls, make in (("bottle", bottle), ("wood", wood)):
        for i in range(n_train):
            _save(root / cls / "train" / "good" / f"{i:03d}.png", make())
        for i in range(n_good):
            _save(root / cls / "test" / "good" / f"{i:03d}.png", make())
        for i in range(n_bad):
            img = make()
            m = np.zeros((size, size), bool)
            y, x = rng.integers(size // 4, size // 2, 2)
            m[y:y + size // 6, x:x + size // 5] = True
            img[m] = [0.95, 0.1, 0.1]
            _save(root / cls / "test" / "spot" / f"{i:03d}.png", img)
            _save(root / cls / "ground_truth" / "spot" / f"{i:03d}_mask.png", m.astype(float)[..., None].repeat(3, -1))
    return root


@pytest.fixture(scope="module")
def paper_cfg(tiny_sd, tmp_path_factory):
    root = make_mvtec(tmp_path_factory.mktemp("mvtec") / "mvtec_anomaly_detection")
    return get_config("paper", base_model=str(tiny_sd), image_size=SIZE, num_inference_steps=4,
                      unet_epochs=1, decoder_epochs=1, batch_size=2, grid_scales=(1, 2),
                      data_root=str(root), out_dir=str(tmp_path_factory.mktemp("paper-runs")),
                      device="auto")


def test_checkpoint_layout_and_diffusers_pipeline(tiny_sd):
    """The folder is a valid SD inpainting repository for diffusers' own pipeline too."""
    from diffusers import StableDiffusionInpaintPipeline

    idx = json.loads((tiny_sd / "model_index.json").read_text())
    assert idx["_class_name"] == "StableDiffusionInpaintPipeline"
    assert idx["unet"] == ["diffusers", "UNet2DConditionModel"] and idx["tokenizer"][1] == "CLIPTokenizer"
    for sub, f in [("vae", "config.json"), ("unet", "config.json"), ("scheduler", "scheduler_config.json"),
                   ("text_encoder", "config.json"), ("tokenizer", "vocab.json"), ("tokenizer", "merges.txt")]:
        assert (tiny_sd / sub / f).is_file(), (sub, f)
    pipe = StableDiffusionInpaintPipeline.from_pretrained(str(tiny_sd), safety_checker=None,
                                                          requires_safety_checker=False)
    assert pipe.unet.config.in_channels == 9 and pipe.vae_scale_factor == 8
    img = Image.fromarray(np.full((SIZE, SIZE, 3), 128, np.uint8))
    mask = Image.fromarray(np.full((SIZE, SIZE), 255, np.uint8))
    pipe.set_progress_bar_config(disable=True)
    out = pipe("A perfect bottle.", image=img, mask_image=mask, num_inference_steps=1, height=SIZE,
               width=SIZE, output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, SIZE, SIZE, 3) and np.isfinite(out).all()


def test_text_to_image_checkpoint_is_refused(tmp_path):
    t2i = save_tiny_t2i(tmp_path / "sd-t2i", image_size=SIZE)
    cfg = get_config("paper", base_model=str(t2i), image_size=SIZE)
    with pytest.raises(models.ModelError) as e:
        models.load_components(cfg)
    msg = str(e.value)
    assert str(t2i) in msg and "4 input channels" in msg and "9" in msg and "text-to-image" in msg


def test_missing_checkpoint_folder_is_a_clear_error(tmp_path):
    missing = tmp_path / "stable-diffusion-inpainting"
    with pytest.raises(models.ModelError, match=f"{missing}.*does not exist"):
        models.load_components(get_config("paper", base_model=str(missing)))


def test_paper_profile_end_to_end(paper_cfg, tmp_path):
    cfg = paper_cfg
    assert cfg.text_encoder == "clip" and cfg.backbone == "efficientnet_b6" and cfg.distance == "lpips_alex"
    dev = resolve_device(cfg.device)  # "auto": the GPU when there is one
    backbone = features.build_backbone("efficientnet_b6", pretrained=False, device=dev)
    distance = features.build_distance("lpips_alex", pretrained=False, device=dev)
    base = models.load_components(cfg)
    base_unet = {k: v.cpu().clone() for k, v in base.unet.state_dict().items()}
    del base

    fitted = ev.fit(cfg, progress=False, backbone=backbone, distance=distance)
    assert fitted.classes == ["bottle", "wood"] and fitted.finetune_info["reused"] is False
    run = fitted.run_dir
    for f in ("unet/config.json", "vae/config.json", "done.json", "losses.csv"):
        assert (run / f).is_file(), f
    losses = pd.read_csv(run / "losses.csv")
    # 1 epoch over 2 classes x 1 shot at batch 2: one step each for the U-Net and the decoder
    assert losses.groupby("module").size().to_dict() == {"decoder": 1, "unet": 1}
    assert np.isfinite(losses["loss"]).all()
    tuned = {k: v.cpu() for k, v in fitted.detector.comp.unet.state_dict().items()}
    assert any(not torch.equal(tuned[k], base_unet[k]) for k in tuned)  # eq 8 changed the U-Net
    assert set(fitted.detector.banks) == {"bottle", "wood"}  # prototype banks of eq 13

    # the saved fine-tune is reused and reloaded through load_components(unet_path=, vae_path=)
    again = ev.fit(cfg, progress=False, backbone=backbone, distance=distance)
    assert again.finetune_info["reused"] is True and again.fit_hash == fitted.fit_hash
    for name in ("unet", "vae"):
        a = getattr(fitted.detector.comp, name).state_dict()
        b = getattr(again.detector.comp, name).state_dict()
        for k in a:
            torch.testing.assert_close(b[k].cpu(), a[k].cpu(), rtol=0, atol=0, msg=f"{name}.{k}")
    img, _ = ev.data_mod.load_sample(fitted.dataset.test("bottle")[-1], SIZE)
    i1 = fitted.detector.intermediates(img, "bottle")
    i2 = again.detector.intermediates(img, "bottle")
    assert i1.D_grid.shape == (5, SIZE, SIZE) and i1.proto_mask.shape == (SIZE, SIZE)
    tol = 1e-5 if dev.type == "cpu" else 1e-3
    np.testing.assert_allclose(i2.D_grid, i1.D_grid, rtol=10 * tol, atol=tol)

    out = tmp_path / "results"
    df = ev.evaluate(again, variants=("ms+proto", "ms", "full"), progress=False, out_dir=out)
    saved = pd.read_csv(out / "metrics.csv")
    assert len(saved) == len(df)
    anom = saved[saved["method"] == "anomalysd"]
    assert set(anom["variant"]) == {"ms+proto", "ms", "full"}
    assert set(anom["class"]) == {"bottle", "wood", "mean"}
    assert anom[ev.METRIC_COLUMNS].notna().all().all()  # MVTec layout with masks: every metric
    assert ((anom[ev.METRIC_COLUMNS] >= 0) & (anom[ev.METRIC_COLUMNS] <= 1)).all().all()
    assert (saved["method"] == "proto-knn").any()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["profile"] == "paper" and prov["config"]["text_encoder"] == "clip"
    assert prov["finetune"]["reused"] is True


def test_evaluate_in_bfloat16(paper_cfg, tmp_path, monkeypatch):
    """The paper profile computes in bfloat16 on a GPU (``dtype="auto"``); a CPU computes float32, so
    bfloat16 is forced here: fit, score and the latents cache (numpy has no bfloat16) run in it."""
    from dataclasses import replace

    from anomalysd_core import utils

    monkeypatch.setattr(utils, "resolve_dtype", lambda name, device: torch.bfloat16)
    cfg = replace(paper_cfg, out_dir=str(tmp_path / "runs"), classes=["bottle"])
    backbone = features.build_backbone("efficientnet_b6", pretrained=False, device=resolve_device(cfg.device))
    distance = features.build_distance("lpips_alex", pretrained=False, device=resolve_device(cfg.device))
    fitted = ev.fit(cfg, progress=False, backbone=backbone, distance=distance)
    assert fitted.detector.comp.dtype == torch.bfloat16
    df = ev.evaluate(fitted, variants=("full",), progress=False, out_dir=tmp_path / "results")
    anom = df[(df["method"] == "anomalysd") & (df["class"] == "bottle")]
    assert len(anom) == 1 and anom[["i_auroc", "p_auroc"]].notna().all().all()
    stored = [np.load(f)["z"] for f in (tmp_path / "runs").rglob("*.npz") if "z" in np.load(f).files]
    assert stored and all(z.dtype == np.float16 for z in stored)  # the grid latents, exact in float16


def test_table1_gets_an_anomalydino_row(paper_cfg, monkeypatch):
    """The paper profile's Table 1 runs AnomalyDINO beside the other baselines on the same shots
    (random DINOv2 weights here); without its weights the row is skipped with a message."""
    import functools

    from anomalysd_core.method import baselines, peers
    from anomalysd_core.reproduce import params, settings

    assert "anomalydino" in params.sweep_defaults("paper")["baselines"]
    dev = resolve_device(paper_cfg.device)
    fitted = ev.fit(paper_cfg, progress=False,
                    backbone=features.build_backbone("efficientnet_b6", pretrained=False, device=dev),
                    distance=features.build_distance("lpips_alex", pretrained=False, device=dev))
    with pytest.warns(UserWarning, match="AnomalyDINO skipped"):
        skipped = settings.run_baselines(fitted, ("anomalydino",))
    assert skipped.empty and "DINOv2 ViT-S/14" in fitted.skipped_baselines["anomalydino"]
    monkeypatch.setitem(baselines.BASELINES, "anomalydino",
                        functools.partial(peers.AnomalyDINO, pretrained=False, size=28))
    rows = []
    df = settings.run_baselines(fitted, ("anomalydino",), score_rows=rows)
    assert set(df["method"]) == {"anomalydino"} and set(df["class"]) == {"bottle", "wood", "mean"}
    assert df[ev.METRIC_COLUMNS].notna().all().all()
    assert len(rows) == sum(len(fitted.dataset.test(c)) for c in fitted.classes)
    assert "anomalydino_per_image_s" in fitted.timer.stages
