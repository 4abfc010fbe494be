"""A fake NVML with pynvml's function names, for tests only.

Unit tests build ``FakeNvml(...)`` objects and hand them to ``hub_ext.gpu.nvml`` and ``hub_ext.gpu.usage``.
The integration test copies this file onto the test host and points
``c.GpuSupport.nvml_module`` at it (docs/gpu.md, "Testing without a GPU"):
imported as a module, it serves the devices listed in the JSON file named by
``$FAKE_NVML_CONFIG`` or, by default, ``fake_nvml.json`` next to this file.
Never installed on a production host.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace


class NVMLError(Exception):
    def __init__(self, what: str):
        super().__init__(what)


class NVMLError_LibraryNotFound(NVMLError):
    pass


def fake_gpu(index: int, name: str = "NVIDIA Fake GPU", memory: int = 16 * 1024**3, **extra) -> dict:
    return {
        "index": index,
        "uuid": f"GPU-00000000-0000-0000-0000-{index:012d}",
        "name": name,
        "memory_total": memory,
        "memory_used": extra.get("memory_used", 0),
        "minor": extra.get("minor", index),
        "utilization": extra.get("utilization", 0),
        "processes": extra.get("processes", {}),  # pid -> bytes
    }


class FakeNvml:
    """``gpus``: dicts as fake_gpu makes them. ``init_error``: nvmlInit raises it.
    ``fail_at``: nvmlDeviceGetUUID of that index raises (an error mid-enumeration)."""

    def __init__(self, gpus=(), *, init_error: Exception | None = None, fail_at: int | None = None,
                 driver: str = "580.00.00"):
        self.gpus = [dict(g) for g in gpus]
        self.init_error = init_error
        self.fail_at = fail_at
        self.driver = driver
        self.initialised = 0
        self.calls = 0

    # --- pynvml API subset used by hub_ext.gpu.nvml and hub_ext.gpu.usage ---
    def nvmlInit(self):
        self.calls += 1
        if self.init_error is not None:
            raise self.init_error
        self.initialised += 1

    def nvmlShutdown(self):
        self.initialised -= 1

    def _check(self):
        if self.initialised <= 0:
            raise NVMLError("Uninitialized")

    def nvmlSystemGetDriverVersion(self):
        self._check()
        return self.driver

    def nvmlDeviceGetCount(self):
        self._check()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        self._check()
        if not 0 <= index < len(self.gpus):
            raise NVMLError("Invalid Argument")
        return index

    def nvmlDeviceGetUUID(self, handle):
        if handle == self.fail_at:
            raise NVMLError("GPU is lost")
        return self.gpus[handle]["uuid"]

    def nvmlDeviceGetName(self, handle):
        return self.gpus[handle]["name"].encode()  # old pynvml returned bytes

    def nvmlDeviceGetMemoryInfo(self, handle):
        g = self.gpus[handle]
        return SimpleNamespace(total=g["memory_total"], used=g["memory_used"],
                               free=g["memory_total"] - g["memory_used"])

    def nvmlDeviceGetMinorNumber(self, handle):
        return self.gpus[handle]["minor"]

    def nvmlDeviceGetUtilizationRates(self, handle):
        u = self.gpus[handle]["utilization"]
        return SimpleNamespace(gpu=u, memory=u // 2)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [SimpleNamespace(pid=int(pid), usedGpuMemory=used)
                for pid, used in self.gpus[handle]["processes"].items()]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle):
        return []


def _from_config() -> FakeNvml:
    path = os.environ.get("FAKE_NVML_CONFIG") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "fake_nvml.json")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except FileNotFoundError:
        return FakeNvml(init_error=NVMLError_LibraryNotFound("NVML Shared Library Not Found"))
    return FakeNvml([fake_gpu(**g) for g in config.get("gpus", [])])


_module_instance = None


def __getattr__(name):
    """Module-level pynvml functions, served by the instance from the JSON file."""
    global _module_instance
    if not name.startswith("nvml"):
        raise AttributeError(name)
    if _module_instance is None:
        _module_instance = _from_config()
    return getattr(_module_instance, name)
