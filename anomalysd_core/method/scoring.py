"""From inpaintings to anomaly maps and scores: eq (12)-(21), and the detector that ties them.

``AnomalySD`` holds the (fine-tuned) diffusion components, the feature backbone for the
prototype-guided mask and the perceptual distance. For one test image of class c it

1. builds the prototype-guided mask M^(p) from the class's bank of few-shot normal features
   (eq 12-15; with zero shots there is no bank and no M^(p));
2. inpaints the image under the 85 grid masks and M^(p) in batched U-Net calls (eq 11);
3. measures D(x, x^) for every inpainting (eq 16-17);
4. fuses: S^(k) (eq 18), harmonic mean S_ms (eq 19), S_pg (eq 20), S_map (eq 21), a Gaussian blur
   and the image score S_I = max S_map (mini: the mean of its highest 2 %, ``image_score``).

Steps 1-3 give the per-image ``Intermediates`` that ``evaluate`` caches (the per-scale maps S^(k)
of eq 18 rather than the N distance maps they are made of: every fused variant needs only them);
step 4 is cheap and is redone for every Table-5 variant ("full" mask, "ms", "ms+proto") and every
alpha. The denoised latents of the grid masks are returned too, so that a setting with the same
U-Net and another decoder can decode them instead of denoising again (``grid_latents``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from . import masks as masks_mod
from . import prototypes
from .inpaint import decode, denoise, encode_masked
from .prompts import prompt_set

EPS = 1e-8


@dataclass
class Intermediates:
    """What is expensive to compute for one image; enough to fuse any variant."""
    D_grid: np.ndarray | None          # (N, H, W) distance map of each grid inpainting (None from the cache)
    index: list                        # [(k, i, j)] of each grid mask
    D_proto: np.ndarray | None = None  # (H, W) distance map of the prototype inpainting
    proto_mask: np.ndarray | None = None  # (H, W) bool M^(p)
    error_map: np.ndarray | None = None   # (h, w) E of eq 14
    inpaintings: np.ndarray | None = None  # (N+1, 3, H, W) uint8, kept only when asked
    per_scale: dict | None = None      # k -> S^(k) (H, W) of eq 18 (computed from D_grid when None)
    grid_latents: torch.Tensor | None = None  # (N, c, h, w) denoised latents of the grid masks

    def scale_maps(self, grid: np.ndarray) -> dict:
        """S^(k) for every scale k: ``per_scale`` if set, else eq (18) on ``D_grid``."""
        if self.per_scale is not None:
            return self.per_scale
        return per_scale_maps(self.D_grid, grid, self.index)


@dataclass
class ScoreMaps:
    per_scale: dict = field(default_factory=dict)  # k -> S^(k) (H, W)
    S_ms: np.ndarray | None = None
    S_pg: np.ndarray | None = None
    S_map: np.ndarray | None = None    # after the blur
    score: float = float("nan")


def per_scale_maps(D_grid: np.ndarray, grid: np.ndarray, index: list) -> dict:
    """S^(k) = sum_ij M_ij^(k) . D(x, x^_ij^(k)) (eq 18): the mosaic of each mask's own region."""
    out: dict[int, np.ndarray] = {}
    for n, (k, _, _) in enumerate(index):
        out.setdefault(k, np.zeros(D_grid.shape[1:], dtype=np.float32))
        out[k] += grid[n] * D_grid[n]
    return out


def harmonic_mean(maps: list[np.ndarray]) -> np.ndarray:
    """S_ms = |K| / sum_k 1 / S^(k) (eq 19): high only where every scale agrees."""
    return len(maps) / sum(1.0 / (m + EPS) for m in maps)


def blur(m: np.ndarray, sigma: float) -> np.ndarray:
    return gaussian_filter(m, sigma=sigma, mode="nearest") if sigma > 0 else m


def image_score(S_map: np.ndarray, top: float = 0.0) -> float:
    """S_I: the maximum of S_map (the paper) or, with ``top > 0``, the mean of its ``top`` fraction
    of highest pixels (at least one), which one noisy pixel of a normal image cannot dominate.

    Examples
    --------
    >>> m = np.zeros((10, 10)); m[0, :2] = [1.0, 0.5]
    >>> image_score(m), image_score(m, top=0.02)
    (1.0, 0.75)
    """
    if not 0 <= top <= 1:
        raise ValueError(f"image_score: top must be a fraction of the map's pixels in [0, 1], got {top!r}")
    if top == 0:
        return float(S_map.max())
    flat = np.ravel(S_map)
    k = max(1, int(round(top * flat.size)))
    return float(np.partition(flat, flat.size - k)[flat.size - k:].mean())


