"""The archive of deleted users: archive, list, restore, purge (over directory fds).

Deleting a hub user renames its whole directory <users_root>/<unix> (volumes
and trash) to <users_root>/.archive/<UTC stamp>-<unix>[.<n>]: root-owned 0700,
reached by no lab, one rename(2) on the same filesystem. A later user of the
same name therefore starts empty. An admin can put an item back (restore) until
the purge timer deletes it after its retention. ".archive" is not a valid unix
name, so nothing that walks the per-user directories mistakes it for a user.

Docs: docs/accounts.md, docs/storage.md.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass

from hub_ext.storage import fsops, layout, names, trash


def _open_archive(top_fd: int, create: bool) -> int:
    return fsops.open_private_dir(names.ARCHIVE_DIR, top_fd, create)


def _archive_root(top_fd: int, archive_fd: int, unix: str, now: float) -> names.ArchiveItem | None:
    """Move ``<users_root>/<unix>`` into the archive; None when there is none."""
    try:
        st = os.stat(unix, dir_fd=top_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        raise fsops.UnsafePathError(f"{unix!r} is a symlink or not a directory; refusing to archive it")
    name = fsops.move_aside(top_fd, unix, archive_fd, lambda n: names.archive_item_name(unix, now, n))
    return names.parse_archive_name(name)


def archive_user(
    unix: str, users_root: str | os.PathLike, *, now: float | None = None
) -> names.ArchiveItem | None:
    """Move one user's whole directory into the archive (the hub user was deleted).

    Returns the item, or None when the user has no directory. Only the entry
    ``<users_root>/<unix>`` of a valid unix name is ever renamed; a symlink or
    file in its place is refused, never followed.
    """
    layout.user_dirs(unix, users_root)  # the name and path checks
    now = time.time() if now is None else now
    top_fd = fsops.open_users_root(users_root)
    try:
        archive_fd = _open_archive(top_fd, create=True)
        try:
            return _archive_root(top_fd, archive_fd, unix, now)
        finally:
            os.close(archive_fd)
    finally:
        os.close(top_fd)


def list_archive(users_root: str | os.PathLike) -> list[names.ArchiveItem]:
    """Archived users' directories, newest first."""
    top_fd = fsops.open_users_root(users_root)
    try:
        return fsops.listed(lambda: _open_archive(top_fd, create=False), names.parse_archive_name)
    finally:
        os.close(top_fd)


@dataclass(frozen=True)
class ArchiveRestoreResult:
    restored: names.ArchiveItem
    displaced: names.ArchiveItem | None  # the directory that was in place, now archived


def restore_archived_user(
    users_root: str | os.PathLike, item_id, *, now: float | None = None
) -> ArchiveRestoreResult:
    """Put an archived directory back at ``<users_root>/<unix>``.

    The directory in place (a new user's) is archived first; nothing is ever
    overwritten. The caller makes sure no server of that user runs.
    """
    item = names.check_archive_item_id(item_id)
    now = time.time() if now is None else now
    top_fd = fsops.open_users_root(users_root)
    try:
        try:
            archive_fd = _open_archive(top_fd, create=False)
        except FileNotFoundError:
            raise fsops.TrashItemNotFoundError(item.id) from None
        try:
            fsops.item_directory(archive_fd, item.id, "archive item")
            displaced = _archive_root(top_fd, archive_fd, item.unix, now)
            fsops.rename_noreplace(item.id, archive_fd, item.unix, top_fd)
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
) -> trash.PurgeReport:
    """Delete archived directories older than ``retention_seconds``, never following a link."""
    now = time.time() if now is None else now
    report = trash.PurgeReport()
    top_fd = fsops.open_users_root(users_root)
    try:
        try:
            archive_fd = _open_archive(top_fd, create=False)
        except FileNotFoundError:
            return report
        except fsops.UnsafePathError as e:
            report.errors.append(f"{names.ARCHIVE_DIR}: {e}")
            return report
        try:
            trash.purge_expired(archive_fd, names.ARCHIVE_DIR, names.ARCHIVE_DIR, names.parse_archive_name,
                           lambda item: item.archived_at, now - retention_seconds, report, dry_run)
        finally:
            os.close(archive_fd)
    finally:
        os.close(top_fd)
    return report
