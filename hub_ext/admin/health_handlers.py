"""``GET /hub/api/platform/health``: JSON for monitoring (the original's shape).

Anonymous callers get ``{"status": "ok"}``; a caller with the ``read:hub``
scope (the admin, or a token made with it) gets ``{"status": "ok",
"uptime_seconds", "uptime", "version": {"platform", "jupyterhub", "python"},
"users": {"total", "active_servers"}}``. Rate limited to one request per
``c.HealthEndpoint.min_interval`` seconds per client
(:func:`hub_ext.web.base.request_client`); a faster request gets 429 with
``Retry-After``. JupyterHub's own probe (``/hub/health`` and ``/hub/api/health``:
an empty 200, never limited; the playbook waits on it) keeps its paths.
"""

from __future__ import annotations

import math
import platform
import time

import jupyterhub
from jupyterhub import orm
from jupyterhub.apihandlers.base import APIHandler

from hub_ext import __version__
from hub_ext.admin import health
from hub_ext.admin.service import HEALTH_KEY, HealthEndpoint
from hub_ext.web.base import request_client

# versions, uptime and counts only for callers who may read the hub's details
# (the admin, or a token with this scope); everybody else gets the status
DETAILS_SCOPE = "read:hub"


class HealthHandler(APIHandler):
    def check_xsrf_cookie(self):
        """GET only; monitoring agents carry no cookie."""

    async def get(self):
        endpoint: HealthEndpoint = self.settings[HEALTH_KEY]
        self.set_header("Cache-Control", "no-cache, no-store")
        wait = endpoint.limiter.check(request_client(self))
        if wait:
            retry = max(1, math.ceil(wait))
            self.set_status(429)
            self.set_header("Retry-After", str(retry))
            self.finish({"status": 429, "message": "Too many requests", "retry_after": retry})
            return
        if self.current_user is None or DETAILS_SCOPE not in self.parsed_scopes:
            self.finish(health.ANONYMOUS_REPORT)
            return
        users = self.db.query(orm.User).count()
        active = self.db.query(orm.Spawner).filter(orm.Spawner.server_id.isnot(None)).count()
        self.finish(health.health_report(
            started=endpoint.started,
            now=time.time(),
            versions={"platform": __version__, "jupyterhub": jupyterhub.__version__,
                      "python": platform.python_version()},
            users=users,
            active_servers=active,
        ))


default_handlers = [(r"/api/platform/health", HealthHandler)]
