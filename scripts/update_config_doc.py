"""Regenerate the generated blocks of docs/CONFIG.md from the code.

* ``gate-metrics``: the table of gate metrics (``auditor.gate.METRIC_DOCS``);
* ``defaults``: every key with its default and documentation (``auditor.config.defaults_yaml``,
  built from the config dataclasses, the ``model``/``data`` input keys included).

Each block sits between ``<!-- BEGIN GENERATED: name -->`` and ``<!-- END GENERATED: name -->``.

Usage::

    python scripts/update_config_doc.py           # rewrite docs/CONFIG.md (run after changing config.py or gate.py)
    python scripts/update_config_doc.py --check   # exit 1 when docs/CONFIG.md is out of date
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from auditor.config import defaults_yaml
from auditor.gate import METRIC_DOCS

DOC = Path(__file__).resolve().parents[1] / "docs" / "CONFIG.md"


def blocks() -> dict[str, str]:
    """The generated text of each block, by name."""
    table = ["| metric | meaning |", "|---|---|", *(f"| `{name}` | {doc} |" for name, doc in METRIC_DOCS.items())]
    return {
        "gate-metrics": "\n".join(table) + "\n",
        "defaults": "```yaml\n" + defaults_yaml().rstrip("\n") + "\n```\n",
    }


def render(text: str) -> str:
    """``text`` (the current docs/CONFIG.md) with every generated block replaced by its current content.

    Raises:
        ValueError: a block's markers are missing.
    """
    for name, content in blocks().items():
        pattern = re.compile(rf"(<!-- BEGIN GENERATED: {re.escape(name)} -->\n).*?(<!-- END GENERATED: {re.escape(name)} -->)", re.DOTALL)
        if not pattern.search(text):
            raise ValueError(f"docs/CONFIG.md has no generated block {name!r}; add its BEGIN/END markers")
        text = pattern.sub(lambda m, body=content: m.group(1) + body + m.group(2), text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when the file is out of date")
    args = parser.parse_args(argv)
    text = DOC.read_text()
    new = render(text)
    if args.check:
        if new != text:
            print(f"{DOC} is out of date: run python scripts/update_config_doc.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