def fuse(inter: Intermediates, grid: np.ndarray, variant: str = "ms+proto", alpha: float = 0.1,
         sigma: float = 4.0, scales=None, top: float = 0.0) -> ScoreMaps:
    """Eq (18)-(21) for one image, and the image score S_I (:func:`image_score` with ``top``);
    ``variant`` picks the inference masks of Table 5.

    * ``full``: one full-image mask (the k = 1 grid mask), S_map = D(x, x^_full);
    * ``ms``: the multi-scale masks, S_map = S_ms;
    * ``ms+proto``: S_map = (1 - alpha) S_ms + alpha S_pg; without a prototype mask (zero shots)
      this falls back to ``ms``.
    ``scales`` restricts the multi-scale set K (default: every scale present in ``index``).
    """
    out = ScoreMaps()
    per = inter.scale_maps(grid)
    scales = sorted(per) if scales is None else list(scales)
    missing = [k for k in scales if k not in per]
    if missing:
        raise ValueError(f"scales {missing} were not computed (have {sorted(per)})")
    out.per_scale = {k: per[k] for k in scales}
    if variant == "full":
        if 1 not in per:
            raise ValueError("variant 'full' needs the k=1 (full image) mask")
        s = per[1]
    elif variant in ("ms", "ms+proto"):
        out.S_ms = harmonic_mean([per[k] for k in scales])
        s = out.S_ms
        if variant == "ms+proto" and inter.D_proto is not None:
            out.S_pg = inter.proto_mask * inter.D_proto
            s = (1 - alpha) * out.S_ms + alpha * out.S_pg
    else:
        raise ValueError(f"unknown inference-mask variant {variant!r}; use 'full', 'ms' or 'ms+proto'")
    out.S_map = blur(s.astype(np.float32), sigma)
    out.score = image_score(out.S_map, top)
    return out


def to_tensor(img) -> torch.Tensor:
    """HxWx3 float [0,1] array or (3,H,W)/(1,3,H,W) tensor -> (1,3,H,W) float tensor."""
    t = torch.as_tensor(np.asarray(img, dtype=np.float32)) if not isinstance(img, torch.Tensor) else img
    if t.ndim == 3 and t.shape[-1] == 3 and t.shape[0] != 3:
        t = t.permute(2, 0, 1)
    return (t if t.ndim == 4 else t[None]).float()


