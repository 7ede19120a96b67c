"""Fine-tuning on the few-shot normals of all classes at once (Sec. 4.1, eq 7-10).

* U-Net (eq 8): E||eps - eps_theta(unet_input(z_t, z_o, m~), t, tau(y))||^2 with training masks drawn as
  rectangles whose IoU with the foreground exceeds gamma ~ U{0, 0.2, 0.5} (or unfiltered, the
  "random" variant of Table 4) and prompts y drawn from the class's hierarchical set T_c (or the
  "simple"/"none" variants).
* Decoder (eq 9-10): L_D = MSE(x, x^) + beta * perceptual(x, x^), beta = 0.1, encoder frozen.

Both use Adam, lr 1e-4, and the augmentation of Sec. 5 (contrast/brightness, scale, rotation).
The frozen encoder's latents are computed in the inpainting engine's precision
(``Components.mixed_precision``: bfloat16 autocast on mini's CPU, a third of a U-Net step there),
the trained modules' forward and backward passes in float32 on a CPU.
Checkpoints are written every ``ckpt_every`` steps; a run that is interrupted resumes from the last
one; a finished run (``done.json``) is reused as long as its configuration hash matches.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import masks as masks_mod
from .inpaint import masked_image, unet_input
from .models import vae_dtype
from .prompts import sample_prompt
from ..utils import atomic_path, autocast, write_csv_atomic, write_json_atomic

FINETUNE_KEYS = ["profile", "dataset", "data_root", "classes", "base_model", "text_encoder", "image_size",
                 "shots", "seed", "finetune_unet", "finetune_decoder", "mask_design", "prompt_design",
                 "gammas", "lr", "lr_schedule", "batch_size", "unet_steps", "decoder_steps", "unet_epochs", "decoder_epochs",
                 "lpips_beta", "augment", "distance", "autocast"]
# What each module's training reads: the U-Net's (eq 8) and the decoder's (eq 9-10) draws come from
# their own generators, so a module trained for one configuration is the module another
# configuration with the same keys would train (Table 3's one-module rows, Table 4's U-Net-only
# variants share the decoder of the full fine-tune).
_SHARED_KEYS = ["profile", "dataset", "data_root", "classes", "base_model", "image_size", "shots", "seed",
                "lr", "lr_schedule", "batch_size", "augment", "autocast"]
MODULE_KEYS = {"unet": _SHARED_KEYS + ["text_encoder", "mask_design", "prompt_design", "gammas",
                                       "unet_steps", "unet_epochs"],
               "vae": _SHARED_KEYS + ["decoder_steps", "decoder_epochs", "lpips_beta", "distance"]}


AUGMENT_BORDERS = {True: "black", "black": "black", "reflect": "reflect"}


def augment(x: torch.Tensor, fg: torch.Tensor, rng: np.random.Generator, border: str = "black"):
    """Brightness/contrast jitter, scaling and rotation (Sec. 5), the same warp on image and m_f.

    ``border``: what fills the corners the warp brings in: "black" (``TF.affine``'s zeros: the
    paper does not say, and the U-Net then learns to inpaint black wedges at the edges) or
    "reflect" (the image mirrored at its edges before the warp, as ``robustness.perturb`` shows a
    rotated part). The random draws are the same either way.

    >>> import torch, numpy as np
    >>> x = torch.full((3, 32, 32), 0.5); fg = torch.ones(1, 32, 32)
    >>> black, _ = augment(x, fg, np.random.default_rng(0))
    >>> mirrored, _ = augment(x, fg, np.random.default_rng(0), border="reflect")
    >>> bool((black[:, 0, 0] < 0.05).all()), bool((mirrored[:, 0, 0] > 0.3).all())
    (True, True)
    """
    import torchvision.transforms.v2.functional as TF

    if border not in ("black", "reflect"):
        raise ValueError(f"augment border {border!r}: use 'black' or 'reflect'")
    angle = float(rng.uniform(-15, 15))
    scale = float(rng.uniform(0.9, 1.1))
    h, w = x.shape[-2:]
    pad = (w // 2, w // 2, h // 2, h // 2) if border == "reflect" else None
    if pad:  # a warp of the mirrored image, cropped back: no corner comes from outside it
        x = F.pad(x[None], pad, mode="reflect")[0]
        fg = F.pad(fg[None], pad, mode="reflect")[0]
    x = TF.affine(x, angle=angle, translate=[0, 0], scale=scale, shear=[0.0],
                  interpolation=TF.InterpolationMode.BILINEAR)
    fg = TF.affine(fg, angle=angle, translate=[0, 0], scale=scale, shear=[0.0],
                   interpolation=TF.InterpolationMode.NEAREST)
    if pad:
        x, fg = x[..., pad[2]:pad[2] + h, pad[0]:pad[0] + w], fg[..., pad[2]:pad[2] + h, pad[0]:pad[0] + w]
    gain, bias = float(rng.uniform(0.85, 1.15)), float(rng.uniform(-0.06, 0.06))
    mean = x.mean(dim=(-2, -1), keepdim=True)
    x = ((x - mean) * gain + mean + bias).clamp(0, 1)
    return x, fg


def lr_at(cfg, step: int, steps: int) -> float:
    """Learning rate of optimiser step ``step`` of ``steps``: ``cfg.lr`` throughout ("constant", the
    paper's Adam), or a linear warm-up over the first 5 % then a cosine decay to 0 ("cosine").
    A function of the step alone, so a resumed run follows the same schedule."""
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if cfg.lr_schedule != "cosine":
        raise ValueError(f"unknown lr_schedule {cfg.lr_schedule!r}; use 'constant' or 'cosine'")
    warm = max(1, round(0.05 * steps))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def adam(params, lr: float) -> torch.optim.Adam:
    """Adam (Sec. 5) with the fused kernel, which takes a U-Net step's update from 17 ms to 7 ms on
    mini's CPU; it computes the same update as the loop up to float rounding."""
    return torch.optim.Adam(params, lr=lr, fused=True)


def _set_lr(opt, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def num_steps(steps: int, epochs: int | None, n_images: int, batch: int) -> int:
    """Optimiser steps: ``epochs * ceil(n / batch)`` when epochs are given (paper), else ``steps``."""
    return steps if epochs is None else int(epochs) * math.ceil(max(n_images, 1) / batch)


class ShotSet:
    """The few-shot training set: images (N,3,S,S), foreground masks (N,1,S,S), class names."""

    def __init__(self, shots: dict, kinds: dict):
        imgs, fgs, self.classes = [], [], []
        for cls, items in shots.items():
            for img in items:
                imgs.append(torch.from_numpy(np.asarray(img, np.float32)).permute(2, 0, 1))
                fgs.append(torch.from_numpy(masks_mod.foreground_mask(np.asarray(img), kinds.get(cls, "object"))))
                self.classes.append(cls)
        if not imgs:
            raise ValueError("fine-tuning needs at least one normal image (shots >= 1)")
        self.x = torch.stack(imgs)
        self.fg = torch.stack(fgs)[:, None].float()

    def __len__(self):
        return len(self.classes)

    def batch(self, n: int, rng: np.random.Generator, aug: bool | str):
        """``n`` shots drawn with ``rng``, augmented unless ``aug`` is False (``Config.augment``:
        True or "black", the paper's warp with black borders, or "reflect"; ``augment`` refuses
        anything else by name)."""
        idx = rng.integers(0, len(self), n)
        xs, fgs = [], []
        for i in idx:
            x, fg = self.x[i], self.fg[i]
            if aug:
                x, fg = augment(x, fg, rng, AUGMENT_BORDERS.get(aug, aug))
            xs.append(x), fgs.append(fg)
        return torch.stack(xs), torch.stack(fgs), [self.classes[i] for i in idx]


def inpainting_loss(comp, unet, x: torch.Tensor, m: torch.Tensor, ctx: torch.Tensor, noise_sched,
                    gen: torch.Generator) -> torch.Tensor:
    """Eq (8): E || eps - eps_theta(unet_input(z_t, z_o, m~), t, tau(y)) ||^2 for a batch.

    x: (B,3,H,W) in [0, 1]; m: (B,1,H,W) training masks; ctx: (B,L,d) prompt states; ``gen`` draws
    the noise and the timesteps (uniform over the training schedule). Shared by ``pretrain``.
    """
    dt = unet.dtype  # training runs in the U-Net's dtype, whatever the VAE's
    with torch.no_grad(), comp.mixed_precision():  # the frozen encoder as the engine runs it
        z0, zo = comp.encode(torch.cat([x, masked_image(x, m)])).to(dt).chunk(2)
    dev = z0.device
    noise = torch.randn(z0.shape, generator=gen).to(dev, dt)
    t = torch.randint(0, noise_sched.config.num_train_timesteps, (len(x),), generator=gen).to(dev)
    pred = unet(unet_input(noise_sched.add_noise(z0, noise, t), zo, m), t, encoder_hidden_states=ctx).sample
    return F.mse_loss(pred.float(), noise.float())


def load_checkpoint(path: Path, model, opt):
    """(step, losses, NumPy generator state, torch generator state) of a checkpoint, if any."""
    if not path.is_file():
        return 0, [], None, None
    ck = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["opt"])
    return ck["step"], ck["losses"], ck.get("rng"), ck.get("torch_rng")


def save_checkpoint(path: Path, step, model, opt, losses, rng=None, gen: torch.Generator | None = None) -> None:
    """Everything a resumed run needs to continue exactly: weights, Adam state, both generators."""
    with atomic_path(path) as tmp:
        torch.save({"step": step, "model": model.state_dict(), "opt": opt.state_dict(),
                    "losses": losses, "rng": rng.bit_generator.state if rng is not None else None,
                    "torch_rng": gen.get_state() if gen is not None else None}, tmp)


def finetune_unet(cfg, comp, data: ShotSet, run_dir: Path, ckpt_every: int = 100, progress=True) -> list[float]:
    """Eq (8) on the shots of every class with the designed masks and prompts."""
    from diffusers import DDPMScheduler

    unet = comp.unet.float().train().requires_grad_(True)  # float32 weights and Adam state
    opt = adam(unet.parameters(), cfg.lr)
    # on a GPU the forward pass runs in the inference dtype under autocast; float16's small
    # gradients are scaled (bfloat16 has float32's range and needs no scaling)
    scaler = torch.amp.GradScaler("cuda", enabled=comp.device.type == "cuda" and comp.dtype == torch.float16)
    steps = num_steps(cfg.unet_steps, cfg.unet_epochs, len(data), cfg.batch_size)
    ck = run_dir / "unet_ckpt.pt"
    start, losses, rng_state, gen_state = load_checkpoint(ck, unet, opt)
    rng = np.random.default_rng([cfg.seed, 1])
    if rng_state is not None:
        rng.bit_generator.state = rng_state
    noise_sched = DDPMScheduler.from_config(comp.scheduler.config)
    gen = torch.Generator().manual_seed(cfg.seed * 1000)  # noise and timesteps of eq (8)
    if gen_state is not None:  # resume the same noise stream (a resumed run equals an unbroken one)
        gen.set_state(gen_state)
    cache: dict[str, torch.Tensor] = {}
    dev = comp.device
    for step in tqdm(range(start, steps), desc="fine-tune U-Net", disable=not progress, mininterval=5):
        x, fg, classes = data.batch(cfg.batch_size, rng, cfg.augment)
        m = torch.stack([torch.from_numpy(masks_mod.training_mask(
            fg[i, 0].numpy() > 0.5, float(rng.choice(cfg.gammas)), rng, design=cfg.mask_design)).float()[None]
            for i in range(len(x))])
        prompts = [sample_prompt(c, rng, cfg.prompt_design) for c in classes]
        for p in set(prompts) - cache.keys():
            cache[p] = comp.text([p])[0]
        ctx = torch.stack([cache[p] for p in prompts]).to(dev)
        with autocast(dev, comp.dtype):
            loss = inpainting_loss(comp, unet, x.to(dev), m.to(dev), ctx, noise_sched, gen)
        _set_lr(opt, lr_at(cfg, step, steps))
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
        if (step + 1) % ckpt_every == 0 and step + 1 < steps:
            save_checkpoint(ck, step + 1, unet, opt, losses, rng, gen)
    unet.eval().requires_grad_(False)
    return losses


def finetune_decoder(cfg, comp, data: ShotSet, distance, run_dir: Path, ckpt_every: int = 100,
                     progress=True) -> list[float]:
    """Eq (9)-(10): L_D = MSE(x, D(E(x))) + beta * perceptual(x, D(E(x))), encoder frozen."""
    dec = comp.vae.decoder
    comp.vae.float()
    params = list(dec.parameters()) + list(comp.vae.post_quant_conv.parameters())
    for p in params:
        p.requires_grad_(True)
    holder = torch.nn.ModuleList([dec, comp.vae.post_quant_conv])
    opt = adam(params, cfg.lr)
    steps = num_steps(cfg.decoder_steps, cfg.decoder_epochs, len(data), cfg.batch_size)
    ck = run_dir / "decoder_ckpt.pt"
    start, losses, rng_state, _ = load_checkpoint(ck, holder, opt)
    rng = np.random.default_rng([cfg.seed, 2])
    if rng_state is not None:
        rng.bit_generator.state = rng_state
    dev = comp.device
    holder.train()
    for step in tqdm(range(start, steps), desc="fine-tune decoder", disable=not progress, mininterval=5):
        x, _, _ = data.batch(cfg.batch_size, rng, cfg.augment)
        x = x.to(dev)
        with torch.no_grad(), comp.mixed_precision():
            z = comp.encode(x)
        with autocast(dev, vae_dtype(comp.dtype)):  # the VAE's rule: bfloat16, never float16
            x_hat = comp.decode(z)
            loss = F.mse_loss(x_hat, x) + cfg.lpips_beta * distance.loss(x, x_hat)
        _set_lr(opt, lr_at(cfg, step, steps))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if (step + 1) % ckpt_every == 0 and step + 1 < steps:
            save_checkpoint(ck, step + 1, holder, opt, losses, rng)
    holder.eval()
    comp.vae.requires_grad_(False)
    return losses


# the decoder's loss (eq 10) reads ``distance`` only through its perceptual network, and
# ``features.PixelDistance.loss`` is the Lite0 distance's: "pixel" and "lite0" train the same decoder
_DECODER_LOSS_NET = {"pixel": "lite0"}


def module_hash(cfg, module: str) -> str:
    """Hash of ``MODULE_KEYS[module]`` for ``cfg``; for the decoder ("vae") the distance counts as
    the perceptual network of its loss, so a fine-tune with the colour distance adopts the decoder
    of one with the Lite0 distance (notebook 10 compares the two) instead of training it again."""
    if module == "vae" and cfg.distance in _DECODER_LOSS_NET:
        cfg = dataclasses.replace(cfg, distance=_DECODER_LOSS_NET[cfg.distance])
    return cfg.hash(MODULE_KEYS[module])


def module_hashes(cfg) -> dict:
    """{module: :func:`module_hash`} for the modules that ``cfg`` fine-tunes."""
    return {m: module_hash(cfg, m) for m, on in (("unet", cfg.finetune_unet), ("vae", cfg.finetune_decoder))
            if on}


def module_donor(cfg, run_dir: Path, module: str) -> Path | None:
    """A finished fine-tune beside ``run_dir`` whose ``module`` ("unet" or "vae") was trained with
    the same ``MODULE_KEYS`` as ``cfg``'s (and so holds the weights ``cfg`` would train), if any."""
    h = module_hash(cfg, module)
    for done in sorted(Path(run_dir).parent.glob("fit-*/done.json")):
        if done.parent == Path(run_dir):
            continue
        try:
            info = json.loads(done.read_text())
        except ValueError:
            continue
        if info.get("module_hashes", {}).get(module) == h and (done.parent / module).is_dir():
            return done.parent
    return None


def _adopt(donor: Path, run_dir: Path, module: str) -> None:
    """Link (or copy) the donor's trained ``module`` folder into ``run_dir``, atomically."""
    import os
    import shutil

    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    tmp = run_dir / f".{module}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(donor / module, tmp, copy_function=link)
    shutil.rmtree(run_dir / module, ignore_errors=True)
    tmp.rename(run_dir / module)


def finetune(cfg, comp, shots: dict, kinds: dict, run_dir, distance=None, progress=True) -> dict:
    """Fine-tune what ``cfg`` switches on; write ``unet/``, ``vae/``, ``losses.csv``, ``done.json``.

    Returns {"unet": path or None, "vae": path or None, "reused": bool, "adopted": {module: donor}}.
    A finished run with the same configuration hash is reused; a different hash in the same folder
    is an error. A module that another finished fine-tune beside this one trained with the same
    ``MODULE_KEYS`` is adopted from it (linked, with its losses) instead of trained again; then
    ``comp`` still holds the base module and the caller loads the returned paths.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    h = cfg.hash(FINETUNE_KEYS)
    done = run_dir / "done.json"
    if done.is_file():
        info = json.loads(done.read_text())
        if info.get("hash") != h:
            raise ValueError(f"{run_dir} holds a fine-tune of another configuration "
                             f"(hash {info.get('hash')} != {h}); use another folder")
        return {**info["paths"], "reused": True, "adopted": info.get("adopted", {})}
    data = ShotSet(shots, kinds)
    rows, paths, times, adopted = [], {"unet": None, "vae": None}, {}, {}
    wanted = list(module_hashes(cfg))
    if "vae" in wanted and distance is None:
        raise ValueError("the decoder fine-tune (eq 10) needs the perceptual distance")
    for module in wanted:
        t0 = time.time()
        donor = module_donor(cfg, run_dir, module)
        if donor is not None:
            _adopt(donor, run_dir, module)
            old = pd.read_csv(donor / "losses.csv")
            tag = "unet" if module == "unet" else "decoder"
            rows += old[old["module"] == tag].to_dict("records")
            adopted[module] = donor.name
        elif module == "unet":
            losses = finetune_unet(cfg, comp, data, run_dir, progress=progress)
            rows += [{"module": "unet", "step": i, "loss": v} for i, v in enumerate(losses)]
            comp.unet.save_pretrained(run_dir / "unet")  # float32, as trained
            comp.unet.to(comp.dtype)  # back to the inference dtype (float16/bfloat16 runs on a GPU)
            times["unet_s"] = time.time() - t0
        else:
            losses = finetune_decoder(cfg, comp, data, distance, run_dir, progress=progress)
            rows += [{"module": "decoder", "step": i, "loss": v} for i, v in enumerate(losses)]
            comp.vae.save_pretrained(run_dir / "vae")
            comp.vae.to(vae_dtype(comp.dtype))
            times["decoder_s"] = time.time() - t0
        paths[module] = str(run_dir / module)
    write_csv_atomic(run_dir / "losses.csv", pd.DataFrame(rows, columns=["module", "step", "loss"]))
    write_json_atomic(done, {"hash": h, "paths": paths, "times": times, "n_images": len(data),
                             "module_hashes": module_hashes(cfg),
                             "adopted": adopted, "config": {k: cfg.to_dict()[k] for k in FINETUNE_KEYS}})
    for name in ("unet_ckpt.pt", "decoder_ckpt.pt"):
        (run_dir / name).unlink(missing_ok=True)
    return {**paths, "reused": False, "adopted": adopted}
