"""docs/configuration.md's variable table, read by the tests that hold it to the
roles and the traits (the hub itself never reads it)."""

from __future__ import annotations

import re
from pathlib import Path

CONFIG_DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
_ROW = re.compile(r"^\|\s*`([a-z][a-z0-9_]*)`\s*\|")


def split_row(line: str) -> list[str]:
    """Cells of a markdown table row; ``\\|`` is a literal pipe."""
    cells, cell, escaped = [], [], False
    for ch in line.strip().strip("|"):
        if escaped:
            cell.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "|":
            cells.append("".join(cell).strip())
            cell = []
        else:
            cell.append(ch)
    cells.append("".join(cell).strip())
    return cells


def doc_rows(markdown: str | None = None) -> dict[str, list[str]]:
    """variable -> [variable, default, effect, Docker original] of every row."""
    text = CONFIG_DOC.read_text() if markdown is None else markdown
    return {m.group(1): split_row(line) for line in text.splitlines() if (m := _ROW.match(line))}
