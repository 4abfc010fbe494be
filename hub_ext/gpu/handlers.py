"""GPU support at hub start, and the admin's GPU view.

* :func:`setup` runs NVML detection once when the hub starts (mode 1 without a
  GPU stops the hub here, with the reason in the journal).
* ``GET /hub/api/gpus`` (admins: ``admin:servers`` scope): mode, policy, the
  detected GPUs, each running server's assignment and the usage per GPU and
  per user (:meth:`hub_ext.gpu.devices.GpuSupport.usage`, what the activity monitor reads).
"""

from __future__ import annotations

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.scopes import has_scope
from tornado import web

from hub_ext.activity.sampler import unit_of
from hub_ext.gpu.devices import GpuSupport


def setup(app, parent=None) -> GpuSupport:
    """Create the hub's GpuSupport and detect the GPUs (raises in mode 1 without one)."""
    support = GpuSupport.instance(parent=parent or app)
    support.start()
    return support


def running_units(users) -> dict[str, str]:
    """Unit name -> hub user name of every active server (what usage maps processes by).

    Full systemd names (``jupyter-alice-singleuser.service``), as
    :func:`hub_ext.gpu.devices.unit_of_cgroup` finds them in ``/proc/<pid>/cgroup``;
    SystemdSpawner's ``unit_name`` lacks the suffix."""
    units = {}
    for user in users:
        for spawner in user.spawners.values():
            unit = unit_of(spawner)
            if unit and spawner.active:
                units[unit] = user.name
    return units


class GpuStatusHandler(APIHandler):
    async def get(self):
        if self.current_user is None or not has_scope(
            "admin:servers", self.parsed_scopes, db=self.db
        ):
            raise web.HTTPError(403, "GPU status is for admins")
        support = GpuSupport.instance()
        detection = support.detection
        self.write({
            "mode": support.mode,
            "enabled": support.enabled,
            "policy": support.policy,
            "detection": detection.as_dict() if detection else None,
            "assignments": support.book.as_dict(),
            "usage": support.usage(running_units(self.users.values())),
        })


default_handlers = [(r"/api/gpus", GpuStatusHandler)]

__all__ = ["GpuStatusHandler", "default_handlers", "running_units", "setup"]
