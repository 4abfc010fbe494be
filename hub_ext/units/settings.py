"""The lab unit's settings: the traits PlatformSpawner reads to build each lab's
transient unit (its unix account, paths, resources and resource profiles,
privilege groups, sandbox, timeouts). The lab's environment: hub_ext/units/environment.py.

Each is the one declaration of its setting (type, bounds, default, ``help=``),
tagged with the Ansible variable that sets it (hub_ext/settings.py). A mixin,
so hub_ext/spawner.py keeps the spawn logic; the traits land in the
``PlatformSpawner`` section of platform_config.json.
"""

from __future__ import annotations

import re

from jupyterhub.traitlets import ByteSpecification
from traitlets import (
    Bool,
    Dict,
    Float,
    HasTraits,
    Integer,
    List,
    TraitError,
    Unicode,
    Union,
    validate,
)

from hub_ext.accounts import privileges
from hub_ext.accounts import unix_users as accounts
from hub_ext.units.lab_unit import DEFAULT_SHM_SIZE, DEFAULT_TMP_SIZE, check_tmpfs_size

UNIT_NAME_TEMPLATE = re.compile(r"([a-zA-Z0-9_-]|\{USERNAME\}|\{UNIXNAME\}|\{USERID\})+")
SLICE_NAME = re.compile(r"[a-zA-Z0-9_.:-]+\.slice")
# A lab's kernels listen on unix sockets in /run/<unit>/ (lab/lab_kernels.py);
# past this length their paths no longer fit a socket address and the kernels
# would fall back to loopback TCP, reachable from other labs.
UNIT_NAME_MAX_LENGTH = 51
# the longest each placeholder can expand to: a hub name, a unix name, a user id
PLACEHOLDER_MAX_LENGTH = {
    "{USERNAME}": accounts.HUB_NAME_MAX_LENGTH,
    "{UNIXNAME}": accounts.UNIX_NAME_MAX_LENGTH,
    "{USERID}": 10,
}


def longest_unit_name(template: str) -> int:
    for placeholder, length in PLACEHOLDER_MAX_LENGTH.items():
        template = template.replace(placeholder, "x" * length)
    return len(template)


