"""hub_ext.storage.quota: the commands per filesystem, the parsers (a recorded
``btrfs qgroup show``; ``repquota``/``xfs_quota`` in their documented formats);
hub_ext.storage.quota_ops: the helper's steps against a fake executor; the CLI
(``python -m hub_ext.storage quota``), and the hub's side (StorageManager's
figures, the spawner's apply unit).

What runs for real only on the enforcing test host: btrfs
(tests/integration/test_resource_limits.py). The ext4/XFS path cannot run on
the build machine's kernel (no QFMT_V2, no XFS_QUOTA; docs/storage.md)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
from traitlets import TraitError

from hub_ext.process import CommandResult
from hub_ext.storage import __main__ as storage_cli
from hub_ext.storage import quota, quota_ops
from hub_ext.storage.service import SETTINGS_KEY, StorageManager

DATA = Path(__file__).parent / "data" / "quota"
M = 2**20

# repquota -P -n (quota-tools 4.06): KiB blocks; "#id" with -n
REPQUOTA = """\
*** Report for project quotas on device /dev/vdb1
Block grace time: 7days; Inode grace time: 7days
                        Block limits                File limits
Project         used    soft    hard  grace    used  soft  hard  grace
----------------------------------------------------------------------
#0        --      20       0       0              2     0     0
#1001     --   10240       0  102400             15     0     0
#1002     +-  102400       0  102400  6days      40     0     0
#1003     --       4       0       0              1     0     0
"""
# xfs_quota -x -c 'report -p -n -N' (xfsprogs 6.1): KiB blocks, no header
XFS_REPORT = """\
#0                   0          0          0     00 [--------]
#1001            10240          0     102400     00 [--------]
#1002           102400          0     102400     00  [7 days]
"""


def settings(kind="btrfs", root="/srv/jupyterhub/users", limit=100 * M, mount=""):
    return quota.Settings(kind, limit, root, mount or ("" if kind == "btrfs" else "/srv"))


# --- commands -----------------------------------------------------------------------


def test_btrfs_commands():
    root = "/srv/jupyterhub/users/jh-alice"
    assert quota.create_root_commands("btrfs", root) == [["btrfs", "subvolume", "create", root]]
    assert quota.assign_commands("btrfs", root, 1001, "") == []
    assert quota.limit_commands("btrfs", root, 1001, 100 * M, "") == [
        ["btrfs", "qgroup", "limit", str(100 * M), root]]
    assert quota.limit_commands("btrfs", root, 1001, None, "") == [["btrfs", "qgroup", "limit", "none", root]]
    assert quota.usage_command("btrfs", "/srv/jupyterhub/users", "") == [
        "btrfs", "qgroup", "show", "--raw", "-re", "/srv/jupyterhub/users"]


def test_project_quota_commands():
    root = "/srv/jupyterhub/users/jh-alice"
    assert quota.create_root_commands("ext4", root) == []
    assert quota.assign_commands("ext4", root, 1001, "/srv") == [
        ["chattr", "-R", "+P", "-p", "1001", root]]
    assert quota.assign_commands("xfs", root, 1001, "/srv") == [
        ["xfs_quota", "-x", "-c", f"project -s -p {root} 1001", "/srv"]]
    # KiB, rounded up; 0 lifts the limit
    assert quota.limit_commands("ext4", root, 1001, 100 * M + 1, "/srv") == [
        ["setquota", "-P", "1001", "0", "102401", "0", "0", "/srv"]]
    assert quota.limit_commands("ext4", root, 1001, None, "/srv") == [
        ["setquota", "-P", "1001", "0", "0", "0", "0", "/srv"]]
    assert quota.limit_commands("xfs", root, 1001, 100 * M, "/srv") == [
        ["xfs_quota", "-x", "-c", "limit -p bhard=102400k 1001", "/srv"]]
    assert quota.limit_commands("xfs", root, 1001, None, "/srv") == [
        ["xfs_quota", "-x", "-c", "limit -p bhard=0k 1001", "/srv"]]
    assert quota.usage_command("ext4", "/srv/u", "/srv") == ["repquota", "-P", "-n", "/srv"]
    assert quota.usage_command("xfs", "/srv/u", "/srv") == ["xfs_quota", "-x", "-c", "report -p -n -N", "/srv"]


# --- parsers ------------------------------------------------------------------------


def test_btrfs_qgroups_recorded_on_a_nested_users_root():
    # recorded: the filesystem mounted at /mnt, users in srv/users, one stale qgroup
    text = (DATA / "btrfs-qgroup-show.txt").read_text()
    found = quota.parse_btrfs_qgroups(text, "/mnt/srv/users", ["jh-alice", "jh-bob", "jh-carol"])
    assert found == {"jh-alice": quota.Usage(3162112, 52428800), "jh-bob": quota.Usage(16384, None)}
    # the same names below another directory are not these users
    assert quota.parse_btrfs_qgroups(text, "/srv/other", ["jh-alice"]) == {}


def test_btrfs_qgroups_of_a_users_root_that_is_the_top_level():
    text = ("Qgroupid Referenced Exclusive Max referenced Max exclusive Path\n"
            "-------- ---------- --------- -------------- ------------- ----\n"
            "0/5 16384 16384 none none <toplevel>\n"
            "0/256 1048576 1048576 104857600 none jh-alice\n"
            "0/257 16384 16384 none none .archive/20260101T000000.000000Z-jh-bob\n")
    found = quota.parse_btrfs_qgroups(text, "/srv/jupyterhub/users", ["jh-alice", "jh-bob"])
    assert found == {"jh-alice": quota.Usage(1048576, 104857600)}  # the archived one is not bob's


def test_repquota_and_xfs_report():
    assert quota.parse_repquota(REPQUOTA) == {
        0: quota.Usage(20 * 1024, None),
        1001: quota.Usage(10 * M, 100 * M),
        1002: quota.Usage(100 * M, 100 * M),
        1003: quota.Usage(4096, None),
    }
    assert quota.parse_xfs_report(XFS_REPORT) == {
        0: quota.Usage(0, None),
        1001: quota.Usage(10 * M, 100 * M),
        1002: quota.Usage(100 * M, 100 * M),
    }
    assert quota.parse_repquota("garbage\n#x -- 1 2 3\n") == {}


# /proc/self/mountinfo of the enforcing test host: the users' root a btrfs image
# (with a second mount on top of /srv/data, and a path with a space)
MOUNTINFO = """\
104 1 0:52 / / rw,relatime shared:1 - overlay overlay rw,lowerdir=/x
120 104 7:3 / /srv/jupyterhub/users rw,relatime shared:60 - btrfs /dev/loop3 rw,space_cache=v2,subvolid=5,subvol=/
121 104 259:2 / /srv/data rw,relatime shared:61 - ext4 /dev/vdb1 rw,prjquota
122 121 0:70 / /srv/data rw,relatime shared:62 - xfs /dev/vdc1 rw,prjquota
123 104 259:3 / /srv/with\\040space rw shared:63 master:2 - ext4 /dev/vdd1 rw
"""


@pytest.mark.parametrize("path, found", [
    ("/srv/jupyterhub/users", ("/srv/jupyterhub/users", "btrfs")),
    ("/srv/jupyterhub/users/jh-alice", ("/srv/jupyterhub/users", "btrfs")),
    ("/srv/jupyterhub/users2", ("/", "overlay")),  # a prefix of the name is not a parent
    ("/srv/data/users", ("/srv/data", "xfs")),  # the mount on top counts
    ("/srv/with space/users", ("/srv/with space", "ext4")),
])
def test_filesystem_of_a_path(path, found):
    assert quota.filesystem_of(path, MOUNTINFO) == found


def test_detect_names_the_filesystem_it_refuses(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(MOUNTINFO)
    assert quota_ops.detect(5, "/srv/jupyterhub/users", str(mountinfo)) == quota.Settings(
        "btrfs", 5, "/srv/jupyterhub/users", "/srv/jupyterhub/users")
    assert quota_ops.detect(5, "/srv/data/u", str(mountinfo)).mount_point == "/srv/data"
    with pytest.raises(ValueError, match=r"/srv/u on btrfs, ext4, xfs; it is on overlay \(mounted at /\)"):
        quota_ops.detect(5, "/srv/u", str(mountinfo))


# --- the helper ------------------------------------------------------------------------


class FakeExecutor(quota_ops.Executor):
    """Records commands; ``btrfs subvolume create`` makes the directory (which
    :func:`fake_subvolumes` then reports as a subvolume)."""

    subvolumes: set[str] = set()

    def __init__(self, outputs=None, projects=None, uids=None, fail=(), applied_dir="/nonexistent"):
        self.calls: list[list[str]] = []
        self.outputs = outputs or {}
        self.projects = projects if projects is not None else {}
        self.uids = uids or {"jh-alice": 1001, "jh-bob": 1002}
        self.fail = fail
        super().__init__(run=self._run, uid_of=self._uid, project_of=lambda p: self.projects.get(p, 0),
                         applied_dir=applied_dir)

    def _uid(self, unix):
        return self.uids[unix]  # KeyError like pwd.getpwnam

    def _run(self, argv):
        argv = list(argv)
        self.calls.append(argv)
        if argv[0] in self.fail:
            return subprocess.CompletedProcess(argv, 1, "", "ERROR: quotas not enabled")
        if argv[:3] == ["btrfs", "subvolume", "create"]:
            Path(argv[3]).mkdir()
            self.subvolumes.add(argv[3])
        return subprocess.CompletedProcess(argv, 0, self.outputs.get(argv[0], ""), "")


@pytest.fixture
def fake_subvolumes(monkeypatch):
    """A directory made by the fake ``btrfs subvolume create`` is a subvolume
    (inode 256 on btrfs), any other is not."""
    made: set[str] = set()
    monkeypatch.setattr(FakeExecutor, "subvolumes", made)
    real_lstat = quota_ops.os.lstat

    def lstat(path):
        st = real_lstat(path)
        if str(path) not in made:
            return st
        fields = list(st)
        fields[1] = quota.BTRFS_SUBVOLUME_ROOT_INO
        return quota_ops.os.stat_result(fields)

    monkeypatch.setattr(quota_ops.os, "lstat", lstat)
    return made


def test_btrfs_apply_creates_the_subvolume_once_then_only_limits(tmp_path, fake_subvolumes):
    s = settings("btrfs", str(tmp_path / "users"))
    (tmp_path / "users").mkdir()
    applied = str(tmp_path / "applied")
    io = FakeExecutor(applied_dir=applied)
    root = str(tmp_path / "users" / "jh-alice")
    assert not quota_ops.is_applied(s, "jh-alice", applied)
    assert "created the subvolume" in quota_ops.apply(s, "jh-alice", io)
    assert io.calls == [["btrfs", "subvolume", "create", root],
                        ["btrfs", "qgroup", "limit", str(100 * M), root]]
    # recorded: the next spawn starts no unit; a new limit or a root gone, it does
    assert quota_ops.applied_limit("jh-alice", applied) == 100 * M
    assert quota_ops.is_applied(s, "jh-alice", applied)
    assert not quota_ops.is_applied(settings("btrfs", str(tmp_path / "users"), limit=200 * M), "jh-alice", applied)
    fake_subvolumes.clear()  # the root replaced by a plain directory: no limit there
    assert not quota_ops.is_applied(s, "jh-alice", applied)


def test_btrfs_apply_refuses_a_root_that_is_not_a_subvolume(tmp_path):
    # a limit on a plain directory would land on the subvolume of every user
    (tmp_path / "jh-alice").mkdir()
    io = FakeExecutor()
    with pytest.raises(RuntimeError, match="is not a btrfs subvolume"):
        quota_ops.apply(settings("btrfs", str(tmp_path)), "jh-alice", io)
    assert io.calls == []


@pytest.mark.parametrize("kind", ["ext4", "xfs"])
def test_project_apply_tags_a_tree_once(tmp_path, kind):
    s = settings(kind, str(tmp_path), mount="/srv")
    root = str(tmp_path / "jh-alice")
    io = FakeExecutor()
    out = quota_ops.apply(s, "jh-alice", io)
    assert "created" in out and "tagged with project 1001" in out
    assert (tmp_path / "jh-alice").stat().st_mode & 0o777 == 0o711
    tag = quota.assign_commands(kind, root, 1001, "/srv")
    limit = quota.limit_commands(kind, root, 1001, 100 * M, "/srv")
    assert io.calls == tag + limit
    # tagged already (the kernel says project 1001): only the limit again
    io = FakeExecutor(projects={root: 1001})
    quota_ops.apply(s, "jh-alice", io)
    assert io.calls == limit


def test_apply_reports_a_failing_command(tmp_path):
    io = FakeExecutor(fail=("btrfs",))
    with pytest.raises(RuntimeError, match="exited 1: ERROR: quotas not enabled"):
        quota_ops.apply(settings("btrfs", str(tmp_path)), "jh-alice", io)


def test_release(tmp_path):
    applied = str(tmp_path / "applied")
    io = FakeExecutor(applied_dir=applied)
    assert "nothing to release" in quota_ops.release(settings("btrfs", str(tmp_path)), "jh-alice", io)
    s = settings("ext4", str(tmp_path), mount="/srv")
    quota_ops.record_applied("jh-alice", 100 * M, applied)
    quota_ops.release(s, "jh-alice", io)
    assert io.calls == [["setquota", "-P", "1001", "0", "0", "0", "0", "/srv"]]
    assert quota_ops.applied_limit("jh-alice", applied) is None  # a user of that name later starts anew
    assert "no account" in quota_ops.release(s, "jh-nobody", io)


def test_sync_brings_every_existing_root_to_the_limit_and_names_the_failures(tmp_path):
    users, applied = tmp_path / "users", str(tmp_path / "applied")
    for unix in ("jh-alice", "jh-bob", "jh-gone", ".archive"):
        (users / unix).mkdir(parents=True)
    s = settings("ext4", str(users), mount="/srv")
    quota_ops.record_applied("jh-alice", 100 * M, applied)  # up to date: left alone
    quota_ops.record_applied("jh-bob", 50 * M, applied)  # the limit was 50M before
    io = FakeExecutor(projects={str(users / "jh-bob"): 1002}, applied_dir=applied)
    done, failed = quota_ops.sync(s, io)
    assert io.calls == quota.limit_commands("ext4", str(users / "jh-bob"), 1002, 100 * M, "/srv")
    assert len(done) == 1 and "jh-bob" in done[0]
    assert failed == ["jh-gone: no unix account"]
    assert quota_ops.applied_limit("jh-bob", applied) == 100 * M
    assert quota_ops.sync(s, FakeExecutor(applied_dir=applied, uids={"jh-gone": 1003})) == (
        [f"{users}/jh-gone: tagged with project 1003, limited to {100 * M} bytes"], [])


def test_usage_maps_projects_to_users(tmp_path):
    for unix in ("jh-alice", "jh-bob", "jh-gone", ".archive"):
        (tmp_path / unix).mkdir()
    io = FakeExecutor(outputs={"repquota": REPQUOTA})
    found = quota_ops.usage(settings("ext4", str(tmp_path), mount="/srv"), io)
    # jh-gone has no account; .archive is not a user
    assert found == {"jh-alice": quota.Usage(10 * M, 100 * M), "jh-bob": quota.Usage(100 * M, 100 * M)}


def test_sync_limits_the_shared_directory_once(tmp_path, fake_subvolumes):
    users, shared, applied = tmp_path / "users", tmp_path / "shared", str(tmp_path / "applied")
    users.mkdir()
    shared.mkdir()
    s = settings("ext4", str(users), mount="/srv")
    shared_settings = settings("ext4", str(shared), limit=500 * M, mount="/srv")
    io = FakeExecutor(applied_dir=applied)
    done, failed = quota_ops.sync(s, io, shared_settings)
    project = quota.SHARED_PROJECT_ID
    assert io.calls == (quota.assign_commands("ext4", str(shared), project, "/srv")
                        + quota.limit_commands("ext4", str(shared), project, 500 * M, "/srv"))
    assert done == [f"{shared} (shared): tagged with project {project}, limited to {500 * M} bytes"]
    assert failed == [] and quota_ops.applied_limit(quota.SHARED, applied) == 500 * M
    io = FakeExecutor(applied_dir=applied)
    assert quota_ops.sync(s, io, shared_settings) == ([], []) and io.calls == []
    # btrfs: a plain shared directory cannot take a limit; the users' roots still sync
    btrfs_shared = settings("btrfs", str(shared), limit=500 * M)
    done, failed = quota_ops.sync(settings("btrfs", str(users)), FakeExecutor(applied_dir=str(tmp_path / "b")),
                              btrfs_shared)
    assert done == [] and failed[0].startswith(f"shared directory: {shared} is not a btrfs subvolume")
    fake_subvolumes.add(str(shared))
    io = FakeExecutor(applied_dir=str(tmp_path / "b"))
    assert quota_ops.sync(settings("btrfs", str(users)), io, btrfs_shared)[1] == []
    assert io.calls == [["btrfs", "qgroup", "limit", str(500 * M), str(shared)]]


def platform_config_file(tmp_path, **storage) -> Path:
    """A platform_config.json with StorageManager's settings (the units read it)."""
    path = tmp_path / "platform_config.json"
    path.write_text(json.dumps({"StorageManager": storage}))
    return path


