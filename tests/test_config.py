"""Config is checked at the front door: every choice and range fails when the Config is made,
with a message that names the field, the value and what is allowed."""
import dataclasses

import pytest

from anomalysd_core.config import CHOICES, PROFILES, RANGES, Config, get_config, parse_overrides


def test_every_profile_is_valid():
    for p in PROFILES:
        assert get_config(p).profile == p


@pytest.mark.parametrize("field", sorted(CHOICES))
def test_choices_are_checked(field):
    with pytest.raises(ValueError, match=rf"config field '{field}': 'nonsense' is not one of"):
        dataclasses.replace(get_config("mini"), **{field: "nonsense"})


def test_choices_match_what_the_builders_accept():
    from anomalysd_core.method.features import TIMM_MODELS

    assert set(CHOICES["backbone"]) == {"efficientnet_lite0", *TIMM_MODELS}


@pytest.mark.parametrize("field,bad", [("image_size", "0"), ("shots", "-1"), ("batch_size", "0"), ("lr", "0"),
                                       ("lr", "-0.5"), ("unet_steps", "-5"), ("decoder_epochs", "-1"),
                                       ("num_inference_steps", "0"), ("alpha", "1.5"), ("alpha", "-0.1"),
                                       ("blur_sigma_512", "-1"), ("infer_batch", "-1"), ("auto_views", "0"),
                                       ("lpips_beta", "-0.1")])
def test_ranges_are_checked(field, bad):
    assert field in {r[0] for r in RANGES}
    with pytest.raises(ValueError, match=rf"config field '{field}' must be .*got {bad}"):
        get_config("mini", **{field: bad})


@pytest.mark.parametrize("override,msg", [
    ({"noise_strength": "1.5"}, r"noise_strength must be in \(0, 1\], got 1.5"),
    ({"noise_strength": "0"}, r"noise_strength must be in \(0, 1\]"),
    ({"noise_strength_per_class": "brick:2"}, r"noise_strength_per_class\['brick'\] must be in"),
    ({"grid_scales": "1,0"}, "grid_scales' must be positive integers"),
    ({"grid_scales": "1,128"}, "up to image_size"),
    ({"gammas": "0,1.2"}, "gammas' must be IoU thresholds"),
    ({"device": "gpu"}, "config field 'device': 'gpu'"),
    ({"baseline_backbone": "resnet18"}, "config field 'baseline_backbone': 'resnet18'"),
    ({"classes": ""}, "config field 'classes' must be None or a non-empty list"),
])
def test_other_rules(override, msg):
    with pytest.raises(ValueError, match=msg):
        get_config("mini", **override)


def test_good_values_pass():
    cfg = get_config("mini", alpha="0", noise_strength="1", device="cuda:1", unet_epochs="none",
                     baseline_backbone="wide_resnet50_2", classes="brick,coins")
    assert cfg.alpha == 0 and cfg.noise_strength == 1.0 and cfg.classes == ["brick", "coins"]


def test_checks_need_no_model_or_data():
    """A Config is checked on its own, before anything is loaded: a bad value in a direct
    construction fails the same way, and a malformed override names itself."""
    with pytest.raises(ValueError, match="config field 'alpha' must be"):
        Config(profile="mini", alpha=2.0)
    with pytest.raises(ValueError, match="not of the form key=value"):
        parse_overrides(["alpha"])


def test_every_mini_deviation_from_the_paper_is_on_the_deviations_page():
    """A field in which mini differs from the paper profile is named in the table of
    book/deviations.md (its last column), unless it is one of the few listed here with the page
    that explains it instead."""
    import re
    from pathlib import Path

    explained_elsewhere = {
        "profile": "the profile's name",
        "unet_epochs": "the paper counts epochs; the table's row names unet_steps",
        "decoder_epochs": "as unet_epochs",
        "baseline_backbone": "the baselines' backbone: results.md, Table 1",
        "noise_strength_per_class": "the paper's per-class lambda for its own classes (capsule, wood, screw)",
    }
    page = (Path(__file__).resolve().parent.parent / "book" / "deviations.md").read_text()
    named = {f for line in page.splitlines() if line.startswith("| ")
             for f in re.findall(r"`(\w+)`", line.rstrip(" |").rsplit("|", 1)[-1])}
    paper, mini = get_config("paper"), get_config("mini")
    differing = {f.name for f in dataclasses.fields(Config) if getattr(paper, f.name) != getattr(mini, f.name)}
    missing = sorted(differing - named - set(explained_elsewhere))
    assert not missing, f"mini differs from the paper in {missing}, which book/deviations.md does not name"
    assert "alpha" in named and "proto_floor" in named
    rows = {f: line for line in page.splitlines() if line.startswith("| ") for f in ("alpha", "image_score_top")
            if f"`{f}`" in line.rstrip(" |").rsplit("|", 1)[-1]}
    # the rows give mini's values as they are
    assert f"$\\alpha = {mini.alpha:g}$" in rows["alpha"], f"the deviations page's alpha row does not say {mini.alpha:g}"
    assert f"`image_score_top = {mini.image_score_top:g}`" in rows["image_score_top"]
