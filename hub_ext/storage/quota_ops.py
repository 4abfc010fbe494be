"""Disk quotas on the host: run the commands, keep the records, read and write the figures.

The I/O of :mod:`hub_ext.storage.quota` (which has the model, the commands and
the parsers). Two sides use it:

* the privileged helper, in the storage role's oneshot units (``python -m
  hub_ext.storage quota <request>``): :func:`apply`, :func:`sync`,
  :func:`release`, :func:`usage` through an :class:`Executor` (the commands,
  the account database, the inode checks: the seams of the unit tests);
* the hub (:class:`~hub_ext.storage.service.StorageManager`): :func:`detect`,
  :func:`is_applied` (a stat and a small file read at a spawn),
  :func:`start_unit`, :func:`read_usage`.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import struct
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hub_ext.accounts.unix_users import check_unix_name, is_valid_unix_name
from hub_ext.storage import layout
from hub_ext.storage.quota import (
    APPLIED_DIR,
    BTRFS_SUBVOLUME_ROOT_INO,
    KINDS,
    MOUNTINFO,
    SHARED,
    SHARED_PROJECT_ID,
    USAGE_FILE,
    Settings,
    Usage,
    apply_unit,
    assign_commands,
    create_root_commands,
    filesystem_of,
    limit_commands,
    parse_btrfs_qgroups,
    parse_repquota,
    parse_xfs_report,
    usage_command,
    usage_from_json,
    usage_to_json,
)

# struct fsxattr of FS_IOC_FSGETXATTR (linux/fs.h): xflags, extsize, nextents, projid, cowextsize, pad
FSXATTR = struct.Struct("=IIIII8x")
FS_IOC_FSGETXATTR = 0x801C581F


def detect(limit_bytes: int, root: str, mountinfo_path: str = MOUNTINFO) -> Settings:
    """The settings for ``root``'s filesystem; ValueError naming it when it cannot
    keep quotas (the storage role checks the same at deploy)."""
    with open(mountinfo_path, encoding="utf-8") as f:
        mount, fstype = filesystem_of(os.path.realpath(root), f.read())
    if fstype not in KINDS:
        raise ValueError(f"disk quotas need {root} on {', '.join(KINDS)}; "
                         f"it is on {fstype or 'an unknown filesystem'} (mounted at {mount or '?'})")
    return Settings(fstype, limit_bytes, root, mount)


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
        json.dump(usage_to_json(found), f)
    os.replace(tmp, path)


# --- the hub's side: start the units, read the figures ---------------------------------


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
    return usage_from_json(data)