def test_cli(tmp_path, capsys):
    users = tmp_path / "users"
    (users / "jh-alice").mkdir(parents=True)
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"1 0 0:1 / / rw - ext4 /dev/vda1 rw\n2 1 0:2 / {users} rw - xfs /dev/vdb rw,prjquota\n")
    conf = platform_config_file(tmp_path, users_root=str(users), quota_enabled=True, quota_per_user="100M")
    usage_file = tmp_path / "usage.json"
    io = FakeExecutor(outputs={"xfs_quota": XFS_REPORT}, applied_dir=str(tmp_path / "applied"))

    def main(*request):
        return storage_cli.main(["--config", str(conf), "quota", "--usage-file", str(usage_file), *request],
                                quota_io=io, mountinfo_path=str(mountinfo))

    assert main("usage") == 0
    assert json.loads(usage_file.read_text()) == {"jh-alice": {"used_bytes": 10 * M, "limit_bytes": 100 * M}}
    assert quota_ops.read_usage(str(usage_file)) == {"jh-alice": quota.Usage(10 * M, 100 * M)}
    assert main("apply-jh-alice") == 0
    assert io.calls[-1] == ["xfs_quota", "-x", "-c", "limit -p bhard=102400k 1001", str(users)]
    assert main("sync") == 0  # applied just now: nothing to do
    assert "sync: 0 brought to their limit, 0 failed" in capsys.readouterr().out
    # a shared limit: the next sync sets it, on the shared directory's own filesystem
    shared = tmp_path / "shared"
    shared.mkdir()
    platform_config_file(tmp_path, users_root=str(users), shared_dir=str(shared), quota_enabled=True,
                         quota_per_user="100M", quota_shared="1G")
    assert main("sync") == 0
    assert io.calls[-1] == quota.limit_commands("ext4", str(shared), quota.SHARED_PROJECT_ID, 2**30, "/")[-1]
    platform_config_file(tmp_path, users_root=str(users), quota_enabled=True, quota_per_user="100M")
    assert main("wipe-jh-alice") == 1
    assert "unknown request 'wipe-jh-alice'" in capsys.readouterr().err
    assert main("apply-../etc") == 1
    assert "Invalid unix name" in capsys.readouterr().err
    # the settings file's values are the traits' (a bad one is named)
    platform_config_file(tmp_path, users_root=str(users), quota_enabled=True, quota_per_user="10K")
    assert main("usage") == 1
    assert "StorageManager.quota_per_user" in capsys.readouterr().err
    platform_config_file(tmp_path, users_root=str(users))  # quota_enabled's default: off
    assert main("usage") == 2


