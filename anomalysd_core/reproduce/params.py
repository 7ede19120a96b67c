"""The notebooks' parameters: their papermill values -> configuration overrides, lists and defaults.

``notebook_setup`` turns a notebook's ``data_root``/``base_model``/``out_dir``/``results_dir``
parameters into overrides, the results folder and a sentence naming the base model (a random
stand-in base model for the smoke profile when ``models/mini-base`` is absent);
``sweep_defaults`` gives the shots, seeds and noise strengths each profile sweeps; ``parse_list``
reads a list parameter; ``ROBUSTNESS`` is the robustness chapter's subset per profile.
"""
from __future__ import annotations

from pathlib import Path

from ..config import get_config
from .display import shown
from .tables import get_results_dir

#: The sweeps the notebooks run when their list parameters are left empty (``sweep_defaults``).
#: smoke keeps CI short: two shot counts, one seed, three noise strengths (one of them cached).
SWEEPS = {
    "paper": dict(shots=(0, 1, 2, 4), seeds=(0, 1, 2), lambdas=(0.2, 0.4, 0.6, 0.8),
                  baselines=("patchcore", "spade", "padim", "winclip", "anomalydino")),
    "mini": dict(shots=(0, 1, 2, 4), seeds=(0, 1, 2), lambdas=(0.2, 0.4, 0.6, 0.8),
                 baselines=("patchcore", "spade", "padim"), zero_shot_seeds=(0,)),
    "smoke": dict(shots=(0, 1), seeds=(0,), lambdas=(0.2, 0.5, 0.8), baselines=("patchcore", "spade", "padim")),  # 0.5: the profile's own, cached
}


#: The robustness chapter's subset (its CPU budget): classes, perturbations (None: all of
#: ``robustness.PERTURBATIONS``), severities and test images per class (None: all;
#: ``robustness.test_samples``), one seed at one shot. Mini scores the mildest and the strongest
#: severity only (the middle one cost 145 s of the book's 60 minutes), on 24 of each class's 48 test
#: images (all 48 took 680 s, an eighth of the book; 24 is half again the chapter's 16 before build 4).
ROBUSTNESS = {
    "paper": dict(classes=None, perturbations=None, severities=(1, 2, 3), seed=0, shots=1,
                  test_per_class=None),
    "mini": dict(classes=("brick", "coins"), perturbations=None, severities=(1, 3), seed=0, shots=1,
                 test_per_class=24),
    "smoke": dict(classes=("brick",), perturbations=("rotation", "gain", "jpeg"), severities=(1, 3),
                  seed=0, shots=1, test_per_class=None),
}


def sweep_defaults(profile: str) -> dict:
    """Shot counts, seeds, noise strengths and baselines the notebooks use for ``profile`` by default."""
    return dict(SWEEPS.get(profile, SWEEPS["mini"]))


def parse_list(value, default, conv=int) -> list:
    """A notebook list parameter: ``None``/``""`` -> ``default``; ``"0,1"`` or ``[0, 1]`` -> ``[0, 1]``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return [conv(v) for v in default]
    if isinstance(value, str):
        return [conv(v) for v in value.replace(",", " ").split()]
    if isinstance(value, (int, float)):
        return [conv(value)]
    return [conv(v) for v in value]


# ----------------------------------------------------------------------------- notebook set-up
def resolve_base_model(profile: str, base_model: str = "", out_dir: str = "") -> tuple[str, str]:
    """The base model a run of ``profile`` should use, and a sentence saying which.

    ``base_model`` when given; else the profile's own (``models/mini-base`` for mini and smoke).
    For the ``smoke`` profile only, when that folder is absent, a randomly initialised model of the
    mini architecture is written once to ``<out_dir>/smoke/random-base-<size>`` (atomically) and
    used instead, so that CI runs every notebook without the pre-trained weights.
    """
    cfg = get_config(profile, **({"out_dir": out_dir} if out_dir else {}))
    if base_model:
        return str(base_model), f"Base model: `{base_model}` (set by the `base_model` parameter)."
    if Path(cfg.base_model).exists() or profile != "smoke":
        return cfg.base_model, f"Base model: `{shown(cfg.base_model)}` (the profile's)."
    import os
    import shutil
    import tempfile

    from ..method.models import CARD_NAME, new_mini_components, save_base

    stand = Path(cfg.out_dir) / profile / f"random-base-{cfg.image_size}"
    if not (stand / CARD_NAME).is_file():
        stand.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{stand.name}.", dir=stand.parent))
        try:
            comp = new_mini_components(cfg.image_size, text_kind=cfg.text_encoder, seed=0)
            comp.vae.register_to_config(scaling_factor=1.0)
            save_base(comp, tmp, {"name": "random stand-in", "random": True, "size": cfg.image_size})
            if stand.exists():
                shutil.rmtree(stand)
            os.replace(tmp, stand)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    note = (f"The base model `{shown(cfg.base_model)}` is absent, so this smoke run uses a RANDOMLY "
            f"INITIALISED stand-in of the same architecture (`{shown(stand)}`): the code paths are real, "
            "the images and numbers are not meaningful.")
    return str(stand), note


def notebook_setup(profile: str, data_root: str = "", base_model: str = "", out_dir: str = "",
                   results_dir: str = "") -> tuple[dict, Path, str]:
    """Overrides, results folder and base-model sentence from a notebook's parameters.

    Empty strings mean "the profile's own": ``data_root`` and ``out_dir`` of the profile,
    ``results/<profile>`` and the base model of :func:`resolve_base_model`. The overrides are meant
    for ``get_config(profile, **over)`` and for the table functions of this module.
    """
    over = {}
    if data_root:
        over["data_root"] = str(data_root)
    if out_dir:
        over["out_dir"] = str(out_dir)
    over["base_model"], note = resolve_base_model(profile, base_model, out_dir)
    return over, get_results_dir(profile, results_dir), note
