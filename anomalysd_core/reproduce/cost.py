"""Cost model of AnomalySD scoring: how many network calls one test image needs, and what they cost.

The paper does not report inference cost (see ``METHOD.md``, "Where the paper stops"). Per test
image of class c, scoring (``scoring.AnomalySD.intermediates`` + ``fuse``) runs

* the prototype-guided mask (eq 12-15): one backbone pass and a nearest-prototype search;
* the batched inpainting engine (``inpaint.inpaint``, eq 11) over ``n_masks`` masks (85 grid masks
  plus the prototype mask: 86):

  - VAE encodes: ``n_masks + 1`` images (the image once, then one masked image per mask);
  - U-Net evaluations: ``n_masks x (floor(lambda x steps) + 1)`` (each mask is a partial DDIM run
    from T~ = lambda T down to 0, the schedule's steps at or below lambda T, as
    ``inpaint.start_timesteps`` keeps them; diffusers' img2img/inpaint pipelines keep
    ``int(strength * steps)``, one fewer);
  - VAE decodes: ``n_masks``;

* the perceptual distance D(x, x^) (eq 16-17): ``n_masks`` evaluations;
* the fusion (eq 18-21): cheap array arithmetic and a blur.

The predicted time per image is the sum of (number of calls) x (measured seconds per call and
item) plus a fixed per-image part (prototype mask and fusion). :func:`measure_call_costs` measures
the per-item costs of the U-Net, the VAE encoder and decoder and the distance in isolation, at a
given batch size, so that predictions can be checked against end-to-end timings
(``benchmarks/inference_speed.py``). :class:`StageTimer` attributes an end-to-end run's time to the
same components with forward hooks.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

MVTEC_TEST_IMAGES = 1725  # MVTec-AD test set (METHOD.md)
VISA_TEST_IMAGES = 2162  # VisA's test set in its standard "1cls" split


def unet_calls_per_mask(strength: float, steps: int) -> int:
    """DDIM steps left after starting at T~ = lambda T: ``floor(lambda * steps) + 1``, in [1, steps].

    ``inpaint.unet_calls``, the count ``inpaint.start_timesteps`` keeps (checked by ``tests/test_cost.py``).
    """
    from ..method.inpaint import unet_calls

    if not 0.0 < strength <= 1.0:
        raise ValueError(f"noise strength lambda must be in (0, 1], got {strength}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return unet_calls(strength, steps)


def diffusers_calls_per_mask(strength: float, steps: int) -> int:
    """What diffusers' ``StableDiffusionInpaintPipeline.get_timesteps`` keeps: ``int(strength * steps)``."""
    return min(int(steps * strength), int(steps))


def n_grid_masks(scales=(1, 2, 4, 8)) -> int:
    """Number of multi-scale grid masks: sum of k^2 over K (85 for K = {1, 2, 4, 8})."""
    return int(sum(int(k) * int(k) for k in scales))


@dataclass(frozen=True)
class CallCounts:
    """Network calls for one test image (counted per item: a batch of b counts b)."""
    n_masks: int
    unet: int
    vae_encode: int
    vae_decode: int
    distance: int

    def as_dict(self) -> dict:
        return asdict(self)


def calls_per_image(n_masks: int, strength: float, steps: int) -> CallCounts:
    """U-Net ``n_masks * (floor(lambda * steps) + 1)``, encodes ``n_masks + 1``, decodes and distances ``n_masks``."""
    if n_masks < 1:
        raise ValueError(f"n_masks must be >= 1, got {n_masks}")
    per = unet_calls_per_mask(strength, steps)
    return CallCounts(n_masks=int(n_masks), unet=int(n_masks) * per, vae_encode=int(n_masks) + 1,
                      vae_decode=int(n_masks), distance=int(n_masks))


@dataclass
class CallCosts:
    """Seconds per item (one image or one latent in a batch) of each call; ``fixed`` per image."""
    unet: float
    vae_encode: float
    vae_decode: float
    distance: float
    fixed: float = 0.0
    batch: int | None = None          # batch size the costs were measured at
    image_size: int | None = None
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def predict_breakdown(counts: CallCounts, costs: CallCosts) -> dict:
    """Seconds per image by component (and ``total``)."""
    out = {
        "unet": counts.unet * costs.unet,
        "vae_encode": counts.vae_encode * costs.vae_encode,
        "vae_decode": counts.vae_decode * costs.vae_decode,
        "distance": counts.distance * costs.distance,
        "fixed": costs.fixed,
    }
    out["total"] = sum(out.values())
    return out


