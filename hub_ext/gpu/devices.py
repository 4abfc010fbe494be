"""GPUs: NVML detection, per-user assignment, unit device access, usage per user.

Bare-metal form of the Docker original's "GPU Auto-Detection"
(``JUPYTERHUB_GPU_ENABLED``: 0 off, 1 on, 2 auto; docs/gpu.md).

Pure logic apart from one seam: NVML is reached only through an object with
pynvml's function names (``load_nvml`` imports the module named by
``GpuSupport.nvml_module`` of :mod:`hub_ext.gpu.service`, by default ``pynvml``
from the ``nvidia-ml-py`` package). Tests hand in ``tests/fake_nvml.py`` instead. Reading
``/proc/<pid>/cgroup`` is a second, injectable function. No tornado, no
jupyterhub here.
"""

from __future__ import annotations

import importlib
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

MODE_OFF, MODE_ON, MODE_AUTO = 0, 1, 2
MODES = (MODE_OFF, MODE_ON, MODE_AUTO)
POLICY_ALL, POLICY_ROUND_ROBIN, POLICY_GROUP = "all", "round-robin", "group"
POLICIES = (POLICY_ALL, POLICY_ROUND_ROBIN, POLICY_GROUP)

# Device nodes every GPU lab needs besides its /dev/nvidiaN: the control node and
# the unified-memory nodes CUDA opens (DeviceAllow= takes no globs; a node that
# does not exist is skipped by systemd with a notice).
SHARED_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")

log = logging.getLogger(__name__)


class NvmlUnavailable(RuntimeError):
    """The NVML Python module cannot be imported."""


class GpuRequiredError(RuntimeError):
    """GPU support is forced on (mode 1) but no GPU was found."""


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    memory_total: int  # bytes
    minor: int  # /dev/nvidia<minor>

    @property
    def device(self) -> str:
        return f"/dev/nvidia{self.minor}"


@dataclass(frozen=True)
class Detection:
    """What NVML reported at detection time."""

    gpus: tuple[Gpu, ...] = ()
    driver_version: str | None = None
    errors: tuple[str, ...] = ()  # why detection failed or which devices were skipped
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "gpus": [dict(asdict(g), device=g.device) for g in self.gpus],
            "driver_version": self.driver_version,
            "errors": list(self.errors),
            "seconds": round(self.seconds, 4),
        }


# --- NVML seam -------------------------------------------------------------------


