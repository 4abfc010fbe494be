"""Disk usage of the users' directories and trash items, for a worker thread.

``os.fwalk`` without following symlinks; blocks like ``du``, hard links once.
Docs: docs/storage.md ("Sizes").
"""

from __future__ import annotations

import os
import stat

from hub_ext.accounts.unix_users import is_valid_unix_name
from hub_ext.storage import fsops, layout, names


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
    dirs = layout.user_dirs(unix, users_root)
    try:
        root_fd = fsops.open_user_root(dirs.root)
    except (FileNotFoundError, fsops.UnsafePathError):
        return None
    try:
        sizes: dict = {}
        for volume in names.VOLUMES:
            try:
                sizes[volume] = tree_usage(volume, root_fd)
            except FileNotFoundError:
                sizes[volume] = None
        items: dict[str, int] = {}
        try:
            trash_fd = fsops.open_existing_dir(names.TRASH_DIR, root_fd)
        except (FileNotFoundError, fsops.UnsafePathError):
            trash_fd = None
        if trash_fd is not None:
            try:
                for name in os.listdir(trash_fd):
                    if names.parse_trash_name(name) is not None:
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
