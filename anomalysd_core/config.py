"""Run profiles: one plain dataclass, three presets (``paper``, ``mini``, ``smoke``).

Every field can be overridden by name (from the CLI with ``--set key=value`` and from papermill
parameters), so one code path serves the paper's settings on a GPU, the embedded CPU benchmark and
the CI toy sizes. Paper values follow Sec. 4 and Sec. 5 of the paper (see ``METHOD.md``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MINI_BASE_MODEL = REPO_ROOT / "models" / "mini-base"


def project_root() -> Path:
    """Where relative ``data/`` and ``results/`` folders are: the clone this package was imported
    from (it holds ``pyproject.toml``), else, for an installed package run outside a clone (a
    notebook on its own), the working directory."""
    return REPO_ROOT if (REPO_ROOT / "pyproject.toml").is_file() else Path.cwd()


@dataclass
class Config:
    profile: str = "mini"
    # --- data ---
    dataset: str = "mvtec"            # "mvtec" (folder layout) or "visa" (split_csv/1cls.csv)
    data_root: str = "data/mini"      # mini/smoke: built by `anomalysd data build-mini`
    image_size: int = 64              # paper: every image resized to 512 x 512
    classes: list[str] | None = None  # None: every class found under data_root
    shots: int = 1                    # K normal images per class (K in {0, 1, 2, 4})
    seed: int = 0
    # --- base model (Sec. 3) ---
    base_model: str = str(MINI_BASE_MODEL)  # diffusers folder or hub id
    text_encoder: str = "minilm"      # "clip" (paper, inside base_model) or "minilm" (mini)
    # --- prototype features and perceptual distance (eq 12-17) ---
    backbone: str = "efficientnet_lite0"   # paper: "efficientnet_b6" (timm)
    distance: str = "lite0"                # paper: "lpips_alex"; mini: "pixel" (see PROFILES)
    baseline_backbone: str = ""            # PatchCore/SPADE/PaDiM; "" = backbone; paper: "wide_resnet50_2"
    # --- fine-tuning (eq 7-10) ---
    finetune_unet: bool = True
    finetune_decoder: bool = True
    mask_design: str = "foreground"   # "foreground" (IoU > gamma) or "random" (Table 4)
    prompt_design: str = "hierarchical"  # "hierarchical", "simple" or "none" (Table 4)
    gammas: tuple[float, ...] = (0.0, 0.2, 0.5)
    lr: float = 1e-4                  # paper: Adam, lr 1e-4 (mini: 5e-4, see PROFILES)
    lr_schedule: str = "constant"     # "constant" (paper) or "cosine" (5 % warm-up, cosine decay to 0)
    batch_size: int = 8
    unet_steps: int = 500             # optimiser steps (mini); paper: 4000 epochs
    decoder_steps: int = 100          # mini; paper: 200 epochs
    unet_epochs: int | None = None    # when set, overrides unet_steps (paper profile)
    decoder_epochs: int | None = None
    lpips_beta: float = 0.1           # eq 10
    augment: bool | str = True        # Sec. 5's augmentation: True or "black" (the warp's corners black),
                                      # "reflect" (mirrored: finetune.augment), False: none
    # --- inference (eq 11-21) ---
    num_inference_steps: int = 5      # paper: 50 DDIM steps
    noise_strength: float | str = 0.4  # lambda; T~ = lambda * T; "auto": chosen per class by ``fit``
    noise_strength_per_class: dict[str, float] = field(default_factory=dict)  # wins over both
    # candidates of "auto" (autolambda.py); not 0.8, which repaints the object itself (the paper's
    # Fig. 4) and was the worst fixed lambda on data/mini-val (benchmarks/auto_lambda_validation.py)
    auto_lambdas: tuple[float, ...] = (0.2, 0.4, 0.6)
    auto_views: int = 4               # augmented normals with synthetic defects that "auto" scores
    grid_scales: tuple[int, ...] = (1, 2, 4)   # paper: (1, 2, 4, 8), 85 masks
    mask_variant: str = "ms+proto"    # "full", "ms" or "ms+proto" (Table 5)
    alpha: float = 0.1                # eq 21's weight of S_pg (mini: 0.9)
    proto_floor: str = "none"         # eq 15's threshold as is ("none"), or no lower than the shots'
                                      # own errors ("shots", mini: prototypes.shot_floor)
    blur_sigma_512: float = 4.0       # S_map's Gaussian blur sigma at 512 px, scaled with image size (mini: 8)
    image_score_top: float = 0.0      # S_I: mean of S_map's top fraction of pixels; 0 = its max (the paper; mini: 0.02)
    infer_batch: int = 0              # masks per UNet batch; 0 = adapt to memory
    compile: str = "none"             # torch.compile mode of the U-Net and VAE calls at inference ("none":
                                      # eager; "auto": "default" on a GPU for runs of 40 images or more,
                                      # utils.resolve_compile; paper: "auto"; benchmarks/paper_speed.py)
    # --- runtime ---
    device: str = "auto"              # "auto", "cpu", "cuda"
    dtype: str = "float32"            # "auto": bfloat16 or float16 on a GPU, float32 on a CPU (utils.resolve_dtype)
    share_encodes: bool = False       # keep the grid's VAE encodes of each test image on disk for every
                                      # setting (inpaint.EncodeCache; mini, smoke: True)
    autocast: str = "none"            # the inpainting engine's convolutions and matmuls under torch.autocast in this
                                      # dtype, the weights and everything else in ``dtype`` ("none": off; mini:
                                      # "bfloat16", 1.4x on a CPU, maps within 0.02; models.Components.mixed_precision)
    out_dir: str = "runs"

    @property
    def blur_sigma(self) -> float:
        return self.blur_sigma_512 * self.image_size / 512.0

    def __post_init__(self):
        """Every field is checked when a Config is made: a bad value fails here, naming the field,
        the value and what is allowed, not minutes later where it is used."""
        for name, allowed in CHOICES.items():
            v = getattr(self, name)
            if v not in allowed:
                raise ValueError(f"config field {name!r}: {v!r} is not one of {list(allowed)}")
        if self.baseline_backbone not in ("",) + CHOICES["backbone"]:
            raise ValueError(f"config field 'baseline_backbone': {self.baseline_backbone!r} is not one of "
                             f"{[''] + list(CHOICES['backbone'])} ('' = the backbone)")
        if not (self.device in ("auto", "cpu", "cuda", "mps") or
                (self.device.startswith("cuda:") and self.device[5:].isdigit())):
            raise ValueError(f"config field 'device': {self.device!r} is not 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        if self.augment not in (True, False, "black", "reflect"):
            raise ValueError(f"config field 'augment' must be true, false, 'black' or 'reflect', got {self.augment!r}")
        ns = self.noise_strength
        if isinstance(ns, str) and ns != "auto":
            raise ValueError(f"noise_strength must be a number in (0, 1] or 'auto', got {ns!r}")
        for name, lam in [("noise_strength", ns)] + [(f"noise_strength_per_class[{c!r}]", v) for c, v in
                                                     self.noise_strength_per_class.items()] + \
                [(f"auto_lambdas[{i}]", v) for i, v in enumerate(self.auto_lambdas)]:
            if lam != "auto" and not 0.0 < float(lam) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {lam!r}")
        for name, lo, hi, lo_open in RANGES:
            v = getattr(self, name)
            if v is None and name in ("unet_epochs", "decoder_epochs"):
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or \
                    (v <= lo if lo_open else v < lo) or (hi is not None and v > hi):
                what = f"{'>' if lo_open else '>='} {lo:g}" + (f" and <= {hi:g}" if hi is not None else "")
                raise ValueError(f"config field {name!r} must be {what}, got {v!r}")
        if not self.grid_scales or any(int(k) != k or k < 1 or k > self.image_size for k in self.grid_scales):
            raise ValueError(f"config field 'grid_scales' must be positive integers up to image_size "
                             f"({self.image_size}), got {self.grid_scales!r}")
        if not self.gammas or any(not 0.0 <= g < 1.0 for g in self.gammas):
            raise ValueError(f"config field 'gammas' must be IoU thresholds in [0, 1), got {self.gammas!r}")
        if self.classes is not None and (not self.classes or not all(isinstance(c, str) and c for c in self.classes)):
            raise ValueError(f"config field 'classes' must be None or a non-empty list of class names, "
                             f"got {self.classes!r}")

    @property
    def auto_strength(self) -> bool:
        """True when lambda is chosen per class from the normals (``noise_strength="auto"``)."""
        return self.noise_strength == "auto"

    def strength_for(self, cls: str) -> float:
        """Lambda of ``cls``: its per-class value, else ``noise_strength``. With ``"auto"`` the
        class's value is known only after ``evaluate.fit`` chose it (``AnomalySD.strength``)."""
        if cls in self.noise_strength_per_class:
            return float(self.noise_strength_per_class[cls])
        if self.auto_strength:
            raise ValueError(f"noise_strength='auto': lambda of class {cls!r} is chosen by fit(); "
                             "ask the fitted detector (AnomalySD.strength)")
        return float(self.noise_strength)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self, keys: list[str] | None = None) -> str:
        """Short stable hash of the fields in ``keys`` (all fields when None). ``dtype`` counts as the
        dtype it computes in on this run's device (``utils.resolve_dtype``): "auto" is bfloat16 on
        one GPU and float16 on another, and their results must not share a cache."""
        d = self.to_dict()
        if keys is not None:
            d = {k: d[k] for k in keys}
        if "dtype" in d:
            import warnings

            from .utils import resolve_device, resolve_dtype
            with warnings.catch_warnings():  # resolve_device warns of a missing GPU where it is used
                warnings.simplefilter("ignore")
                d["dtype"] = str(resolve_dtype(self.dtype, resolve_device(self.device))).replace("torch.", "")
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


