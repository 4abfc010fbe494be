"""Per-user disk quotas: one limit over everything below ``<users_root>/<unix>``.

One limit per user covers home, workspace, cache and the user's trash (a
reset keeps counting until the purge timer frees it), enforced by the kernel:
a write past it fails with ``EDQUOT`` ("Disk quota exceeded") in that user's
lab only. Which mechanism is the filesystem's of ``users_root``
(:attr:`Settings.kind`; the storage role checks the filesystem;
docs/storage.md "Disk quotas"):

``btrfs``
    The user root is a **subvolume**, created as such before the user's
    directories, and its level-0 qgroup carries the limit (``btrfs qgroup
    limit``, max referenced). Usage of every user comes from one ``btrfs
    qgroup show`` (the kernel's accounting: no tree walk).
``ext4`` / ``xfs``
    **Project quotas**: the user root gets project id = the user's uid with
    the inherit flag, set once over the new tree (``chattr -R +P -p`` on ext4,
    ``xfs_quota project -s`` on XFS), so everything created below inherits it
    whatever its owner; the limit is the project's hard block limit
    (``setquota -P`` / ``xfs_quota limit -p``). Usage from one ``repquota -P``
    / ``xfs_quota report -p``. The filesystem must be mounted with
    ``prjquota`` (and ext4 made with ``-O quota,project``).

**Who runs what.** The hub's unit has no ``CAP_SYS_ADMIN`` (docs/security.md)
and keeps none: the privileged steps run in two oneshot units of the storage
role, which the hub starts with ``systemctl start`` (as it starts labs):
``jupyterhub-disk-quota@apply-<unix>.service`` (:func:`.quota_ops.apply`: the
user root made the quota's unit if new, tagged, limited, and the limit recorded
in :data:`APPLIED_DIR`), ``jupyterhub-disk-quota@sync.service``
(:func:`.quota_ops.sync`: every existing user root whose record is not the
configured limit) and ``jupyterhub-disk-quota-usage.service``
(:func:`.quota_ops.usage`: every user's figures into :data:`USAGE_FILE`, which
the hub reads). A deleted user's limit is lifted with ``release-<unix>``. The
units run ``python -m hub_ext.storage quota <request>`` (:mod:`hub_ext.storage.__main__`).

**Once per account.** A spawn starts the apply unit only when the user root is
missing, not (for btrfs) a subvolume, or its record is not the configured limit
(:func:`.quota_ops.is_applied`: a stat and a small file read); the hub's storage pass runs
the sync unit when a record differs (the limit was changed).

**Settings.** ``StorageManager.quota_enabled``, ``.quota_per_user`` and
``.quota_shared`` (traits tagged with their Ansible variables, in
platform_config.json); the units read them from that file as the purge timer
does. The mechanism (:attr:`Settings.kind`) and the mount point are the
filesystem's of ``users_root``, read from ``/proc/self/mountinfo``
(:func:`.quota_ops.detect`, :func:`filesystem_of`).

**The shared directory** may have a limit of its own (``quota_shared``): all
users' files there together, the directory a subvolume (btrfs) or tagged with
:data:`SHARED_PROJECT_ID` (ext4/XFS); the sync unit sets it (:func:`.quota_ops.apply_shared`).

What a user could do to move data out of their quota (make a btrfs subvolume,
change a project id) is refused in every lab by lab/lab_start.py's seccomp filter.

This module is pure: the settings, the commands per filesystem, the parsers of
their reports, the units' names. What runs the commands and reads and writes the
records and figures is :mod:`hub_ext.storage.quota_ops`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hub_ext.accounts.unix_users import check_unix_name

KINDS = ("btrfs", "ext4", "xfs")
# every btrfs subvolume's root directory has this inode number (BTRFS_FIRST_FREE_OBJECTID)
BTRFS_SUBVOLUME_ROOT_INO = 256
KIB = 1024
MOUNTINFO = "/proc/self/mountinfo"
USAGE_FILE = "/run/jupyterhub-disk-quota/usage.json"  # RuntimeDirectory= of the usage unit
# StateDirectory= of the apply unit: one file per user root, the limit last set on it
APPLIED_DIR = "/var/lib/jupyterhub-disk-quota/applied"
SHARED = ".shared"  # the shared directory's record there (no unix name starts with a dot)
# the shared directory's project on ext4/XFS: far above any uid (the users' projects)
SHARED_PROJECT_ID = 2**31 - 2
APPLY_UNIT = "jupyterhub-disk-quota@{action}-{unix}.service"
SYNC_UNIT = "jupyterhub-disk-quota@sync.service"
USAGE_UNIT = "jupyterhub-disk-quota-usage.service"
ACTIONS = ("apply", "release")


@dataclass(frozen=True)
class Settings:
    """What the quota code works with (:func:`.quota_ops.detect`): a limit, the directory it is
    about (the users' root, whose every user gets ``limit_bytes``, or the shared
    directory) and what its filesystem is."""

    kind: str
    limit_bytes: int
    root: str
    mount_point: str = ""


def _unescape_mount_path(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for escaped, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(escaped, char)
    return field


def filesystem_of(path: str, mountinfo: str) -> tuple[str, str]:
    """(mount point, filesystem type) of the mount that holds the absolute ``path``,
    from ``/proc/self/mountinfo``'s text; ("", "") when none does. Of mounts on one
    point the last (the one on top) counts."""
    found = ("", "")
    for line in mountinfo.splitlines():
        # id parent major:minor root MOUNT-POINT options [optional...] - FSTYPE source super-options
        fields = line.split()
        separator = fields.index("-", 6) if "-" in fields[6:] else len(fields)
        if separator + 1 >= len(fields):
            continue
        point, fstype = _unescape_mount_path(fields[4]), fields[separator + 1]
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(found[0]):
            found = (point, fstype)
    return found


@dataclass(frozen=True)
class Usage:
    """What the quota accounting says of one user."""

    used_bytes: int
    limit_bytes: int | None  # None: no limit set

    def to_json(self) -> dict:
        return {"used_bytes": self.used_bytes, "limit_bytes": self.limit_bytes}


def usage_to_json(found: Mapping[str, Usage]) -> dict:
    """The usage file's content (:data:`USAGE_FILE`)."""
    return {unix: u.to_json() for unix, u in sorted(found.items())}


