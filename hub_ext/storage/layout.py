"""Where a user's directories are on the host and where they appear in a lab.

Layout: ``<users_root>/<unix>/{home,workspace,cache}``, each owned by the user,
mode 0700. ``<users_root>/<unix>`` itself stays root-owned so the user cannot
swap its children for symlinks. The hub runs as root, so every step opens
directories without following symlinks (:mod:`.fsops`): a user who replaces
``home/workspace`` with a link to ``/etc`` gets an error, not ``/etc`` chowned.
Docs: docs/storage.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hub_ext.accounts.unix_users import check_unix_name
from hub_ext.storage import fsops

USER_DIR_MODE = 0o700
# traverse-only: the lab reaches its dirs through bind mounts, nobody lists them
USER_ROOT_MODE = 0o711
SHARED_MOUNT_POINT = "/mnt/shared"

# where each per-user directory appears inside the lab, relative to $HOME
IN_HOME = {"workspace": "workspace", "cache": ".cache"}


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
        raise fsops.UnsafePathError(f"users_root must be absolute, got {str(users_root)!r}")
    root = users_root / unix
    dirs = UserDirs(
        root=root, home=root / "home", workspace=root / "workspace", cache=root / "cache"
    )
    # resolve() follows existing symlinks and "..": anything outside is refused
    resolved_root = root.resolve()
    for path in dirs.all():
        if not path.resolve().is_relative_to(resolved_root):
            raise fsops.UnsafePathError(f"{path} resolves outside {root}")
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
        f"{dirs.workspace}:{home}/{IN_HOME['workspace']}",
        f"{dirs.cache}:{home}/{IN_HOME['cache']}",
    ]
    if shared_dir:
        entries.append(f"{shared_dir}:{SHARED_MOUNT_POINT}")
    return entries


def ensure_user_dirs(
    unix: str,
    users_root: str | os.PathLike,
    uid: int,
    gid: int,
    chown: fsops.Chown = os.fchown,
) -> UserDirs:
    """Create (or repair) one user's directories and the mount points in home.

    Idempotent. ``users_root`` must exist (Ansible creates it). ``chown``
    is the seam unit tests replace; it receives an open directory fd.
    """
    dirs = user_dirs(unix, users_root)
    root_parent_fd = os.open(dirs.root.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        root_fd = fsops.open_dir_nofollow(dirs.root.name, root_parent_fd, USER_ROOT_MODE)
    finally:
        os.close(root_parent_fd)
    try:
        os.fchmod(root_fd, USER_ROOT_MODE)
        for path in dirs.all():
            ensure_volume(root_fd, path.name, uid, gid, chown)
    finally:
        os.close(root_fd)
    return dirs


def ensure_volume(root_fd: int, volume: str, uid: int, gid: int, chown: fsops.Chown) -> None:
    fd = fsops.open_dir_nofollow(volume, root_fd, USER_DIR_MODE)
    try:
        fsops.claim(fd, uid, gid, USER_DIR_MODE, chown)
        if volume == "home":
            # empty mount points, owned by the user so ls -la looks sane
            for in_home in IN_HOME.values():
                mount_fd = fsops.open_dir_nofollow(in_home, fd, USER_DIR_MODE)
                try:
                    fsops.claim(mount_fd, uid, gid, USER_DIR_MODE, chown)
                finally:
                    os.close(mount_fd)
    finally:
        os.close(fd)
