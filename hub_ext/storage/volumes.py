"""Per-user directories on the host and where they appear inside a lab.

Layout: ``<users_root>/<unix>/{home,workspace,cache}``, each owned by the user,
mode 0700. ``<users_root>/<unix>`` itself stays root-owned so the user cannot
swap its children for symlinks. The hub runs as root, so every step opens
directories without following symlinks: a user who replaces
``home/workspace`` with a link to ``/etc`` gets an error, not ``/etc`` chowned.

Reset, restore, purge and sizing (below) are plain functions over directory
file descriptors, never paths that a user could swap for a symlink:

* reset: rename each directory into ``<users_root>/<unix>/.trash`` (same
  filesystem, so constant time) and recreate it empty with owner and mode;
* restore: the current directory goes to the trash first, then the item is
  renamed back with ``RENAME_NOREPLACE``: nothing is ever overwritten;
* purge: items older than the retention are deleted fd-relative, symlinks
  removed as links (``python -m hub_ext.storage purge``, run by a systemd timer);
* sizes: ``os.fwalk`` without following symlinks, meant for a worker thread.

Docs: docs/storage.md.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from hub_ext.accounts.unix_users import check_unix_name, is_valid_unix_name

USER_DIR_MODE = 0o700
# traverse-only: the lab reaches its dirs through bind mounts, nobody lists them
USER_ROOT_MODE = 0o711
SHARED_MOUNT_POINT = "/mnt/shared"

# where each per-user directory appears inside the lab, relative to $HOME
_IN_HOME = {"workspace": "workspace", "cache": ".cache"}

Chown = Callable[[int, int, int], None]  # (fd, uid, gid), like os.fchown


class UnsafePathError(ValueError):
    """A per-user path escapes its root or is a symlink / not a directory."""


@dataclass(frozen=True)
class UserDirs:
    """Host paths of one user's directories."""

    root: Path
    home: Path
    workspace: Path
    cache: Path

    def all(self) -> tuple[Path, Path, Path]:
        return (self.home, self.workspace, self.cache)


def home_in_lab(unix: str) -> str:
    return f"/home/{unix}"


def user_dirs(unix: str, users_root: str | os.PathLike) -> UserDirs:
    """The per-user paths, checked to stay inside ``users_root/<unix>``."""
    check_unix_name(unix)
    users_root = Path(users_root)
    if not users_root.is_absolute():
        raise UnsafePathError(f"users_root must be absolute, got {str(users_root)!r}")
    root = users_root / unix
    dirs = UserDirs(
        root=root, home=root / "home", workspace=root / "workspace", cache=root / "cache"
    )
    # resolve() follows existing symlinks and "..": anything outside is refused
    resolved_root = root.resolve()
    for path in dirs.all():
        if not path.resolve().is_relative_to(resolved_root):
            raise UnsafePathError(f"{path} resolves outside {root}")
    return dirs


def bind_paths(
    unix: str, users_root: str | os.PathLike, shared_dir: str | os.PathLike | None
) -> list[str]:
    """systemd ``BindPaths=`` entries (``source:destination``) for one user.

    Home comes first: workspace and .cache are mounted on top of it.
    """
    dirs = user_dirs(unix, users_root)
    home = home_in_lab(unix)
    entries = [
        f"{dirs.home}:{home}",
        f"{dirs.workspace}:{home}/{_IN_HOME['workspace']}",
        f"{dirs.cache}:{home}/{_IN_HOME['cache']}",
    ]
    if shared_dir:
        entries.append(f"{shared_dir}:{SHARED_MOUNT_POINT}")
    return entries


def _open_dir_nofollow(name: str, dir_fd: int, mode: int) -> int:
    """mkdir name under dir_fd if missing, open it refusing symlinks; return the fd."""
    try:
        os.mkdir(name, mode, dir_fd=dir_fd)
    except FileExistsError:
        pass
    return _open_existing_dir(name, dir_fd)


