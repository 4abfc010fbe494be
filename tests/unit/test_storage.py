import os
import stat

import pytest

from hub_ext.accounts import InvalidNameError
from hub_ext.storage import UnsafePathError, bind_paths, ensure_user_dirs, user_dirs


class RecordingChown:
    """Stands in for os.fchown: records which directory got which owner."""

    def __init__(self):
        self.calls = {}

    def __call__(self, fd, uid, gid):
        self.calls[os.readlink(f"/proc/self/fd/{fd}")] = (uid, gid)


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_user_dirs_layout(tmp_path):
    dirs = user_dirs("jh-alice", tmp_path)
    assert dirs.root == tmp_path / "jh-alice"
    assert dirs.home == tmp_path / "jh-alice" / "home"
    assert dirs.workspace == tmp_path / "jh-alice" / "workspace"
    assert dirs.cache == tmp_path / "jh-alice" / "cache"


def test_ensure_user_dirs_creates_owned_private_dirs(tmp_path):
    chown = RecordingChown()
    dirs = ensure_user_dirs("jh-alice", tmp_path, 1234, 5678, chown=chown)

    expected = [
        dirs.home,
        dirs.workspace,
        dirs.cache,
        dirs.home / "workspace",  # mount points inside home
        dirs.home / ".cache",
    ]
    for path in expected:
        assert path.is_dir() and not path.is_symlink()
        assert mode(path) == 0o700, path
        assert chown.calls[str(path)] == (1234, 5678), path
    # the user's root stays root-owned (not chowned) and traverse-only
    assert str(dirs.root) not in chown.calls
    assert mode(dirs.root) == 0o711
    assert sorted(p.name for p in (dirs.home).iterdir()) == [".cache", "workspace"]


def test_ensure_user_dirs_is_idempotent_and_repairs_modes(tmp_path):
    chown = RecordingChown()
    dirs = ensure_user_dirs("jh-alice", tmp_path, 1, 1, chown=chown)
    (dirs.workspace / "notebook.ipynb").write_text("{}")
    os.chmod(dirs.workspace, 0o777)

    ensure_user_dirs("jh-alice", tmp_path, 1, 1, chown=chown)
    assert mode(dirs.workspace) == 0o700
    assert (dirs.workspace / "notebook.ipynb").read_text() == "{}"  # data kept


def test_refuses_symlinked_user_dir(tmp_path):
    users_root = tmp_path / "users"
    users_root.mkdir()
    outside = tmp_path / "etc"
    outside.mkdir()
    (users_root / "jh-eve").mkdir()
    (users_root / "jh-eve" / "workspace").symlink_to(outside)

    chown = RecordingChown()
    with pytest.raises(UnsafePathError, match="outside"):
        ensure_user_dirs("jh-eve", users_root, 1, 1, chown=chown)
    assert chown.calls == {}


def test_refuses_symlink_swapped_mount_point_in_home(tmp_path):
    # the user owns home and may replace home/workspace with a link to /etc
    users_root = tmp_path / "users"
    users_root.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    dirs = ensure_user_dirs("jh-eve", users_root, 1, 1, chown=RecordingChown())
    (dirs.home / "workspace").rmdir()
    (dirs.home / "workspace").symlink_to(target)

    chown = RecordingChown()
    with pytest.raises(UnsafePathError, match="symlink"):
        ensure_user_dirs("jh-eve", users_root, 1, 1, chown=chown)
    assert str(target) not in chown.calls


def test_refuses_file_in_place_of_dir(tmp_path):
    (tmp_path / "jh-eve").mkdir()
    (tmp_path / "jh-eve" / "home").write_text("not a dir")
    with pytest.raises(UnsafePathError, match="not a directory"):
        ensure_user_dirs("jh-eve", tmp_path, 1, 1, chown=RecordingChown())


@pytest.mark.parametrize("unix", ["..", "../etc", "a/b", "", "Root"])
def test_refuses_path_escaping_names(tmp_path, unix):
    with pytest.raises(InvalidNameError):
        user_dirs(unix, tmp_path)


def test_refuses_relative_users_root():
    with pytest.raises(UnsafePathError, match="absolute"):
        user_dirs("jh-alice", "srv/users")


def test_bind_paths_order_and_targets():
    assert bind_paths("jh-alice", "/srv/jupyterhub/users", "/srv/jupyterhub/shared") == [
        "/srv/jupyterhub/users/jh-alice/home:/home/jh-alice",
        "/srv/jupyterhub/users/jh-alice/workspace:/home/jh-alice/workspace",
        "/srv/jupyterhub/users/jh-alice/cache:/home/jh-alice/.cache",
        "/srv/jupyterhub/shared:/mnt/shared",
    ]


def test_bind_paths_without_shared_dir():
    entries = bind_paths("jh-alice", "/srv/users", None)
    assert len(entries) == 3 and not any("/mnt/shared" in e for e in entries)