def predict_seconds(counts: CallCounts, costs: CallCosts) -> float:
    """Predicted seconds per image: sum over components of calls x seconds per call."""
    return predict_breakdown(counts, costs)["total"]


def project_dataset_hours(seconds_per_image: float, n_images: int = MVTEC_TEST_IMAGES) -> float:
    """Hours to score ``n_images`` at ``seconds_per_image`` (default: the MVTec-AD test set)."""
    return seconds_per_image * n_images / 3600.0


# ---------------------------------------------------------------------------------------------
# Measuring the per-call costs
# ---------------------------------------------------------------------------------------------

def _sync(device) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, repeats: int = 2, warmup: int = 1) -> float:
    """Best-of-``repeats`` wall time of ``fn()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def measure_call_costs(comp, distance=None, image_size: int = 128, batch: int = 32, context=None,
                       repeats: int = 2, warmup: int = 1, fixed: float = 0.0) -> CallCosts:
    """Seconds per item of one U-Net evaluation, VAE encode, VAE decode and distance at ``batch``.

    Each component runs on random inputs of the right shape, in isolation, under
    ``torch.inference_mode``; the best of ``repeats`` timed calls is divided by ``batch``.
    ``context``: a (1, L, d) text embedding (random if None). ``fixed`` is copied into the result
    (the per-image part the caller measured: prototype mask and fusion).
    """
    import torch

    dev, dt = comp.device, comp.dtype
    g = torch.Generator().manual_seed(0)
    lat = image_size // comp.vae_scale
    lc = comp.vae.config.latent_channels
    if context is None:
        context = torch.randn(1, 8, comp.unet.config.cross_attention_dim, generator=g)
    ctx = context.to(dev, dt).expand(batch, -1, -1)
    x = torch.rand(batch, 3, image_size, image_size, generator=g).to(dev)
    z = torch.randn(batch, lc, lat, lat, generator=g).to(dev, dt)
    inp = torch.randn(batch, comp.unet.config.in_channels, lat, lat, generator=g).to(dev, dt)
    t = torch.tensor(500, device=dev)
    with torch.inference_mode():
        c_unet = _time(lambda: comp.unet(inp, t, encoder_hidden_states=ctx).sample, dev, repeats, warmup)
        c_enc = _time(lambda: comp.encode(x), dev, repeats, warmup)
        c_dec = _time(lambda: comp.decode(z), dev, repeats, warmup)
        c_dist = float("nan")
        if distance is not None:
            c_dist = _time(lambda: distance(x[:1], x), dev, repeats, warmup)
    return CallCosts(unet=c_unet / batch, vae_encode=c_enc / batch, vae_decode=c_dec / batch,
                     distance=c_dist / batch, fixed=fixed, batch=batch, image_size=image_size)


@dataclass
class StageTimer:
    """Wall time spent inside named modules, collected with forward hooks.

    ``with StageTimer({"unet": comp.unet, "vae_encode": comp.vae.encoder, ...}) as st: run()``
    then ``st.seconds["unet"]``, ``st.calls["unet"]`` (forward calls) and ``st.items["unet"]``
    (batch items). On a GPU the hooks synchronise, so the times are exact but the run is slower.
    """
    modules: dict
    seconds: dict = field(default_factory=dict)
    calls: dict = field(default_factory=dict)
    items: dict = field(default_factory=dict)

    def __enter__(self):
        self._handles, self._t0 = [], {}
        for name, mod in self.modules.items():
            self.seconds.setdefault(name, 0.0)
            self.calls.setdefault(name, 0)
            self.items.setdefault(name, 0)
            dev = next(mod.parameters()).device

            def pre(m, args, kwargs, name=name, dev=dev):
                _sync(dev)
                self._t0[name] = time.perf_counter()
                first = args[0] if args else next(iter(kwargs.values()))
                self.items[name] += int(first.shape[0])

            def post(m, args, kwargs, out, name=name, dev=dev):
                _sync(dev)
                self.seconds[name] += time.perf_counter() - self._t0.pop(name)
                self.calls[name] += 1

            self._handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
            self._handles.append(mod.register_forward_hook(post, with_kwargs=True))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()

    def per_item(self) -> dict:
        return {k: self.seconds[k] / self.items[k] for k in self.seconds if self.items.get(k)}


def engine_modules(comp) -> dict:
    """The modules whose time ``StageTimer`` should attribute in an inpainting run."""
    return {"unet": comp.unet, "vae_encode": comp.vae.encoder, "vae_decode": comp.vae.decoder}
