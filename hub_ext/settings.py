"""The platform's settings: each is declared once, as a trait of the class that uses it.

A setting is a configurable trait tagged with the Ansible variable that sets it::

    timeout = Integer(86400, min=1, help="...").tag(config=True, ansible="jupyterhub_idle_culler_timeout")

Its type, bounds (``min=``/``max=``, ``@validate``), default and ``help=`` are
that declaration. Ansible renders the variables into
``/etc/jupyterhub/platform_config.json`` in traitlets' own shape
(``{"PlatformSpawner": {"mem_limit": "4G", ...}}``, the hub role's
``platform_config.json.j2``), so nothing maps keys onto traits by hand:
``jupyterhub_config.py`` merges the file into its config and the traits check
the values themselves (a bad one stops the hub with a TraitError naming
``Class.trait``). The same check runs at deploy, before the file replaces the
running one (``python -m hub_ext.settings check FILE``, the template's
``validate:``), and names the Ansible variable.

Tests hold the other views of a setting to the traits: the hub role's template
maps exactly the tagged traits, each variable's Ansible default is the trait's
default, docs/configuration.md has a row with that default and bounds, and the
roles' argument specs give each variable a type that fits the trait
(tests/unit/test_settings.py).

This module imports no feature package: the classes are named by import string
and loaded only when asked for.
"""

from __future__ import annotations

import inspect
import json
import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from traitlets import TraitError, TraitType
from traitlets.config import Config, JSONFileConfigLoader
from traitlets.utils.importstring import import_item

ANSIBLE_TAG = "ansible"  # trait metadata: the Ansible variable that sets the trait
PLATFORM_CONFIG_FILE = "/etc/jupyterhub/platform_config.json"

# Every class whose traits may be platform settings (tagged with ANSIBLE_TAG).
SETTING_CLASSES = (
    "hub_ext.spawner.PlatformSpawner",
    # the cluster's spawner (docs/cluster.md): its own settings only, the rest are PlatformSpawner's
    "hub_ext.cluster.spawner.SlurmLabSpawner",
    "hub_ext.authenticator.PlatformAuthenticator",
    "hub_ext.culling.service.SessionCuller",
    "hub_ext.storage.service.StorageManager",
    "hub_ext.activity.service.ActivityMonitor",
    "hub_ext.gpu.service.GpuSupport",
)


@dataclass(frozen=True)
class Setting:
    """One tagged trait: the Ansible ``variable`` sets ``owner``'s trait ``name``."""

    variable: str
    owner: type
    name: str
    trait: TraitType

    @property
    def section(self) -> str:
        """The config section in platform_config.json: the class name."""
        return self.owner.__name__

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def default(self) -> Any:
        """The trait's default, as the trait holds it (validated)."""
        return self.check(self.trait.default())

    @property
    def help(self) -> str:
        return inspect.cleandoc(self.trait.help or "")

    @property
    def bounds(self) -> tuple[Any, Any]:
        """(min, max) of a numeric trait; None where unbounded."""
        low, high = getattr(self.trait, "min", None), getattr(self.trait, "max", None)
        return (None if low in (None, -math.inf) else low, None if high in (None, math.inf) else high)

    def check(self, value: Any) -> Any:
        """The value as the class accepts it (the trait's type and bounds, then the
        class's ``@validate``); TraitError otherwise. Nothing is constructed: the
        check runs on a bare instance, so it needs no hub."""
        return checked_value(self.owner, self.trait, value)


def checked_value(cls: type, trait: TraitType, value: Any) -> Any:
    """``value`` as ``cls``'s ``trait`` accepts it (type, bounds, then the class's
    ``@validate``), checked on a bare instance: nothing is constructed."""
    return trait._validate(cls.__new__(cls), value)


def setting_classes(names: Iterable[str] = SETTING_CLASSES) -> list[type]:
    return [import_item(name) for name in names]


def settings_of(classes: Iterable[type]) -> list[Setting]:
    """The tagged traits of ``classes``, in class then trait order.

    One variable may set traits of several classes (e.g. the unix name template
    that the spawner, the authenticator and the storage all use). A class listed
    with one of its bases contributes only the traits it declares itself: the
    inherited ones are the base's settings (traitlets applies the base's config
    section to the subclass), not a second copy of them.
    """
    classes = list(classes)
    found = []
    for cls in classes:
        has_listed_base = any(base is not cls and issubclass(cls, base) for base in classes)
        traits = cls.class_own_traits(config=True) if has_listed_base else cls.class_traits(config=True)
        for name, trait in sorted(traits.items()):
            variable = trait.metadata.get(ANSIBLE_TAG)
            if variable:
                found.append(Setting(variable, cls, name, trait))
    return found


