"""Which GPUs a lab gets, and what its unit and environment say about them (pure).

The mode (0 off, 1 on, 2 auto: the Docker original's ``JUPYTERHUB_GPU_ENABLED``),
the assignment policies (``all``, ``round-robin``, ``group``) over the load
each GPU carries, the unit's device access (``DevicePolicy=closed`` and
``DeviceAllow=`` of exactly the assigned nodes) and the lab's GPU environment.
docs/gpu.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from hub_ext.gpu.nvml import Detection, Gpu

MODE_OFF, MODE_ON, MODE_AUTO = 0, 1, 2
MODES = (MODE_OFF, MODE_ON, MODE_AUTO)
POLICY_ALL, POLICY_ROUND_ROBIN, POLICY_GROUP = "all", "round-robin", "group"
POLICIES = (POLICY_ALL, POLICY_ROUND_ROBIN, POLICY_GROUP)

# Device nodes every GPU lab needs besides its /dev/nvidiaN: the control node and
# the unified-memory nodes CUDA opens (DeviceAllow= takes no globs; a node that
# does not exist is skipped by systemd with a notice).
SHARED_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")

class GpuRequiredError(RuntimeError):
    """GPU support is forced on (mode 1) but no GPU was found."""

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
            f"GPU support is forced on (jupyterhub_gpu_enabled = 1) but no NVIDIA GPU was "
            f"found: {why}. Install the NVIDIA driver, or set jupyterhub_gpu_enabled to 2 "
            "(auto-detect) or 0 (off)"
        )
    return found

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
