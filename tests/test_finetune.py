"""Fine-tuning (eq 8-10) on the tiny SD checkpoint: resume, reuse, loss, step counts."""
import json

import numpy as np
import pytest
import torch

from anomalysd_core.method import finetune as ft
from anomalysd_core.method.models import load_components


def _images(n=2, size=64, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    out = []
    for i in range(n):
        img = np.stack([0.5 + 0.4 * np.sin(6 * xx + i), 0.5 + 0.4 * np.cos(5 * yy), 0.3 + 0.2 * xx], -1)
        out.append(np.clip(img + 0.02 * rng.standard_normal(img.shape), 0, 1).astype(np.float32))
    return out


SHOTS = {"bottle": _images(1, seed=1), "wood": _images(1, seed=2)}
KINDS = {"bottle": "object", "wood": "texture"}


def _cfg(tiny_cfg, **kw):
    from dataclasses import replace

    base = dict(unet_steps=4, decoder_steps=2, unet_epochs=None, decoder_epochs=None, batch_size=2,
                finetune_decoder=False)
    return replace(tiny_cfg, **{**base, **kw})


def _unet_state(comp):
    return {k: v.detach().cpu().clone() for k, v in comp.unet.state_dict().items()}


def test_num_steps():
    assert ft.num_steps(600, None, 5, 8) == 600
    assert ft.num_steps(600, 2, 5, 2) == 6      # 2 epochs of ceil(5 / 2) = 3 batches
    assert ft.num_steps(600, 4000, 15, 8) == 8000  # paper: 4000 epochs of 15 one-shot images


def test_shotset_needs_images():
    with pytest.raises(ValueError, match="at least one"):
        ft.ShotSet({"bottle": []}, KINDS)
    s = ft.ShotSet(SHOTS, KINDS)
    assert len(s) == 2 and s.x.shape == (2, 3, 64, 64) and s.fg.shape == (2, 1, 64, 64)
    assert bool(s.fg[1].all())  # texture: the whole image is foreground


def test_augment_same_warp_on_image_and_mask():
    rng = np.random.default_rng(0)
    x = torch.zeros(3, 64, 64)
    x[:, 20:44, 20:44] = 1.0
    fg = (x[:1] > 0.5).float()
    xa, fa = ft.augment(x, fg, rng)
    assert xa.shape == x.shape and fa.shape == fg.shape
    assert float(xa.min()) >= 0 and float(xa.max()) <= 1
    # the square moved/rotated identically: the warped mask marks the bright warped pixels
    bright = xa.mean(0) > xa.mean()
    agree = (bright == (fa[0] > 0.5)).float().mean()
    assert agree > 0.95, float(agree)


def test_resume_equals_uninterrupted_run(tiny_cfg, tmp_path, monkeypatch):
    """An interrupted U-Net fine-tune resumed from its checkpoint ends with the same weights.

    Interruption is simulated by a KeyboardInterrupt raised when the third batch is drawn (after a
    checkpoint at step 2); the resumed run starts from freshly loaded base weights, as a new process
    would. Model, Adam state, NumPy and torch generator states all come from the checkpoint.
    """
    cfg = _cfg(tiny_cfg)
    comp = load_components(cfg)
    full = ft.finetune_unet(cfg, comp, ft.ShotSet(SHOTS, KINDS), tmp_path / "a", ckpt_every=2, progress=False)
    ref = _unet_state(comp)

    run = tmp_path / "b"
    run.mkdir()
    orig, calls = ft.ShotSet.batch, {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return orig(self, *a, **k)

    monkeypatch.setattr(ft.ShotSet, "batch", flaky)
    with pytest.raises(KeyboardInterrupt):
        ft.finetune_unet(cfg, load_components(cfg), ft.ShotSet(SHOTS, KINDS), run, ckpt_every=2, progress=False)
    assert (run / "unet_ckpt.pt").is_file()
    monkeypatch.setattr(ft.ShotSet, "batch", orig)
    comp2 = load_components(cfg)
    resumed = ft.finetune_unet(cfg, comp2, ft.ShotSet(SHOTS, KINDS), run, ckpt_every=2, progress=False)
    assert len(resumed) == len(full) == 4
    if comp.device.type == "cpu":  # bit for bit
        loss_tol = w_tol = dict(rtol=0, atol=0)
    else:  # GPU backward kernels add in a varying order; Adam moves a weight by at most ~lr a step
        loss_tol, w_tol = dict(rtol=1e-3, atol=1e-5), dict(rtol=0, atol=3 * cfg.lr)
    np.testing.assert_allclose(resumed, full, **loss_tol)
    for k, v in _unet_state(comp2).items():
        torch.testing.assert_close(v, ref[k], **w_tol, msg=k)


def test_decoder_loss_goes_down(tiny_cfg, tmp_path):
    """Eq (10) on one repeated image (no augmentation): the decoder fits it better step by step."""
    from anomalysd_core.method.features import build_distance

    cfg = _cfg(tiny_cfg, decoder_steps=12, lr=2e-3, augment=False, finetune_unet=False, finetune_decoder=True)
    comp = load_components(cfg)
    enc_before = {k: v.clone() for k, v in comp.vae.encoder.state_dict().items()}
    dist = build_distance("lpips_alex", pretrained=False, device=comp.device)
    data = ft.ShotSet({"wood": SHOTS["wood"]}, KINDS)
    losses = ft.finetune_decoder(cfg, comp, data, dist, tmp_path, progress=False)
    assert len(losses) == 12 and np.all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    for k, v in comp.vae.encoder.state_dict().items():  # the encoder E stays frozen
        assert torch.equal(v, enc_before[k]), k
    assert not any(p.requires_grad for p in comp.vae.parameters())


def test_done_json_reuse_and_hash_mismatch(tiny_cfg, tmp_path, monkeypatch):
    cfg = _cfg(tiny_cfg, unet_steps=1)
    comp = load_components(cfg)
    info = ft.finetune(cfg, comp, SHOTS, KINDS, tmp_path, progress=False)
    assert info["reused"] is False and info["vae"] is None
    done = json.loads((tmp_path / "done.json").read_text())
    assert done["hash"] == cfg.hash(ft.FINETUNE_KEYS) and done["n_images"] == 2
    assert (tmp_path / "unet" / "config.json").is_file() and (tmp_path / "losses.csv").is_file()
    assert not (tmp_path / "unet_ckpt.pt").exists()  # checkpoints are removed when done

    def boom(*a, **k):
        raise AssertionError("a finished fine-tune must not train again")

    monkeypatch.setattr(ft, "finetune_unet", boom)
    again = ft.finetune(cfg, comp, SHOTS, KINDS, tmp_path, progress=False)
    assert again["reused"] is True and again["unet"] == info["unet"]
    # a setting that is not part of the fine-tune (inference steps) does not change the hash
    from dataclasses import replace

    assert ft.finetune(replace(cfg, num_inference_steps=7), comp, SHOTS, KINDS, tmp_path,
                       progress=False)["reused"]
    with pytest.raises(ValueError, match="another configuration"):
        ft.finetune(replace(cfg, lr=5e-4), comp, SHOTS, KINDS, tmp_path, progress=False)


def test_finetune_returns_components_in_the_inference_dtype(tiny_cfg, tmp_path):
    """Training runs in float32; afterwards U-Net and VAE are back in ``comp.dtype`` so that a
    half-precision GPU run can inpaint right after fitting (simulated with bfloat16 on the CPU),
    while the saved weights stay float32."""
    from anomalysd_core.method.features import build_distance
    from anomalysd_core.method.inpaint import inpaint
    from anomalysd_core.method.masks import grid_masks

    cfg = _cfg(tiny_cfg, unet_steps=1, decoder_steps=1, finetune_decoder=True)
    comp = load_components(cfg)
    comp.unet.to(torch.bfloat16), comp.vae.to(torch.bfloat16)
    comp.dtype = torch.bfloat16
    dist = build_distance("lpips_alex", pretrained=False, device=comp.device)
    ft.finetune(cfg, comp, SHOTS, KINDS, tmp_path, distance=dist, progress=False)
    assert comp.unet.dtype == comp.vae.dtype == torch.bfloat16
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "unet" / "diffusion_pytorch_model.safetensors"))
    assert {v.dtype for v in saved.values()} == {torch.float32}
    ctx = comp.text.average(["A perfect wood."])
    x = torch.from_numpy(SHOTS["wood"][0]).permute(2, 0, 1)[None]
    out = inpaint(comp, x, grid_masks(64, (1,))[0].float(), ctx, strength=0.5, steps=4)
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()


