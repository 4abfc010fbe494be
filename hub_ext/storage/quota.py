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
``jupyterhub-disk-quota@apply-<unix>.service`` (:func:`apply`: the user root
made the quota's unit if new, tagged, limited, and the limit recorded in
:data:`APPLIED_DIR`), ``jupyterhub-disk-quota@sync.service`` (:func:`sync`:
every existing user root whose record is not the configured limit) and
``jupyterhub-disk-quota-usage.service`` (:func:`usage`: every user's figures
into :data:`USAGE_FILE`, which the hub reads). A deleted user's limit is lifted
with ``release-<unix>``.

**Once per account.** A spawn starts the apply unit only when the user root is
missing, not (for btrfs) a subvolume, or its record is not the configured limit
(:func:`is_applied`: a stat and a small file read); the hub's storage pass runs
the sync unit when a record differs (the limit was changed).

**Settings.** ``StorageManager.quota_enabled``, ``.quota_per_user`` and
``.quota_shared`` (traits tagged with their Ansible variables, in
platform_config.json); the units read them from that file as the purge timer
does. The mechanism (:attr:`Settings.kind`) and the mount point are the
filesystem's of ``users_root``, read from ``/proc/self/mountinfo``
(:func:`detect`).

**The shared directory** may have a limit of its own (``quota_shared``): all
users' files there together, the directory a subvolume (btrfs) or tagged with
:data:`SHARED_PROJECT_ID` (ext4/XFS); the sync unit sets it (:func:`apply_shared`).

What a user could do to move data out of their quota (make a btrfs subvolume,
change a project id) is refused in every lab by lab/lab_start.py's seccomp filter.

Pure apart from :class:`Executor` (the commands, the file reads) and the CLI.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pwd
import struct
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hub_ext.accounts.unix_users import check_unix_name, is_valid_unix_name
from hub_ext.storage import layout

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
# struct fsxattr of FS_IOC_FSGETXATTR (linux/fs.h): xflags, extsize, nextents, projid, cowextsize, pad
FSXATTR = struct.Struct("=IIIII8x")
FS_IOC_FSGETXATTR = 0x801C581F


@dataclass(frozen=True)
class Settings:
    """What the quota code works with (:func:`detect`): a limit, the directory it is
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


def detect(limit_bytes: int, root: str, mountinfo_path: str = MOUNTINFO) -> Settings:
    """The settings for ``root``'s filesystem; ValueError naming it when it cannot
    keep quotas (the storage role checks the same at deploy)."""
    with open(mountinfo_path, encoding="utf-8") as f:
        mount, fstype = filesystem_of(os.path.realpath(root), f.read())
    if fstype not in KINDS:
        raise ValueError(f"disk quotas need {root} on {', '.join(KINDS)}; "
                         f"it is on {fstype or 'an unknown filesystem'} (mounted at {mount or '?'})")
    return Settings(fstype, limit_bytes, root, mount)


@dataclass(frozen=True)
class Usage:
    """What the quota accounting says of one user."""

    used_bytes: int
    limit_bytes: int | None  # None: no limit set

    def to_json(self) -> dict:
        return {"used_bytes": self.used_bytes, "limit_bytes": self.limit_bytes}


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


# --- the privileged helper (runs in the oneshot units) ------------------------------


Run = Callable[[Sequence[str]], subprocess.CompletedProcess]


def run(argv: Sequence[str]) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=600, check=False)


def project_id(path: str) -> int:
    """The project id of ``path`` (FS_IOC_FSGETXATTR; no tool needed)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        raw = fcntl.ioctl(fd, FS_IOC_FSGETXATTR, bytes(FSXATTR.size))
    finally:
        os.close(fd)
    return FSXATTR.unpack(raw)[3]


@dataclass
class Executor:
    """The helper's I/O: commands, the account database, the inode checks (seams for tests)."""

    run: Run = run
    uid_of: Callable[[str], int] = lambda unix: pwd.getpwnam(unix).pw_uid
    project_of: Callable[[str], int] = project_id
    applied_dir: str = APPLIED_DIR

    def check(self, argv: Sequence[str], what: str) -> str:
        result = self.run(argv)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout or "no output").strip()
            raise RuntimeError(f"{what}: {' '.join(argv)} exited {result.returncode}: {detail}")
        return result.stdout


def is_subvolume(path: str | os.PathLike) -> bool:
    return os.lstat(path).st_ino == BTRFS_SUBVOLUME_ROOT_INO


# --- the record of what was applied (one file per user root) --------------------------


def _record(applied_dir: str, unix: str) -> Path:
    """The record of ``unix``'s root, or of the shared directory (:data:`SHARED`)."""
    return Path(applied_dir, unix if unix == SHARED else check_unix_name(unix))


def applied_limit(unix: str, applied_dir: str = APPLIED_DIR) -> int | None:
    """The limit last set on ``unix``'s root (or :data:`SHARED`), None when none was
    (or it was released)."""
    try:
        text = _record(applied_dir, unix).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def record_applied(unix: str, limit_bytes: int, applied_dir: str) -> None:
    """Atomically (the hub, root, reads it at a spawn)."""
    os.makedirs(applied_dir, mode=0o700, exist_ok=True)
    path = _record(applied_dir, unix)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(f"{limit_bytes}\n")
    os.replace(tmp, path)


