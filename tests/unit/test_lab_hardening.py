"""The sandbox of a lab unit (hub_ext.units.lab_unit.lab_hardening) in the unit's properties.

What each directive does to a running lab is checked on the test host
(tests/integration/test_lab_sandbox.py); here: which labs get which
directives, and that GPUs, admin overrides and sudo survive them.
"""

import pytest

from hub_ext.gpu.nvml import Gpu
from hub_ext.gpu.policy import unit_properties
from hub_ext.units.lab_unit import SUDO_CAPABILITIES, build_unit_properties, lab_hardening

# Measured on the test host (systemd 252): each of these makes systemd set
# NoNewPrivileges for a non-root User= (they install seccomp filters), which
# would break sudo. The sudo profile must contain none of them.
IMPLY_NO_NEW_PRIVILEGES = {
    "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
    "ProtectHostname", "ProtectClock", "PrivateDevices", "RestrictNamespaces",
    "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality",
    "SystemCallArchitectures", "RestrictAddressFamilies", "SystemCallFilter",
    "MemoryDenyWriteExecute",
}

NVIDIA0 = Gpu(index=0, uuid="GPU-0", name="H100", memory_total=80 * 2**30, minor=0)


def normal(**options):
    return build_unit_properties(hardening=True, disable_user_sudo=True, **options)


def privileged(**options):
    return build_unit_properties(hardening=True, disable_user_sudo=False, **options)


def test_normal_lab_is_confined_but_keeps_what_labs_need():
    p = normal()
    assert p["NoNewPrivileges"] == "yes"
    assert p["ProtectSystem"] == "strict" and p["ReadOnlyPaths"] == ["/run"]
    assert p["ProtectHome"] == "tmpfs"
    assert p["CapabilityBoundingSet"] == ""
    assert p["ProtectProc"] == "invisible" and p["ProtectControlGroups"] == "yes"
    assert p["SystemCallFilter"] == ["@system-service @debug", "~@privileged"]
    assert p["SystemCallErrorNumber"] == "EPERM"
    # network, the docker socket and getifaddrs
    assert set(p["RestrictAddressFamilies"].split()) == {
        "AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    # JIT (numba, PyTorch, node), the user's own uid mapping, /dev as granted
    for absent in ("MemoryDenyWriteExecute", "PrivateUsers", "PrivateNetwork",
                   "PrivateDevices", "DevicePolicy"):
        assert absent not in p


def test_sudo_lab_has_no_directive_that_implies_no_new_privileges():
    p = privileged()
    assert "NoNewPrivileges" not in p
    assert not IMPLY_NO_NEW_PRIVILEGES & set(p)
    # root inside may install packages: writable system, setuid files allowed
    for absent in ("ProtectSystem", "ProtectHome", "RestrictSUIDSGID", "UMask"):
        assert absent not in p
    caps = set(p["CapabilityBoundingSet"].split())
    assert {"CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER"} <= caps
    assert not {"CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_PTRACE",
                "CAP_SYS_TIME", "CAP_SYS_BOOT", "CAP_SYS_RAWIO"} & caps
    assert {"/proc/sys", "/sys"} <= set(p["ReadOnlyPaths"])
    assert p["ProtectProc"] == "invisible" and p["ProtectControlGroups"] == "yes"


def test_normal_profile_is_a_superset_of_the_common_part_of_the_sudo_one():
    sudo_only = {"CapabilityBoundingSet", "ReadOnlyPaths"}
    common = set(lab_hardening(sudo=True)) - sudo_only
    assert common <= set(lab_hardening(sudo=False))
    assert privileged()["CapabilityBoundingSet"] == SUDO_CAPABILITIES


def test_hardening_off_leaves_the_unit_as_systemdspawner_makes_it():
    assert build_unit_properties(isolate_tmp=False, disable_user_sudo=True) == {
        "NoNewPrivileges": "yes"}
    assert build_unit_properties(hardening=False) == build_unit_properties()


@pytest.mark.parametrize("build", [normal, privileged])
def test_gpus_stay_reachable(build):
    access = unit_properties(True, [NVIDIA0])
    p = build(isolate_devices=True, device_access=access)
    assert p["DevicePolicy"] == "closed"
    assert p["DeviceAllow"] == access["DeviceAllow"]
    assert "/dev/nvidia0 rw" in p["DeviceAllow"]
    # nothing of the sandbox hides or remounts /dev (the lab's own /dev/shm
    # tmpfs covers only that directory)
    assert "PrivateDevices" not in p
    for key in ("ReadOnlyPaths", "InaccessiblePaths", "TemporaryFileSystem"):
        assert not [path for path in p.get(key, []) if path.lstrip("-").startswith("/dev")
                    and not path.startswith("/dev/shm:")]


def test_admin_read_only_paths_are_added_after_the_sandbox_ones():
    assert normal(readonly_paths=["/opt/data"])["ReadOnlyPaths"] == ["/run", "/opt/data"]


def test_unit_extra_properties_win_over_the_sandbox():
    p = normal(extra_properties={
        "ProtectSystem": "full",
        "SystemCallFilter": "",  # replaces the platform's list: no filter
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET",
        "CapabilityBoundingSet": "CAP_NET_RAW",
    })
    assert p["ProtectSystem"] == "full"
    assert p["SystemCallFilter"] == ""
    assert "AF_PACKET" in p["RestrictAddressFamilies"]
    assert p["CapabilityBoundingSet"] == "CAP_NET_RAW"
    assert p["ProtectHome"] == "tmpfs"  # the rest stays


def test_profiles_are_fresh_copies():
    first = lab_hardening(sudo=False)
    first["ReadOnlyPaths"].append("/changed")
    assert lab_hardening(sudo=False)["ReadOnlyPaths"] == ["/run"]


def test_private_tmp_and_shm_are_capped_tmpfs_of_the_lab_not_private_tmp():
    p = normal(tmp_size="512M", shm_size="64M")
    assert p["TemporaryFileSystem"] == [
        "/tmp:size=512M,mode=1777,nosuid,nodev",
        "/var/tmp:size=512M,mode=1777,nosuid,nodev",
        "/dev/shm:size=64M,mode=1777,nosuid,nodev",
    ]
    # PrivateTmp= would win over TemporaryFileSystem=/tmp on systemd 252
    assert "PrivateTmp" not in p
    assert privileged(tmp_size="512M", shm_size="64M")["TemporaryFileSystem"] == p["TemporaryFileSystem"]
    assert "TemporaryFileSystem" not in normal(isolate_tmp=False)


@pytest.mark.parametrize("size", ["", "0", "1.5G", "2GB", "-1G", "2G,exec", "1G:ro", 2])
def test_tmpfs_size_must_be_what_tmpfs_takes(size):
    with pytest.raises(ValueError, match="positive whole number"):
        normal(tmp_size=size)
    with pytest.raises(ValueError, match="positive whole number"):
        normal(shm_size=size)
