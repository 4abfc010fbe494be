"""The admin settings page's table: every variable of the platform, its value, its
default, its description and the Docker original's name for it.

Two sources, neither restated here. A variable tagged on a trait (hub_ext.settings)
shows the running hub's value (platform_config.json and any site-local
override), the trait's default and its ``help=``. Every other variable (the
roles' own: URL, TLS, packages, branding, ...) shows what the playbook rendered
into settings.json at the last deploy: its value as the play saw it (secrets
already masked there; masked again here, defence in depth), its role default,
and its description from the role's meta/argument_specs.yml. The Docker
original's variable is the ``orig NAME`` its argument spec names, for both.

Pure: no tornado, no jupyterhub.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping
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


def running_values(config: Mapping[str, Any], settings: Iterable[Any]) -> dict[str, Any]:
    """The value each tagged setting has in the hub's loaded config (its trait's
    default where nothing set it), by Ansible variable (hub_ext.settings.Setting)."""
    values = {}
    for setting in settings:
        section = config.get(setting.section, {})
        values[setting.variable] = section.get(setting.name, setting.default)
    return values


def one_line(text: str) -> str:
    return " ".join(text.split())


def settings_rows(
    deployed: Mapping[str, Any], settings: Iterable[Any], config: Mapping[str, Any]
) -> list[dict[str, str]]:
    """One row per variable of settings.json (its order), then the tagged ones it
    lacks (a hub newer than the last deploy of the file).

    ``deployed``: variable -> {value, default, description, original} as the
    playbook rendered it; ``settings``: the tagged traits (hub_ext.settings.Setting);
    ``config``: the hub's loaded config.
    """
    traits: dict[str, Any] = {}
    for setting in settings:
        traits.setdefault(setting.variable, setting)
    running = running_values(config, traits.values())
    rows = []
    for name in [*deployed, *(v for v in traits if v not in deployed)]:
        entry = deployed.get(name)
        entry = entry if isinstance(entry, Mapping) else {}
        setting = traits.get(name)
        if setting is not None:
            value, default, description = running[name], setting.default, one_line(setting.help)
        else:
            value, default = entry.get("value"), entry.get("default")
            description = one_line(str(entry.get("description") or ""))
        rows.append({
            "variable": name,
            "value": display(mask_value(name, value)),
            "default": display(mask_value(name, default)),
            "description": description or "(no description)",
            "original": str(entry.get("original") or "—"),
        })
    return rows
