"""What a unit's cgroup files say and what one reading of a unit is: pure.

The parsers of the cgroup files (v2 and v1) and of ``/proc/self/mountinfo``'s
cgroup mounts (:class:`Hierarchies`), of ``systemctl show``'s ControlGroup
answer; :class:`Reading` (one unit's cumulative figures at one moment),
:func:`cpu_percent` between two readings and :func:`oom_kill_is_new`.
:mod:`hub_ext.activity.accounting` reads the files and runs the commands.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

SOURCE_V2 = "cgroup-v2"
SOURCE_V1 = "cgroup-v1"
SOURCE_PSUTIL = "psutil"
FIGURES = ("cpu", "memory", "tasks", "io")  # figures psutil can stand in for
# processes of the unit the kernel's OOM killer ended since the unit started
# (its cgroup is new with each start); only a memory cgroup counts them
OOM_KILLS = "oom_kills"
# v1 hierarchies read here (a mount may join several, e.g. "cpu,cpuacct")
V1_CONTROLLERS = ("cpuacct", "memory", "pids", "blkio", "name=systemd")


# --- parsers: text of one cgroup file -> numbers ----------------------------------


def parse_int(text: str) -> int | None:
    """A single-number file (memory.current, pids.current, cpuacct.usage); "max" -> None."""
    text = text.strip()
    return int(text) if text.isdigit() else None


def parse_keyed(text: str) -> dict[str, int]:
    """A flat keyed file: ``key value`` per line (cpu.stat, memory.stat)."""
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            values[parts[0]] = int(parts[1])
    return values


def parse_v2_cpu_seconds(text: str) -> float | None:
    usec = parse_keyed(text).get("usage_usec")
    return None if usec is None else usec / 1e6


def parse_v2_io(text: str) -> tuple[int, int]:
    """io.stat: ``MAJ:MIN rbytes=N wbytes=N rios=N ...`` per device -> (read, written) bytes."""
    read = written = 0
    for line in text.splitlines():
        for item in line.split()[1:]:
            key, _, value = item.partition("=")
            if key == "rbytes" and value.isdigit():
                read += int(value)
            elif key == "wbytes" and value.isdigit():
                written += int(value)
    return read, written


def parse_v1_blkio(text: str) -> tuple[int, int]:
    """blkio.*io_service_bytes: ``MAJ:MIN Read N`` / ``Write N`` per device, then ``Total N``."""
    read = written = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].isdigit():
            if parts[1] == "Read":
                read += int(parts[2])
            elif parts[1] == "Write":
                written += int(parts[2])
    return read, written


def working_set(usage: int | None, stat: Mapping[str, int], inactive_key: str) -> int | None:
    """Memory in use without the reclaimable inactive page cache (what ``docker stats`` shows)."""
    if usage is None:
        return None
    return max(0, usage - stat.get(inactive_key, 0))


# --- where the hierarchies are --------------------------------------------------------


@dataclass(frozen=True)
class Hierarchies:
    """Mount points of the cgroup hierarchies this process sees."""

    unified: str | None = None  # cgroup2 mount point
    v1: Mapping[str, str] = field(default_factory=dict)  # controller -> mount point
    roots: Mapping[str, str] = field(default_factory=dict)  # mount point -> mount root

    def path(self, mount: str | None, cgroup: str) -> str | None:
        """The directory of ``cgroup`` (a ControlGroup value) in the hierarchy mounted at ``mount``."""
        if mount is None or not cgroup.startswith("/"):
            return None
        root = self.roots.get(mount, "/").rstrip("/")
        if root and cgroup.startswith(root + "/"):
            cgroup = cgroup[len(root):]  # the mount shows only a subtree
        return mount.rstrip("/") + cgroup


def parse_mountinfo(text: str) -> Hierarchies:
    """The cgroup2 mount and the v1 controller mounts from /proc/self/mountinfo."""
    unified = None
    v1: dict[str, str] = {}
    roots: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if len(fields) < sep + 4 or len(fields) < 5:
            continue
        root, mount, fstype, options = fields[3], fields[4], fields[sep + 1], fields[sep + 3]
        if fstype == "cgroup2":
            if unified is None:
                unified = mount
                roots[mount] = root
        elif fstype == "cgroup":
            for option in options.split(","):
                if option in V1_CONTROLLERS and option not in v1:
                    v1[option] = mount
                    roots[mount] = root
    return Hierarchies(unified, v1, roots)


# --- ControlGroup lookup --------------------------------------------------------------


def parse_systemctl_show(text: str) -> dict[str, str | None]:
    """``systemctl show --property=Id,ControlGroup A B ...``: blocks separated by blank lines."""
    found: dict[str, str | None] = {}
    for block in text.split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if props.get("Id"):
            found[props["Id"]] = props.get("ControlGroup") or None
    return found


# --- one reading --------------------------------------------------------------------


@dataclass
class Reading:
    """Cumulative figures of one unit at one moment (``at``: epoch seconds)."""

    unit: str
    cgroup: str | None
    at: float
    cpu_seconds: float | None = None
    memory_bytes: int | None = None
    tasks: int | None = None
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None
    oom_kills: int | None = None
    sources: dict[str, str] = field(default_factory=dict)  # figure -> source
    pids: tuple[int, ...] = ()
    pid_cpu: dict[int, float] = field(default_factory=dict)  # psutil CPU seconds per pid
    gone: bool = False  # the cgroup directory no longer exists

    def as_dict(self) -> dict:
        return {
            "unit": self.unit,
            "cgroup": self.cgroup,
            "cpu_seconds": self.cpu_seconds,
            "memory_bytes": self.memory_bytes,
            "tasks": self.tasks,
            "io_read_bytes": self.io_read_bytes,
            "io_write_bytes": self.io_write_bytes,
            "oom_kills": self.oom_kills,
            "sources": dict(self.sources),
        }


def cpu_percent(previous: Reading | None, current: Reading) -> float | None:
    """CPU use between two readings, 100 = one core busy; None without a comparable pair.

    cgroup counters: the difference. psutil: per process, so processes that
    started meanwhile count from zero and ones that exited do not make the
    sum go down.
    """
    if previous is None or current.cpu_seconds is None or previous.cpu_seconds is None:
        return None
    elapsed = current.at - previous.at
    source = current.sources.get("cpu")
    if elapsed <= 0 or source != previous.sources.get("cpu"):
        return None
    if source == SOURCE_PSUTIL:
        used = sum(
            max(0.0, seconds - previous.pid_cpu.get(pid, 0.0))
            for pid, seconds in current.pid_cpu.items()
        )
    else:
        used = current.cpu_seconds - previous.cpu_seconds
        if used < 0:  # the unit restarted: its counter began again
            return None
    return max(0.0, used / elapsed * 100.0)


def oom_kill_is_new(previous: Reading | None, current: Reading) -> bool:
    """Whether ``current`` shows an OOM kill the previous reading of the unit did not.

    A unit's first reading with kills (the hub started after them) counts as new:
    its time is then when the monitor saw them, not when they happened."""
    if not current.oom_kills:
        return False
    before = previous.oom_kills if previous is not None else None
    return before is None or current.oom_kills > before