class AnomalySD:
    """The detector of Sec. 4.2-4.3 (see module docstring)."""

    def __init__(self, cfg, comp, backbone, distance, n_images: int | None = None):
        from ..utils import resolve_compile

        self.cfg, self.backbone, self.distance = cfg, backbone, distance
        # the same modules, eager unless cfg.compile says otherwise ("auto": compiled on a GPU for a
        # run of ``n_images`` >= 40 images); None: a detector that only fuses maps
        self.comp = comp.compiled(resolve_compile(cfg.compile, comp.device, n_images)) if comp is not None else None
        self.banks: dict[str, torch.Tensor] = {}
        self.floors: dict[str, float] = {}  # class -> lowest threshold of eq 15 (proto_floor="shots")
        self._ctx: dict[str, torch.Tensor] = {}
        self.strengths: dict[str, float] = {}  # lambda per class, once known
        self.chooser = None  # cls -> lambda, for noise_strength="auto" (set by evaluate.fit)
        self.encodes = None  # an inpaint.EncodeCache shared between settings (set by evaluate.fit)
        g, self.index = masks_mod.grid_masks(cfg.image_size, cfg.grid_scales)
        self.grid = g.float()
        self.grid_np = g[:, 0].numpy().astype(np.float32)

    # --- eq 12-13: prototype banks of the few-shot normals --------------------------------
    @torch.no_grad()
    def set_shots(self, shots: dict) -> None:
        """shots: class -> list of HxWx3 images (the K normals). Builds P_c with rotations (and,
        with ``proto_floor="shots"``, the floor of eq 15's threshold: ``prototypes.shot_floor``)."""
        self.banks, self.floors = {}, {}
        for cls, imgs in shots.items():
            if len(imgs) == 0:
                continue
            x = torch.cat([to_tensor(i) for i in imgs])
            feats = self.backbone.psi(prototypes.rotations(x).to(self.comp.device)).float().cpu()
            self.banks[cls] = prototypes.build_bank(feats)
            if self.cfg.proto_floor == "shots":
                self.floors[cls] = prototypes.shot_floor(feats)

    def proto_threshold(self, cls: str, E) -> float:
        """r of eq (15) for the error map ``E``: the variance split, raised to the class's floor
        when ``proto_floor="shots"``."""
        r = prototypes.variance_threshold(E)
        return max(r, self.floors[cls]) if cls in self.floors else r

    def context(self, cls: str) -> torch.Tensor:
        """Average prompt embedding of the class (Sec. 4.3), computed once per class."""
        if cls not in self._ctx:
            self._ctx[cls] = self.comp.text.average(prompt_set(cls, self.cfg.prompt_design))
        return self._ctx[cls]

    def strength(self, cls: str) -> float:
        """The noise strength lambda of ``cls`` (eq 11): ``cfg.strength_for`` or, with
        ``noise_strength="auto"``, the choice of ``chooser`` (``autolambda.py``), asked once."""
        if cls not in self.strengths:
            if self.cfg.auto_strength and cls not in self.cfg.noise_strength_per_class:
                if self.chooser is None:
                    raise ValueError("noise_strength='auto' needs the chooser that evaluate.fit sets")
                self.strengths[cls] = float(self.chooser(cls))
            else:
                self.strengths[cls] = self.cfg.strength_for(cls)
        return self.strengths[cls]

    # --- eq 11, 14-17: the expensive part ---------------------------------------------------
    @torch.no_grad()
    def intermediates(self, img, cls: str, seed: int = 0, keep_inpaintings: bool = False,
                      grid_latents: torch.Tensor | None = None, strength: float | None = None,
                      share_encodes: bool = True) -> Intermediates:
        """M^(p), the inpaintings under the grid masks and M^(p), and their distance maps.

        ``grid_latents``: the grid masks' denoised latents of a model with the same encoder, U-Net,
        prompt, lambda, steps and seed (``Intermediates.grid_latents`` of an earlier call); then
        only M^(p) is denoised and every latent is decoded with this model's decoder.
        ``strength``: lambda for this call instead of the class's (``strength``).
        ``share_encodes=False``: leave this image out of the shared ``encodes`` cache (an image
        scored once); the numbers are the same either way.
        """
        x = to_tensor(img)
        size = self.cfg.image_size
        if x.shape[-1] != size or x.shape[-2] != size:
            raise ValueError(f"image is {tuple(x.shape[-2:])}, the profile expects {size}x{size}")
        n = self.grid.shape[0]
        if grid_latents is not None and grid_latents.shape[0] != n:
            raise ValueError(f"grid_latents hold {grid_latents.shape[0]} masks, the grid has {n}")
        masks = self.grid
        E = pmask = None
        if cls in self.banks:
            E = prototypes.error_map(self.backbone.psi(x.to(self.comp.device)).float().cpu(),
                                     self.banks[cls])[0]
            pmask = prototypes.prototype_mask(E, size, r=self.proto_threshold(cls, E))
            masks = torch.cat([self.grid, pmask[None, None].float()])
        todo = masks if grid_latents is None else masks[n:]
        lam = self.strength(cls) if strength is None else float(strength)
        args = (self.context(cls), lam, self.cfg.num_inference_steps)
        # z = E(x) and the masked images' latents: the grid's as one batch (from the shared cache
        # when there is one), M^(p)'s on its own, so the numbers never depend on the cache
        encoded = None
        if grid_latents is None:
            z_x, zo = (self.encodes.encode(self.comp, x, self.grid) if self.encodes is not None and share_encodes
                       else encode_masked(self.comp, x, self.grid, self.cfg.infer_batch))
            parts = [zo]
            if pmask is not None:
                parts.append(encode_masked(self.comp, x, masks[n:], image=False)[1])
            encoded = (z_x, torch.cat(parts))
        elif len(todo):  # only M^(p) is left to denoise
            encoded = encode_masked(self.comp, x, todo)
        z = denoise(self.comp, x, todo, *args, seed=seed, batch=self.cfg.infer_batch,
                    encoded=encoded) if len(todo) else None
        if grid_latents is not None:
            g = grid_latents.to(self.comp.device, self.comp.dtype)
            z = g if z is None else torch.cat([g, z])
        x_hat = decode(self.comp, z, self.cfg.infer_batch)
        D = self.distance_maps(x, x_hat)
        inter = Intermediates(D_grid=D[:n], index=self.index, grid_latents=z[:n].cpu())
        if pmask is not None:
            inter.D_proto, inter.proto_mask = D[n], pmask.numpy()
            inter.error_map = E.numpy()
        if keep_inpaintings:
            inter.inpaintings = (x_hat.clamp(0, 1) * 255).round().byte().cpu().numpy()
        return inter

    @torch.no_grad()
    def distance_maps(self, x: torch.Tensor, x_hat: torch.Tensor, chunk: int = 32) -> np.ndarray:
        """D(x, x^) of eq (16)-(17) for every inpainting, (N, H, W)."""
        dev = self.comp.device
        x = x.to(dev)
        outs = [self.distance(x, x_hat[i:i + chunk].to(dev).float())[:, 0].float().cpu()
                for i in range(0, x_hat.shape[0], chunk)]
        return torch.cat(outs).numpy()

    def fuse(self, inter: Intermediates, variant: str | None = None, alpha: float | None = None,
             scales=None) -> ScoreMaps:
        return fuse(inter, self.grid_np, variant or self.cfg.mask_variant,
                    self.cfg.alpha if alpha is None else alpha, self.cfg.blur_sigma, scales,
                    self.cfg.image_score_top)

    def score(self, img, cls: str, seed: int = 0) -> ScoreMaps:
        return self.fuse(self.intermediates(img, cls, seed))
