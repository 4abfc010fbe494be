"""Hub groups -> unix privileges and resource limits of a lab (pure logic).

* ``docker-sock``: the lab's unit gets the unix group ``docker`` as a
  supplementary group (the Docker socket's group: root-equivalent on a host
  that runs a Docker engine).
* ``docker-privileged``: the lab runs without ``NoNewPrivileges`` and the
  unix account is a member of the sudo group (``jupyterhub-sudo``), which a
  sudoers drop-in installed by Ansible lets run anything with sudo.
* resource profiles: hub group -> ``{mem_limit, cpu_limit}``; a user in
  several profiled groups gets the largest value of each; no profiled group
  gives the spawner's defaults.

The hub groups are the source of truth: ``unix_group_plan`` says which
managed unix groups the account must be in and out of, and the spawner applies
that at every spawn (accounts.reconcile_unix_groups).

Imports neither tornado nor jupyterhub.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

DOCKER_SOCK_GROUP = "docker-sock"
DOCKER_PRIVILEGED_GROUP = "docker-privileged"
BUILTIN_GROUPS = (DOCKER_SOCK_GROUP, DOCKER_PRIVILEGED_GROUP)

DEFAULT_DOCKER_UNIX_GROUP = "docker"
DEFAULT_SUDO_UNIX_GROUP = "jupyterhub-sudo"


@dataclass(frozen=True)
class Privileges:
    """What a user's hub groups grant in the lab."""

    docker: bool = False
    sudo: bool = False


def privileges_for(hub_groups: Iterable[str]) -> Privileges:
    groups = set(hub_groups)
    return Privileges(
        docker=DOCKER_SOCK_GROUP in groups, sudo=DOCKER_PRIVILEGED_GROUP in groups
    )


@dataclass(frozen=True)
class GroupPlan:
    """Managed unix groups to join and to leave (the rest is untouched)."""

    add: tuple[str, ...]
    remove: tuple[str, ...]


def unix_group_plan(
    privileges: Privileges,
    current_unix_groups: Iterable[str],
    docker_group: str = DEFAULT_DOCKER_UNIX_GROUP,
    sudo_group: str = DEFAULT_SUDO_UNIX_GROUP,
) -> GroupPlan:
    """Changes that make the account's managed groups match its privileges."""
    current = set(current_unix_groups)
    wanted = {docker_group: privileges.docker, sudo_group: privileges.sudo}
    add = tuple(g for g, want in wanted.items() if want and g not in current)
    remove = tuple(g for g, want in wanted.items() if not want and g in current)
    return GroupPlan(add=add, remove=remove)


def unit_privilege_properties(
    privileges: Privileges, docker_group: str = DEFAULT_DOCKER_UNIX_GROUP
) -> dict[str, str]:
    """Extra unit properties for these privileges (NoNewPrivileges is handled by
    the caller: ``disable_user_sudo`` is off for sudo users)."""
    if privileges.docker:
        return {"SupplementaryGroups": docker_group}
    return {}


# --- resource profiles ---------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """mem_limit in bytes and cpu_limit in CPUs; None: no limit."""

    mem_limit: int | None
    cpu_limit: float | None


_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def memory_bytes(value) -> int:
    """Bytes of a memory spec: an int, or a number with suffix K/M/G/T (binary,
    as JupyterHub's ByteSpecification)."""
    if isinstance(value, bool):
        raise ValueError(f"not a memory size: {value!r}")
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT])?", value) if isinstance(value, str) else None
    if match:
        number, unit = match.groups()
        return int(float(number) * _UNITS.get(unit, 1))
    raise ValueError(f"not a memory size: {value!r}")


PROFILE_KEYS = ("mem_limit", "cpu_limit")


def check_resource_profiles(profiles) -> dict[str, dict[str, object]]:
    """{hub group: {mem_limit?, cpu_limit?}}, each profile setting at least one;
    ValueError naming the group and key otherwise. cpu_limit comes back a float."""
    if not isinstance(profiles, Mapping):
        raise ValueError(f"must map hub group names to profiles, got {profiles!r}")
    checked = {}
    for group, profile in profiles.items():
        if not isinstance(group, str) or not group or len(group) > 255:
            raise ValueError(f"has an empty or over-long group name: {group!r}")
        if not isinstance(profile, Mapping) or not profile:
            raise ValueError(f"{group} must be an object with mem_limit and/or cpu_limit, got {profile!r}")
        unknown = sorted(set(profile) - set(PROFILE_KEYS))
        if unknown:
            raise ValueError(f"{group}.{unknown[0]} is not a profile key (known: mem_limit, cpu_limit)")
        checked[group] = {}
        if "mem_limit" in profile:
            try:
                if memory_bytes(profile["mem_limit"]) <= 0:
                    raise ValueError
            except ValueError:
                raise ValueError(
                    f"{group}.mem_limit must be a positive byte count or a number with suffix "
                    f"K, M, G or T, got {profile['mem_limit']!r}"
                ) from None
            checked[group]["mem_limit"] = profile["mem_limit"]
        if "cpu_limit" in profile:
            cpu = profile["cpu_limit"]
            if isinstance(cpu, bool) or not isinstance(cpu, int | float) or cpu <= 0:
                raise ValueError(f"{group}.cpu_limit must be a positive number of CPUs, got {cpu!r}")
            checked[group]["cpu_limit"] = float(cpu)
    return checked


def resolve_limits(
    hub_groups: Iterable[str],
    profiles: Mapping[str, Mapping[str, object]],
    default: Limits,
) -> Limits:
    """The limits for a user in ``hub_groups``.

    For each of mem_limit and cpu_limit: the largest value among the user's
    groups that set it, else the default. (A profile may therefore also give a
    group less than the default.)
    """
    groups = set(hub_groups)
    mems = [
        memory_bytes(p["mem_limit"])
        for g, p in profiles.items()
        if g in groups and p.get("mem_limit") is not None
    ]
    cpus = [
        float(p["cpu_limit"])
        for g, p in profiles.items()
        if g in groups and p.get("cpu_limit") is not None
    ]
    return Limits(
        mem_limit=max(mems) if mems else default.mem_limit,
        cpu_limit=max(cpus) if cpus else default.cpu_limit,
    )