def forget_applied(unix: str, applied_dir: str) -> None:
    Path(applied_dir, check_unix_name(unix)).unlink(missing_ok=True)


def is_applied(settings: Settings, unix: str, applied_dir: str = APPLIED_DIR) -> bool:
    """Whether ``unix``'s root (or with :data:`SHARED` and the shared directory's
    settings, that directory) is in place with the configured limit: the spawn
    path's check (a file read and a stat; no unit started)."""
    if applied_limit(unix, applied_dir) != settings.limit_bytes:
        return False
    directory = settings.root if unix == SHARED else layout.user_dirs(unix, settings.root).root
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        return False  # removed by hand since: apply again (a plain directory would have no limit)
    return settings.kind != "btrfs" or st.st_ino == BTRFS_SUBVOLUME_ROOT_INO


def apply(settings: Settings, unix: str, io: Executor) -> str:
    """Make ``<users_root>/<unix>`` the user's unit of accounting and set the limit.

    Idempotent: run before every spawn. A new btrfs user root is created as a
    subvolume; an existing one that is not (made before quotas were on) is
    refused, since a limit set there would land on the subvolume holding every
    user. On ext4/XFS a root not yet in the user's project is tagged, with
    everything below it (once: afterwards new files inherit the project)."""
    root = str(layout.user_dirs(unix, settings.root).root)
    uid = io.uid_of(unix)
    done = []
    if not os.path.lexists(root):
        if settings.kind == "btrfs":
            io.check(create_root_commands("btrfs", root)[0], f"creating {root}")
            done.append("created the subvolume")
        else:
            os.mkdir(root, layout.USER_ROOT_MODE)
            done.append("created")
    done += limit_directory(settings, root, uid, io)
    record_applied(unix, settings.limit_bytes, io.applied_dir)
    return f"{root}: " + ", ".join(done)


def limit_directory(settings: Settings, directory: str, project: int, io: Executor) -> list[str]:
    """Set ``settings.limit_bytes`` on an existing ``directory``: on btrfs it must be
    a subvolume (a limit set on a plain directory would land on the subvolume
    holding it: every user); on ext4/XFS its tree is tagged with ``project`` first
    unless it is already. What was done, for the unit's journal."""
    done = []
    if settings.kind == "btrfs":
        if not is_subvolume(directory):
            raise RuntimeError(
                f"{directory} is not a btrfs subvolume (made before quotas were on): move its "
                "contents into a subvolume of that name (docs/storage.md, Disk quotas)")
    elif io.project_of(directory) != project:
        for argv in assign_commands(settings.kind, directory, project, settings.mount_point):
            io.check(argv, f"tagging {directory} with project {project}")
        done.append(f"tagged with project {project}")
    for argv in limit_commands(settings.kind, directory, project, settings.limit_bytes, settings.mount_point):
        io.check(argv, f"limiting {directory}")
    done.append(f"limited to {settings.limit_bytes} bytes")
    return done


def apply_shared(shared: Settings, io: Executor) -> str:
    """The shared directory's limit (``shared``: its settings, :func:`detect`); the
    storage role made the directory (a subvolume on btrfs)."""
    done = limit_directory(shared, shared.root, SHARED_PROJECT_ID, io)
    record_applied(SHARED, shared.limit_bytes, io.applied_dir)
    return f"{shared.root} (shared): " + ", ".join(done)


def sync(settings: Settings, io: Executor, shared: Settings | None = None) -> tuple[list[str], list[str]]:
    """Apply the configured limit to every existing user root whose record differs
    (after a change of the limit), and ``shared``'s to the shared directory;
    (what was done, what failed), each failure named, the others applied all
    the same. Creates no user root."""
    done, failed = [], []
    if shared is not None and not is_applied(shared, SHARED, io.applied_dir):
        try:
            done.append(apply_shared(shared, io))
        except (OSError, RuntimeError) as e:
            failed.append(f"shared directory: {e}")
    for unix in user_roots(settings.root):
        if is_applied(settings, unix, io.applied_dir):
            continue
        try:
            done.append(apply(settings, unix, io))
        except KeyError:
            failed.append(f"{unix}: no unix account")
        except (OSError, RuntimeError) as e:
            failed.append(f"{unix}: {e}")
    return done, failed


def release(settings: Settings, unix: str, io: Executor) -> str:
    """Lift a user's limit (the user is being deleted; the directories go to the archive)."""
    root = str(layout.user_dirs(unix, settings.root).root)
    if settings.kind == "btrfs":
        if not (os.path.isdir(root) and is_subvolume(root)):
            forget_applied(unix, io.applied_dir)
            return f"{root}: no subvolume, nothing to release"
        uid = 0
    else:
        try:
            uid = io.uid_of(unix)
        except KeyError:
            return f"{unix}: no account, nothing to release"
    for argv in limit_commands(settings.kind, root, uid, None, settings.mount_point):
        io.check(argv, f"releasing {root}")
    forget_applied(unix, io.applied_dir)
    return f"{root}: limit lifted"


