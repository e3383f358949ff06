"""Prompt YAML files: the bundled set and user files."""

import pytest

from auditor.concepts.prompts import (
    DEFAULT_TEMPLATES,
    default_prompt_dir,
    load_concepts,
    load_prompt_file,
)
from auditor.errors import ConfigError


def test_bundled_prompts_cover_the_worlds_cues_among_many_unrelated_concepts():
    concepts = load_concepts()
    names = {c.name for c in concepts}
    assert {"striped background", "a tree", "warm orange light"} <= names
    assert len(concepts) >= 40
    categories = {c.category for c in concepts}
    assert {"backgrounds", "textures", "colours", "objects", "people", "attributes", "lighting"} <= categories
    assert len(names) == len(concepts)  # no duplicates
    assert all(c.prompts and all(c.name in p for p in c.prompts) for c in concepts)


def test_default_dir_holds_yaml_files():
    assert sorted(p.name for p in default_prompt_dir().glob("*.yaml"))


def test_user_file_and_extra_names(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("templates: ['a picture of {}']\nconcepts:\n  hospital:\n    - a ruler\n    - a pen mark\n")
    concepts = load_concepts([path], extra=["a red ball", "a ruler"])
    assert [c.name for c in concepts] == ["a ruler", "a pen mark", "a red ball"]
    assert concepts[0].prompts == ("a picture of a ruler",)
    assert concepts[0].category == "hospital"
    assert concepts[2].prompts == tuple(t.format("a red ball") for t in DEFAULT_TEMPLATES)
    assert concepts[2].category == "user"


def test_file_without_templates_gets_defaults(tmp_path):
    path = tmp_path / "plain.yaml"
    path.write_text("concepts:\n  things: [a cup]\n")
    assert load_prompt_file(path)[0].prompts == tuple(t.format("a cup") for t in DEFAULT_TEMPLATES)


@pytest.mark.parametrize(
    "text, message",
    [
        ("- just a list\n", "must be a mapping"),
        ("concepts:\n  things: a cup\n", "must list concept names"),
        ("templates: ['no slot']\nconcepts:\n  things: [a cup]\n", "exactly one"),
        ("concepts: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_prompt_file(path)


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_concepts(["/no/such/prompts.yaml"])
