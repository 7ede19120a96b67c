"""What a notebook shows: the model it should display (``components_for_notebook``), a table
in the book's style (``html_table``) and myst-nb's ``glue`` (with a fallback that needs no
myst-nb), through which every number in the book's prose comes from a notebook's run.
"""
from __future__ import annotations

from pathlib import Path

GLUE_PREFIX = "application/papermill.record/"


def shown(path) -> str:
    """``path`` as a page shows it: relative to the repository when inside it (``utils.portable``),
    so that no published page names the clone that built it.

    >>> from anomalysd_core.config import REPO_ROOT
    >>> shown(REPO_ROOT / "results" / "mini"), shown("/elsewhere/x")
    ('results/mini', '/elsewhere/x')
    """
    from ..utils import portable

    return portable(str(path))


def components_for_notebook(cfg, device="cpu"):
    """The diffusion components a notebook should show for ``cfg``, and a sentence saying which.

    The project's base model (``cfg.base_model``, ``models/mini-base`` for mini/smoke) when it
    exists; for the ``smoke`` profile only, a randomly initialised model of the same architecture
    (``models.new_mini_components``) when it does not, so CI runs without the pre-trained weights.
    """
    import torch

    from ..method.models import ModelError, load_components, new_mini_components

    base = Path(cfg.base_model)
    if base.exists() or cfg.profile == "paper":
        comp = load_components(cfg, device=torch.device(device))
        return comp, f"Loaded the base model from `{shown(cfg.base_model)}`."
    if cfg.profile == "smoke":
        comp = new_mini_components(size=cfg.image_size, text_kind=cfg.text_encoder, device=device)
        return comp, (f"The base model `{shown(cfg.base_model)}` is absent, so this smoke run uses a "
                      "RANDOMLY INITIALISED model of the same architecture: shapes and code paths "
                      "are real, images and attention patterns are not meaningful.")
    raise ModelError(f"base model folder {cfg.base_model!r} does not exist; pre-train it with "
                     "`python -m anomalysd_core pretrain` (or run the smoke profile)")


def html_table(df, index: bool = False):
    """A DataFrame as an HTML table in the book theme's style (for display and glue)."""
    from IPython.display import HTML

    return HTML(df.to_html(index=index, border=0, classes=["table", "dataframe"], na_rep="",
                           escape=True))


def glue(name: str, value, display: bool = False) -> None:
    """Store ``value`` under ``name`` for ``{glue}`` roles/directives of the book (myst-nb)."""
    try:
        from myst_nb import glue as _glue
    except ImportError:  # same wire format as myst_nb.glue, without the dependency
        from IPython.core.formatters import format_display_data
        from IPython.display import display as ipy_display

        bundle, metadata = format_display_data(value)
        prefix = "" if display else GLUE_PREFIX
        metadata["scrapbook"] = dict(name=name, mime_prefix=prefix)
        ipy_display({prefix + k: v for k, v in bundle.items()}, raw=True, metadata=metadata)
        return
    _glue(name, value, display=display)
