"""``GET /hub/api/health``: unauthenticated JSON for monitoring (the original's shape).

``{"status": "ok", "uptime_seconds", "uptime", "version": {"platform",
"jupyterhub", "python"}, "users": {"total", "active_servers"}}``, rate limited
to one request per ``c.HealthEndpoint.min_interval`` seconds per client address
(nginx's X-Real-IP; :func:`hub_ext.health.client_address`); a faster request
gets 429 with ``Retry-After``. JupyterHub's own ``/hub/health`` (an empty 200,
used by the playbook to wait for the hub) is left as it is.
"""

from __future__ import annotations

import math
import platform
import time

import jupyterhub
from jupyterhub import orm
from jupyterhub.apihandlers.base import APIHandler
from traitlets import Float
from traitlets.config import LoggingConfigurable

from .. import __version__, health
from .base import request_client

SETTINGS_KEY = "hub_ext_health"


class HealthEndpoint(LoggingConfigurable):
    min_interval = Float(
        1.0, help="Seconds between two answered health requests from one client address."
    ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.started = time.time()
        self.limiter = health.RateLimiter(self.min_interval)


def setup(app, parent=None) -> HealthEndpoint:
    endpoint = HealthEndpoint(parent=parent or app)
    if app is not None:
        app.tornado_settings[SETTINGS_KEY] = endpoint
    return endpoint


class HealthHandler(APIHandler):
    def check_xsrf_cookie(self):
        """GET only; monitoring agents carry no cookie."""

    async def get(self):
        endpoint: HealthEndpoint = self.settings[SETTINGS_KEY]
        self.set_header("Cache-Control", "no-cache, no-store")
        wait = endpoint.limiter.check(request_client(self))
        if wait:
            retry = max(1, math.ceil(wait))
            self.set_status(429)
            self.set_header("Retry-After", str(retry))
            self.finish({"status": 429, "message": "Too many requests", "retry_after": retry})
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


default_handlers = [(r"/api/health", HealthHandler)]
