import os
import stat

import pytest

from hub_ext.accounts.unix_users import InvalidNameError
from hub_ext.storage.fsops import UnsafePathError
from hub_ext.storage.layout import bind_paths, ensure_user_dirs, user_dirs

from .fakes import T0, RecordingChown


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


# --- reset to trash, restore, purge, sizes -------------------------------------------

import hashlib  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from hub_ext.storage import archive, fsops, names, sizes, trash  # noqa: E402


def tree_manifest(top):
    """Every entry below top: relative path -> (type, mode, content hash / link target)."""
    manifest = {}
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, top)
            if stat.S_ISLNK(st.st_mode):
                manifest[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                manifest[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                manifest[rel] = ("file", stat.S_IMODE(st.st_mode), digest)
    return manifest


@pytest.fixture
def users(tmp_path):
    """users_root with alice (files, nested dirs, planted symlinks) and bob; plus an 'etc' outside."""
    root = tmp_path / "users"
    root.mkdir()
    outside = tmp_path / "etc"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0\n")
    alice = ensure_user_dirs("jh-alice", root, 1000, 1000, chown=RecordingChown())
    bob = ensure_user_dirs("jh-bob", root, 1001, 1001, chown=RecordingChown())
    (bob.workspace / "secret.txt").write_text("bob's")
    (alice.workspace / "notebook.ipynb").write_text("{}")
    (alice.workspace / "deep" / "er").mkdir(parents=True)
    (alice.workspace / "deep" / "er" / "data.csv").write_text("a,b\n1,2\n")
    # links planted by alice, pointing at bob's files and at "/etc"
    (alice.workspace / "to-bob").symlink_to(bob.workspace)
    (alice.workspace / "deep" / "to-etc").symlink_to(outside)
    (alice.workspace / "to-passwd").symlink_to(outside / "passwd")
    (alice.home / ".bashrc").write_text("export A=1\n")
    return root, outside, alice, bob


def outside_state(outside, bob):
    return tree_manifest(outside), tree_manifest(bob.root)


def test_check_volume_names_accepts_only_the_whitelist():
    assert names.check_volume_names(["cache", "home", "cache"]) == ["cache", "home"]
    bad = [
        None, "home", {"home": 1}, [], [""], [".."], ["/etc"], ["home/../../x"], ["shared"],
        ["HOME"], ["home "], [1], [None], [["home"]], ["x" * 10_000], [".trash"],
    ]
    for volumes in bad:
        with pytest.raises(names.VolumeNameError):
            names.check_volume_names(volumes)
    with pytest.raises(names.VolumeNameError) as e:
        names.check_volume_names(["x" * 10_000])
    assert len(str(e.value)) < 200  # long names are not echoed whole


def test_trash_names_round_trip_and_reject_everything_else():
    name = names.trash_item_name("workspace", T0 + 0.25)
    assert name == "20231114T221320.250000Z-workspace"
    item = names.parse_trash_name(name)
    assert (item.volume, item.trashed_at) == ("workspace", T0 + 0.25)
    assert names.parse_trash_name(names.trash_item_name("home", T0, 3)).id.endswith("-home-3")
    for bad in ["", "..", "../x", "20231114T221320.250000Z-shared", "20231114T221320Z-home",
                "20231114T221320.250000Z-home/../../etc", "x/20231114T221320.250000Z-home",
                "20231399T221320.250000Z-home", None, 5, "20231114T221320.250000Z-home\n"]:
        assert names.parse_trash_name(bad) is None, bad
        with pytest.raises(names.VolumeNameError):
            names.check_trash_item_id(bad)


def test_reset_moves_into_trash_and_recreates_empty_with_owner_and_mode(users):
    root, outside, alice, bob = users
    before_outside = outside_state(outside, bob)
    before = tree_manifest(alice.workspace)
    chown = RecordingChown()

    result = trash.reset_volumes("jh-alice", root, ["workspace", "home"], owner=(1000, 1000),
                                   now=T0, chown=chown)

    assert result.reset_volumes == ["workspace", "home"] and result.failed_volumes == []
    assert os.listdir(alice.workspace) == []
    assert mode(alice.workspace) == 0o700 and chown.calls[str(alice.workspace)] == (1000, 1000)
    assert sorted(os.listdir(alice.home)) == [".cache", "workspace"]  # mount points again
    trash_dir = alice.root / ".trash"
    assert mode(trash_dir) == 0o700
    assert sorted(os.listdir(trash_dir)) == [
        "20231114T221320.000000Z-home", "20231114T221320.000000Z-workspace"]
    # moved whole, links still links, never followed
    assert tree_manifest(trash_dir / "20231114T221320.000000Z-workspace") == before
    assert os.readlink(trash_dir / "20231114T221320.000000Z-workspace" / "to-bob") == str(bob.workspace)
    assert outside_state(outside, bob) == before_outside
    assert [i.id for i in trash.list_trash("jh-alice", root)] == [
        "20231114T221320.000000Z-workspace", "20231114T221320.000000Z-home"]


def test_reset_keeps_the_old_owner_without_an_account(users):
    root, _, alice, _ = users
    st = os.stat(alice.cache)
    chown = RecordingChown()
    trash.reset_volumes("jh-alice", root, ["cache"], now=T0, chown=chown)
    assert chown.calls[str(alice.cache)] == (st.st_uid, st.st_gid)


def test_reset_is_a_rename_on_the_same_filesystem(users, monkeypatch):
    root, _, alice, _ = users
    calls = []
    real = fsops.rename_noreplace

    def spy(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(fsops, "rename_noreplace", spy)
    monkeypatch.setattr(fsops.shutil, "copytree", lambda *a, **k: pytest.fail("copied"))
    trash.reset_volumes("jh-alice", root, ["workspace"], now=T0, chown=RecordingChown())
    assert len(calls) == 1 and calls[0][0] == "workspace"


def test_reset_refuses_a_trash_on_another_filesystem(users, monkeypatch):
    root, _, alice, _ = users
    real_fstat = os.fstat
    trash_ino = []

    def fstat(fd):
        st = real_fstat(fd)
        if os.readlink(f"/proc/self/fd/{fd}").endswith("/.trash"):
            trash_ino.append(st.st_ino)
            return os.stat_result((st.st_mode, st.st_ino, st.st_dev + 1, *st[3:10]))
        return st

    monkeypatch.setattr(fsops.os, "fstat", fstat)
    result = trash.reset_volumes("jh-alice", root, ["workspace"], now=T0, chown=RecordingChown())
    assert result.reset_volumes == [] and "filesystem" in result.failed_volumes[0]["reason"]
    assert (alice.workspace / "notebook.ipynb").exists()


def test_reset_of_missing_user_or_volume_reports_not_found(users):
    root, _, alice, _ = users
    result = trash.reset_volumes("jh-nobody", root, ["home"], now=T0)
    assert result.failed_volumes == [{"volume": "home", "reason": "not found"}]
    alice.cache.rmdir()
    result = trash.reset_volumes("jh-alice", root, ["cache"], now=T0, chown=RecordingChown())
    assert result.failed_volumes == [{"volume": "cache", "reason": "not found"}]
    assert not alice.cache.exists()


def test_reset_leaves_a_non_directory_alone(users):
    root, outside, alice, _ = users
    alice.cache.rmdir()
    alice.cache.symlink_to(outside)  # only root could plant this (the user root is root-owned)
    with pytest.raises(UnsafePathError):
        trash.reset_volumes("jh-alice", root, ["cache"], now=T0, chown=RecordingChown())
    assert alice.cache.is_symlink() and not (alice.root / ".trash").exists()
    # a link inside the user root pointing inside it: moved as a link, never followed
    alice.cache.unlink()
    alice.cache.symlink_to(alice.workspace)
    result = trash.reset_volumes("jh-alice", root, ["cache"], now=T0, chown=RecordingChown())
    assert result.failed_volumes[0]["volume"] == "cache" and alice.cache.is_symlink()
    assert (alice.workspace / "notebook.ipynb").exists()
    assert (outside / "passwd").read_text() == "root:x:0:0\n"


def test_reset_refuses_a_symlinked_user_root(users, tmp_path):
    root, _, _, bob = users
    (root / "jh-eve").symlink_to(bob.root)
    with pytest.raises(UnsafePathError):
        trash.reset_volumes("jh-eve", root, ["workspace"], now=T0)
    assert (bob.workspace / "secret.txt").exists()


def test_bad_names_touch_nothing(users):
    root, _, alice, _ = users
    before = tree_manifest(alice.root)
    for volumes in (["home", "../jh-bob/workspace"], ["workspace", ""], "home"):
        with pytest.raises(names.VolumeNameError):
            trash.reset_volumes("jh-alice", root, volumes, now=T0)
    assert tree_manifest(alice.root) == before


def test_two_resets_in_the_same_microsecond_get_distinct_items(users):
    root, _, alice, _ = users
    first = trash.reset_volumes("jh-alice", root, ["cache"], now=T0, chown=RecordingChown())
    second = trash.reset_volumes("jh-alice", root, ["cache"], now=T0, chown=RecordingChown())
    assert first.trashed[0].id != second.trashed[0].id
    assert second.trashed[0].id.endswith("-cache-1")


def test_restore_round_trip_returns_every_file_and_never_overwrites(users):
    root, outside, alice, bob = users
    before = tree_manifest(alice.workspace)
    before_outside = outside_state(outside, bob)
    result = trash.reset_volumes("jh-alice", root, ["workspace"], now=T0, chown=RecordingChown())
    (alice.workspace / "new.txt").write_text("written after the reset")

    restored = trash.restore_trash_item("jh-alice", root, result.trashed[0].id, now=T0 + 60,
                                          chown=RecordingChown())

    assert restored.volume == "workspace" and restored.displaced is not None
    assert tree_manifest(alice.workspace) == before
    # what was in place went to the trash, not away
    displaced = alice.root / ".trash" / restored.displaced.id
    assert (displaced / "new.txt").read_text() == "written after the reset"
    assert [i.id for i in trash.list_trash("jh-alice", root)] == [restored.displaced.id]
    assert outside_state(outside, bob) == before_outside


def test_restore_into_a_missing_directory_and_unknown_items(users):
    root, _, alice, _ = users
    result = trash.reset_volumes("jh-alice", root, ["cache"], now=T0, chown=RecordingChown())
    alice.cache.rmdir()
    restored = trash.restore_trash_item("jh-alice", root, result.trashed[0].id, chown=RecordingChown())
    assert restored.displaced is None and alice.cache.is_dir()
    with pytest.raises(fsops.TrashItemNotFoundError):
        trash.restore_trash_item("jh-alice", root, result.trashed[0].id)
    with pytest.raises(fsops.TrashItemNotFoundError):
        trash.restore_trash_item("jh-nobody", root, result.trashed[0].id)
    with pytest.raises(names.VolumeNameError):
        trash.restore_trash_item("jh-alice", root, "../../jh-bob/workspace")


def test_rename_noreplace_refuses_an_existing_target(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()  # empty: plain rename(2) would replace it
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(FileExistsError):
            fsops.rename_noreplace("a", fd, "b", fd)
        fsops.rename_noreplace("a", fd, "c", fd)
    finally:
        os.close(fd)
    assert sorted(os.listdir(tmp_path)) == ["b", "c"]


def test_purge_deletes_only_expired_items_without_following_symlinks(users):
    root, outside, alice, bob = users
    before_outside = outside_state(outside, bob)
    old = trash.reset_volumes("jh-alice", root, ["workspace"], now=T0, chown=RecordingChown())
    new = trash.reset_volumes("jh-alice", root, ["cache"], now=T0 + 6 * names.DAY,
                                chown=RecordingChown())
    trash_dir = alice.root / ".trash"
    (trash_dir / "not-an-item").mkdir()
    # links straight inside the trash_dir, and a read-only directory in the item
    (trash_dir / old.trashed[0].id / "deep").chmod(0o500)

    report = trash.purge_trash(root, 7 * names.DAY, now=T0 + 7 * names.DAY + 1)

    assert report.purged == [("jh-alice", old.trashed[0].id)] and report.errors == []
    assert report.kept == 1
    assert sorted(os.listdir(trash_dir)) == sorted([new.trashed[0].id, "not-an-item"])
    assert outside_state(outside, bob) == before_outside
    assert (bob.workspace / "secret.txt").read_text() == "bob's"


def test_purge_skips_symlinked_user_roots_and_trash(users):
    root, outside, alice, bob = users
    trash.reset_volumes("jh-bob", root, ["workspace"], now=T0, chown=RecordingChown())
    bob_trash = sorted(os.listdir(bob.root / ".trash"))
    (root / "jh-eve").symlink_to(bob.root)  # a user root that is a link
    (alice.root / ".trash").symlink_to(bob.root / ".trash")  # a trash that is a link
    report = trash.purge_trash(root, names.DAY, now=T0 + 30 * names.DAY, dry_run=False)
    assert report.purged == [("jh-bob", bob_trash[0])]
    assert any("jh-eve" in e for e in report.errors)
    assert any("jh-alice/.trash" in e for e in report.errors)
    assert (outside / "passwd").exists()


def test_purge_dry_run_deletes_nothing(users):
    root, _, alice, _ = users
    trash.reset_volumes("jh-alice", root, ["cache"], now=T0, chown=RecordingChown())
    report = trash.purge_trash(root, 1, now=T0 + 10, dry_run=True)
    assert len(report.purged) == 1 and len(os.listdir(alice.root / ".trash")) == 1


def test_sizes_count_blocks_once_and_never_follow_links(users):
    root, outside, alice, _ = users
    (outside / "big").write_bytes(b"x" * 1_000_000)
    (alice.workspace / "blob").write_bytes(b"y" * 200_000)
    os.link(alice.workspace / "blob", alice.workspace / "blob-again")
    measured = sizes.measure_user("jh-alice", root)
    blob = os.stat(alice.workspace / "blob").st_blocks * 512
    assert blob <= measured["workspace"] < blob + 100_000  # the hard link counts once, /etc not at all
    trash.reset_volumes("jh-alice", root, ["workspace"], now=T0, chown=RecordingChown())
    measured = sizes.measure_user("jh-alice", root)
    assert measured["workspace"] == os.stat(alice.workspace).st_blocks * 512
    assert list(measured["trash_items"]) == ["20231114T221320.000000Z-workspace"]
    assert measured["trash"] >= blob
    assert sizes.measure_user("jh-nobody", root) is None
    assert set(sizes.measure_all(root)) == {"jh-alice", "jh-bob"}


def test_trash_item_json():
    item = names.parse_trash_name("20231114T221320.000000Z-home")
    assert item.to_json(7 * names.DAY, 4096) == {
        "id": "20231114T221320.000000Z-home",
        "volume": "home",
        "trashed_at": "2023-11-14T22:13:20Z",
        "expires_at": "2023-11-21T22:13:20Z",
        "size_bytes": 4096,
    }


def test_cli_purge_reads_the_retention_from_platform_config(users, platform_config, tmp_path):
    root, _, alice, _ = users
    now = time.time()
    trash.reset_volumes("jh-alice", root, ["cache"], now=now - 3 * names.DAY, chown=RecordingChown())
    trash.reset_volumes("jh-alice", root, ["home"], now=now - 1 * names.DAY, chown=RecordingChown())
    storage = platform_config["StorageManager"]
    storage["users_root"] = str(root)  # the hub's own file (test_settings.py holds it to the traits)
    archive.archive_user("jh-bob", root, now=now - 6 * names.DAY)
    storage.update(trash_retention_days=2, deleted_user_retention_days=5)
    config = tmp_path / "platform_config.json"
    config.write_text(json.dumps(platform_config))
    cli = [sys.executable, "-m", "hub_ext.storage", "--config", str(config)]
    dry = subprocess.run(cli + ["purge", "--dry-run"], capture_output=True, text=True)
    assert dry.returncode == 0 and "would purge jh-alice/.trash/" in dry.stdout
    assert "would purge .archive/" in dry.stdout
    assert len(os.listdir(alice.root / ".trash")) == 2
    run = subprocess.run(cli + ["purge"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "2 item(s) purged, 1 kept (retention 2 day(s), deleted users 5)" in run.stdout
    assert os.listdir(root / ".archive") == []
    assert [n.endswith("-home") for n in os.listdir(alice.root / ".trash")] == [True]
    listed = subprocess.run(cli + ["sizes"], capture_output=True, text=True)
    assert json.loads(listed.stdout)["jh-alice"]["trash"] > 0
    storage["trash_retention_days"] = 0
    config.write_text(json.dumps(platform_config))
    bad = subprocess.run(cli + ["purge"], capture_output=True, text=True)
    assert bad.returncode == 2 and "StorageManager.trash_retention_days" in bad.stderr, bad.stderr


# --- the archive of deleted users ----------------------------------------------------


def test_archive_moves_the_whole_user_away_and_a_new_user_starts_empty(users):
    root, outside, alice, bob = users
    before = outside_state(outside, bob)
    trash.reset_volumes("jh-alice", root, ["cache"], chown=RecordingChown())
    old_alice = tree_manifest(alice.root)
    item = archive.archive_user("jh-alice", root)
    assert item.unix == "jh-alice" and not alice.root.exists()
    assert mode(root / ".archive") == 0o700
    # every file (trash included, links as links) is in the archive, unchanged
    assert tree_manifest(root / ".archive" / item.id) == old_alice
    assert outside_state(outside, bob) == before
    fresh = ensure_user_dirs("jh-alice", root, 1000, 1000, chown=RecordingChown())
    assert [sorted(os.listdir(d)) for d in fresh.all()] == [[".cache", "workspace"], [], []]
    assert archive.archive_user("jh-nobody", root) is None
    assert [i.id for i in archive.list_archive(root)] == [item.id]


@pytest.mark.parametrize("name", ["../etc", ".archive", "jh-alice/workspace", "", "a" * 40])
def test_archive_refuses_names_outside_one_user(users, name):
    root, outside, alice, bob = users
    with pytest.raises((InvalidNameError, UnsafePathError)):
        archive.archive_user(name, root)
    assert alice.root.exists() and bob.root.exists()


def test_archive_refuses_a_symlink_in_place_of_the_user_root(users):
    root, outside, alice, bob = users
    (root / "jh-mallory").symlink_to(outside)
    before = outside_state(outside, bob)
    with pytest.raises(UnsafePathError):
        archive.archive_user("jh-mallory", root)
    assert (root / "jh-mallory").is_symlink() and outside_state(outside, bob) == before


def test_restore_puts_the_old_directories_back_and_archives_the_new_ones(users):
    root, outside, alice, bob = users
    old_alice = tree_manifest(alice.root)
    item = archive.archive_user("jh-alice", root, now=1_700_000_000)
    ensure_user_dirs("jh-alice", root, 1000, 1000, chown=RecordingChown())
    (alice.workspace / "new.txt").write_text("new alice")
    result = archive.restore_archived_user(root, item.id, now=1_700_000_100)
    assert result.restored == item and result.displaced.unix == "jh-alice"
    assert tree_manifest(alice.root) == old_alice
    assert (root / ".archive" / result.displaced.id / "workspace" / "new.txt").exists()
    with pytest.raises(fsops.TrashItemNotFoundError):
        archive.restore_archived_user(root, item.id)
    for bad in ("../../etc", "20260101T000000.000000Z-../x", None, "20260101T000000.000000Z-.archive"):
        with pytest.raises(names.VolumeNameError):
            archive.restore_archived_user(root, bad)


def test_purge_archive_deletes_expired_items_without_following_links(users):
    root, outside, alice, bob = users
    before = outside_state(outside, bob)
    old = archive.archive_user("jh-alice", root, now=time.time() - 10 * names.DAY)
    recent = archive.archive_user("jh-bob", root)
    report = archive.purge_archive(root, 5 * names.DAY)
    assert report.purged == [(".archive", old.id)] and report.kept == 1 and not report.errors
    assert os.listdir(root / ".archive") == [recent.id]
    assert tree_manifest(outside) == before[0]  # alice's links into /etc were removed as links


@pytest.mark.parametrize(("unix", "template", "hub"), [
    ("jh-alice", "jh-{USERNAME}", "alice"),
    ("jh-bob-2", "jh-{USERNAME}", "bob-2"),
    ("alice-x", "{USERNAME}-x", "alice"),
    ("jh-", "jh-{USERNAME}", None),
    ("root", "jh-{USERNAME}", None),
    ("jh-Bad", "jh-{USERNAME}", None),
])
def test_hub_name_for_unix(unix, template, hub):
    from hub_ext.accounts.unix_users import hub_name_for_unix

    assert hub_name_for_unix(unix, template) == hub
