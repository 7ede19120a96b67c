"""Tiny random-weight Stable Diffusion inpainting checkpoints, for tests and documentation.

No SD weights can be downloaded on this project's machines, yet the ``paper`` profile must be
exercised exactly as it would run on ``stable-diffusion-v1-5/stable-diffusion-inpainting``.
:func:`save_tiny_sd_inpainting` writes a folder with the same layout and the same classes as that
repository, only a few hundred thousand parameters strong and randomly initialised:

==================  ========================  ==================================================
folder              class                     tiny settings
==================  ========================  ==================================================
``vae/``            ``AutoencoderKL``         SD layout: 4 levels (latent = image / 8), 4 latent
                                              channels, widths 16-32
``unet/``           ``UNet2DConditionModel``  9 input channels (eq 7), 4 output, cross-attention
                                              width = the text encoder's (32)
``text_encoder/``   ``CLIPTextModel``         hidden 32, 2 layers, 2 heads, 77 positions
``tokenizer/``      ``CLIPTokenizer``         byte-level BPE: a vocab.json/merges.txt written here
``scheduler/``      ``DDIMScheduler``         ``models.scheduler_config()`` (SD v1's schedule)
``model_index.json``                          ``StableDiffusionInpaintPipeline``, no safety checker
==================  ========================  ==================================================

The tokenizer's vocabulary is the 256 byte symbols of CLIP's byte-level BPE, each also in its
word-final form (``"a</w>"``), a handful of merges of common English letter pairs, and the two
special tokens ``<|startoftext|>`` and ``<|endoftext|>``: every string tokenizes (into short
pieces), as with the real 49,408-token vocabulary.

:func:`save_tiny_t2i` writes the same thing with a 4-channel text-to-image U-Net, the kind of
checkpoint the inpainting method must refuse (``models.ModelError``).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..method.models import scheduler_config

TEXT_DIM = 32
MERGES = ["t h", "e r", "i n", "a n", "o n", "th e</w>", "e d</w>", "in g</w>", "a r", "e n",
          "o r", "e s</w>", "o f</w>", "a l", "c t</w>"]


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def tiny_vocab() -> tuple[dict[str, int], list[str]]:
    """(vocab, merges) in CLIP's order: bytes, word-final bytes, merges, special tokens."""
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    merges = list(MERGES)
    for m in merges:
        a, b = m.split(" ")
        tokens.append(a + b)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_tokenizer(folder) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json`` of the tiny CLIP BPE."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = tiny_vocab()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>"}))
    (folder / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>"}))
    return folder


def tiny_vae_config(image_size: int = 64) -> dict:
    return dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=image_size,
                down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                block_out_channels=[16, 16, 32, 32], layers_per_block=1, norm_num_groups=8)


def tiny_unet_config(image_size: int = 64, in_channels: int = 9, text_dim: int = TEXT_DIM) -> dict:
    return dict(sample_size=image_size // 8, in_channels=in_channels, out_channels=4,
                layers_per_block=1, block_out_channels=[32, 64], norm_num_groups=16,
                down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
                attention_head_dim=8, cross_attention_dim=text_dim)


def tiny_text_config(vocab_size: int, eos_id: int, bos_id: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=TEXT_DIM, intermediate_size=64,
                          num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                          projection_dim=TEXT_DIM, bos_token_id=bos_id, eos_token_id=eos_id,
                          pad_token_id=eos_id)


def model_index(unet_class: str = "UNet2DConditionModel",
                pipeline: str = "StableDiffusionInpaintPipeline") -> dict:
    import diffusers

    return {"_class_name": pipeline, "_diffusers_version": diffusers.__version__,
            "feature_extractor": [None, None], "safety_checker": [None, None],
            "requires_safety_checker": False, "image_encoder": [None, None],
            "scheduler": ["diffusers", "DDIMScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", unet_class], "vae": ["diffusers", "AutoencoderKL"]}


def save_tiny_sd_inpainting(folder, image_size: int = 64, seed: int = 0, in_channels: int = 9,
                            pipeline: str = "StableDiffusionInpaintPipeline") -> Path:
    """Write a random-weight SD inpainting checkpoint in diffusers' folder layout (see module doc).

    ``in_channels=4`` (with ``pipeline="StableDiffusionPipeline"``) gives a text-to-image
    checkpoint instead; :func:`save_tiny_t2i` is that shortcut. Returns ``folder``.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    if image_size % 8:
        raise ValueError(f"image_size must be a multiple of 8 (the VAE halves it 3 times), got {image_size}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = CLIPTokenizer.from_pretrained(str(write_tokenizer(folder / "tokenizer")))
    torch.manual_seed(seed)
    text = CLIPTextModel(tiny_text_config(len(tok), tok.eos_token_id, tok.bos_token_id))
    vae = AutoencoderKL(**tiny_vae_config(image_size))
    unet = UNet2DConditionModel(**tiny_unet_config(image_size, in_channels))
    tok.save_pretrained(folder / "tokenizer")
    text.save_pretrained(folder / "text_encoder")
    vae.save_pretrained(folder / "vae")
    unet.save_pretrained(folder / "unet")
    DDIMScheduler(**scheduler_config()).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps(
        model_index(pipeline=pipeline), indent=2) + "\n")
    return folder


def save_tiny_t2i(folder, image_size: int = 64, seed: int = 0) -> Path:
    """A tiny text-to-image checkpoint (4-channel U-Net): the wrong architecture for eq (7)."""
    return save_tiny_sd_inpainting(folder, image_size, seed, in_channels=4,
                                   pipeline="StableDiffusionPipeline")


__all__ = ["save_tiny_sd_inpainting", "save_tiny_t2i", "write_tokenizer", "tiny_vocab",
           "tiny_vae_config", "tiny_unet_config", "model_index", "bytes_to_unicode"]