def user_roots(users_root: str) -> list[str]:
    """The unix names that have a user root (dot entries are the archive and such)."""
    try:
        entries = os.listdir(users_root)
    except FileNotFoundError:
        return []
    return sorted(e for e in entries if is_valid_unix_name(e) and os.path.isdir(os.path.join(users_root, e)))


def usage(settings: Settings, io: Executor, unix_names: Sequence[str] | None = None) -> dict[str, Usage]:
    """{unix: Usage} of every user root, from one command."""
    names = list(unix_names) if unix_names is not None else user_roots(settings.root)
    out = io.check(usage_command(settings.kind, settings.root, settings.mount_point),
                   "reading usage")
    if settings.kind == "btrfs":
        return parse_btrfs_qgroups(out, settings.root, names)
    uids = {}
    for unix in names:
        try:
            uids[unix] = io.uid_of(unix)
        except KeyError:
            continue
    by_project = (parse_repquota if settings.kind == "ext4" else parse_xfs_report)(out)
    return {unix: by_project[uid] for unix, uid in uids.items() if uid in by_project}


def write_usage(found: Mapping[str, Usage], path: str = USAGE_FILE) -> None:
    """Write atomically (the hub may be reading the previous one)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({unix: u.to_json() for unix, u in sorted(found.items())}, f)
    os.replace(tmp, path)


def configured(config_file: str, mountinfo_path: str = MOUNTINFO) -> tuple[Settings, Settings | None] | None:
    """The settings as the hub has them (StorageManager's traits in
    platform_config.json, as the purge timer reads them): the users' and the
    shared directory's (None without a shared limit); None when quotas are off."""
    from hub_ext import settings as platform_settings  # the hub's settings, not imported by the hub's side
    from hub_ext.storage.service import StorageManager

    values = platform_settings.configured_values(StorageManager, config_file)
    if not values["quota_enabled"]:
        return None
    shared = values["quota_shared"]
    return (detect(values["quota_per_user"], values["users_root"], mountinfo_path),
            detect(shared, values["shared_dir"], mountinfo_path) if shared else None)


def main(argv: list[str] | None = None, io: Executor | None = None, mountinfo_path: str = MOUNTINFO) -> int:
    from hub_ext.settings import PLATFORM_CONFIG_FILE

    parser = argparse.ArgumentParser(
        prog="python -m hub_ext.storage.quota",
        description="Per-user disk quotas of the platform (the storage role's oneshot units).")
    parser.add_argument("--config", default=PLATFORM_CONFIG_FILE,
                        help="platform_config.json giving StorageManager's quota settings")
    parser.add_argument("--usage-file", default=USAGE_FILE)
    parser.add_argument("request", help="apply-<unix>, release-<unix> (the unit's instance), sync or usage")
    args = parser.parse_args(argv)
    io = io or Executor()
    try:
        found = configured(args.config, mountinfo_path)
        if found is None:
            print(f"disk quota: quotas are off ({args.config})", file=sys.stderr)
            return 2
        settings, shared = found
        if args.request == "usage":
            figures = usage(settings, io)
            write_usage(figures, args.usage_file)
            print(f"usage of {len(figures)} user(s) written to {args.usage_file}")
            return 0
        if args.request == "sync":
            done, failed = sync(settings, io, shared)
            for line in done:
                print(line)
            for line in failed:
                print(f"disk quota: {line}", file=sys.stderr)
            print(f"sync: {len(done)} brought to their limit, {len(failed)} failed")
            return 1 if failed else 0
        action, _, unix = args.request.partition("-")
        if action not in ACTIONS:
            raise ValueError(f"unknown request {args.request!r}: apply-<unix>, release-<unix>, sync or usage")
        check_unix_name(unix)
        print((apply if action == "apply" else release)(settings, unix, io))
        return 0
    except (OSError, ValueError, RuntimeError) as e:
        print(f"disk quota: {e}", file=sys.stderr)
        return 1


# --- the hub's side: start the units, read the figures ---------------------------------


def apply_unit(action: str, unix: str) -> str:
    if action not in ACTIONS:
        raise ValueError(f"unknown disk quota action {action!r}")
    return APPLY_UNIT.format(action=action, unix=check_unix_name(unix))


async def start_unit(runner, action: str, unix: str) -> None:
    """``systemctl start`` the apply/release unit of ``unix`` (``runner``:
    :func:`hub_ext.process.run_command`); raises with the journal to read when it failed."""
    unit = apply_unit(action, unix)
    result = await runner(["systemctl", "start", unit])
    if not result.ok:
        raise RuntimeError(f"The disk quota of {unix} could not be set ({action}): "
                           f"see journalctl -u {unit}")


def read_usage(path: str = USAGE_FILE) -> dict[str, Usage]:
    """The usage unit's last figures (empty when it has not run)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return {
        unix: Usage(int(v["used_bytes"]), v.get("limit_bytes"))
        for unix, v in data.items() if isinstance(v, dict) and isinstance(v.get("used_bytes"), int)
    }


if __name__ == "__main__":
    sys.exit(main())
