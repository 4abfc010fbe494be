"""hub_ext.storage.quota: the commands per filesystem, the parsers (a recorded
``btrfs qgroup show``; ``repquota``/``xfs_quota`` in their documented formats),
the helper's steps against a fake executor, the CLI, and the hub's side
(StorageManager's figures, the spawner's apply unit).

What runs for real only on the enforcing test host: btrfs
(tests/integration/test_resource_limits.py). The ext4/XFS path cannot run on
the build machine's kernel (no QFMT_V2, no XFS_QUOTA; docs/storage.md)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from hub_ext.process import CommandResult
from hub_ext.storage import quota
from hub_ext.storage.service import StorageManager

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


@pytest.mark.parametrize("data, message", [
    ({"kind": "zfs", "limit_bytes": 1, "users_root": "/u"}, "kind must be one of btrfs, ext4, xfs"),
    ({"kind": "btrfs", "limit_bytes": 0, "users_root": "/u"}, "limit_bytes must be a positive integer"),
    ({"kind": "btrfs", "limit_bytes": True, "users_root": "/u"}, "limit_bytes must be a positive integer"),
    ({"kind": "btrfs", "limit_bytes": 1, "users_root": "u"}, "users_root must be an absolute path"),
    ({"kind": "ext4", "limit_bytes": 1, "users_root": "/u"}, "mount_point must be an absolute path for ext4"),
])
def test_settings_are_checked(data, message):
    with pytest.raises(ValueError, match=message):
        quota.Settings.from_json(data)


def test_settings_file(tmp_path):
    assert quota.load_settings(str(tmp_path / "absent.json")) is None
    path = tmp_path / "disk-quota.json"
    path.write_text(json.dumps({"kind": "xfs", "limit_bytes": 5, "users_root": "/u", "mount_point": "/"}))
    assert quota.load_settings(str(path)) == quota.Settings("xfs", 5, "/u", "/")


# --- the helper ------------------------------------------------------------------------


class FakeExecutor(quota.Executor):
    """Records commands; ``btrfs subvolume create`` makes the directory."""

    def __init__(self, outputs=None, projects=None, uids=None, fail=()):
        self.calls: list[list[str]] = []
        self.outputs = outputs or {}
        self.projects = projects if projects is not None else {}
        self.uids = uids or {"jh-alice": 1001, "jh-bob": 1002}
        self.fail = fail
        super().__init__(run=self._run, uid_of=self._uid, project_of=lambda p: self.projects.get(p, 0))

    def _uid(self, unix):
        return self.uids[unix]  # KeyError like pwd.getpwnam

    def _run(self, argv):
        argv = list(argv)
        self.calls.append(argv)
        if argv[0] in self.fail:
            return subprocess.CompletedProcess(argv, 1, "", "ERROR: quotas not enabled")
        if argv[:3] == ["btrfs", "subvolume", "create"]:
            Path(argv[3]).mkdir()
        return subprocess.CompletedProcess(argv, 0, self.outputs.get(argv[0], ""), "")


def test_btrfs_apply_creates_the_subvolume_once_then_only_limits(tmp_path):
    s = settings("btrfs", str(tmp_path))
    io = FakeExecutor()
    root = str(tmp_path / "jh-alice")
    assert "created the subvolume" in quota.apply(s, "jh-alice", io)
    assert io.calls == [["btrfs", "subvolume", "create", root],
                        ["btrfs", "qgroup", "limit", str(100 * M), root]]


def test_btrfs_apply_refuses_a_root_that_is_not_a_subvolume(tmp_path):
    # a limit on a plain directory would land on the subvolume of every user
    (tmp_path / "jh-alice").mkdir()
    io = FakeExecutor()
    with pytest.raises(RuntimeError, match="is not a btrfs subvolume"):
        quota.apply(settings("btrfs", str(tmp_path)), "jh-alice", io)
    assert io.calls == []


@pytest.mark.parametrize("kind", ["ext4", "xfs"])
def test_project_apply_tags_a_tree_once(tmp_path, kind):
    s = settings(kind, str(tmp_path), mount="/srv")
    root = str(tmp_path / "jh-alice")
    io = FakeExecutor()
    out = quota.apply(s, "jh-alice", io)
    assert "created" in out and "tagged with project 1001" in out
    assert (tmp_path / "jh-alice").stat().st_mode & 0o777 == 0o711
    tag = quota.assign_commands(kind, root, 1001, "/srv")
    limit = quota.limit_commands(kind, root, 1001, 100 * M, "/srv")
    assert io.calls == tag + limit
    # tagged already (the kernel says project 1001): only the limit again
    io = FakeExecutor(projects={root: 1001})
    quota.apply(s, "jh-alice", io)
    assert io.calls == limit


def test_apply_reports_a_failing_command(tmp_path):
    io = FakeExecutor(fail=("btrfs",))
    with pytest.raises(RuntimeError, match="exited 1: ERROR: quotas not enabled"):
        quota.apply(settings("btrfs", str(tmp_path)), "jh-alice", io)


def test_release(tmp_path):
    io = FakeExecutor()
    assert "nothing to release" in quota.release(settings("btrfs", str(tmp_path)), "jh-alice", io)
    s = settings("ext4", str(tmp_path), mount="/srv")
    quota.release(s, "jh-alice", io)
    assert io.calls == [["setquota", "-P", "1001", "0", "0", "0", "0", "/srv"]]
    assert "no account" in quota.release(s, "jh-nobody", io)


def test_usage_maps_projects_to_users(tmp_path):
    for unix in ("jh-alice", "jh-bob", "jh-gone", ".archive"):
        (tmp_path / unix).mkdir()
    io = FakeExecutor(outputs={"repquota": REPQUOTA})
    found = quota.usage(settings("ext4", str(tmp_path), mount="/srv"), io)
    # jh-gone has no account; .archive is not a user
    assert found == {"jh-alice": quota.Usage(10 * M, 100 * M), "jh-bob": quota.Usage(100 * M, 100 * M)}


def test_cli(tmp_path, capsys):
    (tmp_path / "jh-alice").mkdir()
    conf = tmp_path / "disk-quota.json"
    conf.write_text(json.dumps({"kind": "xfs", "limit_bytes": 100 * M, "users_root": str(tmp_path),
                                "mount_point": "/srv"}))
    usage_file = tmp_path / "usage.json"
    io = FakeExecutor(outputs={"xfs_quota": XFS_REPORT})
    args = ["--settings", str(conf), "--usage-file", str(usage_file)]
    assert quota.main([*args, "usage"], io) == 0
    assert json.loads(usage_file.read_text()) == {"jh-alice": {"used_bytes": 10 * M, "limit_bytes": 100 * M}}
    assert quota.read_usage(str(usage_file)) == {"jh-alice": quota.Usage(10 * M, 100 * M)}
    assert quota.main([*args, "apply-jh-alice"], io) == 0
    assert io.calls[-1] == ["xfs_quota", "-x", "-c", "limit -p bhard=102400k 1001", "/srv"]
    assert quota.main([*args, "wipe-jh-alice"], io) == 1
    assert "unknown request 'wipe-jh-alice'" in capsys.readouterr().err
    assert quota.main([*args, "apply-../etc"], io) == 1
    assert "Invalid unix name" in capsys.readouterr().err
    assert quota.main(["--settings", str(tmp_path / "none.json"), "usage"], io) == 2


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
    assert manager.quota is None and manager.quota_model("jh-alice") is None  # no settings file: off
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
        asyncio.run(quota.start_unit(FakeRunner(fail=("apply",)), "apply", "jh-alice"))


def test_spawner_applies_the_quota_before_making_the_directories(make_spawner, tmp_path):
    spawner = make_spawner()
    system = spawner.command_runner
    seen = []

    async def runner(argv):
        if argv[0] == "systemctl":
            seen.append((list(argv), (make_spawner.users_root / "jh-alice").exists()))
            return CommandResult(tuple(argv), 0)
        return await system(argv)

    spawner.command_runner = runner
    asyncio.run(spawner.ensure_account())  # no settings file: no quota unit
    assert seen == []
    conf = tmp_path / "disk-quota.json"
    conf.write_text(json.dumps({"kind": "btrfs", "limit_bytes": M, "users_root": str(make_spawner.users_root)}))
    spawner.disk_quota_settings_file = str(conf)
    (make_spawner.users_root / "jh-alice").rename(tmp_path / "moved")  # a new user again
    asyncio.run(spawner.ensure_account())
    assert seen == [(["systemctl", "start", "jupyterhub-disk-quota@apply-jh-alice.service"], False)]
    assert (make_spawner.users_root / "jh-alice" / "workspace").is_dir()
