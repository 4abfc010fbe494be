"""Assemble the properties and environment of a lab's transient unit.

Pure: no systemd, no jupyterhub. ``PlatformSpawner.start`` collects its traits,
expands the name templates and hands them here; the result goes to
``systemdspawner.systemd.start_transient_service``, which passes each property
as ``--property=Key=value`` to systemd-run and a list value as one
``--property`` per item (BindPaths= entries accumulate).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PropertyValue = str | list[str]


@dataclass(frozen=True)
class UnitSpec:
    """Everything start_transient_service needs besides the command."""

    properties: dict[str, PropertyValue]
    environment: dict[str, str]
    working_dir: str


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def build_unit_properties(
    *,
    bind_paths: Sequence[str] = (),
    mem_limit: int | None = None,
    cpu_limit: float | None = None,
    isolate_tmp: bool = True,
    isolate_devices: bool = False,
    disable_user_sudo: bool = True,
    readonly_paths: Sequence[str] | None = None,
    readwrite_paths: Sequence[str] | None = None,
    device_access: Mapping[str, PropertyValue] | None = None,
    extra_properties: Mapping[str, PropertyValue] | None = None,
) -> dict[str, PropertyValue]:
    """The systemd properties of a lab unit, same semantics as SystemdSpawner 1.0.2.

    ``device_access`` (hub_ext.gpu.unit_properties: DevicePolicy/DeviceAllow)
    is added as given; when it grants devices, PrivateDevices is left out
    (it would hide the granted nodes; DevicePolicy=closed isolates instead).
    ``extra_properties`` (``unit_extra_properties``) win over the computed
    ones, except ``BindPaths``, which is merged: platform entries first
    (home must be mounted before what is mounted inside it), then the extra ones.
    """
    properties: dict[str, PropertyValue] = {}
    if bind_paths:
        properties["BindPaths"] = list(bind_paths)
    if isolate_tmp:
        properties["PrivateTmp"] = "yes"
    if isolate_devices:
        properties["PrivateDevices"] = "yes"
    if mem_limit is not None:
        properties["MemoryAccounting"] = "yes"
        properties["MemoryMax"] = str(int(mem_limit))
    if cpu_limit is not None:
        # CPUQuota is a percentage of one CPU: 2.0 CPUs -> 200%
        properties["CPUAccounting"] = "yes"
        properties["CPUQuota"] = f"{int(cpu_limit * 100)}%"
    if disable_user_sudo:
        # no setuid escalation (sudo, su) from inside the lab
        properties["NoNewPrivileges"] = "yes"
    if readonly_paths is not None:
        properties["ReadOnlyPaths"] = list(readonly_paths)
    if readwrite_paths is not None:
        properties["ReadWritePaths"] = list(readwrite_paths)
    if device_access:
        if device_access.get("DeviceAllow"):
            properties.pop("PrivateDevices", None)
        properties.update(device_access)

    for key, value in (extra_properties or {}).items():
        if key == "BindPaths":
            extra = [value] if isinstance(value, str) else list(value)
            properties["BindPaths"] = list(properties.get("BindPaths", [])) + extra
        else:
            properties[key] = value if isinstance(value, str) else list(value)
    return properties


def build_environment(
    base_env: Mapping[str, str],
    *,
    home: str,
    shell: str,
    extra_paths: Sequence[str] = (),
) -> dict[str, str]:
    """The lab's environment: JupyterHub's env plus HOME, SHELL and PATH."""
    env = dict(base_env)
    env["HOME"] = home
    env["SHELL"] = shell
    if extra_paths:
        # same rule as SystemdSpawner: extra paths first, then the inherited PATH
        current = env.get("PATH", os.defpath)
        env["PATH"] = ":".join([*extra_paths, *([current] if current else [])])
    return env


def build_unit_spec(
    *,
    base_env: Mapping[str, str],
    home: str,
    working_dir: str,
    shell: str,
    extra_paths: Sequence[str] = (),
    **property_options,
) -> UnitSpec:
    """Properties, environment and working directory of one lab unit.

    ``property_options`` are the keyword arguments of build_unit_properties.
    """
    return UnitSpec(
        properties=build_unit_properties(**property_options),
        environment=build_environment(
            base_env, home=home, shell=shell, extra_paths=extra_paths
        ),
        working_dir=working_dir,
    )
