"""The activity monitor's figures for labs on the cluster's workers: Slurm's accounting.

On one host the monitor reads each lab unit's cgroup (hub_ext/activity/accounting.py).
A lab on a worker has no unit on the hub host; its figures come from Slurm
instead: ``sstat`` of the lab job's batch step (the lab's whole process tree),
which slurmd on the worker gathers from the job's cgroup
(``JobAcctGatherType=jobacct_gather/cgroup``, every ``JobAcctGatherFrequency``
seconds: the slurm role's slurm.conf). ``AveCPU`` of the step's one task is
the CPU time the lab has used, ``AveRSS`` its resident memory; both are
reported with the source ``slurm`` (docs/activity.md's sources, docs/cluster.md).

:class:`SlurmAccounting` replaces the monitor's reader when the hub's spawner
is :class:`~hub_ext.cluster.spawner.SlurmLabSpawner` (:func:`monitor_sources`);
it runs in the monitor's worker thread, one ``sstat`` per running lab.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterable, Mapping

from hub_ext.activity.accounting import Reading
from hub_ext.activity.model import unit_of

SOURCE_SLURM = "slurm"
SSTAT_FIELDS = "JobID,AveCPU,AveRSS"
SSTAT_TIMEOUT = 10  # seconds; a worker that does not answer leaves the figures empty
_DURATION = re.compile(r"(?:(?:(\d+)-)?(\d+):)?(\d+):(\d+(?:\.\d+)?)")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)([KMGTP]?)")
_SIZE_FACTOR = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}


def parse_duration(text: str) -> float | None:
    """Slurm's ``[DD-[HH:]]MM:SS[.mmm]`` in seconds; None when it is not one."""
    found = _DURATION.fullmatch(text.strip())
    if not found:
        return None
    days, hours, minutes, seconds = found.groups()
    return int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)


def parse_size(text: str) -> int | None:
    """Slurm's sizes (``123456K``, ``1.5M``, ``0``) in bytes; None when it is not one."""
    found = _SIZE.fullmatch(text.strip())
    if not found:
        return None
    return int(float(found.group(1)) * _SIZE_FACTOR[found.group(2)])


def parse_sstat(stdout: str) -> dict[str, tuple[float | None, int | None]]:
    """``sstat --parsable2 --format=JobID,AveCPU,AveRSS`` lines: step -> (CPU seconds, bytes)."""
    steps = {}
    for line in stdout.splitlines():
        fields = line.strip().split("|")
        if len(fields) >= 3 and fields[0]:
            steps[fields[0]] = (parse_duration(fields[1]), parse_size(fields[2]))
    return steps


def sstat_argv(job_id: str) -> list[str]:
    return ["sstat", "--noheader", "--parsable2", "--jobs", f"{job_id}.batch", f"--format={SSTAT_FIELDS}"]


def running_jobs(spawners: Iterable) -> dict[str, str]:
    """unit name (the monitor's key for a lab) -> Slurm job id, of every lab with a job."""
    return {unit_of(s): s.job_id for s in spawners if s.job_id and unit_of(s)}


class SlurmAccounting:
    """The monitor's reader for labs that are Slurm jobs (the interface of
    hub_ext.activity.accounting.Accounting: ``read(unit, cgroup, at)``)."""

    def __init__(self, jobs: Callable[[], Mapping[str, str]], run: Callable = subprocess.run):
        self.jobs = jobs
        self.run = run

    def read(self, unit: str, cgroup: str | None, at: float) -> Reading:
        job = self.jobs().get(unit)
        reading = Reading(unit=unit, cgroup=f"slurm job {job}" if job else None, at=at)
        if not job:
            reading.gone = True
            return reading
        try:
            result = self.run(sstat_argv(job), capture_output=True, text=True, timeout=SSTAT_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired):
            return reading
        cpu, memory = parse_sstat(result.stdout).get(f"{job}.batch", (None, None))
        if cpu is not None:
            reading.cpu_seconds, reading.sources["cpu"] = cpu, SOURCE_SLURM
        if memory is not None:
            reading.memory_bytes, reading.sources["memory"] = memory, SOURCE_SLURM
        return reading


async def no_control_groups(units: list[str]) -> dict[str, str | None]:
    """The monitor's cgroup lookup on the cluster: a lab has no unit on the hub host."""
    return dict.fromkeys(units)


def monitor_sources(spawner_class) -> dict:
    """The ActivityMonitor's reader and cgroup lookup for the hub's spawner:
    Slurm's for SlurmLabSpawner, none (the monitor's own) otherwise."""
    from hub_ext.cluster import metrics
    from hub_ext.cluster.spawner import SlurmLabSpawner

    if not (isinstance(spawner_class, type) and issubclass(spawner_class, SlurmLabSpawner)):
        return {}
    return {"accounting_reader": SlurmAccounting(lambda: running_jobs(metrics.tracked())),
            "cgroup_lookup": no_control_groups}
