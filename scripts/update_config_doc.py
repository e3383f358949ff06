"""Rewrite the last YAML block of docs/CONFIG.md with `auditor config --print-defaults`.

Usage: python scripts/update_config_doc.py   (run after changing auditor/config.py)
"""

from pathlib import Path

from auditor.cli import defaults_yaml

DOC = Path(__file__).resolve().parents[1] / "docs" / "CONFIG.md"


def main() -> None:
    text = DOC.read_text()
    start = text.rindex("```yaml\n") + len("```yaml\n")
    end = text.index("```", start)
    DOC.write_text(text[:start] + defaults_yaml().rstrip("\n") + "\n" + text[end:])


if __name__ == "__main__":
    main()
