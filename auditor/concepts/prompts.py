"""Candidate spurious concepts from YAML prompt files.

A prompt file holds an optional list of ``templates`` (each with one ``{}`` for the
concept) and ``concepts``, a mapping from category to concept names::

    templates: ["a photo with {}", "a photo of {}"]
    concepts:
      backgrounds: [striped background, water, grass]
      objects: [a tree, a car]

The bundled files (backgrounds and textures, colours and lighting, objects, people and
attributes) are used when no file is given; users add their own files or a plain list
(``concepts.concepts`` in the config), which gets the default templates.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from auditor.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATES = ("a photo with {}", "a photo of {}")
"""Templates used for concepts given without a file, and for files without ``templates``."""


@dataclass(frozen=True)
class Concept:
    """One candidate concept.

    Attributes:
        name: the concept ("striped background").
        category: its group in the prompt file ("backgrounds").
        prompts: the filled templates; their mean text embedding is the concept direction.
        source: the file it came from ("<config>" for user-given names).
    """

    name: str
    category: str
    prompts: tuple[str, ...]
    source: str


def default_prompt_dir() -> Path:
    """Folder of the bundled prompt files (package data ``auditor/prompts``, shipped in the wheel).

    Raises:
        ConfigError: the folder is missing (a broken installation).
    """
    folder = Path(__file__).resolve().parents[1] / "prompts"
    if folder.is_dir() and any(folder.glob("*.yaml")):
        return folder
    raise ConfigError(
        f"the bundled prompt files were not found in {str(folder)!r} (a broken installation: reinstall auditor); "
        "or set `concepts.prompt_files` to your own YAML files"
    )


def _check_templates(templates: object, where: str) -> tuple[str, ...]:
    if isinstance(templates, str):
        templates = [templates]
    if not isinstance(templates, (list, tuple)) or not templates or not all(isinstance(t, str) for t in templates):
        raise ConfigError(f"{where}: `templates` must be a non-empty list of strings; got {templates!r}")
    for t in templates:
        if t.count("{}") != 1:
            raise ConfigError(f"{where}: template {t!r} must contain exactly one '{{}}' where the concept goes")
    return tuple(templates)


def load_prompt_file(path: str | Path) -> list[Concept]:
    """Read one prompt YAML file.

    Args:
        path: the file.

    Returns:
        Its concepts, in file order.

    Raises:
        ConfigError: missing file, invalid YAML, or a file not following the schema.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"prompt file {str(path)!r} does not exist; fix `concepts.prompt_files`")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"prompt file {str(path)!r} is not valid YAML: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("concepts"), dict):
        raise ConfigError(
            f"prompt file {str(path)!r} must be a mapping with `concepts: {{category: [names]}}` "
            f"(and optionally `templates`); got {type(data).__name__} with keys {sorted(data) if isinstance(data, dict) else []}"
        )
    templates = _check_templates(data.get("templates", list(DEFAULT_TEMPLATES)), str(path))
    concepts = []
    for category, names in data["concepts"].items():
        if isinstance(names, str) or not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
            raise ConfigError(f"{path}: category {category!r} must list concept names (non-empty strings); got {names!r}")
        for name in names:
            name = name.strip()
            concepts.append(Concept(name, str(category), tuple(t.format(name) for t in templates), str(path)))
    return concepts


def load_concepts(
    prompt_files: Sequence[str | Path] | None = None,
    extra: Iterable[str] = (),
    templates: Sequence[str] = DEFAULT_TEMPLATES,
) -> list[Concept]:
    """All candidate concepts: the prompt files' plus extra names, duplicates dropped (first wins).

    Args:
        prompt_files: YAML files; None or empty uses every file of :func:`default_prompt_dir`.
        extra: more concept names (category "user"), given ``templates``.
        templates: templates for ``extra``.

    Returns:
        The concepts, files in the given (or sorted) order, then the extra ones.

    Raises:
        ConfigError: a bad file or template, or no concept at all.

    Example:
        >>> names = [c.name for c in load_concepts(extra=["a red ball"])]
        >>> "striped background" in names and names[-1] == "a red ball"
        True
    """
    files = list(prompt_files) if prompt_files else sorted(default_prompt_dir().glob("*.yaml"))
    templates = _check_templates(list(templates), "extra concepts")
    concepts: list[Concept] = []
    seen: set[str] = set()
    for concept in [c for f in files for c in load_prompt_file(f)] + [
        Concept(n.strip(), "user", tuple(t.format(n.strip()) for t in templates), "<config>") for n in extra
    ]:
        if not concept.name:
            raise ConfigError("an extra concept name is empty; remove it from `concepts.concepts`")
        if concept.name in seen:
            logger.debug("concept %r listed twice; keeping its first definition", concept.name)
            continue
        seen.add(concept.name)
        concepts.append(concept)
    if not concepts:
        raise ConfigError("no candidate concepts: give `concepts.prompt_files` or `concepts.concepts`")
    return concepts
