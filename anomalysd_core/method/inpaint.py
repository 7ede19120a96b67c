"""Batched partial-denoising inpainting, eq (11): every mask of an image in one U-Net batch.

For a test image x and masks M_1..M_N (the 85 multi-scale grid masks plus the prototype mask):

1. z = E(x) once; the start latent z_T~ = sqrt(abar) z + sqrt(1-abar) eps at T~ = lambda T (eq 1);
   one noise draw per image, shared by all its masks, so that the masks differ only in what they
   hide (and the result is deterministic for a seed);
2. the masked-image latents z_o = E((1 - M) x) and the masks m~ downsampled to latent size;
3. DDIM from T~ to 0 on the 9 channels of z_t, m~ and z_o (eq 11) with the class's averaged prompt
   embedding;
4. decode every result: x^_1..x^_N.

Steps 2-4 run over chunks of masks; the chunk size adapts to memory (halved on out-of-memory).
Masked pixels are filled with mid-grey (0 in SD's [-1, 1] range), as SD inpainting does.
Every network call runs under ``Components.mixed_precision`` (mini: bfloat16 autocast on a CPU).
With compiled components (``Components.compiled``, ``Config.compile``) a chunk shorter than the
chunk size is padded to a power of two (``call_width``), so the compiled calls see few shapes.
"""
from __future__ import annotations

import math

import torch

from .models import Components