def usage_from_json(data) -> dict[str, Usage]:
    """The usage file's content back; entries not of that shape are left out."""
    if not isinstance(data, dict):
        return {}
    return {
        unix: Usage(int(v["used_bytes"]), v.get("limit_bytes"))
        for unix, v in data.items() if isinstance(v, dict) and isinstance(v.get("used_bytes"), int)
    }


# --- commands (pure) -----------------------------------------------------------------


def create_root_commands(kind: str, root: str) -> list[list[str]]:
    """What makes a NEW user root (it must not exist yet) a unit of accounting."""
    if kind == "btrfs":
        return [["btrfs", "subvolume", "create", root]]
    return []  # ext4/xfs: a plain directory (layout.ensure_user_dirs), tagged afterwards


def assign_commands(kind: str, root: str, project: int, mount: str) -> list[list[str]]:
    """What puts a new user root, and all it already holds, under the user's project."""
    if kind == "ext4":
        return [["chattr", "-R", "+P", "-p", str(project), root]]
    if kind == "xfs":
        return [["xfs_quota", "-x", "-c", f"project -s -p {root} {project}", mount]]
    return []  # btrfs: the subvolume is the unit


def limit_commands(kind: str, root: str, project: int, limit_bytes: int | None,
                   mount: str) -> list[list[str]]:
    """What sets (``limit_bytes``) or lifts (None) the user's limit."""
    if kind == "btrfs":
        return [["btrfs", "qgroup", "limit", str(limit_bytes) if limit_bytes else "none", root]]
    kib = -(-limit_bytes // KIB) if limit_bytes else 0  # rounded up; 0 = no limit
    if kind == "ext4":
        # block soft/hard limits in KiB, inode soft/hard limits
        return [["setquota", "-P", str(project), "0", str(kib), "0", "0", mount]]
    if kind == "xfs":
        return [["xfs_quota", "-x", "-c", f"limit -p bhard={kib}k {project}", mount]]
    return []


def usage_command(kind: str, users_root: str, mount: str) -> list[str] | None:
    """One command reporting every user's usage."""
    if kind == "btrfs":
        return ["btrfs", "qgroup", "show", "--raw", "-re", users_root]
    if kind == "ext4":
        return ["repquota", "-P", "-n", mount]  # -n: ids, not names; blocks in KiB
    if kind == "xfs":
        return ["xfs_quota", "-x", "-c", "report -p -n -N", mount]  # KiB blocks, no header
    return None


# --- parsers (pure) -----------------------------------------------------------------


def _limit(value: str, scale: int = 1) -> int | None:
    """A limit column: "none"/"0" -> None (no limit)."""
    return int(value) * scale if value.isdigit() and int(value) > 0 else None


def parse_btrfs_qgroups(text: str, users_root: str, unix_names: Sequence[str]) -> dict[str, Usage]:
    """``btrfs qgroup show --raw -re`` -> {unix: Usage} for the user roots of ``users_root``.

    The path column is relative to the filesystem's top level, so a row is a
    user's when its last component is the unix name and the rest is a tail of
    ``users_root`` (empty when users_root is the top level itself)."""
    wanted = set(unix_names)
    root_parts = Path(users_root).parts[1:]
    found: dict[str, Usage] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 6 or not fields[0].startswith("0/") or not fields[1].isdigit():
            continue
        parent, _, name = fields[5].rpartition("/")
        parent_parts = tuple(parent.split("/")) if parent else ()
        if name not in wanted:
            continue
        if parent_parts and root_parts[len(root_parts) - len(parent_parts):] != parent_parts:
            continue
        found[name] = Usage(used_bytes=int(fields[1]), limit_bytes=_limit(fields[3]))
    return found


def _project_rows(text: str, used_column: int, hard_column: int) -> dict[int, Usage]:
    """Rows ``#<project id> ...`` of a quota report -> {project id: Usage}; the used
    and hard-limit figures (KiB) are in the given columns."""
    found: dict[int, Usage] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) <= hard_column or not fields[0].startswith("#") or not fields[0][1:].isdigit():
            continue
        used, hard = fields[used_column], fields[hard_column]
        if used.isdigit() and hard.isdigit():
            found[int(fields[0][1:])] = Usage(int(used) * KIB, _limit(hard, KIB))
    return found


def parse_repquota(text: str) -> dict[int, Usage]:
    """``repquota -P -n`` -> {project id: Usage}.

    Rows: ``#<id> <flags> <used KiB> <soft> <hard> [grace] <files> ...``."""
    return _project_rows(text, used_column=2, hard_column=4)


def parse_xfs_report(text: str) -> dict[int, Usage]:
    """``xfs_quota -x -c 'report -p -n -N'`` -> {project id: Usage}.

    Rows: ``#<id> <used KiB> <soft> <hard> <warn/grace> ...``."""
    return _project_rows(text, used_column=1, hard_column=3)


# --- the units' names (pure) ------------------------------------------------------------


def apply_unit(action: str, unix: str) -> str:
    if action not in ACTIONS:
        raise ValueError(f"unknown disk quota action {action!r}")
    return APPLY_UNIT.format(action=action, unix=check_unix_name(unix))