def _claim(fd: int, uid: int, gid: int, mode: int, chown: Chown) -> None:
    # on the fd, never the path: the path could be swapped after the check
    chown(fd, uid, gid)
    os.fchmod(fd, mode)


def ensure_user_dirs(
    unix: str,
    users_root: str | os.PathLike,
    uid: int,
    gid: int,
    chown: Chown = os.fchown,
) -> UserDirs:
    """Create (or repair) one user's directories and the mount points in home.

    Idempotent. ``users_root`` must exist (Ansible creates it). ``chown``
    is the seam unit tests replace; it receives an open directory fd.
    """
    dirs = user_dirs(unix, users_root)
    root_parent_fd = os.open(dirs.root.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        root_fd = _open_dir_nofollow(dirs.root.name, root_parent_fd, USER_ROOT_MODE)
    finally:
        os.close(root_parent_fd)
    try:
        os.fchmod(root_fd, USER_ROOT_MODE)
        for path in dirs.all():
            _ensure_volume(root_fd, path.name, uid, gid, chown)
    finally:
        os.close(root_fd)
    return dirs


# --- reset to a trash, restore, purge --------------------------------------------
#
# Trash layout: <users_root>/<unix>/.trash/<UTC stamp>-<volume>[-<n>], root-owned
# 0700, beside the directories it receives: a reset is one rename(2) within the
# user's root, so it never copies and costs the same for 1 file or 100k. A
# trashed directory keeps its owner and contents; the user cannot reach it (the
# lab binds only home/workspace/cache), only restore it through the hub.

VOLUMES = ("home", "workspace", "cache")
TRASH_DIR = ".trash"
TRASH_MODE = 0o700
DAY = 86400
_STAMP_FORMAT = "%Y%m%dT%H%M%S"
_TRASH_NAME = re.compile(
    r"(?P<stamp>\d{8}T\d{6})\.(?P<micro>\d{6})Z-(?P<volume>home|workspace|cache)(?:-(?P<n>\d{1,4}))?"
)
# how a rejected name is quoted back in messages
_MAX_QUOTED = 40


class VolumeNameError(ValueError):
    """A requested volume list or trash item name is malformed or unknown."""


class TrashItemNotFoundError(LookupError):
    """No trash item of that name for this user."""


class StorageError(OSError):
    """A storage operation could not be carried out (reported, never half-done)."""


def _quote(value) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_QUOTED else text[: _MAX_QUOTED - 3] + "..."


def check_volume_names(volumes) -> list[str]:
    """The request's volume names, validated and de-duplicated (order kept).

    Only the per-user names of :data:`VOLUMES` are accepted; anything else
    (``shared``, paths, ``..``, empty, non-strings) raises VolumeNameError.
    """
    if not isinstance(volumes, list):
        raise VolumeNameError(f"'volumes' must be a list of names, got {_quote(volumes)}")
    if not volumes:
        raise VolumeNameError("No volumes specified")
    checked: list[str] = []
    for name in volumes:
        if not isinstance(name, str) or name not in VOLUMES:
            raise VolumeNameError(
                f"Invalid volume {_quote(name)}: choose from {', '.join(VOLUMES)}"
            )
        if name not in checked:
            checked.append(name)
    return checked


@dataclass(frozen=True)
class TrashItem:
    """One trashed directory, named ``<stamp>-<volume>``."""

    id: str
    volume: str
    trashed_at: float  # epoch seconds, from the name

    def to_json(self, retention_seconds: int | None = None, size: int | None = None) -> dict:
        model = {
            "id": self.id,
            "volume": self.volume,
            "trashed_at": _iso(self.trashed_at),
            "expires_at": None,
            "size_bytes": size,
        }
        if retention_seconds is not None:
            model["expires_at"] = _iso(self.trashed_at + retention_seconds)
        return model


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _stamp(now: float) -> str:
    """The UTC stamp that starts every trash and archive entry's name."""
    stamp = datetime.fromtimestamp(now, UTC)
    return f"{stamp.strftime(_STAMP_FORMAT)}.{stamp.microsecond:06d}Z"


def trash_item_name(volume: str, now: float, n: int = 0) -> str:
    name = f"{_stamp(now)}-{volume}"
    return f"{name}-{n}" if n else name


def _match_stamped(pattern: re.Pattern, name) -> tuple[re.Match, float] | None:
    """(match, epoch seconds of its stamp) for a trash or archive entry name, or None."""
    if not isinstance(name, str):
        return None
    match = pattern.fullmatch(name)
    if match is None:
        return None
    try:
        stamp = datetime.strptime(match["stamp"], _STAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
    return match, stamp.timestamp() + int(match["micro"]) / 1e6


def parse_trash_name(name) -> TrashItem | None:
    """The TrashItem a directory entry of the trash stands for, or None."""
    parsed = _match_stamped(_TRASH_NAME, name)
    if parsed is None:
        return None
    match, at = parsed
    return TrashItem(id=name, volume=match["volume"], trashed_at=at)


def _checked_item(parse, what: str, item_id):
    """parse(item_id), or VolumeNameError naming ``what`` (a 400 for the handlers)."""
    item = parse(item_id)
    if item is None:
        raise VolumeNameError(f"Invalid {what} {_quote(item_id)}")
    return item


def check_trash_item_id(item_id) -> TrashItem:
    return _checked_item(parse_trash_name, "trash item", item_id)


def _open_user_root(dirs: UserDirs) -> int:
    """Open ``users_root/<unix>`` refusing a symlink; FileNotFoundError if missing."""
    parent_fd = os.open(dirs.root.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return _open_existing_dir(dirs.root.name, parent_fd)
    finally:
        os.close(parent_fd)


def _open_users_root(users_root: str | os.PathLike) -> int:
    if not Path(users_root).is_absolute():
        raise UnsafePathError(f"users_root must be absolute, got {str(users_root)!r}")
    return os.open(users_root, os.O_RDONLY | os.O_DIRECTORY)


def _open_existing_dir(name: str, dir_fd: int) -> int:
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePathError(
                f"{name!r} is a symlink or not a directory; refusing to use it"
            ) from None
        raise


def _open_private_dir(name: str, parent_fd: int, create: bool) -> int:
    """Open (or make) a root-only 0700 directory such as the trash or the archive."""
    if create:
        fd = _open_dir_nofollow(name, parent_fd, TRASH_MODE)
    else:
        fd = _open_existing_dir(name, parent_fd)
    os.fchmod(fd, TRASH_MODE)
    return fd


def _open_trash(root_fd: int, create: bool) -> int:
    return _open_private_dir(TRASH_DIR, root_fd, create)


def _exists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _renameat2 = _libc.renameat2
    _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    _renameat2.restype = ctypes.c_int
except (OSError, AttributeError):  # not glibc >= 2.28
    _renameat2 = None


def rename_noreplace(src: str, src_dir_fd: int, dst: str, dst_dir_fd: int) -> None:
    """rename(2) that fails with FileExistsError instead of replacing ``dst``.

    renameat2(RENAME_NOREPLACE) where the kernel and filesystem have it; else
    a check then a rename (the parents are root-owned, so nobody else can
    create ``dst`` in between).
    """
    if _renameat2 is not None:
        if _renameat2(src_dir_fd, os.fsencode(src), dst_dir_fd, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(err, os.strerror(err), dst)
    if _exists(dst, dst_dir_fd):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    os.rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)


def _move_aside(src_fd: int, src: str, dst_fd: int, make_name: Callable[[int], str]) -> str:
    """Rename ``src`` (whatever it is: never followed) into dst_fd under a free stamped name.

    Both directories must be on one filesystem: a move never copies.
    """
    if os.fstat(dst_fd).st_dev != os.fstat(src_fd).st_dev:
        raise StorageError(
            errno.EXDEV, f"the destination is on another filesystem than {src}; refusing to copy"
        )
    for n in range(1000):
        name = make_name(n)
        try:
            rename_noreplace(src, src_fd, name, dst_fd)
        except FileExistsError:
            if not _exists(src, src_fd):
                raise
            continue  # same microsecond as an earlier item: next suffix
        return name
    raise StorageError(errno.EEXIST, f"no free name to move {src} aside")


def _move_to_trash(root_fd: int, trash_fd: int, volume: str, now: float) -> TrashItem:
    """Rename ``root/volume`` (whatever it is: never followed) into the trash."""
    name = _move_aside(root_fd, volume, trash_fd, lambda n: trash_item_name(volume, now, n))
    return parse_trash_name(name)


def _ensure_volume(root_fd: int, volume: str, uid: int, gid: int, chown: Chown) -> None:
    fd = _open_dir_nofollow(volume, root_fd, USER_DIR_MODE)
    try:
        _claim(fd, uid, gid, USER_DIR_MODE, chown)
        if volume == "home":
            # empty mount points, owned by the user so ls -la looks sane
            for in_home in _IN_HOME.values():
                mount_fd = _open_dir_nofollow(in_home, fd, USER_DIR_MODE)
                try:
                    _claim(mount_fd, uid, gid, USER_DIR_MODE, chown)
                finally:
                    os.close(mount_fd)
    finally:
        os.close(fd)


@dataclass
class ResetResult:
    reset_volumes: list[str] = field(default_factory=list)
    failed_volumes: list[dict] = field(default_factory=list)
    trashed: list[TrashItem] = field(default_factory=list)


def reset_volumes(
    unix: str,
    users_root: str | os.PathLike,
    volumes,
    *,
    owner: tuple[int, int] | None = None,
    now: float | None = None,
    chown: Chown = os.fchown,
) -> ResetResult:
    """Move each named directory into the user's trash and recreate it empty.

    ``owner`` (uid, gid) of the new directories; None: the old directory's.
    The caller makes sure the user's server is not running. A volume that does
    not exist or is not a directory is reported in ``failed_volumes`` and left
    alone. Raises VolumeNameError before touching anything for a bad name.
    """
    volumes = check_volume_names(volumes)
    dirs = user_dirs(unix, users_root)
    now = time.time() if now is None else now
    result = ResetResult()
    try:
        root_fd = _open_user_root(dirs)
    except FileNotFoundError:
        result.failed_volumes = [{"volume": v, "reason": "not found"} for v in volumes]
        return result
    try:
        trash_fd = _open_trash(root_fd, create=True)
        try:
            for volume in volumes:
                try:
                    st = os.stat(volume, dir_fd=root_fd, follow_symlinks=False)
                except FileNotFoundError:
                    result.failed_volumes.append({"volume": volume, "reason": "not found"})
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    result.failed_volumes.append(
                        {"volume": volume, "reason": "not a directory; left alone"}
                    )
                    continue
                try:
                    item = _move_to_trash(root_fd, trash_fd, volume, now)
                    uid, gid = owner if owner is not None else (st.st_uid, st.st_gid)
                    _ensure_volume(root_fd, volume, uid, gid, chown)
                except OSError as e:
                    result.failed_volumes.append(
                        {"volume": volume, "reason": e.strerror or str(e)}
                    )
                    continue
                result.reset_volumes.append(volume)
                result.trashed.append(item)
        finally:
            os.close(trash_fd)
    finally:
        os.close(root_fd)
    return result


def list_trash(unix: str, users_root: str | os.PathLike) -> list[TrashItem]:
    """The user's trash items, newest first (names that are not items are skipped)."""
    dirs = user_dirs(unix, users_root)
    try:
        root_fd = _open_user_root(dirs)
    except FileNotFoundError:
        return []
    try:
        return _listed(lambda: _open_existing_dir(TRASH_DIR, root_fd), parse_trash_name)
    finally:
        os.close(root_fd)


def _listed(open_dir, parse) -> list:
    """The parsed entries of the directory ``open_dir()`` opens (names ``parse``
    rejects left out), newest first; [] when it does not exist."""
    try:
        dir_fd = open_dir()
    except FileNotFoundError:
        return []
    try:
        items = [parse(name) for name in os.listdir(dir_fd)]
    finally:
        os.close(dir_fd)
    return sorted((i for i in items if i is not None), key=lambda i: i.id, reverse=True)


@dataclass(frozen=True)
class RestoreResult:
    volume: str
    restored: TrashItem
    displaced: TrashItem | None  # the directory that was in place, now in the trash


def restore_trash_item(
    unix: str,
    users_root: str | os.PathLike,
    item_id,
    *,
    now: float | None = None,
    chown: Chown = os.fchown,
) -> RestoreResult:
    """Put a trashed directory back in place; the current one goes to the trash first.

    Never overwrites: the rename into place refuses an existing target.
    The caller makes sure the user's server is not running.
    """
    item = check_trash_item_id(item_id)
    dirs = user_dirs(unix, users_root)
    now = time.time() if now is None else now
    try:
        root_fd = _open_user_root(dirs)
    except FileNotFoundError:
        raise TrashItemNotFoundError(item.id) from None
    try:
        try:
            trash_fd = _open_existing_dir(TRASH_DIR, root_fd)
        except FileNotFoundError:
            raise TrashItemNotFoundError(item.id) from None
        try:
            st = _item_directory(trash_fd, item.id, "trash item")
            displaced = None
            if _exists(item.volume, root_fd):
                displaced = _move_to_trash(root_fd, trash_fd, item.volume, now)
            rename_noreplace(item.id, trash_fd, item.volume, root_fd)
            # modes and the mount points in home, as a spawn would repair them
            _ensure_volume(root_fd, item.volume, st.st_uid, st.st_gid, chown)
        finally:
            os.close(trash_fd)
    finally:
        os.close(root_fd)
    return RestoreResult(volume=item.volume, restored=item, displaced=displaced)


def _item_directory(dir_fd: int, item_id: str, what: str) -> os.stat_result:
    """The stat of a trash or archive item, which must be a real directory."""
    try:
        st = os.stat(item_id, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise TrashItemNotFoundError(item_id) from None
    if not stat.S_ISDIR(st.st_mode):
        raise StorageError(errno.ENOTDIR, f"{what} {item_id} is not a directory")
    return st


def _remove_at(dir_fd: int, name: str) -> None:
    """Delete ``name`` under dir_fd; a directory tree without following any symlink."""
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        # the fd-based rmtree: opens every directory with O_NOFOLLOW and
        # unlinks symlinks as entries (shutil.rmtree.avoids_symlink_attacks)
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


@dataclass
class PurgeReport:
    purged: list[tuple[str, str]] = field(default_factory=list)  # (unix, trash item) or (".archive", archive item)
    kept: int = 0
    errors: list[str] = field(default_factory=list)


def purge_trash(
    users_root: str | os.PathLike,
    retention_seconds: float,
    *,
    now: float | None = None,
    dry_run: bool = False,
) -> PurgeReport:
    """Delete every trash item older than ``retention_seconds`` (by its name's time).

    Walks ``users_root/<unix>/.trash`` for valid unix names only, opens each
    level without following symlinks and deletes trees fd-relative, so a link
    planted anywhere inside is removed as a link, never followed.
    """
    now = time.time() if now is None else now
    cutoff = now - retention_seconds
    report = PurgeReport()
    top_fd = _open_users_root(users_root)
    try:
        for unix in sorted(os.listdir(top_fd)):
            if not is_valid_unix_name(unix):
                continue
            try:
                root_fd = _open_existing_dir(unix, top_fd)
            except (UnsafePathError, FileNotFoundError) as e:
                report.errors.append(f"{unix}: {e}")
                continue
            try:
                try:
                    trash_fd = _open_existing_dir(TRASH_DIR, root_fd)
                except FileNotFoundError:
                    continue
                except UnsafePathError as e:
                    report.errors.append(f"{unix}/{TRASH_DIR}: {e}")
                    continue
                try:
                    _purge_expired(trash_fd, unix, f"{unix}/{TRASH_DIR}", parse_trash_name,
                                   lambda item: item.trashed_at, cutoff, report, dry_run)
                finally:
                    os.close(trash_fd)
            finally:
                os.close(root_fd)
    finally:
        os.close(top_fd)
    return report


def _purge_expired(dir_fd, owner, where, parse, stamp, cutoff, report, dry_run) -> None:
    """Delete the entries of ``dir_fd`` that ``parse`` accepts and whose
    ``stamp(item)`` is before ``cutoff``, fd-relative, never following a link;
    each counted in ``report`` under ``owner`` (errors name ``where``)."""
    for name in sorted(os.listdir(dir_fd)):
        item = parse(name)
        if item is None or stamp(item) >= cutoff:
            report.kept += item is not None
            continue
        try:
            if not dry_run:
                _remove_at(dir_fd, name)
            report.purged.append((owner, name))
        except OSError as e:
            report.errors.append(f"{where}/{name}: {e}")


# --- the archive of deleted users -------------------------------------------------
#
# Deleting a hub user renames its whole directory <users_root>/<unix> (volumes
# and trash) to <users_root>/.archive/<UTC stamp>-<unix>[.<n>]: root-owned 0700,
# reached by no lab, one rename(2) on the same filesystem. A later user of the
# same name therefore starts empty. An admin can put an item back (restore) until
# the purge timer deletes it after its retention. ".archive" is not a valid unix
# name, so nothing that walks the per-user directories mistakes it for a user.

ARCHIVE_DIR = ".archive"  # root-only 0700, like the trash
_ARCHIVE_NAME = re.compile(
    r"(?P<stamp>\d{8}T\d{6})\.(?P<micro>\d{6})Z-(?P<unix>[a-z_][a-z0-9_-]{0,31})(?:\.(?P<n>\d{1,4}))?"
)


@dataclass(frozen=True)
class ArchiveItem:
    """One deleted user's directory, named ``<stamp>-<unix>``."""

    id: str
    unix: str
    archived_at: float  # epoch seconds, from the name

    def to_json(self, retention_seconds: int | None = None) -> dict:
        return {
            "id": self.id,
            "unix_name": self.unix,
            "archived_at": _iso(self.archived_at),
            "expires_at": (
                _iso(self.archived_at + retention_seconds) if retention_seconds is not None else None
            ),
        }


def archive_item_name(unix: str, now: float, n: int = 0) -> str:
    name = f"{_stamp(now)}-{unix}"
    return f"{name}.{n}" if n else name


def parse_archive_name(name) -> ArchiveItem | None:
    parsed = _match_stamped(_ARCHIVE_NAME, name)
    if parsed is None or not is_valid_unix_name(parsed[0]["unix"]):
        return None
    match, at = parsed
    return ArchiveItem(id=name, unix=match["unix"], archived_at=at)


def check_archive_item_id(item_id) -> ArchiveItem:
    return _checked_item(parse_archive_name, "archive item", item_id)


def _open_archive(top_fd: int, create: bool) -> int:
    return _open_private_dir(ARCHIVE_DIR, top_fd, create)


def _archive_root(top_fd: int, archive_fd: int, unix: str, now: float) -> ArchiveItem | None:
    """Move ``<users_root>/<unix>`` into the archive; None when there is none."""
    try:
        st = os.stat(unix, dir_fd=top_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(f"{unix!r} is a symlink or not a directory; refusing to archive it")
    name = _move_aside(top_fd, unix, archive_fd, lambda n: archive_item_name(unix, now, n))
    return parse_archive_name(name)


def archive_user(
    unix: str, users_root: str | os.PathLike, *, now: float | None = None
) -> ArchiveItem | None:
    """Move one user's whole directory into the archive (the hub user was deleted).

    Returns the item, or None when the user has no directory. Only the entry
    ``<users_root>/<unix>`` of a valid unix name is ever renamed; a symlink or
    file in its place is refused, never followed.
    """
    user_dirs(unix, users_root)  # the name and path checks
    now = time.time() if now is None else now
    top_fd = _open_users_root(users_root)
    try:
        archive_fd = _open_archive(top_fd, create=True)
        try:
            return _archive_root(top_fd, archive_fd, unix, now)
        finally:
            os.close(archive_fd)
    finally:
        os.close(top_fd)


def list_archive(users_root: str | os.PathLike) -> list[ArchiveItem]:
    """Archived users' directories, newest first."""
    top_fd = _open_users_root(users_root)
    try:
        return _listed(lambda: _open_archive(top_fd, create=False), parse_archive_name)
    finally:
        os.close(top_fd)


@dataclass(frozen=True)
class ArchiveRestoreResult:
    restored: ArchiveItem
    displaced: ArchiveItem | None  # the directory that was in place, now archived


def restore_archived_user(
    users_root: str | os.PathLike, item_id, *, now: float | None = None
) -> ArchiveRestoreResult:
    """Put an archived directory back at ``<users_root>/<unix>``.

    The directory in place (a new user's) is archived first; nothing is ever
    overwritten. The caller makes sure no server of that user runs.
    """
    item = check_archive_item_id(item_id)
    now = time.time() if now is None else now
    top_fd = _open_users_root(users_root)
    try:
        try:
            archive_fd = _open_archive(top_fd, create=False)
        except FileNotFoundError:
            raise TrashItemNotFoundError(item.id) from None
        try:
            _item_directory(archive_fd, item.id, "archive item")
            displaced = _archive_root(top_fd, archive_fd, item.unix, now)
            rename_noreplace(item.id, archive_fd, item.unix, top_fd)
        finally:
            os.close(archive_fd)
    finally:
        os.close(top_fd)
    return ArchiveRestoreResult(restored=item, displaced=displaced)


def purge_archive(
    users_root: str | os.PathLike,
    retention_seconds: float,
    *,
    now: float | None = None,
    dry_run: bool = False,
) -> PurgeReport:
    """Delete archived directories older than ``retention_seconds``, never following a link."""
    now = time.time() if now is None else now
    report = PurgeReport()
    top_fd = _open_users_root(users_root)
    try:
        try:
            archive_fd = _open_archive(top_fd, create=False)
        except FileNotFoundError:
            return report
        except UnsafePathError as e:
            report.errors.append(f"{ARCHIVE_DIR}: {e}")
            return report
        try:
            _purge_expired(archive_fd, ARCHIVE_DIR, ARCHIVE_DIR, parse_archive_name,
                           lambda item: item.archived_at, now - retention_seconds, report, dry_run)
        finally:
            os.close(archive_fd)
    finally:
        os.close(top_fd)
    return report


# --- sizes -----------------------------------------------------------------------


def tree_usage(name: str, dir_fd: int) -> int:
    """Disk usage in bytes of ``name`` under dir_fd (like ``du -s --bytes`` of blocks).

    Never follows a symlink (os.fwalk with follow_symlinks=False re-checks each
    directory it opens); hard links inside the tree count once.
    """
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    total = st.st_blocks * 512
    if not stat.S_ISDIR(st.st_mode):
        return total
    seen: set[tuple[int, int]] = set()
    for _path, dirnames, filenames, fd in os.fwalk(name, dir_fd=dir_fd, follow_symlinks=False):
        for entry in filenames + dirnames:
            try:
                est = os.stat(entry, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:  # removed while we walk
                continue
            if est.st_nlink > 1 and not stat.S_ISDIR(est.st_mode):
                key = (est.st_dev, est.st_ino)
                if key in seen:
                    continue
                seen.add(key)
            total += est.st_blocks * 512
    return total


def measure_user(unix: str, users_root: str | os.PathLike) -> dict | None:
    """Sizes of one user's directories and trash items; None when the user has none.

    ``{"home": bytes|None, "workspace": ..., "cache": ..., "trash": bytes,
    "trash_items": {id: bytes}}`` (None: that directory does not exist).
    """
    dirs = user_dirs(unix, users_root)
    try:
        root_fd = _open_user_root(dirs)
    except (FileNotFoundError, UnsafePathError):
        return None
    try:
        sizes: dict = {}
        for volume in VOLUMES:
            try:
                sizes[volume] = tree_usage(volume, root_fd)
            except FileNotFoundError:
                sizes[volume] = None
        items: dict[str, int] = {}
        try:
            trash_fd = _open_existing_dir(TRASH_DIR, root_fd)
        except (FileNotFoundError, UnsafePathError):
            trash_fd = None
        if trash_fd is not None:
            try:
                for name in os.listdir(trash_fd):
                    if parse_trash_name(name) is not None:
                        try:
                            items[name] = tree_usage(name, trash_fd)
                        except FileNotFoundError:
                            pass
            finally:
                os.close(trash_fd)
        sizes["trash_items"] = items
        sizes["trash"] = sum(items.values())
        return sizes
    finally:
        os.close(root_fd)


def measure_all(users_root: str | os.PathLike) -> dict[str, dict]:
    """:func:`measure_user` for every per-user directory under users_root."""
    sizes = {}
    for unix in sorted(os.listdir(users_root)):
        if is_valid_unix_name(unix):
            measured = measure_user(unix, users_root)
            if measured is not None:
                sizes[unix] = measured
    return sizes


# --- command line: the purge timer's service, and sizes for an operator ---------

DEFAULT_PLATFORM_CONFIG = "/etc/jupyterhub/platform.json"


def _storage_settings(path: str) -> dict:
    from hub_ext.config import load_settings, validate_settings  # config imports this module's peers

    return validate_settings(load_settings(path))


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m hub_ext.storage",
        description="Per-user storage of the platform: purge expired trash, report sizes.",
    )
    parser.add_argument(
        "--config",
        default=DEFAULT_PLATFORM_CONFIG,
        help="platform.json giving users_root and storage.trash_retention_days",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    purge = sub.add_parser(
        "purge", help="delete trash items and deleted users' archives older than their retention"
    )
    purge.add_argument(
        "--retention-days", type=int, help="override storage.trash_retention_days"
    )
    purge.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    sub.add_parser("sizes", help="print every user's sizes as JSON")
    args = parser.parse_args(argv)

    try:
        settings = _storage_settings(args.config)
    except ValueError as e:
        print(f"hub_ext.storage: {e}", file=sys.stderr)
        return 2
    users_root = settings["users_root"]
    if args.command == "sizes":
        print(json.dumps(measure_all(users_root), indent=2, sort_keys=True))
        return 0

    days = args.retention_days
    if days is None:
        days = settings["storage"]["trash_retention_days"]
    if days < 1:
        print("hub_ext.storage: --retention-days must be >= 1", file=sys.stderr)
        return 2
    report = purge_trash(users_root, days * DAY, dry_run=args.dry_run)
    archive_days = settings["storage"]["deleted_user_retention_days"]
    archived = purge_archive(users_root, archive_days * DAY, dry_run=args.dry_run)
    report.purged += archived.purged
    report.kept += archived.kept
    report.errors += archived.errors
    verb = "would purge" if args.dry_run else "purged"
    for where, name in report.purged:
        print(f"{verb} {where}/{name}" if where == ARCHIVE_DIR else f"{verb} {where}/{TRASH_DIR}/{name}")
    for error in report.errors:
        print(f"error: {error}", file=sys.stderr)
    print(
        f"{len(report.purged)} item(s) {verb}, {report.kept} kept "
        f"(retention {days} day(s), deleted users {archive_days}), {len(report.errors)} error(s)"
    )
    return 1 if report.errors else 0

