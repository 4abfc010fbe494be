"""NVML, the one seam to the GPUs: detection (which GPUs, which driver).

NVML is reached only through an object with pynvml's function names:
:func:`load_nvml` imports the module named by ``GpuSupport.nvml_module``
(:mod:`hub_ext.gpu.service`; by default ``pynvml`` from the ``nvidia-ml-py``
package). Tests hand in ``tests/fake_nvml.py`` instead. Failures are reported,
never raised (docs/gpu.md).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


class NvmlUnavailable(RuntimeError):
    """The NVML Python module cannot be imported."""

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

def load_nvml(module: str = "pynvml"):
    """Import the NVML binding module; NvmlUnavailable when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise NvmlUnavailable(f"Python module {module!r} not importable: {e}") from None


def as_text(value) -> str:
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
            driver = as_text(nvml.nvmlSystemGetDriverVersion())
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
                        uuid=as_text(nvml.nvmlDeviceGetUUID(handle)),
                        name=as_text(nvml.nvmlDeviceGetName(handle)),
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
