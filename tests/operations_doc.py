"""The runbook's shell blocks (docs/operations.md), for the tests that run them as
they stand (backup, restore, upgrade), so the doc and the tests cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path

OPERATIONS = Path(__file__).resolve().parents[1] / "docs" / "operations.md"


def shell_block(heading: str, index: int = 0) -> str:
    """The ``index``-th ```sh block in the section of docs/operations.md with this heading."""
    text = OPERATIONS.read_text()
    assert f"\n## {heading}\n" in text, f"no '## {heading}' in {OPERATIONS}"
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) > index, f"no sh block #{index} under '## {heading}' in {OPERATIONS}"
    return blocks[index]