def platform_settings() -> list[Setting]:
    return settings_of(setting_classes())


def load_config_file(path: str) -> Config:
    """platform_config.json as a traitlets Config; errors name the file."""
    directory, _, filename = path.rpartition("/")
    try:
        return JSONFileConfigLoader(filename, path=directory or None).load_config()
    except (OSError, ValueError) as e:
        raise ValueError(f"platform settings file {path}: {e}") from None


def merge_config_file(c: Config, path: str = PLATFORM_CONFIG_FILE) -> None:
    """Merge platform_config.json into the hub's config ``c``.

    Named platform_config.json, not jupyterhub_config.json: traitlets would load
    that one by itself AFTER jupyterhub_config.py, so it would override the
    site-local jupyterhub_config.d files that jupyterhub_config.py loads last.
    """
    c.merge(load_config_file(path))


def configured_values(cls: type, path: str = PLATFORM_CONFIG_FILE) -> dict[str, Any]:
    """Every configurable trait of ``cls`` as the file sets it (else its default),
    checked by the trait: for a command-line tool that reads the hub's settings
    without building the class (e.g. the storage purge timer)."""
    section = load_config_file(path).get(cls.__name__, {})
    values = {}
    for name, trait in cls.class_traits(config=True).items():
        try:
            values[name] = checked_value(cls, trait, section[name] if name in section else trait.default())
        except TraitError as e:
            raise ValueError(f"platform settings file {path}: {cls.__name__}.{name}: {e}") from None
    return values


def _configured(c: Mapping[str, Any], section: str, name: str, default: Any = None) -> Any:
    return c.get(section, {}).get(name, default)


def check_combinations(c: Mapping[str, Any]) -> None:
    """Checks across settings, on the hub's whole config (after the site-local
    files) and at deploy; a ValueError names the settings and their Ansible
    variables. Each trait checks itself alone."""
    if _configured(c, "GpuSupport", "mode") == 1 and _configured(c, "PlatformSpawner", "isolate_devices"):
        raise ValueError(
            "GpuSupport.mode 1 (jupyterhub_gpu_enabled) and PlatformSpawner.isolate_devices "
            "(jupyterhub_spawner_isolate_devices) cannot both be on: PrivateDevices hides the "
            "GPUs (GPU labs get DevicePolicy=closed instead)"
        )
    if _configured(c, "GpuSupport", "policy") == "group" and not (
        _configured(c, "GpuSupport", "group_devices") or _configured(c, "GpuSupport", "group_counts")
    ):
        raise ValueError(
            "GpuSupport.policy 'group' (jupyterhub_gpu_policy) needs GpuSupport.group_devices "
            "(jupyterhub_gpu_group_devices) or GpuSupport.group_counts "
            "(jupyterhub_gpu_group_counts): with both empty nobody would get a GPU"
        )


def problems(config: Mapping[str, Any], settings: Iterable[Setting]) -> list[str]:
    """What is wrong with the tagged values in ``config`` (one line each, naming
    the Ansible variable and Class.trait); the hub would refuse them at start."""
    found = []
    for setting in settings:
        section = config.get(setting.section, {})
        if setting.name not in section:
            continue
        try:
            setting.check(section[setting.name])
        except TraitError as e:
            found.append(f"{setting.variable} ({setting.key}): {e}")
    return found


def main(argv: list[str] | None = None) -> int:
    """``python -m hub_ext.settings check FILE``: exit 1 naming each bad variable
    (then the combinations of valid ones)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "check":
        print("usage: python -m hub_ext.settings check PLATFORM_CONFIG_JSON", file=sys.stderr)
        return 2
    try:
        with open(args[1], encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        print(f"{args[1]}: {e}", file=sys.stderr)
        return 1
    found = problems(config, platform_settings())
    if not found:  # the combinations of values that are each valid
        try:
            check_combinations(config)
        except ValueError as e:
            found.append(str(e))
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
