"""Assemble the properties and environment of a lab's transient unit.

Pure: no systemd, no jupyterhub. ``PlatformSpawner.start`` collects its traits,
expands the name templates and hands them here; ``systemd_run_argv`` turns
the result into systemd-run's command line, each property as
``--property=Key=value`` and a list value as one ``--property`` per item
(BindPaths= entries accumulate), plus the lab's socket unit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PropertyValue = str | list[str]

# what a service gets from systemd when its environment names no PATH
SYSTEMD_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# the lab's PATH again, for ansible/roles/user_env's /etc/profile.d/jupyterhub-lab-path.sh
LAB_PATH_VARIABLE = "PLATFORM_LAB_PATH"


@dataclass(frozen=True)
class UnitSpec:
    """Everything start_transient_service needs besides the command."""

    properties: dict[str, PropertyValue]
    environment: dict[str, str]
    working_dir: str


# Size caps of a lab's private tmpfs mounts (isolate_tmp), as the kernel's
# tmpfs size= takes them: whole bytes or whole K/M/G/T ("1.5G" is refused by
# the mount, so it is refused here first)
DEFAULT_TMP_SIZE = "2G"
DEFAULT_SHM_SIZE = "1G"
_TMPFS_SIZE = re.compile(r"[1-9][0-9]*[KMGT]?")
TMPFS_SIZE_RULE = "a positive whole number of bytes, optionally with suffix K, M, G or T"


def check_tmpfs_size(value: str) -> str:
    """``value`` if tmpfs accepts it as ``size=``, else ValueError."""
    if not isinstance(value, str) or not _TMPFS_SIZE.fullmatch(value):
        raise ValueError(f"must be {TMPFS_SIZE_RULE}, got {value!r}")
    return value


def private_temporary_filesystems(tmp_size: str, shm_size: str) -> list[str]:
    """TemporaryFileSystem= entries: a fresh, capped tmpfs on /tmp, /var/tmp
    (each up to ``tmp_size``) and /dev/shm (``shm_size``) of one lab.

    Not PrivateTmp=: its /tmp is a directory on the host's /tmp, uncapped and
    sharing that file system's space with everyone, and on systemd 252 it wins
    over a TemporaryFileSystem= of the same path. The host's /dev/shm is one
    tmpfs for all users (files visible to all, fillable by one). A tmpfs lives
    as long as the lab's mount namespace: stopping the lab frees it.
    """
    caps = {"/tmp": tmp_size, "/var/tmp": tmp_size, "/dev/shm": shm_size}
    return [
        f"{path}:size={check_tmpfs_size(size)},mode=1777,nosuid,nodev"
        for path, size in caps.items()
    ]


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


# Sandbox of every lab unit (docs/accounts.md, "Lab unit sandbox"). Each
# directive was checked on the test host against what labs must keep doing:
# JupyterLab, terminals, pip/conda/node, JIT (so no MemoryDenyWriteExecute),
# network, the docker socket, GPUs (DevicePolicy/DeviceAllow untouched).
#
# Common to all labs: only what works by mounts and capabilities. Every
# seccomp-based directive makes systemd set NoNewPrivileges for a non-root
# User=, which would break sudo for docker-privileged members.
_HARDENING_COMMON: dict[str, PropertyValue] = {
    "ProtectControlGroups": "yes",
    # other users' processes invisible; the hub reads the unit from outside
    "ProtectProc": "invisible",
    "RemoveIPC": "yes",
    "KeyringMode": "private",
}

# A lab without sudo (NoNewPrivileges): no capabilities, no setuid, seccomp,
# nothing writable outside the bound directories, /tmp and /dev/shm.
_HARDENING_NO_SUDO: dict[str, PropertyValue] = {
    "ProtectSystem": "strict",
    # strict leaves /run (world-writable /run/lock) writable next to
    # ProtectKernelTunables/ProtectProc on systemd 252; RuntimeDirectory stays rw
    "ReadOnlyPaths": ["/run"],
    # other homes hidden; BindPaths= still mounts the user's own home into it
    "ProtectHome": "tmpfs",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectHostname": "yes",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "SystemCallArchitectures": "native",
    # AF_UNIX: the docker socket, the lab's own sockets; AF_NETLINK: getifaddrs
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    "CapabilityBoundingSet": "",
    "UMask": "0077",
    # @debug: gdb/strace/py-spy on the user's own processes, as in Docker
    "SystemCallFilter": ["@system-service @debug", "~@privileged"],
    # a filtered call fails with EPERM instead of killing the user's process
    "SystemCallErrorNumber": "EPERM",
}

# A lab whose user may sudo (docker-privileged): root inside must install
# packages (writable /usr, /etc, /var, /root; setuid files; chown), so the
# file system stays open and capabilities are cut to Docker's default set for
# a container's root, which apt, dpkg and sudo need (no CAP_SYS_ADMIN: no
# mount, no remount of what is read-only below).
SUDO_CAPABILITIES = (
    "CAP_CHOWN CAP_DAC_OVERRIDE CAP_FOWNER CAP_FSETID CAP_KILL CAP_SETGID "
    "CAP_SETUID CAP_SETPCAP CAP_NET_BIND_SERVICE CAP_NET_RAW CAP_SYS_CHROOT "
    "CAP_MKNOD CAP_AUDIT_WRITE CAP_SETFCAP"
)
_HARDENING_SUDO: dict[str, PropertyValue] = {
    "CapabilityBoundingSet": SUDO_CAPABILITIES,
    # ProtectKernelTunables by mounts alone (it would imply NoNewPrivileges):
    # root inside cannot write sysctls or reboot the host through sysrq
    # ("-": a container may lack sysrq-trigger)
    "ReadOnlyPaths": ["/proc/sys", "-/proc/sysrq-trigger", "/sys"],
}


def lab_hardening(*, sudo: bool) -> dict[str, PropertyValue]:
    """Sandbox properties of a lab unit; ``sudo``: the lab runs without
    NoNewPrivileges (docker-privileged), so root inside must be able to work."""
    chosen = {**_HARDENING_COMMON, **(_HARDENING_SUDO if sudo else _HARDENING_NO_SUDO)}
    # fresh lists: callers extend them
    return {key: list(value) if isinstance(value, list) else value for key, value in chosen.items()}


def bind_sources(bind_paths: Sequence[str]) -> list[str]:
    """The host paths of ``BindPaths=`` entries (``[-]source[:destination[:options]]``),
    for ``RequiresMountsFor=``: a lab starts only once every mount holding them is
    up, and fails (the hub shows why) when one cannot be mounted, instead of
    writing into the bare mount point, where the files would vanish under the
    mount when it comes back (users' root or shared directory on a NAS)."""
    return [entry.lstrip("-").split(":", 1)[0] for entry in bind_paths]


def build_unit_properties(
    *,
    bind_paths: Sequence[str] = (),
    mem_limit: int | None = None,
    cpu_limit: float | None = None,
    tasks_max: int | None = None,
    isolate_tmp: bool = True,
    tmp_size: str = DEFAULT_TMP_SIZE,
    shm_size: str = DEFAULT_SHM_SIZE,
    isolate_devices: bool = False,
    disable_user_sudo: bool = True,
    hardening: bool = False,
    readonly_paths: Sequence[str] | None = None,
    readwrite_paths: Sequence[str] | None = None,
    device_access: Mapping[str, PropertyValue] | None = None,
    extra_properties: Mapping[str, PropertyValue] | None = None,
) -> dict[str, PropertyValue]:
    """The systemd properties of a lab unit, same semantics as SystemdSpawner 1.0.2.

    ``isolate_tmp`` gives the lab its own capped /tmp, /var/tmp and /dev/shm
    (private_temporary_filesystems). ``hardening`` adds ``lab_hardening`` (the profile follows
    ``disable_user_sudo``). ``device_access`` (hub_ext.gpu.policy.unit_properties: DevicePolicy/DeviceAllow)
    is added as given; when it grants devices, PrivateDevices is left out
    (it would hide the granted nodes; DevicePolicy=closed isolates instead).
    ``extra_properties`` (``unit_extra_properties``) win over the computed
    ones, except ``BindPaths``, which is merged: platform entries first
    (home must be mounted before what is mounted inside it), then the extra ones.
    """
    properties: dict[str, PropertyValue] = {}
    if bind_paths:
        properties["BindPaths"] = list(bind_paths)
        properties["RequiresMountsFor"] = bind_sources(bind_paths)
    if isolate_tmp:
        properties["TemporaryFileSystem"] = private_temporary_filesystems(tmp_size, shm_size)
    if isolate_devices:
        properties["PrivateDevices"] = "yes"
    if mem_limit is not None:
        properties["MemoryAccounting"] = "yes"
        properties["MemoryMax"] = str(int(mem_limit))
        # no escape past MemoryMax into swap (cgroup v2; systemd has no v1 counterpart)
        properties["MemorySwapMax"] = "0"
    if cpu_limit is not None:
        # CPUQuota is a percentage of one CPU: 2.0 CPUs -> 200%
        properties["CPUAccounting"] = "yes"
        properties["CPUQuota"] = f"{int(cpu_limit * 100)}%"
    if tasks_max is not None:
        properties["TasksAccounting"] = "yes"
        properties["TasksMax"] = str(int(tasks_max))
    if disable_user_sudo:
        # no setuid escalation (sudo, su) from inside the lab
        properties["NoNewPrivileges"] = "yes"
    if hardening:
        properties.update(lab_hardening(sudo=not disable_user_sudo))
    if readonly_paths is not None:
        # after the sandbox's own read-only paths
        properties["ReadOnlyPaths"] = [*properties.get("ReadOnlyPaths", []), *readonly_paths]
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
        # (JupyterHub passes none unless env_keep has it: then systemd's default)
        current = env.get("PATH", SYSTEMD_DEFAULT_PATH)
        env["PATH"] = ":".join([*extra_paths, *([current] if current else [])])
        # JupyterLab's terminals run login shells, whose /etc/profile resets
        # PATH; the playbook's /etc/profile.d script puts this one back
        env[LAB_PATH_VARIABLE] = env["PATH"]
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


# SystemdSpawner's defaults for every unit it starts, kept: the environment file
# lives in the unit's runtime directory, and a kernel killed for memory does not
# stop the whole lab.
def transient_defaults(unit_name: str) -> dict[str, PropertyValue]:
    return {
        "RuntimeDirectory": unit_name,
        "RuntimeDirectoryMode": "700",
        "RuntimeDirectoryPreserve": "restart",
        "OOMPolicy": "continue",
    }


def lab_socket_properties(ip: str, port: int) -> dict[str, PropertyValue]:
    """The lab's listening socket as a socket unit of its own: systemd (PID 1)
    binds it before the lab starts and holds it until the hub stops the lab, so
    no other user's lab can take the port, whatever happens to the lab's
    processes (docs/security.md). The lab serves on the inherited socket
    (lab/lab_server.py)."""
    return {"ListenStream": f"{ip}:{port}"}


def systemd_run_argv(
    unit_name: str,
    command: Sequence[str],
    *,
    working_dir: str,
    properties: Mapping[str, PropertyValue],
    socket_properties: Mapping[str, PropertyValue] | None = None,
    uid: int | None = None,
    gid: int | None = None,
    slice: str | None = None,
) -> list[str]:
    """systemd-run's argv for a lab: one --property per value (a list value
    repeats the key, as BindPaths= needs), --socket-property likewise."""
    argv = ["systemd-run", "--unit", unit_name, "--working-directory", working_dir]
    if uid is not None:
        argv.append(f"--uid={uid}")
    if gid is not None:
        argv.append(f"--gid={gid}")
    if slice:
        argv.append(f"--slice={slice}")
    for flag, props in (("--property", properties), ("--socket-property", socket_properties or {})):
        for key, value in props.items():
            argv += [f"{flag}={key}={v}" for v in ([value] if isinstance(value, str) else value)]
    if not command or not command[0].startswith("/"):
        # systemd-run does not search the unit's PATH
        raise ValueError(f"the lab command must start with an absolute path, got {list(command)}")
    return [*argv, *command]
