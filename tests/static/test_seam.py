"""The seam between spawner-agnostic features and the systemd host (docs/scaling.md)."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HUB_EXT = REPO / "hub_ext"
SCALING_DOC = REPO / "docs" / "scaling.md"


def modules() -> list[Path]:
    return sorted(p for p in HUB_EXT.rglob("*.py") if p.name != "__init__.py" or p.parent != HUB_EXT)


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def table_modules() -> set[str]:
    """Module paths named in the table rows of docs/scaling.md."""
    rows = [line for line in SCALING_DOC.read_text().splitlines() if line.startswith("|")]
    return set(re.findall(r"`([\w/]+\.py)`", "\n".join(rows)))


def test_only_the_spawner_imports_systemdspawner():
    importers = {
        str(p.relative_to(HUB_EXT))
        for p in modules()
        if any(name.split(".")[0] == "systemdspawner" for name in imported_modules(p))
    }
    assert importers == {"spawner.py"}


def test_every_module_is_placed_on_a_side_of_the_seam():
    named = table_modules()
    missing = [str(p.relative_to(HUB_EXT)) for p in modules() if str(p.relative_to(HUB_EXT)) not in named]
    assert not missing, f"hub_ext modules missing from docs/scaling.md's table: {missing}"


def test_the_table_names_no_module_that_is_gone():
    named = table_modules()
    # hub_ext modules are named relative to hub_ext/, the lab's own code as lab/...
    gone = sorted(name for name in named if not ((HUB_EXT / name).exists() or (REPO / name).exists()))
    assert not gone, f"docs/scaling.md names modules hub_ext no longer has: {gone}"
