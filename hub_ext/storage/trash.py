"""Reset to the trash, restore, list and purge: plain functions over directory fds.

* reset: rename each directory into ``<users_root>/<unix>/.trash`` (same
  filesystem, so constant time) and recreate it empty with owner and mode;
* restore: the current directory goes to the trash first, then the item is
  renamed back with ``RENAME_NOREPLACE``: nothing is ever overwritten;
* purge: items older than the retention are deleted fd-relative, symlinks
  removed as links (``python -m hub_ext.storage purge``, run by a systemd timer).

Docs: docs/storage.md.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field

from hub_ext.accounts.unix_users import is_valid_unix_name
from hub_ext.storage import fsops, layout, names

# Trash layout: <users_root>/<unix>/.trash/<UTC stamp>-<volume>[-<n>], root-owned
# 0700, beside the directories it receives: a reset is one rename(2) within the
# user's root, so it never copies and costs the same for 1 file or 100k. A
# trashed directory keeps its owner and contents; the user cannot reach it (the
# lab binds only home/workspace/cache), only restore it through the hub.


def open_trash(root_fd: int, create: bool) -> int:
    return fsops.open_private_dir(names.TRASH_DIR, root_fd, create)


def move_to_trash(root_fd: int, trash_fd: int, volume: str, now: float) -> names.TrashItem:
    """Rename ``root/volume`` (whatever it is: never followed) into the trash."""
    name = fsops.move_aside(root_fd, volume, trash_fd, lambda n: names.trash_item_name(volume, now, n))
    return names.parse_trash_name(name)


@dataclass
class ResetResult:
    reset_volumes: list[str] = field(default_factory=list)
    failed_volumes: list[dict] = field(default_factory=list)
    trashed: list[names.TrashItem] = field(default_factory=list)


def reset_volumes(
    unix: str,
    users_root: str | os.PathLike,
    volumes,
    *,
    owner: tuple[int, int] | None = None,
    now: float | None = None,
    chown: fsops.Chown = os.fchown,
) -> ResetResult:
    """Move each named directory into the user's trash and recreate it empty.

    ``owner`` (uid, gid) of the new directories; None: the old directory's.
    The caller makes sure the user's server is not running. A volume that does
    not exist or is not a directory is reported in ``failed_volumes`` and left
    alone. Raises VolumeNameError before touching anything for a bad name.
    """
    volumes = names.check_volume_names(volumes)
    dirs = layout.user_dirs(unix, users_root)
    now = time.time() if now is None else now
    result = ResetResult()
    try:
        root_fd = fsops.open_user_root(dirs.root)
    except FileNotFoundError:
        result.failed_volumes = [{"volume": v, "reason": "not found"} for v in volumes]
        return result
    try:
        trash_fd = open_trash(root_fd, create=True)
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
                    item = move_to_trash(root_fd, trash_fd, volume, now)
                    uid, gid = owner if owner is not None else (st.st_uid, st.st_gid)
                    layout.ensure_volume(root_fd, volume, uid, gid, chown)
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


def list_trash(unix: str, users_root: str | os.PathLike) -> list[names.TrashItem]:
    """The user's trash items, newest first (names that are not items are skipped)."""
    dirs = layout.user_dirs(unix, users_root)
    try:
        root_fd = fsops.open_user_root(dirs.root)
    except FileNotFoundError:
        return []
    try:
        return fsops.listed(lambda: fsops.open_existing_dir(names.TRASH_DIR, root_fd), names.parse_trash_name)
    finally:
        os.close(root_fd)


@dataclass(frozen=True)
class RestoreResult:
    volume: str
    restored: names.TrashItem
    displaced: names.TrashItem | None  # the directory that was in place, now in the trash


def restore_trash_item(
    unix: str,
    users_root: str | os.PathLike,
    item_id,
    *,
    now: float | None = None,
    chown: fsops.Chown = os.fchown,
) -> RestoreResult:
    """Put a trashed directory back in place; the current one goes to the trash first.

    Never overwrites: the rename into place refuses an existing target.
    The caller makes sure the user's server is not running.
    """
    item = names.check_trash_item_id(item_id)
    dirs = layout.user_dirs(unix, users_root)
    now = time.time() if now is None else now
    try:
        root_fd = fsops.open_user_root(dirs.root)
    except FileNotFoundError:
        raise fsops.TrashItemNotFoundError(item.id) from None
    try:
        try:
            trash_fd = fsops.open_existing_dir(names.TRASH_DIR, root_fd)
        except FileNotFoundError:
            raise fsops.TrashItemNotFoundError(item.id) from None
        try:
            st = fsops.item_directory(trash_fd, item.id, "trash item")
            displaced = None
            if fsops.exists_at(item.volume, root_fd):
                displaced = move_to_trash(root_fd, trash_fd, item.volume, now)
            fsops.rename_noreplace(item.id, trash_fd, item.volume, root_fd)
            # modes and the mount points in home, as a spawn would repair them
            layout.ensure_volume(root_fd, item.volume, st.st_uid, st.st_gid, chown)
        finally:
            os.close(trash_fd)
    finally:
        os.close(root_fd)
    return RestoreResult(volume=item.volume, restored=item, displaced=displaced)


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
    top_fd = fsops.open_users_root(users_root)
    try:
        for unix in sorted(os.listdir(top_fd)):
            if not is_valid_unix_name(unix):
                continue
            try:
                root_fd = fsops.open_existing_dir(unix, top_fd)
            except (fsops.UnsafePathError, FileNotFoundError) as e:
                report.errors.append(f"{unix}: {e}")
                continue
            try:
                try:
                    trash_fd = fsops.open_existing_dir(names.TRASH_DIR, root_fd)
                except FileNotFoundError:
                    continue
                except fsops.UnsafePathError as e:
                    report.errors.append(f"{unix}/{names.TRASH_DIR}: {e}")
                    continue
                try:
                    purge_expired(trash_fd, unix, f"{unix}/{names.TRASH_DIR}", names.parse_trash_name,
                                   lambda item: item.trashed_at, cutoff, report, dry_run)
                finally:
                    os.close(trash_fd)
            finally:
                os.close(root_fd)
    finally:
        os.close(top_fd)
    return report


def purge_expired(dir_fd, owner, where, parse, stamp, cutoff, report, dry_run) -> None:
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
                fsops.remove_at(dir_fd, name)
            report.purged.append((owner, name))
        except OSError as e:
            report.errors.append(f"{where}/{name}: {e}")