def load_nvml(module: str = "pynvml"):
    """Import the NVML binding module; NvmlUnavailable when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise NvmlUnavailable(f"Python module {module!r} not importable: {e}") from None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def describe_error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def detect(nvml, clock: Callable[[], float] = time.perf_counter) -> Detection:
    """List the GPUs NVML sees. Never raises: failures end up in ``errors``.

    NVML failing to initialise (no driver, no library) gives no GPUs. A device
    that fails mid-enumeration (e.g. "GPU is lost") is skipped and named in
    ``errors``; the healthy ones are kept.
    """
    started = clock()
    try:
        nvml.nvmlInit()
    except Exception as e:  # NVMLError subclasses, OSError from ctypes
        return Detection(errors=(f"NVML init failed: {describe_error(e)}",), seconds=clock() - started)
    gpus, errors, driver = [], [], None
    try:
        try:
            driver = _text(nvml.nvmlSystemGetDriverVersion())
        except Exception as e:
            errors.append(f"driver version: {describe_error(e)}")
        try:
            count = nvml.nvmlDeviceGetCount()
        except Exception as e:
            errors.append(f"device count: {describe_error(e)}")
            count = 0
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                gpus.append(
                    Gpu(
                        index=index,
                        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                        name=_text(nvml.nvmlDeviceGetName(handle)),
                        memory_total=int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
                        minor=int(nvml.nvmlDeviceGetMinorNumber(handle)),
                    )
                )
            except Exception as e:
                errors.append(f"GPU {index} skipped: {describe_error(e)}")
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass
    return Detection(tuple(gpus), driver, tuple(errors), clock() - started)


def resolve_mode(mode: int, detection: Detection | None) -> bool:
    """Whether GPU support is on. Mode 1 without a GPU raises GpuRequiredError."""
    if mode not in MODES:
        raise ValueError(f"GPU mode must be one of {MODES}, got {mode!r}")
    if mode == MODE_OFF:
        return False
    found = bool(detection and detection.gpus)
    if mode == MODE_ON and not found:
        why = "; ".join(detection.errors) if detection and detection.errors else "no device"
        raise GpuRequiredError(
            f"GPU support is forced on (gpu enabled = 1) but no NVIDIA GPU was found: {why}"
        )
    return found


# --- assignment --------------------------------------------------------------------


class AssignmentBook:
    """Which server holds which GPU indices; the load that round-robin balances.

    Filled from each spawner's saved state at hub start (``load_state``), so a
    restart in the middle of a round keeps balancing where it was.
    """

    def __init__(self):
        self._held: dict[str, tuple[int, ...]] = {}

    def hold(self, key: str, indices: Iterable[int]) -> None:
        indices = tuple(indices)
        if indices:
            self._held[key] = indices
        else:
            self._held.pop(key, None)

    def release(self, key: str) -> None:
        self._held.pop(key, None)

    def held(self, key: str) -> tuple[int, ...]:
        return self._held.get(key, ())

    def load(self, exclude: str | None = None) -> Counter:
        counts: Counter = Counter()
        for key, indices in self._held.items():
            if key != exclude:
                counts.update(indices)
        return counts

    def as_dict(self) -> dict[str, list[int]]:
        return {k: list(v) for k, v in sorted(self._held.items())}


def _least_loaded(candidates: Sequence[int], load: Mapping[int, int], count: int) -> tuple[int, ...]:
    ranked = sorted(candidates, key=lambda i: (load.get(i, 0), i))
    return tuple(sorted(ranked[:count]))


def choose_gpus(
    policy: str,
    available: Sequence[int],
    *,
    load: Mapping[int, int] | None = None,
    groups: Iterable[str] = (),
    group_devices: Mapping[str, Sequence[int]] | None = None,
    group_counts: Mapping[str, int] | None = None,
) -> tuple[int, ...]:
    """GPU indices for one new server.

    ``all``: every GPU. ``round-robin``: the one least-loaded GPU (fewest
    servers holding it; lowest index on a tie). ``group``: only users in a
    group named in ``group_devices`` or ``group_counts`` get GPUs; the
    candidates are the union of their groups' indices (a group with a count
    but no index list may use any GPU), and they get the largest count among
    their groups (default: all candidates), least-loaded first.
    """
    load = load or {}
    available = sorted(set(available))
    if not available:
        return ()
    if policy == POLICY_ALL:
        return tuple(available)
    if policy == POLICY_ROUND_ROBIN:
        return _least_loaded(available, load, 1)
    if policy != POLICY_GROUP:
        raise ValueError(f"GPU policy must be one of {POLICIES}, got {policy!r}")
    group_devices = group_devices or {}
    group_counts = group_counts or {}
    candidates: set[int] = set()
    count = 0
    for group in set(groups):
        if group not in group_devices and group not in group_counts:
            continue
        mine = [i for i in group_devices.get(group, available) if i in available]
        candidates.update(mine)
        count = max(count, group_counts.get(group, len(mine)))
    return _least_loaded(sorted(candidates), load, min(count, len(candidates)))


# --- what a lab unit gets ------------------------------------------------------------


def unit_properties(enabled: bool, assigned: Sequence[Gpu]) -> dict[str, str | list[str]]:
    """systemd properties granting exactly the assigned GPUs.

    GPU support off: nothing (the unit is as without this module). On:
    ``DevicePolicy=closed`` for every lab (only the standard pseudo devices),
    plus path ``DeviceAllow=`` for the shared NVIDIA nodes and each assigned
    ``/dev/nvidiaN`` (never ``char-nvidia``, which would grant every GPU).
    A lab without GPUs gets no NVIDIA node at all.
    """
    if not enabled:
        return {}
    properties: dict[str, str | list[str]] = {"DevicePolicy": "closed"}
    if assigned:
        nodes = [*SHARED_DEVICE_NODES, *(g.device for g in sorted(assigned, key=lambda g: g.index))]
        properties["DeviceAllow"] = [f"{node} rw" for node in nodes]
    return properties


def lab_environment(enabled: bool, detected: bool, assigned: Sequence[Gpu]) -> dict[str, str]:
    """The lab's GPU environment, named as in the Docker original.

    ``NVIDIA_DETECTED``: the host has NVIDIA GPUs (informational, hub-wide).
    ``JUPYTERHUB_GPU_ENABLED``: GPU support resolved on (1) or off (0).
    ``ENABLE_GPU_SUPPORT`` / ``ENABLE_GPUSTAT``: THIS lab has GPUs.
    ``CUDA_VISIBLE_DEVICES`` / ``NVIDIA_VISIBLE_DEVICES``: the assigned GPUs by
    UUID (stable whatever order or subset CUDA enumerates under the device
    filter); empty / ``void`` for a lab without GPUs while support is on.
    """
    has = bool(enabled and assigned)
    env = {
        "NVIDIA_DETECTED": "1" if detected else "0",
        "JUPYTERHUB_GPU_ENABLED": "1" if enabled else "0",
        "ENABLE_GPU_SUPPORT": "1" if has else "0",
        "ENABLE_GPUSTAT": "1" if has else "0",
    }
    if enabled:
        uuids = ",".join(g.uuid for g in sorted(assigned, key=lambda g: g.index))
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        env["CUDA_VISIBLE_DEVICES"] = uuids
        env["NVIDIA_VISIBLE_DEVICES"] = uuids or "void"
    return env


# --- usage per user ------------------------------------------------------------------

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
                usage.uuid = _text(nvml.nvmlDeviceGetUUID(handle))
                usage.name = _text(nvml.nvmlDeviceGetName(handle))
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