class LabUnitSettings(HasTraits):
    """The lab unit's settings (mixed into PlatformSpawner, ahead of
    SystemdSpawner so the traits declared again here win)."""

    # --- the unix account the lab runs as ---
    unix_username_template = accounts.UnixUsernameTemplate(
        accounts.DEFAULT_UNIX_USERNAME_TEMPLATE,
        help="""Unix account name for a hub user; {USERNAME} is the hub name.

        The prefix keeps hub names away from system accounts (a hub user 'root'
        becomes 'jh-root'). Available as {UNIXNAME} in path and unit templates.
        """,
    ).tag(config=True, ansible="jupyterhub_unix_username_template")

    platform_group = Unicode(
        accounts.DEFAULT_PLATFORM_GROUP,
        help="""Unix group of every platform account.

        An existing unix account outside this group is never adopted.
        """,
    ).tag(config=True)

    # --- where the lab's files are (bound into the unit) and its venv (PATH) ---
    users_root = Unicode(
        "/srv/jupyterhub/users",
        help="""Host directory holding <unix name>/{home,workspace,cache} of every user.

        Must exist and be owned by root; per-user directories are created on spawn.
        """,
    ).tag(config=True)

    shared_dir = Unicode(
        "/srv/jupyterhub/shared",
        allow_none=True,
        help="Host directory bound read-write at /mnt/shared in every lab (None: no shared dir).",
    ).tag(config=True)

    lab_venv = Unicode(
        "/opt/jupyterlab",
        help="""Virtual environment with jupyterhub-singleuser and the lab; its bin/
        leads $PATH in every lab, before extra_paths.""",
    ).tag(config=True)


    # --- limits and unix groups by hub group (docs/accounts.md) ---
    resource_profiles = Dict(
        help="""Hub group -> {"mem_limit": ..., "cpu_limit": ...} (at least one of
        the two: bytes or a size like 16G, and CPU cores > 0).

        A user in several of these groups gets the largest value of each key;
        a user in none gets mem_limit / cpu_limit. The lab's MEM_LIMIT and
        CPU_LIMIT environment variables show what its unit got.
        """,
    ).tag(config=True, ansible="jupyterhub_resource_profiles")

    @validate("resource_profiles")
    def _valid_resource_profiles(self, proposal):
        try:
            return privileges.check_resource_profiles(proposal["value"])
        except ValueError as e:
            raise TraitError(f"resource_profiles: {e}") from None

    docker_unix_group = Unicode(
        privileges.DEFAULT_DOCKER_UNIX_GROUP,
        help="""Unix group given to members of the docker-sock hub group
        (SupplementaryGroups= of the lab unit, and membership reconciled at spawn).
        """,
    ).tag(config=True)

    sudo_unix_group = Unicode(
        privileges.DEFAULT_SUDO_UNIX_GROUP,
        help="""Unix group whose members may sudo (sudoers drop-in installed by
        Ansible); membership follows the docker-privileged hub group at every spawn.
        """,
    ).tag(config=True)

    # --- the unit's own settings ---
    ready_poll_interval = Float(
        0.05,
        min=0.01,
        max=5,
        help="""Seconds between connection attempts to a starting lab's port.

        start() returns once the lab listens (the hub's own HTTP check then
        passes at once) instead of leaving it to JupyterHub's backoff, which
        notices a ready lab up to seconds late (docs/benchmarks.md). Whether
        the unit still runs is checked once a second meanwhile; the wait is
        bounded by http_timeout.
        """,
    ).tag(config=True, ansible="jupyterhub_spawner_ready_poll_interval")

    # --- SystemdSpawner's and Spawner's own options, declared again with the
    # platform's default, bounds and Ansible variable (hub_ext.settings) ---
    mem_limit = ByteSpecification(
        "4G",
        allow_none=True,
        help="""MemoryMax of each lab unit: bytes, or a number with suffix K, M, G or T
        (None: no limit). Also MEM_LIMIT in the lab; a resource profile may raise it.""",
    ).tag(config=True, ansible="jupyterhub_spawner_mem_limit")

    cpu_limit = Float(
        2.0,
        allow_none=True,
        min=0.01,
        help="""CPU cores of each lab unit (CPUQuota = cores x 100%; None: no limit).
        Also CPU_LIMIT in the lab; a resource profile may raise it.""",
    ).tag(config=True, ansible="jupyterhub_spawner_cpu_limit")

    user_workingdir = Unicode(
        "/home/{UNIXNAME}/workspace",
        help="""Working directory of the lab (absolute); may use {USERNAME} (hub name),
        {USERID} and {UNIXNAME}.""",
    ).tag(config=True, ansible="jupyterhub_spawner_user_workingdir")

    default_shell = Unicode(
        "/bin/bash", help="SHELL of the lab's terminals (absolute path)."
    ).tag(config=True, ansible="jupyterhub_spawner_default_shell")

    extra_paths = List(
        Unicode(),
        help="Directories put in the lab's PATH right after the lab venv's bin (always first).",
    ).tag(config=True, ansible="jupyterhub_spawner_extra_paths")

    unit_name_template = Unicode(
        "jupyter-{USERNAME}-singleuser",
        help="""Name of each lab's transient unit: [a-zA-Z0-9_-] and {USERNAME},
        {USERID} or {UNIXNAME} (one of them at least: one name for everybody would
        make spawns stop each other).""",
    ).tag(config=True, ansible="jupyterhub_spawner_unit_name_template")

    unit_extra_properties = Dict(
        value_trait=Union([Unicode(), List(Unicode())]),
        help="""Extra systemd properties of each lab unit, e.g. {"LimitNOFILE": "16384"}
        (a string or a list of strings each); they override the platform's own.""",
    ).tag(config=True, ansible="jupyterhub_spawner_unit_extra_properties")

    isolate_tmp = Bool(
        True,
        help="""Private /tmp, /var/tmp and /dev/shm per lab, each a tmpfs of its own
        capped by tmp_size and shm_size.""",
    ).tag(config=True, ansible="jupyterhub_spawner_isolate_tmp")

    isolate_devices = Bool(
        False,
        help="Private /dev per lab (PrivateDevices=yes); GPU labs get DevicePolicy=closed instead.",
    ).tag(config=True, ansible="jupyterhub_spawner_isolate_devices")

    disable_user_sudo = Bool(
        True,
        help="""NoNewPrivileges in the lab (no sudo). Members of the docker-privileged
        hub group are exempt (docs/accounts.md).""",
    ).tag(config=True, ansible="jupyterhub_spawner_disable_user_sudo")

    readonly_paths = List(
        Unicode(),
        None,
        allow_none=True,
        help="Absolute paths mounted read-only in the lab (None: none).",
    ).tag(config=True, ansible="jupyterhub_spawner_readonly_paths")

    readwrite_paths = List(
        Unicode(),
        None,
        allow_none=True,
        help="Absolute paths mounted read-write in the lab, inside readonly_paths (None: none).",
    ).tag(config=True, ansible="jupyterhub_spawner_readwrite_paths")

    dynamic_users = Bool(
        False,
        help="""Must stay False: platform users are real, persistent unix accounts
        (jh-<name>) with bound per-user directories.""",
    ).tag(config=True, ansible="jupyterhub_spawner_dynamic_users")

    slice = Unicode(
        None,
        allow_none=True,
        help="systemd slice the lab units run in, e.g. jupyterhub-users.slice (None: the default).",
    ).tag(config=True, ansible="jupyterhub_spawner_slice")

    start_timeout = Integer(
        120, min=1, help="Seconds a lab may take to start before the spawn fails."
    ).tag(config=True, ansible="jupyterhub_spawner_start_timeout")

    http_timeout = Integer(
        60, min=1, help="Seconds the hub waits for a started lab to answer HTTP."
    ).tag(config=True, ansible="jupyterhub_spawner_http_timeout")

    @validate("mem_limit")
    def _valid_mem_limit(self, proposal):
        if proposal["value"] is not None and proposal["value"] <= 0:
            raise TraitError(f"mem_limit must be positive, got {proposal['value']!r}")
        return proposal["value"]

    @validate("user_workingdir", "default_shell", "readonly_paths", "readwrite_paths")
    def _valid_absolute_paths(self, proposal):
        value = proposal["value"]
        for path in [value] if isinstance(value, str) else value or ():
            if not path.startswith("/") or any(c.isspace() for c in path):
                raise TraitError(
                    f"{proposal['trait'].name} must hold absolute paths without spaces, got {path!r}"
                )
        return value

    @validate("unit_name_template")
    def _valid_unit_name_template(self, proposal):
        value = proposal["value"]
        if not UNIT_NAME_TEMPLATE.fullmatch(value) or not any(
            f in value for f in ("{USERNAME}", "{UNIXNAME}", "{USERID}")
        ):
            raise TraitError(
                "unit_name_template must contain {USERNAME}, {UNIXNAME} or {USERID} and "
                f"otherwise only [a-zA-Z0-9_-], got {value!r}"
            )
        if longest_unit_name(value) > UNIT_NAME_MAX_LENGTH:
            raise TraitError(
                f"unit_name_template {value!r} can make unit names of {longest_unit_name(value)} "
                f"characters (placeholders at their longest: {PLACEHOLDER_MAX_LENGTH}); at most "
                f"{UNIT_NAME_MAX_LENGTH} keep the kernels' unix sockets under /run/<unit> "
                "within a socket address"
            )
        return value

    @validate("dynamic_users")
    def _valid_dynamic_users(self, proposal):
        if proposal["value"]:
            raise TraitError(
                "dynamic_users is not supported: platform users are real unix accounts "
                "(jh-<name>) with bound per-user directories"
            )
        return False

    @validate("slice")
    def _valid_slice(self, proposal):
        value = proposal["value"]
        if value is not None and not SLICE_NAME.fullmatch(value):
            raise TraitError(f"slice must be a unit name ending in .slice, got {value!r}")
        return value

    lab_hardening = Bool(
        True,
        help="""Sandbox each lab unit (ProtectSystem, ProtectHome, capability
        bounding set, system call filter, ...: hub_ext.units.lab_unit.lab_hardening).

        Labs of users who may sudo (docker-privileged) get a looser profile that
        lets root inside install packages. unit_extra_properties override any
        single directive; False leaves the units as plain SystemdSpawner makes them.
        """,
    ).tag(config=True, ansible="jupyterhub_spawner_lab_hardening")

    tasks_max = Integer(
        1024,
        allow_none=True,
        min=1,
        help="""Most processes and threads the lab unit may hold at once (TasksMax=);
        past it fork() and thread creation fail in that lab only ("Cannot fork",
        "Resource temporarily unavailable"), so a fork bomb stays inside. None: no cap.""",
    ).tag(config=True, ansible="jupyterhub_spawner_tasks_max")

    tmp_size = Unicode(
        DEFAULT_TMP_SIZE,
        help="""Size cap of the lab's private /tmp, and separately of its /var/tmp
        (tmpfs size=, e.g. 2G), with isolate_tmp. Writing past it fails with
        ENOSPC in that lab only; on cgroup v2 what is stored also counts
        against the lab's memory limit.""",
    ).tag(config=True, ansible="jupyterhub_spawner_tmp_size")

    shm_size = Unicode(
        DEFAULT_SHM_SIZE,
        help="""Size cap of the lab's private /dev/shm (POSIX shared memory,
        multiprocessing, PyTorch DataLoader workers), with isolate_tmp.""",
    ).tag(config=True, ansible="jupyterhub_spawner_shm_size")

    @validate("tmp_size", "shm_size")
    def _valid_tmpfs_size(self, proposal):
        try:
            return check_tmpfs_size(proposal["value"])
        except ValueError as e:
            raise TraitError(f"{proposal['trait'].name} {e}") from None


