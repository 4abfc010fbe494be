"""hub_ext.activity.cgroups: parsers on recorded cgroup files; hub_ext.activity.accounting: the source
order v2 -> v1 -> psutil per figure, the psutil fallback, ControlGroup lookups."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from hub_ext.activity import accounting as acc
from hub_ext.activity import cgroups
from hub_ext.process import CommandResult

DATA = Path(__file__).parent / "data"
V1 = DATA / "cgroup-v1"
V2 = DATA / "cgroup-v2"
UNIT = "jupyter-alice-singleuser.service"
CGROUP = f"/system.slice/{UNIT}"


# --- parsers ----------------------------------------------------------------------


def test_v2_parsers_on_recorded_files():
    assert cgroups.parse_v2_cpu_seconds((V2 / "cpu.stat").read_text()) == 7.843
    assert cgroups.parse_int((V2 / "memory.current").read_text()) == 734003200
    stat = cgroups.parse_keyed((V2 / "memory.stat").read_text())
    assert stat["inactive_file"] == 209715200 and stat["anon"] == 402653184
    assert cgroups.working_set(734003200, stat, "inactive_file") == 734003200 - 209715200
    assert cgroups.parse_v2_io((V2 / "io.stat").read_text()) == (1048576 + 4096, 2097152)
    assert cgroups.parse_int("max\n") is None
    assert cgroups.parse_v2_cpu_seconds("user_usec 5\n") is None


def test_v1_parsers_on_recorded_files():
    assert cgroups.parse_int((V1 / "cpuacct.usage").read_text()) == 6355085032261
    stat = cgroups.parse_keyed((V1 / "memory.stat").read_text())
    usage = cgroups.parse_int((V1 / "memory.usage_in_bytes").read_text())
    assert cgroups.working_set(usage, stat, "total_inactive_file") == 940613632 - 332263424
    # per device Read/Write; the Total lines are not counted twice
    assert cgroups.parse_v1_blkio((V1 / "blkio.throttle.io_service_bytes").read_text()) == (
        4096000 + 8192, 1048576)
    assert cgroups.working_set(10, {}, "inactive_file") == 10
    assert cgroups.working_set(10, {"inactive_file": 50}, "inactive_file") == 0


def test_mountinfo_of_the_test_host_and_of_a_pure_v2_host():
    h = cgroups.parse_mountinfo((DATA / "mountinfo-testhost.txt").read_text())
    assert h.unified == "/sys/fs/cgroup/unified"
    assert h.v1["cpuacct"] == "/sys/fs/cgroup/cpuacct"
    assert h.v1["memory"] == "/sys/fs/cgroup/memory"
    assert h.v1["name=systemd"] == "/sys/fs/cgroup/systemd"
    assert h.path(h.unified, CGROUP) == f"/sys/fs/cgroup/unified{CGROUP}"

    pure = cgroups.parse_mountinfo(
        "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 "
        "rw,nsdelegate,memory_recursiveprot\n"
        "36 24 0:31 / /proc rw - proc proc rw\n"
    )
    assert pure.unified == "/sys/fs/cgroup" and pure.v1 == {}
    assert pure.path(pure.unified, CGROUP) == f"/sys/fs/cgroup{CGROUP}"
    # a mount showing only a subtree (no cgroup namespace): its root is cut off
    sub = cgroups.parse_mountinfo(
        "40 24 0:30 /machine.slice /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    assert sub.path(sub.unified, "/machine.slice/system.slice/x.service") == (
        "/sys/fs/cgroup/system.slice/x.service")
    assert sub.path(None, CGROUP) is None


def test_systemctl_show_blocks():
    text = (f"Id={UNIT}\nControlGroup={CGROUP}\n\n"
            "Id=jupyter-bob-singleuser.service\nControlGroup=\n")
    assert cgroups.parse_systemctl_show(text) == {UNIT: CGROUP, "jupyter-bob-singleuser.service": None}


def test_one_systemctl_call_for_all_new_units_then_none():
    calls = []

    async def runner(argv):
        calls.append(argv)
        units = argv[argv.index("--") + 1:]
        return CommandResult(tuple(argv), 0, "\n\n".join(
            f"Id={u}\nControlGroup=/system.slice/{u}" for u in units if "down" not in u))

    cache = acc.ControlGroupCache(acc.systemctl_lookup(runner))
    units = [f"u{i}.service" for i in range(200)]
    got = asyncio.run(cache.resolve(units))
    assert got["u7.service"] == "/system.slice/u7.service"
    assert len(calls) == 1 and calls[0][:3] == ["systemctl", "show", "--property=Id,ControlGroup"]
    asyncio.run(cache.resolve(units))
    assert len(calls) == 1  # all known: no subprocess at all
    # a unit without a cgroup (not running yet) is asked again; stopped units are forgotten
    got = asyncio.run(cache.resolve(["u1.service", "down.service"]))
    assert got == {"u1.service": "/system.slice/u1.service", "down.service": None}
    assert len(calls) == 2 and calls[1][-1] == "down.service"
    assert set(cache.cgroups) == {"u1.service"}


# --- fake trees -------------------------------------------------------------------


def v2_tree(root: Path, files=None) -> cgroups.Hierarchies:
    d = root / "unified" / CGROUP.lstrip("/")
    d.mkdir(parents=True)
    for name in files if files is not None else [p.name for p in V2.iterdir()]:
        shutil.copy(V2 / name, d / name)
    (d / "cgroup.procs").write_text("101\n102\n")
    return cgroups.Hierarchies(unified=str(root / "unified"))


def v1_tree(root: Path, unit_dirs=("cpuacct", "memory", "pids", "blkio", "systemd")):
    mounts = {}
    for ctl, files in {
        "cpuacct": ["cpuacct.usage"],
        "memory": ["memory.usage_in_bytes", "memory.stat", "memory.oom_control"],
        "pids": ["pids.current"],
        "blkio": ["blkio.throttle.io_service_bytes"],
        "systemd": [],
    }.items():
        top = root / ctl
        top.mkdir(parents=True)
        for name in files:  # the hierarchy's root has the files too (the whole machine)
            shutil.copy(V1 / name, top / name)
        if ctl in unit_dirs:
            d = top / CGROUP.lstrip("/")
            d.mkdir(parents=True)
            for name in files:
                shutil.copy(V1 / name, d / name)
            if ctl == "systemd":
                (d / "cgroup.procs").write_text("101\n")
        mounts["name=systemd" if ctl == "systemd" else ctl] = str(top)
    return cgroups.Hierarchies(v1=mounts)


class FakePsutil:
    """psutil's surface used by the fallback; io_counters refused as in the hardened hub."""

    class NoSuchProcess(Exception):
        pass

    class ZombieProcess(NoSuchProcess):
        pass

    class AccessDenied(Exception):
        pass

    def __init__(self, procs, io_denied=True):
        self.procs = procs  # pid -> dict(cpu=(user, system), rss=, threads=)
        self.io_denied = io_denied
        self.io_calls = 0
        fake = self

        class Process:
            def __init__(self, pid):
                if pid not in fake.procs:
                    raise fake.NoSuchProcess(pid)
                self.info = fake.procs[pid]

            def oneshot(self):
                from contextlib import nullcontext
                return nullcontext()

            def cpu_times(self):
                user, system = self.info["cpu"]
                return SimpleNamespace(user=user, system=system, children_user=0.0,
                                       children_system=self.info.get("children", 0.0))

            def memory_info(self):
                return SimpleNamespace(rss=self.info["rss"])

            def num_threads(self):
                return self.info["threads"]

            def io_counters(self):
                fake.io_calls += 1
                if fake.io_denied:
                    raise fake.AccessDenied()
                return SimpleNamespace(read_bytes=self.info["io"][0], write_bytes=self.info["io"][1])

        self.Process = Process


