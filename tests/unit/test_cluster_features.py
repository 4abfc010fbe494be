"""The platform's features on the cluster's workers, the pure parts
(docs/cluster.md): the privilege groups in the account export, the lab's
sandbox on a worker (hub_ext/cluster/sandbox.py's steps, lab/lab_sandbox.py's
checks) and SlurmLabSpawner's settings among the platform's."""

import json
import os
import shlex
import signal
import sys
from pathlib import Path

import pytest
from traitlets import Unicode
from traitlets.config import Configurable

from hub_ext.cluster import accounts_export, sandbox
from hub_ext.cluster.spawner import SlurmLabSpawner
from hub_ext.settings import SETTING_CLASSES, platform_settings, settings_of
from hub_ext.spawner import PlatformSpawner
from hub_ext.storage import layout

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lab"))
import lab_sandbox

PASSWD = """root:x:0:0:root:/root:/bin/bash
jh-alice:x:1001:1001::/home/jh-alice:/bin/bash
jh-bob:x:1002:1002::/home/jh-bob:/bin/bash
admin:x:1000:1000::/home/admin:/bin/bash
"""
GROUP = """root:x:0:
jupyterhub-users:x:999:jh-alice,jh-bob
jh-alice:x:1001:
jh-bob:x:1002:
admin:x:1000:
docker:x:998:admin,jh-alice
jupyterhub-sudo:x:997:jh-bob
"""


# --- privilege groups on the workers ---------------------------------------------


def test_the_docker_group_is_exported_with_its_platform_members_only():
    _, group = accounts_export.platform_entries(PASSWD, GROUP, "jupyterhub-users", ("docker",))
    # the hub's gid; a local account in the group (admin) is not the workers' business
    assert "docker:x:998:jh-alice" in group
    assert not [line for line in group if line.startswith(("jupyterhub-sudo:", "admin:"))]


def test_a_privilege_group_the_hub_host_lacks_is_not_exported():
    _, group = accounts_export.platform_entries(PASSWD, GROUP.replace("docker:x:998:admin,jh-alice\n", ""),
                                                "jupyterhub-users", ("docker",))
    assert not [line for line in group if line.startswith("docker:")]


# --- SlurmLabSpawner's settings among the platform's -----------------------------


class Base(Configurable):
    shared = Unicode("a").tag(config=True, ansible="x_shared")


class Sub(Base):
    own = Unicode("b").tag(config=True, ansible="x_own")


def test_a_subclass_listed_with_its_base_adds_only_its_own_settings():
    assert [(s.section, s.name) for s in settings_of([Base, Sub])] == [("Base", "shared"), ("Sub", "own")]
    # alone, a class's inherited settings are its own
    assert [(s.section, s.name) for s in settings_of([Sub])] == [("Sub", "own"), ("Sub", "shared")]


def test_the_cluster_spawners_settings_are_platform_settings_once():
    assert "hub_ext.cluster.spawner.SlurmLabSpawner" in SETTING_CLASSES
    keys = [(s.section, s.name) for s in platform_settings()]
    assert len(keys) == len(set(keys))
    slurm = {s.name: s.variable for s in platform_settings() if s.owner is SlurmLabSpawner}
    assert slurm == {"partition": "slurm_partition", "accounts_dir": "slurm_accounts_dir",
                     "lab_sandbox": "slurm_lab_sandbox"}
    # PlatformSpawner's settings (mem_limit, ...) stay listed once, under PlatformSpawner
    assert ("PlatformSpawner", "mem_limit") in keys and ("SlurmLabSpawner", "mem_limit") not in keys
    assert issubclass(SlurmLabSpawner, PlatformSpawner)


# --- the lab's sandbox on a worker ------------------------------------------------

USERS_ROOT = "/srv/jupyterhub/users"


def steps(**options):
    chosen = {"isolate_tmp": True, "tmp_size": "2G", "shm_size": "1G", **options}
    return sandbox.sandbox_steps("jh-alice", USERS_ROOT, "/srv/jupyterhub/shared", **chosen)


def test_the_sandbox_binds_the_users_directories_at_the_in_lab_paths_of_one_host():
    binds = [(s["source"], s["path"]) for s in steps() if s["op"] == "bind"]
    # exactly a lab unit's BindPaths=, in the same order (home before what is inside it)
    assert [f"{src}:{dst}" for src, dst in binds] == layout.bind_paths("jh-alice", USERS_ROOT,
                                                                       "/srv/jupyterhub/shared")
    assert binds[0] == (f"{USERS_ROOT}/jh-alice/home", "/home/jh-alice")


def test_the_sandbox_binds_before_it_hides_or_makes_read_only():
    found = steps()
    position = {(s["op"], s["path"]): i for i, s in enumerate(found)}
    last_bind = max(i for i, s in enumerate(found) if s["op"] == "bind")
    # a fresh /home (no other home) with the user's mount point, before the binds
    assert position[("tmpfs", "/home")] < position[("mkdir", "/home/jh-alice")] < last_bind
    for path in (*sandbox.READ_ONLY_PATHS, "/home"):
        assert position[("readonly", path)] > last_bind, path
    # the other users' directories and munge's socket hidden
    for path in (USERS_ROOT, sandbox.MUNGE_DIR):
        assert position[("hide", path)] > last_bind
    # the private temporary directories come last, over the read-only system
    assert position[("tmpfs", "/var/tmp")] > position[("readonly", "/var")]