def test_unit_names():
    assert quota.apply_unit("apply", "jh-alice") == "jupyterhub-disk-quota@apply-jh-alice.service"
    with pytest.raises(ValueError, match="unknown disk quota action"):
        quota.apply_unit("wipe", "jh-alice")


# --- the hub's side -----------------------------------------------------------------


class FakeRunner:
    def __init__(self, fail=()):
        self.calls = []
        self.fail = fail

    async def __call__(self, argv):
        self.calls.append(list(argv))
        return CommandResult(tuple(argv), 1 if any(f in argv[-1] for f in self.fail) else 0)


def test_storage_manager_figures_and_activity_sizes(tmp_path):
    usage_file = tmp_path / "usage.json"
    usage_file.write_text(json.dumps({"jh-alice": {"used_bytes": 7 * M, "limit_bytes": 100 * M}}))
    manager = StorageManager(users_root=str(tmp_path))
    assert manager.quota is None and manager.quota_model("jh-alice") is None  # quota_enabled's default: off
    manager.quota = settings("btrfs", str(tmp_path))
    manager.quota_usage_file = str(usage_file)
    manager.command_runner = runner = FakeRunner()
    now = [1000.0]
    manager.clock = lambda: now[0]
    asyncio.run(manager.refresh_quota_usage())
    assert runner.calls == [["systemctl", "start", quota.USAGE_UNIT]]
    asyncio.run(manager.refresh_quota_usage())  # within QUOTA_USAGE_MAX_AGE: reused
    assert len(runner.calls) == 1
    assert manager.quota_model("jh-alice") == {"used_bytes": 7 * M, "limit_bytes": 100 * M}
    assert manager.quota_model("jh-bob") == {"used_bytes": None, "limit_bytes": 100 * M}
    model = manager.sizes_model(["alice", "bob"])
    assert model["quota_enabled"] and model["quota_kind"] == "btrfs"
    assert model["users"]["alice"]["quota"]["used_bytes"] == 7 * M
    # the activity monitor's sizes: the kernel's figure, no walk
    assert manager.activity_sizes(["alice", "bob"]) == {"alice": {"all (disk quota)": 7 * M}}
    # a failing usage unit is reported, the last figures kept
    now[0] += 60
    manager.command_runner = FakeRunner(fail=("usage",))
    asyncio.run(manager.refresh_quota_usage())
    assert "disk quota usage" in manager.quota_error
    assert manager.sizes_model(["alice"])["quota_error"] == manager.quota_error
    assert manager.quota_model("jh-alice")["used_bytes"] == 7 * M


