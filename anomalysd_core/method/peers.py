"""The peers of Table 1 that bring their own foundation model: WinCLIP (CLIP, zero- and few-shot)
and AnomalyDINO (DINOv2, few-shot). Both take the memory-bank baselines' interface
(``fit(normals)`` -> ``self``, ``predict(images)`` -> ``(scores, maps)`` at the input size) and load
their weights from the hub, as the paper profile's SD and CLIP do; without them they raise
:class:`BaselineUnavailable`, and the harness skips their rows with its message.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .memory_bank import BLUR_SIGMA_512, augment_normals, gaussian_blur


class BaselineUnavailable(RuntimeError):
    """A baseline that cannot run on this machine (package or weights missing); the message says
    what to install or download. ``settings.run_baselines`` skips it with this message."""


WINCLIP_BACKBONE, WINCLIP_PRETRAINED = "ViT-B-16-plus-240", "laion400m_e31"


class WinCLIP:
    """WinCLIP (zero-shot) and WinCLIP+ (few-shot) of Jeong et al. (2023), through anomalib's
    ``WinClipModel``: open_clip's ViT-B-16-plus-240 with the LAION-400M weights the WinCLIP paper
    used, a compositional prompt ensemble on ``class_name``, sliding windows at scales (2, 3) and,
    with K > 0 normals, the window and patch memories of WinCLIP+.

    Images are resized to the model's 240 px (bicubic) and normalised with CLIP's mean/std; maps come
    back at the input size (bilinear). ``pretrained=False`` builds random weights (tests only).
    Raises :class:`BaselineUnavailable` when anomalib/open_clip or the weights are missing.
    """

    def __init__(self, extractor=None, class_name: str = "object", pretrained: bool = True,
                 scales=(2, 3), device=None):
        del extractor  # WinCLIP brings its own backbone
        self.class_name = class_name.replace("_", " ")
        self.pretrained, self.scales, self.device = pretrained, tuple(scales), device
        self.fitted = False

    def _build(self, reference):
        try:
            import open_clip
            from anomalib.models.image.winclip import torch_model as tm
        except ImportError as e:
            raise BaselineUnavailable(
                f"WinCLIP needs anomalib and open_clip ({e}); install them with "
                f"`pip install 'anomalib>=2.0' 'open-clip-torch>=2.24'`") from e
        saved = tm.PRETRAINED
        tm.PRETRAINED = WINCLIP_PRETRAINED if self.pretrained else None
        try:
            model = tm.WinClipModel(class_name=self.class_name, reference_images=reference, scales=self.scales)
        except Exception as e:  # no weights in the cache and no network, or a failed download
            hub = open_clip.pretrained.get_pretrained_cfg(WINCLIP_BACKBONE, WINCLIP_PRETRAINED).get("hf_hub", "")
            raise BaselineUnavailable(
                f"WinCLIP skipped: open_clip weights {WINCLIP_BACKBONE}/{WINCLIP_PRETRAINED} are not on "
                f"this machine ({type(e).__name__}: {str(e)[:200]}). On a machine with network access "
                f"run `python -c \"import open_clip; open_clip.create_model_and_transforms("
                f"'{WINCLIP_BACKBONE}', pretrained='{WINCLIP_PRETRAINED}')\"` (hub: {hub.rstrip('/')}) "
                f"and copy the Hugging Face cache folder here.") from e
        finally:
            tm.PRETRAINED = saved
        return model.eval().to(self.device or "cpu")

    def _prep(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().to(self.mean.device)
        x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False).clamp(0, 1)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def fit(self, normal_images=None):
        """K normals ``(K, 3, H, W)`` in [0, 1] (WinCLIP+); ``None`` or K = 0: zero-shot WinCLIP."""
        self.model = self._build(None)  # raises BaselineUnavailable without anomalib/open_clip/weights
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        vis = self.model.clip.visual
        size = getattr(vis, "image_size", 240)
        self.size = int(size[0] if isinstance(size, (tuple, list)) else size)
        pre = getattr(vis, "preprocess_cfg", None) or {}
        dev = next(self.model.parameters()).device
        self.mean = torch.tensor(pre.get("mean", OPENAI_DATASET_MEAN), device=dev).view(1, 3, 1, 1)
        self.std = torch.tensor(pre.get("std", OPENAI_DATASET_STD), device=dev).view(1, 3, 1, 1)
        if normal_images is not None and len(normal_images):
            self.model.setup(reference_images=self._prep(normal_images))
        self.fitted = True
        return self

    @torch.no_grad()
    def predict(self, images):
        if not self.fitted:
            raise RuntimeError("call fit() before predict()")
        dev = next(self.model.parameters()).device
        out = self.model(self._prep(images.to(dev)))
        maps = F.interpolate(out.anomaly_map[:, None].float(), size=images.shape[-2:], mode="bilinear",
                             align_corners=False)[:, 0]
        return out.pred_score.float().reshape(-1).cpu(), maps.cpu()


# --------------------------------------------------------------------------------------------
# AnomalyDINO (Damm et al., WACV 2025)
# --------------------------------------------------------------------------------------------
#: timm's name of DINOv2 ViT-S/14 (weights on the hub: timm/vit_small_patch14_dinov2.lvd142m)
DINO_MODEL = "vit_small_patch14_dinov2.lvd142m"
#: AnomalyDINO's default resolution (the shorter side, 448 px = 32 patches of 14 px)
DINO_SIZE = 448
_DINO_ENCODERS: dict = {}  # (pretrained, device) -> (model, mean, std)


def first_component_mask(feats: torch.Tensor, grid: tuple[int, int], threshold: float = 10.0,
                         border: float = 0.2) -> torch.Tensor:
    """AnomalyDINO's zero-shot foreground mask of one image: the patches whose projection on the
    first principal component of the image's own patch features exceeds ``threshold``, the sign
    chosen so that the central crop (``border`` of each side left out) is mostly foreground, then
    dilated and closed with a 3 x 3 square. ``feats (N, D)``, ``grid = (h, w)``; returns ``(N,)`` bool.

    Examples
    --------
    >>> f = torch.zeros(36, 4)
    >>> f[:, 0] = -20.0
    >>> f[[14, 15, 20, 21], 0] = 60.0  # four central patches differ along one direction
    >>> first_component_mask(f, (6, 6)).reshape(6, 6).sum().item()  # the four, dilated and closed
    16
    """
    from scipy import ndimage

    x = feats.float() - feats.float().mean(0, keepdim=True)
    v = torch.linalg.svd(x, full_matrices=False).Vh[0]
    pc = (x @ v).reshape(grid).cpu().numpy()
    h, w = grid
    centre = (slice(int(h * border), int(h * (1 - border))), slice(int(w * border), int(w * (1 - border))))
    mask = pc > threshold
    if mask[centre].sum() <= 0.35 * mask[centre].size:  # the component's sign is arbitrary
        mask = -pc > threshold
    square = np.ones((3, 3), bool)
    mask = ndimage.binary_closing(ndimage.binary_dilation(mask, square), square)
    return torch.from_numpy(mask.reshape(-1))


class AnomalyDINO:
    """AnomalyDINO: patch kNN on DINOv2 features, training-free (Damm et al., WACV 2025).

    * features: the last layer's patch tokens of DINOv2 ViT-S/14 (``DINO_MODEL``, through timm) for
      the image resized to ``size`` x ``size`` (448, its paper's default) and normalised with
      ImageNet's mean and std, each L2-normalised;
    * memory bank: every patch of the K normals (rotated by 0/90/180/270 degrees with
      ``augment="rot"``; off by default);
    * masking (``masking``; default on for objects, off for textures, as AnomalyDINO masks objects
      that do not fill the frame): a test patch outside :func:`first_component_mask` scores 0, and
      only the normals' foreground patches enter the bank;
    * patch score: cosine distance ``1 - <f, m>`` to the nearest bank feature;
    * image score: the mean of the highest 1 % of patch scores (``top``);
    * map: patch scores upsampled bilinearly to the input size and blurred with
      ``sigma = 4 * H / 512``, as the other baselines' maps.

    ``pretrained=False`` builds random weights of the same architecture (tests only). Raises
    :class:`BaselineUnavailable` when the weights are not on this machine. anomalib (2.3 and later)
    ships AnomalyDINO too; this is a small implementation of the same recipe, without anomalib.
    """

    def __init__(self, extractor=None, kind: str = "object", pretrained: bool = True, size: int = DINO_SIZE,
                 masking: bool | None = None, augment: str | None = None, top: float = 0.01, device=None,
                 blur_sigma_512: float = BLUR_SIGMA_512):
        del extractor  # AnomalyDINO brings its own backbone
        if size % 14:
            raise ValueError(f"AnomalyDINO's size must be a multiple of the 14-px patch, got {size}")
        self.pretrained, self.size, self.augment, self.top = pretrained, int(size), augment, float(top)
        self.masking = (kind == "object") if masking is None else bool(masking)
        self.device, self.blur_sigma_512 = device, blur_sigma_512
        self.model, self.fitted = None, False

    def _build(self):
        import timm

        key = (self.pretrained, str(self.device or "cpu"))
        if key in _DINO_ENCODERS:  # one encoder per process: every class and seed shares it (frozen)
            self.mean, self.std = _DINO_ENCODERS[key][1:]
            return _DINO_ENCODERS[key][0]
        try:
            model = timm.create_model(DINO_MODEL, pretrained=self.pretrained, num_classes=0, dynamic_img_size=True)
        except Exception as e:  # no weights in the cache and no network
            raise BaselineUnavailable(
                f"AnomalyDINO skipped: the DINOv2 ViT-S/14 weights ({DINO_MODEL}) are not on this machine "
                f"({type(e).__name__}: {str(e)[:200]}). On a machine with network access run `python -c "
                f"\"import timm; timm.create_model('{DINO_MODEL}', pretrained=True)\"` and copy the Hugging "
                "Face cache folder here.") from e
        cfg = model.pretrained_cfg
        self.mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1)
        model = model.eval().requires_grad_(False).to(self.device or "cpu")
        _DINO_ENCODERS[key] = (model, self.mean, self.std)
        return model

    @torch.no_grad()
    def patches(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features (B, N, D) L2-normalised, foreground (B, N) bool)`` of ``images`` in [0, 1]."""
        if self.model is None:
            self.model = self._build()
        dev = next(self.model.parameters()).device
        x = F.interpolate(images.float().to(dev), size=(self.size, self.size), mode="bicubic",
                          align_corners=False).clamp(0, 1)
        tokens = self.model.forward_features((x - self.mean.to(dev)) / self.std.to(dev))
        feats = tokens[:, self.model.num_prefix_tokens:]
        g = self.size // 14
        if self.masking:
            fg = torch.stack([first_component_mask(f, (g, g)) for f in feats]).to(dev)
        else:
            fg = torch.ones(feats.shape[:2], dtype=torch.bool, device=dev)
        return F.normalize(feats.float(), dim=-1), fg

    def fit(self, normal_images: torch.Tensor):
        feats, fg = self.patches(augment_normals(normal_images, self.augment))
        self.bank = feats[fg] if fg.any() else feats.reshape(-1, feats.shape[-1])
        self.fitted = True
        return self

    @torch.no_grad()
    def predict(self, images: torch.Tensor):
        if not self.fitted:
            raise RuntimeError("AnomalyDINO.predict called before fit")
        feats, fg = self.patches(images)
        d = (1 - feats @ self.bank.T).clamp(0, 2).min(dim=-1).values * fg  # (B, N) cosine distances
        n_top = max(1, int(d.shape[1] * self.top))
        scores = d.topk(n_top, dim=1).values.mean(dim=1)
        g = self.size // 14
        maps = F.interpolate(d.reshape(-1, 1, g, g), size=tuple(images.shape[-2:]), mode="bilinear",
                             align_corners=False)[:, 0]
        maps = gaussian_blur(maps, self.blur_sigma_512 * images.shape[-2] / 512.0)
        return scores.cpu(), maps.cpu()
