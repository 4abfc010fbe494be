"""The hub's GPU service: :class:`GpuSupport` (one per hub process).

Mode, policy and the detection result of this hub, the assignment book the
spawner asks for GPUs, and the usage snapshot the activity monitor and
``/hub/api/gpus`` read. The logic is :mod:`.nvml`, :mod:`.policy` and :mod:`.usage`; docs/gpu.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

from traitlets import Dict, Enum, Int, List, Unicode
from traitlets.config import SingletonConfigurable

from hub_ext.activity.model import unit_of
from hub_ext.gpu.nvml import (
    Detection,
    Gpu,
    NvmlUnavailable,
    describe_error,
    detect,
    load_nvml,
)
from hub_ext.gpu.policy import (
    MODE_AUTO,
    MODE_OFF,
    MODES,
    POLICIES,
    POLICY_ALL,
    AssignmentBook,
    choose_gpus,
    resolve_mode,
)
from hub_ext.gpu.usage import gpu_usage, usage_by_user


class GpuSupport(SingletonConfigurable):
    """GPU mode, policy and the detection result of this hub.

    Detection runs once, at hub start (:func:`setup`) or at
    the first spawn; mode 1 without a GPU makes it raise, so the hub does not start.
    """

    # The settings (hub_ext/settings.py): each trait is the only declaration of
    # its type, bounds and default; the Ansible variable in its tag sets it.
    # Across settings (policy 'group' needs a map, mode 1 excludes isolated
    # devices): hub_ext.settings.check_combinations.
    mode = Enum(
        list(MODES),
        default_value=MODE_AUTO,
        help="GPU support: 0 off, 1 on (hub start fails without a GPU), 2 auto-detect with NVML "
        "(orig JUPYTERHUB_GPU_ENABLED).",
    ).tag(config=True, ansible="jupyterhub_gpu_enabled")

    policy = Enum(
        list(POLICIES),
        default_value=POLICY_ALL,
        help="Which GPUs a lab gets: 'all' (every GPU, as the original), 'round-robin' "
        "(the least-loaded GPU), 'group' (by hub group, group_devices / group_counts).",
    ).tag(config=True, ansible="jupyterhub_gpu_policy")

    group_devices = Dict(
        value_trait=List(Int(min=0), minlen=1),
        help="Policy 'group': hub group -> GPU indices its members may get, e.g. {\"ml\": [0, 1]}.",
    ).tag(config=True, ansible="jupyterhub_gpu_group_devices")

    group_counts = Dict(
        value_trait=Int(min=1),
        help="Policy 'group': hub group -> number of GPUs a member's server gets "
        "(default: all of the group's GPUs).",
    ).tag(config=True, ansible="jupyterhub_gpu_group_counts")

    nvml_module = Unicode(
        "pynvml",
        help="Python module providing NVML (pynvml's API). A test seam: the test host "
        "points it at tests/fake_nvml.py; production keeps 'pynvml' (nvidia-ml-py).",
    ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.detection: Detection | None = None
        self.enabled = False
        self.book = AssignmentBook()

    def nvml(self):
        return load_nvml(self.nvml_module)

    def start(self) -> bool:
        """Detect (once) and resolve the mode; log one line. Returns whether GPUs are on."""
        if self.detection is not None:
            return self.enabled
        if self.mode == MODE_OFF:
            self.detection = Detection()
            self.enabled = False
            self.log.info("GPU support off (gpu enabled = 0)")
            return False
        try:
            self.detection = detect(self.nvml())
        except NvmlUnavailable as e:
            self.detection = Detection(errors=(str(e),))
        self.enabled = resolve_mode(self.mode, self.detection)  # raises for mode 1
        d = self.detection
        if self.enabled:
            self.log.info(
                "GPU support on: %d GPU(s) (%s), driver %s, policy %s, detected in %.3f s%s",
                len(d.gpus), ", ".join(f"{g.index}: {g.name}" for g in d.gpus),
                d.driver_version, self.policy, d.seconds,
                f"; skipped: {'; '.join(d.errors)}" if d.errors else "",
            )
            unknown = sorted(
                {i for v in self.group_devices.values() for i in v} - {g.index for g in d.gpus}
            )
            if unknown:
                self.log.warning("GPU group_devices name GPU indices not present: %s", unknown)
        else:
            self.log.info(
                "GPU support off: no NVIDIA GPU found (%s)", "; ".join(d.errors) or "no device"
            )
        return self.enabled

    @property
    def gpus(self) -> tuple[Gpu, ...]:
        return self.detection.gpus if self.detection else ()

    def by_index(self, indices: Iterable[int]) -> list[Gpu]:
        wanted = set(indices)
        return [g for g in self.gpus if g.index in wanted]

    def assign(self, key: str, groups: Iterable[str]) -> tuple[int, ...]:
        """Choose and hold GPUs for the server ``key`` (its unit name)."""
        if not self.start():
            self.book.release(key)
            return ()
        indices = choose_gpus(
            self.policy,
            [g.index for g in self.gpus],
            load=self.book.load(exclude=key),
            groups=groups,
            group_devices=self.group_devices,
            group_counts=self.group_counts,
        )
        self.book.hold(key, indices)
        return indices

    def usage(self, units: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Usage snapshot for the activity monitor: per GPU and per user.

        Returns ``{"enabled": False, ...}`` without touching NVML when GPU
        support is off; an NVML failure is reported in ``error``, not raised.
        """
        snapshot: dict[str, Any] = {"enabled": self.enabled, "gpus": [], "users": {}, "error": None}
        if not self.enabled:
            return snapshot
        try:
            gpus = gpu_usage(self.nvml(), units=units)
        except Exception as e:
            snapshot["error"] = describe_error(e)
            return snapshot
        snapshot["gpus"] = [asdict(g) for g in gpus]
        snapshot["users"] = usage_by_user(gpus)
        return snapshot


def running_units(users) -> dict[str, str]:
    """Unit name -> hub user name of every active server (what usage maps processes by).

    Full systemd names (``jupyter-alice-singleuser.service``), as
    :func:`hub_ext.gpu.usage.unit_of_cgroup` finds them in ``/proc/<pid>/cgroup``;
    SystemdSpawner's ``unit_name`` lacks the suffix."""
    units = {}
    for user in users:
        for spawner in user.spawners.values():
            unit = unit_of(spawner)
            if unit and spawner.active:
                units[unit] = user.name
    return units