#: allowed values of the fields that name a choice (checked by ``Config.__post_init__``)
CHOICES: dict[str, tuple] = {
    "profile": ("paper", "mini", "smoke"),
    "dataset": ("mvtec", "visa"),
    "text_encoder": ("clip", "minilm"),
    "backbone": ("efficientnet_lite0", "efficientnet_b6", "wide_resnet50_2"),  # features.build_backbone
    "distance": ("lite0", "pixel", "lpips_alex"),                             # features.build_distance
    "mask_design": ("foreground", "random"),
    "prompt_design": ("hierarchical", "simple", "none"),
    "lr_schedule": ("constant", "cosine"),
    "mask_variant": ("full", "ms", "ms+proto"),
    "proto_floor": ("none", "shots"),                                         # prototypes.shot_floor
    "dtype": ("auto", "float32", "float16", "bfloat16"),
    "autocast": ("none", "bfloat16"),
    "compile": ("none", "auto", "default", "reduce-overhead", "max-autotune"),  # utils.resolve_compile
}
#: (field, lower bound, upper bound or None, lower bound excluded)
RANGES = [("image_size", 8, None, False), ("shots", 0, None, False), ("batch_size", 1, None, False),
          ("lr", 0.0, None, True), ("unet_steps", 0, None, False), ("decoder_steps", 0, None, False),
          ("unet_epochs", 0, None, False), ("decoder_epochs", 0, None, False),
          ("lpips_beta", 0.0, None, False), ("num_inference_steps", 1, None, False),
          ("alpha", 0.0, 1.0, False), ("blur_sigma_512", 0.0, None, False), ("infer_batch", 0, None, False),
          ("image_score_top", 0.0, 1.0, False),
          ("auto_views", 1, None, False)]