def test_modules_adopted_from_a_finished_finetune(tiny_cfg, tmp_path, monkeypatch):
    """Table 3's one-module rows and Table 4's U-Net-only variants take the module that a finished
    fine-tune beside them trained with the same module keys (linked, losses included), and train
    only what differs; the module keys are those each module's training reads."""
    from dataclasses import replace

    from anomalysd_core.method.features import build_distance

    dist = build_distance("lpips_alex", pretrained=False)
    full = _cfg(tiny_cfg, unet_steps=1, decoder_steps=1, finetune_decoder=True)
    ft.finetune(full, load_components(full), SHOTS, KINDS, tmp_path / "fit-full", distance=dist, progress=False)
    trained = []
    real_unet, real_dec = ft.finetune_unet, ft.finetune_decoder
    monkeypatch.setattr(ft, "finetune_unet", lambda *a, **k: trained.append("unet") or real_unet(*a, **k))
    monkeypatch.setattr(ft, "finetune_decoder", lambda *a, **k: trained.append("vae") or real_dec(*a, **k))

    dec_only = replace(full, finetune_unet=False)
    info = ft.finetune(dec_only, load_components(dec_only), SHOTS, KINDS, tmp_path / "fit-dec", distance=dist,
                       progress=False)
    assert trained == [] and info["adopted"] == {"vae": "fit-full"} and info["unet"] is None
    for f in (tmp_path / "fit-full" / "vae").iterdir():  # the same weights, linked or copied
        assert (tmp_path / "fit-dec" / "vae" / f.name).read_bytes() == f.read_bytes()
    losses = __import__("pandas").read_csv(tmp_path / "fit-dec" / "losses.csv")
    assert set(losses["module"]) == {"decoder"} and len(losses) == 1

    random_masks = replace(full, mask_design="random")  # the U-Net trains anew, the decoder is shared
    info = ft.finetune(random_masks, load_components(random_masks), SHOTS, KINDS, tmp_path / "fit-rand",
                       distance=dist, progress=False)
    assert trained == ["unet"] and not info["reused"]
    assert info["adopted"]["vae"] in ("fit-full", "fit-dec") and set(info["adopted"]) == {"vae"}
    done = json.loads((tmp_path / "fit-rand" / "done.json").read_text())
    assert set(done["times"]) == {"unet_s"} and done["module_hashes"]["vae"] == ft.module_hash(full, "vae")
    # another decoder setting (beta of eq 10) is not the same module: it is trained
    ft.finetune(replace(full, lpips_beta=0.5, finetune_unet=False), load_components(full), SHOTS, KINDS,
                tmp_path / "fit-beta", distance=dist, progress=False)
    assert trained == ["unet", "vae"]
    # a module keyed on data it was not trained on is never adopted
    assert ft.module_donor(replace(full, data_root="elsewhere"), tmp_path / "fit-x", "vae") is None
    # the decoder's loss sees the distance only through its perceptual network: the colour distance
    # trains Lite0's decoder (adopted), LPIPS-Alex another one
    assert ft.module_hash(replace(full, distance="pixel"), "vae") == ft.module_hash(replace(full, distance="lite0"), "vae")
    assert ft.module_hash(replace(full, distance="lpips_alex"), "vae") != ft.module_hash(replace(full, distance="pixel"), "vae")
    ft.finetune(replace(full, distance="lite0", finetune_unet=False), load_components(full), SHOTS, KINDS,
                tmp_path / "fit-lite0", distance=dist, progress=False)
    assert trained == ["unet", "vae", "vae"]  # a decoder LPIPS-Alex did not train
    assert ft.module_donor(replace(full, distance="pixel"), tmp_path / "fit-pix", "vae") == tmp_path / "fit-lite0"


