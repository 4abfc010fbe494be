"""Symlink-safe file operations: everything below works on directory file
descriptors, never on paths a user could swap for a symlink.

Directories are opened with ``O_NOFOLLOW`` (a symlink or a file in their place
is an :class:`UnsafePathError`), moves are one ``rename(2)`` on the same
filesystem that never replaces its target (:func:`rename_noreplace`), trees are
deleted fd-relative without following a link (:func:`remove_at`).
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

# root-only directories: the trash, the archive
PRIVATE_DIR_MODE = 0o700

Chown = Callable[[int, int, int], None]  # (fd, uid, gid), like os.fchown


class UnsafePathError(ValueError):
    """A per-user path escapes its root or is a symlink / not a directory."""


class TrashItemNotFoundError(LookupError):
    """No trash item of that name for this user."""


class StorageError(OSError):
    """A storage operation could not be carried out (reported, never half-done)."""


def open_dir_nofollow(name: str, dir_fd: int, mode: int) -> int:
    """mkdir name under dir_fd if missing, open it refusing symlinks; return the fd."""
    try:
        os.mkdir(name, mode, dir_fd=dir_fd)
    except FileExistsError:
        pass
    return open_existing_dir(name, dir_fd)


def claim(fd: int, uid: int, gid: int, mode: int, chown: Chown) -> None:
    # on the fd, never the path: the path could be swapped after the check
    chown(fd, uid, gid)
    os.fchmod(fd, mode)


def open_user_root(root: Path) -> int:
    """Open ``users_root/<unix>`` refusing a symlink; FileNotFoundError if missing."""
    parent_fd = os.open(root.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return open_existing_dir(root.name, parent_fd)
    finally:
        os.close(parent_fd)


def open_users_root(users_root: str | os.PathLike) -> int:
    if not Path(users_root).is_absolute():
        raise UnsafePathError(f"users_root must be absolute, got {str(users_root)!r}")
    return os.open(users_root, os.O_RDONLY | os.O_DIRECTORY)


def open_existing_dir(name: str, dir_fd: int) -> int:
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePathError(
                f"{name!r} is a symlink or not a directory; refusing to use it"
            ) from None
        raise


def open_private_dir(name: str, parent_fd: int, create: bool) -> int:
    """Open (or make) a root-only 0700 directory such as the trash or the archive."""
    if create:
        fd = open_dir_nofollow(name, parent_fd, PRIVATE_DIR_MODE)
    else:
        fd = open_existing_dir(name, parent_fd)
    os.fchmod(fd, PRIVATE_DIR_MODE)
    return fd


def exists_at(name: str, dir_fd: int) -> bool:
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
    if exists_at(dst, dst_dir_fd):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    os.rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)


def move_aside(src_fd: int, src: str, dst_fd: int, make_name: Callable[[int], str]) -> str:
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
            if not exists_at(src, src_fd):
                raise
            continue  # same microsecond as an earlier item: next suffix
        return name
    raise StorageError(errno.EEXIST, f"no free name to move {src} aside")


def listed(open_dir, parse) -> list:
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


def item_directory(dir_fd: int, item_id: str, what: str) -> os.stat_result:
    """The stat of a trash or archive item, which must be a real directory."""
    try:
        st = os.stat(item_id, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise TrashItemNotFoundError(item_id) from None
    if not stat.S_ISDIR(st.st_mode):
        raise StorageError(errno.ENOTDIR, f"{what} {item_id} is not a directory")
    return st


def remove_at(dir_fd: int, name: str) -> None:
    """Delete ``name`` under dir_fd; a directory tree without following any symlink."""
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        # the fd-based rmtree: opens every directory with O_NOFOLLOW and
        # unlinks symlinks as entries (shutil.rmtree.avoids_symlink_attacks)
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)