def test_the_sandbox_tmp_is_private_and_capped_as_on_one_host():
    tmpfs = {s["path"]: s["options"] for s in steps(tmp_size="3G", shm_size="512M") if s["op"] == "tmpfs"}
    assert tmpfs["/tmp"] == tmpfs["/var/tmp"] == "size=3G,mode=1777"
    assert tmpfs["/dev/shm"] == "size=512M,mode=1777"
    assert not {"/tmp", "/var/tmp", "/dev/shm"} & {s["path"] for s in steps(isolate_tmp=False)}


def test_the_sandbox_spec_passes_the_launchers_own_check():
    spec = json.loads(sandbox.sandbox_spec("jh-alice", USERS_ROOT, None, "/home/jh-alice/workspace",
                                           isolate_tmp=True, tmp_size="2G", shm_size="1G"))
    assert lab_sandbox.check_spec(spec) == spec
    assert spec["workdir"] == "/home/jh-alice/workspace"
    assert "/mnt/shared" not in [s["path"] for s in spec["steps"]]  # no shared directory


@pytest.mark.parametrize("spec, message", [
    ([], "an object with a list of steps"),
    ({"steps": [], "workdir": "home"}, "workdir must be an absolute path"),
    ({"steps": [{"op": "exec", "path": "/x"}], "workdir": "/w"}, "not a sandbox step"),
    ({"steps": [{"op": "bind", "source": "/a"}], "workdir": "/w"}, "not a sandbox step"),
    ({"steps": [{"op": "bind", "source": "a", "path": "/b"}], "workdir": "/w"}, "source must be an absolute"),
])
def test_the_launcher_refuses_a_spec_it_cannot_follow(spec, message):
    with pytest.raises(lab_sandbox.SandboxError, match=message):
        lab_sandbox.check_spec(spec)


def test_a_read_only_remount_keeps_the_mounts_locked_flags():
    flags = lab_sandbox.remount_flags(os.ST_NOSUID | os.ST_NODEV | os.ST_RELATIME)
    assert flags == (lab_sandbox.MS_REMOUNT | lab_sandbox.MS_BIND | lab_sandbox.MS_RDONLY
                     | lab_sandbox.MS_NOSUID | lab_sandbox.MS_NODEV)
    assert not flags & lab_sandbox.MS_NOEXEC


MOUNTINFO = """\
22 1 0:21 / / rw,relatime - ext4 /dev/sda1 rw
30 22 0:25 / /run rw,nosuid,nodev - tmpfs tmpfs rw
31 30 0:26 / /run/lock rw,nosuid,nodev,noexec - tmpfs tmpfs rw
32 30 0:27 / /run/user/1001 rw,nosuid,nodev - tmpfs tmpfs rw
33 22 0:28 / /runner rw - tmpfs tmpfs rw
40 22 0:29 / /home rw,nosuid,nodev - tmpfs tmpfs rw
41 40 8:1 /srv/users/jh-a/home /home/jh-a rw - ext4 /dev/sda1 rw
42 41 8:1 /srv/users/jh-a/workspace /home/jh-a/workspace rw - ext4 /dev/sda1 rw
43 30 0:30 / /run/with\\040space rw - tmpfs tmpfs rw
"""


def test_read_only_reaches_every_mount_below_but_the_users_own():
    keep = lab_sandbox.made_here(steps())
    found = lab_sandbox.mounts_below(MOUNTINFO, "/run", keep)
    # /run/lock is its own mount on Debian (world-writable): read-only too
    assert found == ["/run", "/run/lock", "/run/user/1001", "/run/with space"]
    # /home itself (the launcher's tmpfs) read-only, the user's directories bound into it not
    keep = lab_sandbox.made_here(sandbox.sandbox_steps("jh-a", "/srv/users", None, isolate_tmp=False,
                                                       tmp_size="1G", shm_size="1G"))
    assert lab_sandbox.mounts_below(MOUNTINFO, "/home", keep) == ["/home"]


def test_the_launchers_exit_status_is_the_labs():
    assert lab_sandbox.exit_code(3 << 8) == 3
    assert lab_sandbox.exit_code(signal.SIGTERM) == 128 + signal.SIGTERM


def test_the_launcher_without_a_command_prints_its_usage(capsys):
    assert lab_sandbox.main(["{}"]) == 2
    assert "SPEC_JSON -- COMMAND" in capsys.readouterr().err