PROCS = {
    101: {"cpu": (3.0, 1.0), "rss": 100 * 2**20, "threads": 4, "io": (10, 20)},
    102: {"cpu": (0.5, 0.5), "rss": 50 * 2**20, "threads": 1, "io": (1, 2), "children": 2.0},
}


# --- reading a unit ------------------------------------------------------------------


def test_all_figures_from_cgroup_v2(tmp_path):
    reader = acc.Accounting(v2_tree(tmp_path), psutil_module=FakePsutil(PROCS))
    r = reader.read(UNIT, CGROUP, at=1000.0)
    assert r.cpu_seconds == 7.843
    assert r.memory_bytes == 734003200 - 209715200
    assert r.tasks == 37
    assert (r.io_read_bytes, r.io_write_bytes) == (1052672, 2097152)
    assert r.oom_kills == 3  # memory.events
    assert r.sources == dict.fromkeys((*cgroups.FIGURES, cgroups.OOM_KILLS), cgroups.SOURCE_V2)
    assert r.pids == (101, 102) and not r.gone
    assert r.pid_cpu == {}  # psutil not needed


def test_all_figures_from_cgroup_v1_controllers(tmp_path):
    reader = acc.Accounting(v1_tree(tmp_path), psutil_module=FakePsutil(PROCS))
    r = reader.read(UNIT, CGROUP, at=1000.0)
    assert r.cpu_seconds == pytest.approx(6355.085032261)
    assert r.memory_bytes == 940613632 - 332263424
    assert r.tasks == 23
    assert (r.io_read_bytes, r.io_write_bytes) == (4104192, 1048576)
    assert r.oom_kills == 2  # memory.oom_control
    assert r.sources == dict.fromkeys((*cgroups.FIGURES, cgroups.OOM_KILLS), cgroups.SOURCE_V1)
    assert r.pids == (101,)  # from the name=systemd hierarchy


