"""GPU use per hub user: NVML's process list mapped to lab units through
``/proc/<pid>/cgroup`` (the second, injectable seam), summed per user.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hub_ext.gpu.nvml import as_text, describe_error

_UNIT_IN_CGROUP = re.compile(r"([^/]+\.service)(?:/|$)")


def unit_of_cgroup(cgroup_text: str) -> str | None:
    """The .service unit a process runs in, from the text of /proc/<pid>/cgroup.

    cgroup v2 (``0::/system.slice/x.service``) and v1 (``N:name=systemd:/...``)
    lines both work; the innermost .service wins (a lab's own unit, not the
    slice's or a parent's).
    """
    v2 = v1 = None
    for line in cgroup_text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        units = _UNIT_IN_CGROUP.findall(parts[2])
        if not units:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = units[-1]
        elif parts[1] == "name=systemd" or v1 is None:
            v1 = units[-1]
    return v2 or v1


def read_proc_cgroup(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as f:
            return f.read()
    except OSError:  # gone, or another PID namespace
        return None


@dataclass
class ProcessUsage:
    pid: int
    gpu_index: int
    memory_used: int | None  # bytes; None when the driver does not say
    unit: str | None
    user: str | None


@dataclass
class GpuUsage:
    index: int
    uuid: str
    name: str
    utilization_gpu: int | None  # percent over the driver's last sample period
    utilization_memory: int | None
    memory_used: int | None
    memory_total: int | None
    processes: list[ProcessUsage] = field(default_factory=list)
    error: str | None = None


def _processes(nvml, handle) -> dict[int, int | None]:
    """pid -> used GPU memory, compute and graphics processes together."""
    found: dict[int, int | None] = {}
    for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        fn = getattr(nvml, getter, None)
        if fn is None:
            continue
        for proc in fn(handle):
            used = getattr(proc, "usedGpuMemory", None)
            if found.get(proc.pid) is None or used is not None:
                found[proc.pid] = None if used is None else int(used)
    return found


def gpu_usage(
    nvml,
    *,
    units: Mapping[str, str] | None = None,
    read_cgroup: Callable[[int], str | None] = read_proc_cgroup,
) -> list[GpuUsage]:
    """Per-GPU utilisation and memory, and every GPU process with its unit and user.

    ``units`` maps lab unit names to hub user names (the running spawners);
    a process in another unit keeps its unit name and user None. Raises
    nothing for one broken GPU (its ``error`` says why); raises the NVML error
    when NVML cannot be initialised at all.
    """
    units = units or {}
    result: list[GpuUsage] = []
    nvml.nvmlInit()
    try:
        for index in range(nvml.nvmlDeviceGetCount()):
            usage = GpuUsage(index, "", "", None, None, None, None)
            result.append(usage)
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                usage.uuid = as_text(nvml.nvmlDeviceGetUUID(handle))
                usage.name = as_text(nvml.nvmlDeviceGetName(handle))
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                usage.memory_used, usage.memory_total = int(memory.used), int(memory.total)
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)
                usage.utilization_gpu, usage.utilization_memory = int(rates.gpu), int(rates.memory)
                for pid, used in sorted(_processes(nvml, handle).items()):
                    text = read_cgroup(pid)
                    unit = unit_of_cgroup(text) if text else None
                    usage.processes.append(
                        ProcessUsage(pid, index, used, unit, units.get(unit) if unit else None)
                    )
            except Exception as e:
                usage.error = describe_error(e)
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass
    return result


def usage_by_user(gpus: Sequence[GpuUsage]) -> dict[str, dict[str, Any]]:
    """Sum the GPU processes per hub user: memory, GPUs touched, process count."""
    users: dict[str, dict[str, Any]] = {}
    for usage in gpus:
        for proc in usage.processes:
            if proc.user is None:
                continue
            entry = users.setdefault(proc.user, {"memory_used": 0, "gpus": [], "processes": 0})
            entry["memory_used"] += proc.memory_used or 0
            entry["processes"] += 1
            if proc.gpu_index not in entry["gpus"]:
                entry["gpus"].append(proc.gpu_index)
    for entry in users.values():
        entry["gpus"].sort()
    return users