def test_a_lab_job_runs_in_the_sandbox_at_the_in_lab_paths(make_spawner):
    spawner = make_spawner(spawner_class=SlurmLabSpawner)
    argv = spawner.lab_command()
    assert argv[:3] == [f"{spawner.lab_venv}/bin/python", "-I", sandbox.LAUNCHER]
    assert argv[4] == "--" and argv[5:] == spawner.cmd + spawner.get_args()
    spec = json.loads(argv[3])
    assert spec["workdir"] == "/home/jh-alice/workspace"
    env = spawner.job_environment({})
    assert env["HOME"] == "/home/jh-alice"


def test_without_the_sandbox_the_lab_sees_the_worker_as_it_is(make_spawner):
    spawner = make_spawner(spawner_class=SlurmLabSpawner)
    spawner.lab_sandbox = False
    assert spawner.lab_command() == spawner.cmd + spawner.get_args()
    assert spawner.job_environment({})["HOME"] == str(spawner.port_file.parent)
    assert shlex.join(spawner.lab_command())  # a plain command line


# --- Prometheus metrics labelled by worker ---------------------------------------


class FakeLab:
    def __init__(self, user, worker, job_id="7", ready=True):
        self.user = type("U", (), {"name": user})()
        self.server = type("S", (), {"ip": worker})() if worker else None
        self.job_id, self.ready = job_id, ready


def test_the_metrics_count_each_running_lab_on_its_worker():
    from prometheus_client import CollectorRegistry, generate_latest

    from hub_ext.cluster import metrics

    collector = metrics.ClusterCollector()
    labs = [FakeLab("alice", "th-w1"), FakeLab("bob", "th-w2"), FakeLab("carol", "th-w1"),
            FakeLab("dave", None, job_id=""),             # no lab
            FakeLab("erin", "th-w2", ready=False),        # starting or stopping
            FakeLab("frank", "th-w2", job_id="")]         # not a Slurm job (yet)
    for lab in labs:
        collector.spawners.add(lab)
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    assert 'jupyterhub_cluster_labs{worker="th-w1"} 2.0' in text
    assert 'jupyterhub_cluster_labs{worker="th-w2"} 1.0' in text
    assert 'jupyterhub_cluster_lab_worker{user="bob",worker="th-w2"} 1.0' in text
    assert "erin" not in text and "frank" not in text and "dave" not in text


def test_a_jobs_groups_are_the_workers_view_of_the_export_looked_up_at_each_launch():
    # the hub host's own groups (jupyterhub-sudo) never reach a worker, and a
    # privilege granted or taken counts at the next start (no cached list)
    from .test_cluster import render_slurm_conf

    conf = render_slurm_conf({"w1": 0})
    assert "LaunchParameters=disable_send_gids" in conf
    assert "GroupUpdateTime=0" in conf
    # the activity monitor's source (sstat) needs the jobs' accounting
    assert "JobAcctGatherType=jobacct_gather/cgroup" in conf


# --- the activity monitor's source on the cluster: Slurm's accounting -------------


def test_slurms_durations_and_sizes_are_read():
    from hub_ext.cluster.activity import parse_duration, parse_size

    assert parse_duration("00:05.250") == 5.25
    assert parse_duration("01:02:03") == 3723
    assert parse_duration("2-01:00:00") == 2 * 86400 + 3600
    assert parse_duration("") is None and parse_duration("n/a") is None
    assert parse_size("123456K") == 123456 * 1024
    assert parse_size("1.5M") == 1.5 * 1024**2
    assert parse_size("0") == 0 and parse_size("") is None


def test_a_labs_figures_come_from_sstat_of_its_batch_step():
    import subprocess

    from hub_ext.cluster.activity import SOURCE_SLURM, SlurmAccounting

    calls = []

    def run(argv, **kw):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, "77.batch|01:00.500|204800K\n", "")

    reader = SlurmAccounting(lambda: {"jupyter-jh-alice.service": "77"}, run=run)
    reading = reader.read("jupyter-jh-alice.service", None, at=1000.0)
    assert calls == [["sstat", "--noheader", "--parsable2", "--jobs", "77.batch", "--format=JobID,AveCPU,AveRSS"]]
    assert (reading.cpu_seconds, reading.memory_bytes) == (60.5, 200 * 1024 * 1024)
    assert reading.sources == {"cpu": SOURCE_SLURM, "memory": SOURCE_SLURM} and not reading.gone
    # a lab whose job is gone is gone; a worker that does not answer gives no figures
    assert reader.read("jupyter-jh-bob.service", None, at=1000.0).gone

    def silent(argv, **kw):
        raise subprocess.TimeoutExpired(argv, 10)

    quiet = SlurmAccounting(lambda: {"u.service": "78"}, run=silent).read("u.service", None, 1.0)
    assert quiet.cpu_seconds is None and quiet.memory_bytes is None and not quiet.gone


def test_the_monitor_reads_slurm_only_for_the_cluster_spawner():
    from hub_ext.cluster.activity import SlurmAccounting, monitor_sources

    assert monitor_sources(PlatformSpawner) == {}
    sources = monitor_sources(SlurmLabSpawner)
    assert isinstance(sources["accounting_reader"], SlurmAccounting)
    assert set(sources) == {"accounting_reader", "cgroup_lookup"}
