"""Hub groups -> unix privileges, and resource profile resolution."""

import pytest

from hub_ext.accounts.privileges import (
    GroupPlan,
    Limits,
    Privileges,
    memory_bytes,
    privileges_for,
    resolve_limits,
    unit_privilege_properties,
    unix_group_plan,
)

G = 1024**3


@pytest.mark.parametrize("groups, expected", [
    ([], Privileges(docker=False, sudo=False)),
    (["docker-sock"], Privileges(docker=True, sudo=False)),
    (["docker-privileged"], Privileges(docker=False, sudo=True)),
    (["docker-sock", "docker-privileged", "x"], Privileges(docker=True, sudo=True)),
    (["docker", "sudo", "Docker-Sock"], Privileges()),  # exact names only
])
def test_privileges_for(groups, expected):
    assert privileges_for(groups) == expected


def test_group_plan_hub_groups_are_the_source_of_truth():
    # listed in both unix groups but member of no hub group: removed from both
    assert unix_group_plan(Privileges(), ["jh-a", "docker", "jupyterhub-sudo"]) == GroupPlan(
        add=(), remove=("docker", "jupyterhub-sudo"))
    assert unix_group_plan(Privileges(docker=True, sudo=True), ["jh-a"]) == GroupPlan(
        add=("docker", "jupyterhub-sudo"), remove=())
    # already right: nothing to do; unmanaged groups never appear
    assert unix_group_plan(Privileges(docker=True), ["docker", "audio"]) == GroupPlan((), ())
    assert unix_group_plan(Privileges(sudo=True), [], "dkr", "admins") == GroupPlan(
        add=("admins",), remove=())


def test_unit_properties():
    assert unit_privilege_properties(Privileges(docker=True)) == {"SupplementaryGroups": "docker"}
    assert unit_privilege_properties(Privileges(sudo=True)) == {}


@pytest.mark.parametrize("value, expected", [
    (1024, 1024), ("4G", 4 * G), ("512M", 512 * 1024**2), ("1.5G", int(1.5 * G)), ("100", 100),
])
def test_memory_bytes(value, expected):
    assert memory_bytes(value) == expected


@pytest.mark.parametrize("value", ["", "4X", True, None, "G", "infG", "-1G", "1e3G"])
def test_memory_bytes_rejects(value):
    with pytest.raises(ValueError, match="not a memory size"):
        memory_bytes(value)


PROFILES = {
    "big": {"mem_limit": "32G"},
    "medium": {"mem_limit": "8G", "cpu_limit": 4.0},
    "small": {"mem_limit": "1G", "cpu_limit": 0.5},
}
DEFAULT = Limits(4 * G, 2.0)


@pytest.mark.parametrize("groups, expected", [
    ([], DEFAULT),  # no group: the defaults
    (["unprofiled"], DEFAULT),
    (["medium"], Limits(8 * G, 4.0)),
    (["big", "medium"], Limits(32 * G, 4.0)),  # largest of each key
    (["big"], Limits(32 * G, 2.0)),  # cpu not set by the profile: default
    (["small"], Limits(1 * G, 0.5)),  # a profile may also restrict
    (["small", "medium"], Limits(8 * G, 4.0)),
])
def test_resolve_limits(groups, expected):
    assert resolve_limits(groups, PROFILES, DEFAULT) == expected


def test_resolve_limits_unlimited_default():
    assert resolve_limits(["x"], PROFILES, Limits(None, None)) == Limits(None, None)
