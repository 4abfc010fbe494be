"""Resource accounting of one systemd unit, from its cgroup.

The unit's cgroup is its ``ControlGroup`` property (systemd's own answer,
never a guessed path), looked up once per unit with ONE ``systemctl show``
for every unit not yet known (:class:`ControlGroupCache`) and then read
directly: no subprocess per user per sample.

Each figure is taken from the first source that has it:

=========  ======================================  =================================  ==========================
figure     cgroup v2 (unified)                     cgroup v1 controller               psutil over the processes
=========  ======================================  =================================  ==========================
cpu        ``cpu.stat`` usage_usec                 ``cpuacct.usage`` (ns)             utime+stime (+ waited children)
memory     ``memory.current`` - inactive_file      ``memory.usage_in_bytes``          sum of RSS
                                                   - total_inactive_file
tasks      ``pids.current``                        ``pids.current``                   sum of threads
io         ``io.stat`` rbytes/wbytes               ``blkio.throttle.io_service_bytes``  ``/proc/<pid>/io`` (needs
                                                                                       ptrace access: not in the hub)
oom_kills  ``memory.events`` oom_kill              ``memory.oom_control`` oom_kill    (none: the kernel's count only)
=========  ======================================  =================================  ==========================

and :attr:`Reading.sources` says which one (``cgroup-v2``, ``cgroup-v1``,
``psutil``; absent: no source had it). A v1 controller is read only in the
unit's own directory of that hierarchy, never in a parent (a parent would
be the whole slice). psutil sums the processes listed in the unit's
``cgroup.procs`` (unified hierarchy, else v1 ``name=systemd``), recursively.

psutil in the hardened hub (no ``CAP_SYS_PTRACE``): ``/proc/<pid>/stat``,
``statm`` and ``status`` of other users' processes are world-readable, so
CPU times, RSS and threads work; ``/proc/<pid>/io`` and ``smaps`` are not, so
psutil IO is given up after the first refusal and memory is RSS (shared
pages count once per process), not PSS/USS. A process that exits between two
readings takes its CPU time since the previous reading with it (cgroup
counters keep it).

The file reads under the given roots, the ``systemctl show`` and psutil
(injectable); what the files mean, a reading and CPU % between two readings
are :mod:`hub_ext.activity.cgroups` (pure).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, Mapping

from hub_ext.activity.cgroups import (
    FIGURES,
    OOM_KILLS,
    SOURCE_PSUTIL,
    SOURCE_V1,
    SOURCE_V2,
    Hierarchies,
    Reading,
    parse_int,
    parse_keyed,
    parse_mountinfo,
    parse_systemctl_show,
    parse_v1_blkio,
    parse_v2_cpu_seconds,
    parse_v2_io,
    working_set,
)

# --- where the hierarchies are --------------------------------------------------------


def read_hierarchies(path: str = "/proc/self/mountinfo") -> Hierarchies:
    try:
        with open(path, encoding="utf-8") as f:
            return parse_mountinfo(f.read())
    except OSError:
        return Hierarchies()


# --- ControlGroup lookup (one systemctl for every new unit) --------------------------


def systemctl_lookup(runner: Callable) -> Callable[[list[str]], Awaitable[dict[str, str | None]]]:
    """A ControlGroup lookup running ONE ``systemctl show`` for a list of units.

    ``runner`` is :func:`hub_ext.process.run_command` (or a fake)."""

    async def lookup(units: list[str]) -> dict[str, str | None]:
        result = await runner(["systemctl", "show", "--property=Id,ControlGroup", "--", *units])
        return parse_systemctl_show(result.stdout) if result.ok else {}

    return lookup


class ControlGroupCache:
    """unit -> ControlGroup, each unit looked up once while it runs."""

    def __init__(self, lookup: Callable[[list[str]], Awaitable[Mapping[str, str | None]]]):
        self.lookup = lookup
        self.cgroups: dict[str, str] = {}
        self.lookups = 0  # systemctl calls made (tests, benchmark)

    async def resolve(self, units: Iterable[str]) -> dict[str, str | None]:
        units = list(units)
        missing = [u for u in units if u not in self.cgroups]
        if missing:
            self.lookups += 1
            for unit, cgroup in (await self.lookup(missing)).items():
                if cgroup:  # an inactive unit has none: asked again next time
                    self.cgroups[unit] = cgroup
        # units that stopped are forgotten (a restart may land elsewhere)
        for unit in set(self.cgroups) - set(units):
            del self.cgroups[unit]
        return {u: self.cgroups.get(u) for u in units}

    def forget(self, unit: str) -> None:
        self.cgroups.pop(unit, None)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:  # missing file (controller off) or directory (unit gone)
        return None


class Accounting:
    """Reads units' figures. One instance per hub; cheap to call for many units."""

    def __init__(self, hierarchies: Hierarchies | None = None, psutil_module=None):
        self.hierarchies = hierarchies if hierarchies is not None else read_hierarchies()
        if psutil_module is None:
            try:
                import psutil as psutil_module
            except ImportError:  # pragma: no cover - psutil is a hub dependency
                psutil_module = None
        self.psutil = psutil_module
        self.psutil_io_denied = False  # set at the first refusal: not tried again

    # --- processes of a unit ---

    def _procs_dir(self, cgroup: str) -> str | None:
        h = self.hierarchies
        for mount in (h.unified, h.v1.get("name=systemd")):
            path = h.path(mount, cgroup)
            if path and os.path.isdir(path):
                return path
        return None

    def pids(self, cgroup: str) -> tuple[int, ...] | None:
        """Every process of the cgroup and its sub-cgroups; None when the cgroup is gone."""
        top = self._procs_dir(cgroup)
        if top is None:
            return None
        pids: list[int] = []
        for dirpath, _dirs, files in os.walk(top):
            if "cgroup.procs" in files:
                text = _read(os.path.join(dirpath, "cgroup.procs")) or ""
                pids.extend(int(p) for p in text.split() if p.isdigit())
        return tuple(sorted(set(pids)))

    # --- the figures ---

    def read(self, unit: str, cgroup: str | None, at: float) -> Reading:
        reading = Reading(unit=unit, cgroup=cgroup, at=at)
        if not cgroup:
            reading.gone = True
            return reading
        h = self.hierarchies
        v2 = h.path(h.unified, cgroup)
        v1 = {ctl: h.path(mount, cgroup) for ctl, mount in h.v1.items()}

        def v2_file(name):
            return _read(f"{v2}/{name}") if v2 else None

        def v1_file(controller, name):
            d = v1.get(controller)
            return _read(f"{d}/{name}") if d else None

        # cpu
        text = v2_file("cpu.stat")
        seconds = parse_v2_cpu_seconds(text) if text else None
        if seconds is not None:
            reading.cpu_seconds, reading.sources["cpu"] = seconds, SOURCE_V2
        else:
            ns = parse_int(v1_file("cpuacct", "cpuacct.usage") or "")
            if ns is not None:
                reading.cpu_seconds, reading.sources["cpu"] = ns / 1e9, SOURCE_V1
        # memory
        current = parse_int(v2_file("memory.current") or "")
        if current is not None:
            stat = parse_keyed(v2_file("memory.stat") or "")
            reading.memory_bytes = working_set(current, stat, "inactive_file")
            reading.sources["memory"] = SOURCE_V2
        else:
            usage = parse_int(v1_file("memory", "memory.usage_in_bytes") or "")
            if usage is not None:
                stat = parse_keyed(v1_file("memory", "memory.stat") or "")
                reading.memory_bytes = working_set(usage, stat, "total_inactive_file")
                reading.sources["memory"] = SOURCE_V1
        # tasks
        tasks = parse_int(v2_file("pids.current") or "")
        if tasks is not None:
            reading.tasks, reading.sources["tasks"] = tasks, SOURCE_V2
        else:
            tasks = parse_int(v1_file("pids", "pids.current") or "")
            if tasks is not None:
                reading.tasks, reading.sources["tasks"] = tasks, SOURCE_V1
        # io
        text = v2_file("io.stat")
        if text is not None:
            reading.io_read_bytes, reading.io_write_bytes = parse_v2_io(text)
            reading.sources["io"] = SOURCE_V2
        else:
            text = v1_file("blkio", "blkio.throttle.io_service_bytes")
            if text is None:
                text = v1_file("blkio", "blkio.io_service_bytes")
            if text is not None:
                reading.io_read_bytes, reading.io_write_bytes = parse_v1_blkio(text)
                reading.sources["io"] = SOURCE_V1
        # OOM kills (v2 memory.events counts the unit's sub-cgroups too)
        kills = parse_keyed(v2_file("memory.events") or "").get("oom_kill")
        if kills is not None:
            reading.oom_kills, reading.sources[OOM_KILLS] = kills, SOURCE_V2
        else:
            kills = parse_keyed(v1_file("memory", "memory.oom_control") or "").get("oom_kill")
            if kills is not None:
                reading.oom_kills, reading.sources[OOM_KILLS] = kills, SOURCE_V1

        missing = [f for f in FIGURES if f not in reading.sources]
        pids = self.pids(cgroup)
        if pids is None:
            reading.gone = True
            return reading
        reading.pids = pids
        if missing and self.psutil is not None:
            self._psutil_figures(reading, missing)
        return reading

    def _psutil_figures(self, reading: Reading, missing: list[str]) -> None:
        ps = self.psutil
        want_io = "io" in missing and not self.psutil_io_denied
        cpu = 0.0
        rss = threads = io_read = io_write = 0
        seen = 0
        for pid in reading.pids:
            try:
                proc = ps.Process(pid)
                with proc.oneshot():
                    times = proc.cpu_times()
                    seconds = (times.user + times.system
                               + getattr(times, "children_user", 0.0)
                               + getattr(times, "children_system", 0.0))
                    rss_one = proc.memory_info().rss
                    threads_one = proc.num_threads()
            except (ps.NoSuchProcess, ps.ZombieProcess, ps.AccessDenied):
                continue  # exited meanwhile (or not ours to see): skipped
            seen += 1
            reading.pid_cpu[pid] = seconds
            cpu += seconds
            rss += rss_one
            threads += threads_one
            if want_io:
                try:
                    counters = proc.io_counters()
                    io_read += counters.read_bytes
                    io_write += counters.write_bytes
                except ps.AccessDenied:
                    self.psutil_io_denied, want_io = True, False
                except (ps.NoSuchProcess, ps.ZombieProcess):
                    pass
        if not seen and reading.pids:
            return
        if "cpu" in missing:
            reading.cpu_seconds, reading.sources["cpu"] = cpu, SOURCE_PSUTIL
        if "memory" in missing:
            reading.memory_bytes, reading.sources["memory"] = rss, SOURCE_PSUTIL
        if "tasks" in missing:
            reading.tasks, reading.sources["tasks"] = threads, SOURCE_PSUTIL
        if want_io:
            reading.io_read_bytes, reading.io_write_bytes = io_read, io_write
            reading.sources["io"] = SOURCE_PSUTIL