def test_release_on_delete_and_a_failing_apply_names_the_journal(tmp_path):
    manager = StorageManager(users_root=str(tmp_path))
    manager.command_runner = runner = FakeRunner()
    asyncio.run(manager.release_quota("alice"))  # off: nothing started
    assert runner.calls == []
    manager.quota = settings("btrfs", str(tmp_path))
    asyncio.run(manager.release_quota("alice"))
    assert runner.calls == [["systemctl", "start", "jupyterhub-disk-quota@release-jh-alice.service"]]
    with pytest.raises(RuntimeError, match=r"journalctl -u jupyterhub-disk-quota@apply-jh-alice.service"):
        asyncio.run(quota_ops.start_unit(FakeRunner(fail=("apply",)), "apply", "jh-alice"))


def test_quota_traits_are_checked():
    assert StorageManager(quota_per_user="1.5G").quota_per_user == 3 * 2**29
    for bad in ("512K", "10X", "-1G"):
        with pytest.raises(TraitError):
            StorageManager(quota_per_user=bad)


def test_quotas_on_a_filesystem_without_them_fail_spawns_with_the_reason(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("1 0 0:1 / / rw - tmpfs tmpfs rw\n")
    StorageManager.mountinfo = str(mountinfo)
    try:
        manager = StorageManager(users_root=str(tmp_path), quota_enabled=True)
    finally:
        del StorageManager.mountinfo
    assert manager.quota is None and "it is on tmpfs" in manager.quota_error
    with pytest.raises(RuntimeError, match="Disk quotas are on but cannot be kept"):
        asyncio.run(manager.ensure_quota("jh-alice"))


def test_hub_syncs_only_when_a_root_lacks_the_limit(tmp_path):
    users = tmp_path / "users"
    (users / "jh-alice").mkdir(parents=True)
    manager = StorageManager(users_root=str(users))
    manager.quota = settings("ext4", str(users))
    manager.quota_applied_dir = applied = str(tmp_path / "applied")
    manager.command_runner = runner = FakeRunner()
    asyncio.run(manager.sync_quotas())
    assert runner.calls == [["systemctl", "start", quota.SYNC_UNIT]]
    quota_ops.record_applied("jh-alice", 100 * M, applied)
    asyncio.run(manager.sync_quotas())
    assert len(runner.calls) == 1
    # a shared limit not yet set: synced
    manager.shared_quota = settings("ext4", str(tmp_path), limit=500 * M)
    asyncio.run(manager.sync_quotas())
    assert len(runner.calls) == 2
    quota_ops.record_applied(quota.SHARED, 500 * M, applied)
    asyncio.run(manager.sync_quotas())
    assert len(runner.calls) == 2


def test_spawner_applies_the_quota_once_before_making_the_directories(make_spawner, tmp_path):
    spawner = make_spawner()
    system = spawner.command_runner
    seen = []
    applied = str(tmp_path / "applied")

    async def runner(argv):
        if argv[0] == "systemctl":
            seen.append((list(argv), (make_spawner.users_root / "jh-alice").exists()))
            quota_ops.record_applied("jh-alice", M, applied)  # what the apply unit does
            return CommandResult(tuple(argv), 0)
        return await system(argv)

    spawner.command_runner = runner
    asyncio.run(spawner.ensure_account())  # not in a platform hub: no storage manager, no quota
    assert seen == []
    manager = StorageManager(users_root=str(make_spawner.users_root))
    spawner.user.settings = {SETTINGS_KEY: manager}
    asyncio.run(spawner.ensure_account())  # quotas off: no unit
    assert seen == []
    manager.quota_enabled = True
    manager.quota = settings("ext4", str(make_spawner.users_root), limit=M)
    manager.quota_applied_dir = applied
    manager.command_runner = runner
    (make_spawner.users_root / "jh-alice").rename(tmp_path / "moved")  # a new user again
    asyncio.run(spawner.ensure_account())
    assert seen == [(["systemctl", "start", "jupyterhub-disk-quota@apply-jh-alice.service"], False)]
    assert (make_spawner.users_root / "jh-alice" / "workspace").is_dir()
    # the next spawns: the record says it is done, no unit on the spawn path
    asyncio.run(spawner.ensure_account())
    assert len(seen) == 1
    # a new limit: applied again at the next spawn
    manager.quota = settings("ext4", str(make_spawner.users_root), limit=2 * M)
    asyncio.run(spawner.ensure_account())
    assert len(seen) == 2