PROFILES: dict[str, dict] = {
    "paper": dict(
        profile="paper", dataset="mvtec", data_root="data/mvtec_anomaly_detection", image_size=512,
        base_model="stable-diffusion-v1-5/stable-diffusion-inpainting", text_encoder="clip",
        backbone="efficientnet_b6", distance="lpips_alex", baseline_backbone="wide_resnet50_2", batch_size=8,
        unet_epochs=4000, decoder_epochs=200, num_inference_steps=50, grid_scales=(1, 2, 4, 8),
        noise_strength_per_class={"capsule": 0.4, "wood": 0.4, "screw": 0.4}, dtype="auto", compile="auto",
        # the warp's corners mirrored, not black: no harm and +1.0 image AUROC in each seed on mini's
        # validation build (benchmarks/augment_border_validation.py, results/mini/val-v4); mini keeps
        # black because that margin is inside the validation images' noise
        augment="reflect",
    ),
    # mini's fine-tune, distance and map blur: chosen on the validation build data/mini-val
    # (benchmarks/finetune_schedule.py, notebook 10) within the CPU budget of the book: 500/100 steps
    # at a higher, decaying lr; colour after a 1-px blur instead of deep features for D (eq 16-17);
    # S_map blurred with sigma 1 px at 64 px, twice the paper's relative sigma, because the colour
    # distance is a per-pixel map (benchmarks/map_blur_validation.py; the baselines keep theirs);
    # M^(p)'s threshold no lower than the shots' own errors (benchmarks/proto_floor_validation.py);
    # with that floor S_pg weighs 0.9 in eq 21 instead of 0.1 (benchmarks/fusion_alpha_validation.py on
    # the three times larger build data/mini-x3-val); the image score is the mean of S_map's top 2 %
    # instead of its max (benchmarks/image_score_validation.py, the same build)
    # mini's engine computes its convolutions in bfloat16 (autocast; benchmarks/inference_speed.py
    # --precision measures speed and the maps' difference); the fine-tune computes its frozen
    # encodes the same way and trains in float32
    "mini": dict(profile="mini", lr=5e-4, lr_schedule="cosine", distance="pixel", blur_sigma_512=8.0,
                 proto_floor="shots", alpha=0.9, image_score_top=0.02, autocast="bfloat16",
                 share_encodes=True),
    "smoke": dict(
        profile="smoke", data_root="data/smoke", image_size=32, unet_steps=4, decoder_steps=2,
        lr=5e-4, lr_schedule="cosine", distance="pixel",
        batch_size=4, num_inference_steps=4, noise_strength=0.5, grid_scales=(1, 2, 4), autocast="bfloat16",
        share_encodes=True,
    ),
}

FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(Config)}


def _coerce(name: str, value):
    """Parse a string override (CLI/papermill) into the field's type."""
    if name not in FIELD_TYPES:
        raise KeyError(f"unknown config field {name!r}; known: {sorted(FIELD_TYPES)}")
    if not isinstance(value, str):
        if isinstance(value, list) and "tuple" in str(FIELD_TYPES[name]):
            return tuple(value)
        return value
    t = str(FIELD_TYPES[name])
    if name == "noise_strength" and value.strip().lower() == "auto":
        return "auto"
    if name == "augment" and value.strip().lower() in ("black", "reflect"):
        return value.strip().lower()
    try:
        if t.startswith("bool"):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if t.startswith("int"):
            return None if value.lower() == "none" else int(value)
        if t.startswith("float"):
            return float(value)
        if t.startswith("tuple"):
            conv = float if "float" in t else int
            return tuple(conv(v) for v in value.replace(",", " ").split())
        if t.startswith("dict"):
            return {k: float(v) for k, v in (kv.split(":") for kv in value.split(",") if kv)}
        if t.startswith("list"):
            return None if value.lower() == "none" else [v for v in value.split(",") if v]
    except ValueError as e:
        raise ValueError(f"config field {name!r}: cannot parse {value!r} as {t}") from e
    return value


def get_config(profile: str = "mini", **overrides) -> Config:
    """The preset for ``profile`` with ``overrides`` applied (strings are parsed)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    values = dict(PROFILES[profile])
    for k, v in overrides.items():
        values[k] = _coerce(k, v)
    return Config(**values)


def parse_overrides(pairs: list[str] | None) -> dict:
    """``["steps=5", "alpha=0.2"]`` -> ``{"steps": "5", "alpha": "0.2"}`` (parsed later)."""
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise ValueError(f"override {p!r} is not of the form key=value")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out
