"""The admin's GPU view.

* ``GET /hub/api/gpus`` (admins: ``admin:servers`` scope): mode, policy, the
  detected GPUs, each running server's assignment and the usage per GPU and
  per user (:meth:`hub_ext.gpu.service.GpuSupport.usage`, what the activity
  monitor reads).

The GPU service (:mod:`hub_ext.gpu.service`) does the work; this module is the
HTTP side only.
"""

from __future__ import annotations

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.scopes import has_scope
from tornado import web

from hub_ext.gpu.service import GpuSupport, running_units


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

__all__ = ["GpuStatusHandler", "default_handlers"]