def test_lr_schedules():
    from anomalysd_core.config import get_config
    from anomalysd_core.method.finetune import lr_at

    const = get_config("smoke", lr=3e-4, lr_schedule="constant")
    assert {lr_at(const, s, 100) for s in range(100)} == {3e-4}
    cos = get_config("smoke", lr=1e-3, lr_schedule="cosine")
    lrs = [lr_at(cos, s, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(2e-4) and lrs[4] == pytest.approx(1e-3)  # 5 warm-up steps
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:])) and lrs[-1] < 1e-5
    with pytest.raises(ValueError, match="'linear'"):
        lr_at(get_config("smoke", lr_schedule="linear"), 0, 10)


def test_augment_border_is_a_setting_black_by_default():
    """``augment="reflect"`` mirrors the warp's corners instead of filling them black (the paper
    profile's default); True keeps black and mini's configuration hash; anything else is refused
    by name."""
    from anomalysd_core.config import get_config

    grey = {"c": [np.full((32, 32, 3), 0.5, np.float32)]}
    data = ft.ShotSet(grey, {"c": "texture"})
    corners = {}
    for aug in (True, "reflect"):
        x, _, _ = data.batch(8, np.random.default_rng(3), aug)
        corners[aug] = float(x[:, :, 0, 0].min())
    assert corners[True] < 0.1 < 0.3 < corners["reflect"]
    assert get_config("mini", augment="reflect").augment == "reflect"
    assert get_config("mini").hash(["augment"]) == get_config("mini", augment=True).hash(["augment"])
    assert get_config("mini").augment is True and get_config("paper").augment == "reflect"
    with pytest.raises(ValueError, match="augment"):
        get_config("mini", augment="mirror")
    with pytest.raises(ValueError, match="augment"):
        data.batch(2, np.random.default_rng(0), "mirror")
