import warnings

import numpy as np
import pytest

from anomalysd_core.method import prompts as P


ALL = P.MVTEC_CLASSES + P.VISA_CLASSES + P.MINI_CLASSES


def test_every_class_has_hierarchical_prompts():
    assert len(P.MVTEC_CLASSES) == 15 and len(P.VISA_CLASSES) == 12
    known = set(P.known_classes())
    assert set(ALL) <= known
    for cls in ALL:
        ps = P.prompt_set(cls)
        name = P.display_name(cls)
        assert ps[0] == f"A perfect {name}."
        assert 4 <= len(ps) <= 6                      # T1 (1) + T2 (3-5)
        assert len(set(ps)) == len(ps)
        assert all(s.strip() and s.endswith(".") and "_" not in s for s in ps)


def test_display_names_and_kinds():
    assert P.display_name("metal_nut") == "metal nut"
    assert P.display_name("solar_mono") == "monocrystalline solar cell"
    assert P.class_kind("carpet") == "texture" and P.class_kind("bottle") == "object"
    textures = {c for c in P.MVTEC_CLASSES if P.class_kind(c) == "texture"}
    assert textures == {"carpet", "grid", "leather", "tile", "wood"}
    assert P.display_name("some_new_part") == "some new part"


def test_paper_example_prompt_present():
    assert "A toothbrush with intact structure and neatly arranged bristles." in P.prompt_set("toothbrush")


def test_designs():
    assert P.prompt_set("metal_nut", "simple") == ["A photo of a metal nut."]
    assert P.prompt_set("metal_nut", "none") == [""]
    with pytest.raises(ValueError):
        P.prompt_set("bottle", "fancy")


def test_unknown_class_gets_the_generic_set(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ps = P.prompt_set("widget_x")
        assert ps[0] == "A perfect widget x." and len(ps) == 1 + len(P.load_prompts()["generic"])
        assert all("widget x" in s for s in ps[1:])
        assert P.prompt_set("widget_x", "simple") == ["A photo of a widget x."]
        assert P.prompt_set("widget_x", "none") == [""]
    # a prompt file without a generic set: the coarse prompt only, with a warning naming the class
    import yaml

    data = dict(P.load_prompts())
    data.pop("generic")
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(data))
    with pytest.warns(UserWarning, match="widget_x"):
        assert P.prompt_set("widget_x", path=f) == ["A perfect widget x."]


def test_sample_prompt_draws_from_set():
    rng = np.random.default_rng(0)
    ps = P.prompt_set("screw")
    seen = {P.sample_prompt("screw", rng) for _ in range(200)}
    assert seen == set(ps)
    assert P.sample_prompt("screw", rng, "none") == ""


@pytest.mark.parametrize("text, key", [
    ("- just a list\n", "<root>"),
    ("coarse: 'A perfect {name}.'\nsimple: 'A photo of a {name}.'\nclasses: {}\n", "classes"),
    ("coarse: 'A perfect {name}.'\nsimple: 'A photo of a {name}.'\nclasses:\n  foo:\n"
     "    name: foo\n    kind: blob\n    fine: ['x.']\n", "classes.foo.kind"),
    ("coarse: 'A perfect {name}.'\nsimple: 'A photo of a {name}.'\nclasses:\n  foo:\n"
     "    name: foo\n    kind: object\n    fine: ['ok.', 3]\n", "classes.foo.fine[1]"),
    ("coarse: 'no placeholder'\nsimple: 'A photo of a {name}.'\nclasses: {}\n", "coarse"),
])
def test_invalid_yaml_names_file_and_key(tmp_path, text, key):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(P.PromptFileError) as e:
        P.load_prompts(f)
    assert str(f) in str(e.value) and key in str(e.value)


def test_unparsable_yaml(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("classes: [unclosed\n")
    with pytest.raises(P.PromptFileError, match="broken.yaml"):
        P.load_prompts(f)


def test_custom_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("coarse: 'A perfect {name}.'\nsimple: 'A photo of a {name}.'\nclasses:\n  foo:\n"
                 "    name: foo part\n    kind: object\n    fine: ['A clean foo.']\n")
    assert P.prompt_set("foo", path=f) == ["A perfect foo part.", "A clean foo."]
