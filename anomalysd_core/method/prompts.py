"""Hierarchical text prompts (Sec. 4.1) and the Table 4 prompt ablation.

For a class ``c`` the paper uses a coarse set ``T1_c = {"A perfect [c]."}`` and a fine-grained set
``T2_c`` of descriptions of the NORMAL appearance; ``T_c = T1_c U T2_c``. During fine-tuning the
condition ``y`` of eq (5)/(8) is drawn at random from ``T_c`` (:func:`sample_prompt`); at inference
the text embeddings ``tau(y)`` are averaged over ``T_c`` (:func:`prompt_set` gives the list).

The prompts live in ``prompts.yaml`` (package data), written for this project because the paper's
supplementary lists are not public. Table 4 variants (``prompt_design``):

* ``"hierarchical"``: ``T1_c U T2_c``;
* ``"simple"``: ``["A photo of a [c]."]``;
* ``"none"``: ``[""]``, the empty (unconditional) prompt.
"""
from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import yaml

PROMPTS_FILE = Path(__file__).with_name("prompts.yaml")
DESIGNS = ("hierarchical", "simple", "none")
KINDS = ("object", "texture")

MVTEC_CLASSES = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
                 "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper")
VISA_CLASSES = ("candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2",
                "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum")
MINI_CLASSES = ("brick", "grass", "gravel", "coins", "solar_mono", "solar_poly")


class PromptFileError(ValueError):
    """The prompt YAML file is malformed; the message names the file and the key."""


def _check(cond: bool, path: Path, key: str, msg: str) -> None:
    if not cond:
        raise PromptFileError(f"{path}: key {key!r}: {msg}")


def _validate(data, path: Path) -> dict:
    _check(isinstance(data, dict), path, "<root>", "must be a mapping")
    for key in ("coarse", "simple"):
        _check(isinstance(data.get(key), str) and "{name}" in data[key], path, key,
               "must be a string containing '{name}'")
    generic = data.get("generic", [])
    _check(isinstance(generic, list) and all(isinstance(s, str) and "{name}" in s for s in generic), path,
           "generic", "must be a list of sentences containing '{name}'")
    classes = data.get("classes")
    _check(isinstance(classes, dict) and len(classes) > 0, path, "classes",
           "must be a non-empty mapping of class id -> entry")
    for cls, entry in classes.items():
        k = f"classes.{cls}"
        _check(isinstance(entry, dict), path, k, "must be a mapping with name, kind, fine")
        name = entry.get("name")
        _check(isinstance(name, str) and name.strip() != "", path, f"{k}.name",
               "must be a non-empty string")
        _check(entry.get("kind") in KINDS, path, f"{k}.kind", f"must be one of {KINDS}")
        fine = entry.get("fine")
        _check(isinstance(fine, list) and len(fine) > 0, path, f"{k}.fine",
               "must be a non-empty list of sentences")
        for i, s in enumerate(fine):
            _check(isinstance(s, str) and s.strip() != "", path, f"{k}.fine[{i}]",
                   "must be a non-empty string")
    return data


@functools.lru_cache(maxsize=8)
def _load(path: str) -> dict:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise PromptFileError(f"{p}: not valid YAML: {e}") from e
    return _validate(data, p)


def load_prompts(path: str | Path | None = None) -> dict:
    """The validated prompt table (cached per path). Raises :class:`PromptFileError`."""
    return _load(str(Path(path) if path is not None else PROMPTS_FILE))


def known_classes(path=None) -> list[str]:
    return list(load_prompts(path)["classes"])


def _entry(cls: str, path=None) -> dict | None:
    return load_prompts(path)["classes"].get(cls)


def display_name(cls: str, path=None) -> str:
    """Readable name (``"metal_nut"`` -> ``"metal nut"``); unknown classes: underscores -> spaces."""
    e = _entry(cls, path)
    return e["name"] if e is not None else cls.replace("_", " ")


def class_kind(cls: str, path=None, default: str = "object") -> str:
    """``"object"`` or ``"texture"`` (used for the foreground mask, Sec. 4.1)."""
    e = _entry(cls, path)
    return e["kind"] if e is not None else default


def prompt_set(cls: str, design: str = "hierarchical", path=None) -> list[str]:
    """The prompt set ``T_c`` for class ``cls`` under a Table 4 ``design``.

    ``"hierarchical"`` -> ``T1_c U T2_c`` (coarse prompt first); ``"simple"`` ->
    ``["A photo of a [c]."]``; ``"none"`` -> ``[""]``. A class missing from the YAML (a user's own
    part) gets the coarse prompt built from its id (underscores -> spaces) and the file's
    ``generic`` fine-grained set formatted with that name.
    """
    if design not in DESIGNS:
        raise ValueError(f"prompt design must be one of {DESIGNS}, got {design!r}")
    if design == "none":
        return [""]
    table = load_prompts(path)
    e = table["classes"].get(cls)
    name = e["name"] if e is not None else cls.replace("_", " ")
    first = table["simple" if design == "simple" else "coarse"].format(name=name)
    if e is None:
        generic = [s.format(name=name) for s in table.get("generic", [])] if design == "hierarchical" else []
        if not generic and design == "hierarchical":
            warnings.warn(f"class {cls!r} has no entry in the prompt file and the file no generic set; "
                          f"using only the prompt {first!r}", stacklevel=2)
        return [first] + generic
    if design == "simple":
        return [first]
    coarse = first
    return [coarse] + [s for s in e["fine"] if s != coarse]


def sample_prompt(cls: str, rng=None, design: str = "hierarchical", path=None) -> str:
    """One prompt ``y`` drawn uniformly from ``T_c`` (fine-tuning, Sec. 4.1)."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    ps = prompt_set(cls, design, path)
    return ps[int(rng.integers(len(ps)))]