def masked_image(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """(1 - m) * x with the hidden pixels at mid-grey; x in [0, 1], m (N,1,H,W) in {0, 1}."""
    return x * (1 - m) + 0.5 * m


def latent_mask(m: torch.Tensor, latent_hw) -> torch.Tensor:
    """m~ of eq (7): a latent cell is masked if any of its pixels is (max-pooling)."""
    from .masks import downsample_mask

    return downsample_mask(m, latent_hw)


def unet_input(zt: torch.Tensor, zo: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """The 9-channel U-Net input of eq (7) and (11): 4 + 1 + 4 channels.

    The paper writes [z_t ; z_o ; m~]; the SD inpainting checkpoints (and diffusers'
    ``StableDiffusionInpaintPipeline``) expect the channels in the order [z_t ; m~ ; z_o], which
    we use so that real SD-inpainting weights work in the paper profile. The order is a fixed
    relabelling of the first convolution's input channels; it changes nothing else.
    """
    if m.shape[-2:] != zt.shape[-2:]:
        m = latent_mask(m, tuple(zt.shape[-2:]))
    return torch.cat([zt, m.to(zt.dtype), zo], dim=1)


def start_timesteps(scheduler, steps: int, strength: float) -> torch.Tensor:
    """The DDIM timesteps from T~ = lambda * T down to 0 (eq 11).

    Of the ``steps`` evenly spaced timesteps of the schedule we keep those at or below lambda * T
    (plus the schedule's offset), so denoising starts at T~ = lambda * T as the paper defines it:
    floor(lambda * steps) + 1 U-Net calls, at most ``steps``. (diffusers' image-to-image pipelines
    keep int(lambda * steps) and so start one step lower, at (lambda - 1/steps) * T.)
    """
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"noise strength lambda must be in (0, 1], got {strength}")
    scheduler.set_timesteps(steps)
    n = unet_calls(strength, steps)
    return scheduler.timesteps[steps - n:]


def unet_calls(strength: float, steps: int) -> int:
    """Denoising steps (U-Net calls per mask) of ``start_timesteps``: floor(lambda*steps)+1, capped."""
    return min(int(steps), math.floor(strength * steps + 1e-9) + 1)


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def auto_batch(comp: Components, n: int) -> int:
    """A first guess at masks per U-Net batch; ``run_chunked`` halves it on out-of-memory."""
    if comp.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(comp.device)
        hw = comp.unet.config.sample_size ** 2
        per_item = hw * comp.unet.config.block_out_channels[0] * 4 * 60 * (2 if comp.dtype == torch.float32 else 1)
        return max(1, min(n, int(0.6 * free / max(per_item, 1))))
    return min(n, 32)


@torch.inference_mode()
def inpaint(comp: Components, x: torch.Tensor, masks: torch.Tensor, context: torch.Tensor,
            strength: float, steps: int, seed: int = 0, batch: int = 0,
            progress: bool = False) -> torch.Tensor:
    """Inpaint one image under N masks at once (eq 11). Returns x^ (N,3,H,W) in [0, 1].

    x: (1,3,H,W) in [0, 1]; masks: (N,1,H,W) in {0, 1}; context: (1,L,d) text embedding.
    ``denoise`` (steps 1-3) followed by ``decode`` (step 4), chunk by chunk as before.
    """
    batch = batch or auto_batch(comp, masks.shape[0])
    return decode(comp, denoise(comp, x, masks, context, strength, steps, seed, batch), batch)


@torch.inference_mode()
def denoise(comp: Components, x: torch.Tensor, masks: torch.Tensor, context: torch.Tensor,
            strength: float, steps: int, seed: int = 0, batch: int = 0,
            encoded: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Steps 1-3: the denoised latents z_0 of every mask (N,c,h,w), in the model's dtype.

    They depend on the encoder, the U-Net, the prompt, lambda, the steps and the seed, not on the
    decoder: a setting that differs from another only in its decoder (Table 3) decodes the
    other's latents (``evaluate.latent_file``). ``encoded``: z = E(x) (1,c,h,w) and the masked-image
    latents z_o (N,c,h,w) of ``masks`` computed beforehand (``EncodeCache``), instead of here.
    """
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"inpaint takes one image (1,3,H,W), got {tuple(x.shape)}")
    dev, dt = comp.device, comp.dtype
    x, masks = x.to(dev, torch.float32), masks.to(dev, torch.float32)
    timesteps = start_timesteps(comp.scheduler, steps, strength)
    if encoded is not None:
        z0, zo_all = (t.to(dev, dt) for t in encoded)
        if zo_all.shape[0] != masks.shape[0]:
            raise ValueError(f"encoded holds {zo_all.shape[0]} masked-image latents for {masks.shape[0]} masks")
    else:
        with comp.mixed_precision():
            z0 = comp.encode(x).to(dt)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    noise = torch.randn(z0.shape, generator=gen).to(dev, dt)
    z_start = comp.scheduler.add_noise(z0, noise, timesteps[:1].to(dev))
    ctx = context.to(dev, dt)

    def run(lo: int, hi: int, width: int) -> torch.Tensor:
        m = padded(masks[lo:hi], width)
        zo = comp.encode(masked_image(x, m)).to(dt) if encoded is None else padded(zo_all[lo:hi], width)
        ml = latent_mask(m, tuple(z0.shape[-2:])).to(dt)
        z = z_start.expand(width, -1, -1, -1).clone()
        c = ctx.expand(width, -1, -1)
        for t in timesteps:
            eps = comp.denoiser(unet_input(z, zo, ml), t.to(dev), c)
            z = comp.scheduler.step(eps, t, z, eta=0.0).prev_sample
        return z[:hi - lo]

    n = masks.shape[0]
    with comp.mixed_precision():
        return run_chunked(run, n, batch or auto_batch(comp, n), static=comp.static_shapes)


@torch.inference_mode()
def decode(comp: Components, z: torch.Tensor, batch: int = 0) -> torch.Tensor:
    """Step 4: x^ = D(z_0) for latents (N,c,h,w) from ``denoise``, in chunks; (N,3,H,W) in [0, 1]."""
    z = z.to(comp.device, comp.dtype)
    with comp.mixed_precision():
        return run_chunked(lambda lo, hi, width: comp.decode(padded(z[lo:hi], width))[:hi - lo], z.shape[0],
                           batch or auto_batch(comp, z.shape[0]), static=comp.static_shapes)


def encode_masked(comp: Components, x: torch.Tensor, masks: torch.Tensor, batch: int = 0,
                  image: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
    """z = E(x) (None when ``image`` is False: the caller has it) and the masked-image latents
    z_o = E((1 - M) x) of every mask (the ``encoded`` of ``denoise``), the masks in chunks of
    ``batch`` (0: one call where memory allows)."""
    with torch.inference_mode(), comp.mixed_precision():
        x, masks = x.to(comp.device, torch.float32), masks.to(comp.device, torch.float32)
        z0 = comp.encode(x).to(comp.dtype) if image else None
        zo = run_chunked(lambda lo, hi, width: comp.encode(masked_image(x, padded(masks[lo:hi], width))).to(
            comp.dtype)[:hi - lo], masks.shape[0], batch or auto_batch(comp, masks.shape[0]), static=comp.static_shapes)
        return z0, zo


class EncodeCache:
    """The VAE encodes of eq (11) of the grid masks, z = E(x) and z_o = E((1 - M) x), kept on disk
    per test image and shared by every setting that has the same encoder.

    They depend on the encoder's weights, the image, the masks and the precision, not on the
    U-Net, the prompt, lambda or the decoder, and the fine-tune of Sec. 4.1 leaves the encoder
    as it is: the 21 settings of a mini book run encode each test image's grid masks once
    instead of 21 times (a seventh of the engine's time). ``scoring.AnomalySD`` encodes the grid
    the same way (``encode_masked``) without a cache, so a setting's numbers do not depend on
    whether the cache is used or what ran before it. ``Config.share_encodes`` switches it on
    (mini, smoke; at the paper's size an image's 85 encodes take 3 MB of disk and little GPU time).
    Files: ``<folder>/<encoder key>/<image key>.pt`` ({grid key: (z, z_o)}), written atomically.

    >>> import tempfile, torch
    >>> from anomalysd_core.method.models import new_mini_components
    >>> comp = new_mini_components(size=32)
    >>> cache = EncodeCache(tempfile.mkdtemp(), comp)
    >>> x, grid = torch.rand(1, 3, 32, 32), (torch.rand(4, 1, 32, 32) > 0.5).float()
    >>> a = cache.encode(comp, x, grid); b = cache.encode(comp, x, grid)
    >>> cache.hits, cache.misses, bool((a[1] == b[1]).all())
    (1, 1, True)
    """

    def __init__(self, folder, comp: Components, batch: int = 0):
        import hashlib
        from pathlib import Path

        h = hashlib.sha256()
        for name, t in sorted(comp.vae.state_dict().items()):
            if name.startswith(("encoder.", "quant_conv.")):
                h.update(name.encode())
                h.update(t.detach().cpu().float().numpy().tobytes())
        h.update(f"{comp.dtype} {comp.vae.dtype} {comp.autocast}".encode())
        self.folder = Path(folder) / h.hexdigest()[:16]
        self.hits = self.misses = 0
        self.batch = batch

    @staticmethod
    def _key(t: torch.Tensor) -> str:
        import hashlib

        return hashlib.sha256(t.detach().cpu().float().contiguous().numpy().tobytes()).hexdigest()[:16]

    def encode(self, comp: Components, x: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``encode_masked(comp, x, grid)``, from the cache when this image and grid are in it."""
        from ..utils import atomic_path

        path, gk = self.folder / f"{self._key(x)}.pt", self._key(grid)
        stored = torch.load(path, weights_only=True) if path.is_file() else {}
        if gk in stored:
            self.hits += 1
            z0, zo = stored[gk]
            return z0.to(comp.device, comp.dtype), zo.to(comp.device, comp.dtype)
        self.misses += 1
        z0, zo = encode_masked(comp, x, grid, self.batch)
        stored[gk] = (z0.cpu(), zo.cpu())
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(stored, tmp)
        return z0, zo


def call_width(k: int, batch: int, static: bool) -> int:
    """Items in the call that computes a chunk of ``k`` items: ``k``, or with ``static`` shapes (compiled
    calls) the chunk size ``batch`` or, for a shorter last chunk, the next power of two, so that a
    compiled call is traced for at most about log2(batch) shapes and pads less than half of a call.

    >>> [call_width(k, 32, True) for k in (32, 22, 5, 1)], call_width(22, 32, False)
    ([32, 32, 8, 1], 22)
    """
    return min(batch, 1 << (k - 1).bit_length()) if static and k < batch else k


def padded(t: torch.Tensor, width: int) -> torch.Tensor:
    """``t`` (k, ...) with its last item repeated up to ``width`` items (batch items never mix)."""
    k = t.shape[0]
    return t if k >= width else torch.cat([t, t[-1:].expand(width - k, *t.shape[1:])])


def run_chunked(fn, n: int, batch: int, static: bool = False) -> torch.Tensor:
    """Apply ``fn(lo, hi, width)`` over [0, n) in chunks of ``batch``; halve the chunk on
    out-of-memory. ``width`` is ``call_width(hi - lo, batch, static)``: the items ``fn`` should
    compute (padding the chunk) before it returns the chunk's ``hi - lo`` results."""
    outs, lo = [], 0
    while lo < n:
        hi = min(n, lo + batch)
        try:
            outs.append(fn(lo, hi, call_width(hi - lo, batch, static)))
            lo = hi
        except (RuntimeError, torch.OutOfMemoryError) as e:
            if not is_oom(e) or batch == 1:
                raise
            batch = max(1, batch // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return torch.cat(outs)
