"""The admin settings page's table: current values joined with docs/configuration.md.

One source of descriptions: the variable table of ``docs/configuration.md``
(installed on the host next to the hub, see docs/settings.md) is parsed here;
nothing restates it. The current values of the hub's settings declared as
traits (hub_ext.settings) are those of the hub's own loaded config, site-local
overrides included; the others come from the file the playbook renders with
every variable of the roles' ``defaults/main.yml`` as the play saw it (secrets
already masked there; masked again here, defence in depth).

Pure: no tornado, no jupyterhub.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MASK = "********"
# variable names (and environment variable names inside mappings) whose values are
# secret: the secret word ends the name (jupyterhub_admin_password,
# AWS_SECRET_ACCESS_KEY), so settings ABOUT passwords (jupyterhub_password_words,
# jupyterhub_minimum_password_length) stay readable
SECRET_NAME = re.compile(
    r"((^|_)(password|passwd|secret|token|credentials?|passphrase|key|apikey)$|private)",
    re.IGNORECASE,
)
_ROW = re.compile(r"^\|\s*`([a-z][a-z0-9_]*)`\s*\|")


@dataclass(frozen=True)
class DocRow:
    variable: str
    default: str
    effect: str
    original: str


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


def parse_config_doc(markdown: str) -> dict[str, DocRow]:
    """Every ``| `variable` | default | effect | original |`` row of the document."""
    rows: dict[str, DocRow] = {}
    for line in markdown.splitlines():
        match = _ROW.match(line)
        if not match:
            continue
        cells = split_row(line)
        if len(cells) < 4:
            continue
        rows[match.group(1)] = DocRow(match.group(1), cells[1], cells[2], cells[3])
    return rows


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def mask_value(name: str, value: Any) -> Any:
    """The value with secrets replaced by MASK: by the variable's name, and inside
    mappings by each key's name (environment variables like AWS_SECRET_ACCESS_KEY)."""
    if is_secret_name(name):
        return MASK if value not in (None, "", [], {}) else value
    if isinstance(value, Mapping):
        return {k: mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_value(name, v) for v in value]
    return value


def display(value: Any) -> str:
    """A value as the page shows it (JSON for anything but a plain string)."""
    if isinstance(value, str):
        return value if value else '""'
    return json.dumps(value, sort_keys=True)


def markdown_to_html(text: str) -> str:
    """The table cells' small markdown subset as safe HTML: escape, then `code` and [text](link)."""
    escaped = html.escape(text, quote=True)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", escaped)


def settings_rows(values: Mapping[str, Any], docs: Mapping[str, DocRow]) -> list[dict[str, str]]:
    """One row per variable of the values file (its order), then documented ones without a value."""
    rows = []
    seen = set()
    for name, value in values.items():
        seen.add(name)
        doc = docs.get(name)
        rows.append({
            "variable": name,
            "value": display(mask_value(name, value)),
            "default": doc.default if doc else "",
            "description": doc.effect if doc else "(not documented in docs/configuration.md)",
            "original": doc.original if doc else "",
        })
    for name, doc in docs.items():
        if name not in seen:
            rows.append({"variable": name, "value": "(not set)", "default": doc.default,
                         "description": doc.effect, "original": doc.original})
    return rows


def running_values(config: Mapping[str, Any], settings: Iterable[Any]) -> dict[str, Any]:
    """The value each tagged setting has in the hub's loaded config (its trait's
    default where nothing set it), by Ansible variable (hub_ext.settings.Setting)."""
    values = {}
    for setting in settings:
        section = config.get(setting.section, {})
        values[setting.variable] = section.get(setting.name, setting.default)
    return values


def undocumented(variables: Iterable[str], docs: Mapping[str, DocRow]) -> list[str]:
    return [v for v in variables if v not in docs]
