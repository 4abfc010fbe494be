"""The hub role's rendered files as the unit tests use them, rendered with
Ansible's own templating from the roles' defaults and vars:
``jupyterhub_config.py`` (the hub's wiring) and ``platform_config.json`` (the
settings, in traitlets' shape)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import yaml
from traitlets.config import Config, PyFileConfigLoader

from ansible_roles import all_defaults

REPO = Path(__file__).resolve().parents[2]
ANSIBLE = REPO / "ansible"
HUB_TEMPLATES = ANSIBLE / "roles" / "hub" / "templates"
PLATFORM_CONFIG_TEMPLATE = HUB_TEMPLATES / "platform_config.json.j2"
HUB_CONFIG_TEMPLATE = HUB_TEMPLATES / "jupyterhub_config.py.j2"

# what the play's earlier roles set as facts (base: the public origin; branding:
# the assets as served, none by default)
PLAY_FACTS = {
    "base_public_host": "https://hub.example.org",
    "branding_served": {
        name: {"src": "", "file": "", "url": ""}
        for name in ("logo", "favicon", "lab-main-icon", "lab-splash-icon")
    },
}


def ansible_defaults() -> dict:
    """Every variable's value on a default install: each role's defaults/main.yml,
    then group_vars/all.yml (shipped empty)."""
    return {**all_defaults(), **(yaml.safe_load((ANSIBLE / "group_vars" / "all.yml").read_text()) or {})}


def ansible_variables(**overrides) -> dict:
    """What the hub role's templates see by default: the roles' defaults, the
    vars of the roles they read (base, storage, hub), the play's facts, then
    ``overrides``."""
    values = ansible_defaults()
    for role in ("base", "storage", "hub"):
        values.update(yaml.safe_load((ANSIBLE / "roles" / role / "vars" / "main.yml").read_text()))
    return {**values, **PLAY_FACTS, **overrides}


def render(template: Path, variables: dict) -> str:
    return _render(template, json.dumps(variables))


@functools.cache
def _load_ansible_plugins() -> None:
    """The lookups (file, vars) some templates use; once per process."""
    from ansible.plugins.loader import init_plugin_loader

    init_plugin_loader()


@functools.lru_cache(maxsize=256)
def _render(template: Path, variables_json: str) -> str:
    # Ansible's templating takes a while; the same rendering is asked for often
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    _load_ansible_plugins()
    templar = Templar(loader=DataLoader(), variables=json.loads(variables_json))
    return templar.template(template.read_text())


def render_platform_config(variables: dict) -> dict:
    """platform_config.json as the hub role renders it."""
    return json.loads(render(PLATFORM_CONFIG_TEMPLATE, variables))


def load_hub_config(directory: Path, platform_config: dict, **overrides) -> Config:
    """The hub's config as jupyterhub_config.py loads it on the host, with its
    files in ``directory``: platform_config.json (``platform_config``) and
    jupyterhub_config.d/ (absent unless the test makes it)."""
    config_file = directory / "jupyterhub_config.py"
    settings_file = directory / "platform_config.json"
    settings_file.write_text(json.dumps(platform_config))
    variables = ansible_variables(
        hub_platform_config=str(settings_file),
        hub_config_d=str(directory / "jupyterhub_config.d"),
        **overrides,
    )
    config_file.write_text(render(HUB_CONFIG_TEMPLATE, variables))
    return PyFileConfigLoader(config_file.name, path=str(directory)).load_config()