def test_a_v1_parent_is_never_read_for_a_unit(tmp_path):
    # controllers read-only (the test host): no unit directory in memory/cpuacct/pids/blkio;
    # their roots hold the whole machine's figures, which must not be taken
    h = v1_tree(tmp_path, unit_dirs=("systemd",))
    reader = acc.Accounting(h, psutil_module=FakePsutil({101: PROCS[101]}))
    r = reader.read(UNIT, CGROUP, at=1000.0)
    assert r.sources == {"cpu": "psutil", "memory": "psutil", "tasks": "psutil"}
    assert r.cpu_seconds == 4.0 and r.memory_bytes == 100 * 2**20 and r.tasks == 4


def test_test_host_layout_cpu_from_v2_core_rest_from_psutil(tmp_path):
    # hybrid host with read-only controllers: the unified hierarchy has only the
    # core files (cpu.stat, cgroup.procs); memory/tasks come from psutil; io nowhere
    h2 = v2_tree(tmp_path, files=["cpu.stat"])
    h1 = v1_tree(tmp_path / "v1", unit_dirs=("systemd",))
    ps = FakePsutil(PROCS)
    reader = acc.Accounting(cgroups.Hierarchies(unified=h2.unified, v1=h1.v1), psutil_module=ps)
    r = reader.read(UNIT, CGROUP, at=1000.0)
    assert r.sources == {"cpu": "cgroup-v2", "memory": "psutil", "tasks": "psutil"}
    assert r.memory_bytes == 150 * 2**20 and r.tasks == 5
    assert r.io_read_bytes is None and "io" not in r.sources
    # io was refused once (no CAP_SYS_PTRACE in the hub): never tried again
    assert reader.psutil_io_denied and ps.io_calls == 1
    reader.read(UNIT, CGROUP, at=1010.0)
    assert ps.io_calls == 1


def test_psutil_only_with_io_allowed_and_a_vanished_process(tmp_path):
    h = cgroups.Hierarchies(unified=str(tmp_path / "unified"))
    d = tmp_path / "unified" / CGROUP.lstrip("/")
    (d / "kernel.scope").mkdir(parents=True)
    (d / "cgroup.procs").write_text("101\n")
    (d / "kernel.scope" / "cgroup.procs").write_text("102\n103\n")  # 103 exited meanwhile
    reader = acc.Accounting(h, psutil_module=FakePsutil(PROCS, io_denied=False))
    r = reader.read(UNIT, CGROUP, at=1000.0)
    assert r.pids == (101, 102, 103)  # sub-cgroups included
    assert r.sources == dict.fromkeys(cgroups.FIGURES, cgroups.SOURCE_PSUTIL)
    assert r.cpu_seconds == pytest.approx(4.0 + 3.0)  # 102: 1.0 own + 2.0 of waited children
    assert r.pid_cpu == {101: 4.0, 102: 3.0}
    assert (r.io_read_bytes, r.io_write_bytes) == (11, 22)


def test_gone_unit_and_unknown_cgroup(tmp_path):
    reader = acc.Accounting(v2_tree(tmp_path), psutil_module=FakePsutil(PROCS))
    assert reader.read(UNIT, None, at=1.0).gone
    r = reader.read("x.service", "/system.slice/x.service", at=1.0)
    assert r.gone and r.sources == {}


# --- CPU % ------------------------------------------------------------------------


def reading(at, cpu, source, pid_cpu=None):
    return cgroups.Reading(UNIT, CGROUP, at, cpu_seconds=cpu, sources={"cpu": source},
                       pid_cpu=pid_cpu or {})


def test_cpu_percent_from_counters():
    assert cgroups.cpu_percent(None, reading(10, 5.0, "cgroup-v2")) is None
    assert cgroups.cpu_percent(reading(0, 1.0, "cgroup-v2"), reading(10, 6.0, "cgroup-v2")) == 50.0
    assert cgroups.cpu_percent(reading(0, 1.0, "cgroup-v2"), reading(10, 21.0, "cgroup-v2")) == 200.0
    # counter reset (unit restarted) or a change of source: no figure rather than a wrong one
    assert cgroups.cpu_percent(reading(0, 9.0, "cgroup-v2"), reading(10, 1.0, "cgroup-v2")) is None
    assert cgroups.cpu_percent(reading(0, 1.0, "cgroup-v2"), reading(10, 6.0, "psutil")) is None
    assert cgroups.cpu_percent(reading(10, 1.0, "cgroup-v2"), reading(10, 6.0, "cgroup-v2")) is None


def test_cpu_percent_from_psutil_counts_per_process():
    before = reading(0, 30.0, "psutil", {1: 10.0, 2: 20.0})
    # pid 2 exited (its 20 s vanish from the sum), pid 3 started and used 4 s
    after = reading(10, 19.0, "psutil", {1: 15.0, 3: 4.0})
    assert cgroups.cpu_percent(before, after) == pytest.approx(90.0)
