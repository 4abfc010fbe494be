"""The Ansible roles read as data: each role's defaults (its knobs) and argument
spec, for the tests that check what the roles declare without running Ansible."""

from __future__ import annotations

from pathlib import Path

import yaml

ROLES = Path(__file__).resolve().parents[1] / "ansible" / "roles"


def role_names() -> list[str]:
    return sorted(p.name for p in ROLES.iterdir() if (p / "tasks" / "main.yml").is_file())


def role_defaults(role: str) -> dict:
    return yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text()) or {}


def all_defaults() -> dict:
    """Every knob of the platform with its default (each has one owner role)."""
    merged: dict = {}
    for role in role_names():
        merged.update(role_defaults(role))
    return merged


def argument_spec(role: str) -> dict:
    """The options of the role's main entry point (meta/argument_specs.yml)."""
    specs = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())
    return specs["argument_specs"]["main"]["options"]
