"""The activity monitor's admin page, its JSON API and the platform's static files.

The activity service (:class:`hub_ext.activity.service.ActivityMonitor`) does
the work; this module is the HTTP side only.

* ``GET  /hub/activity``: the admin page (templates/activity.html).
* ``GET  /hub/api/activity``: every user's status, live usage, sizes and score.
* ``GET  /hub/api/activity/history``: the platform totals over the retention window.
* ``GET  /hub/api/activity/history/{user}``: one user's samples over it.
* ``POST /hub/api/activity/reset``: delete the history and the scores.
* ``GET  /hub/platform/static/...``: hub_ext/static (the vendored charting library).

All but the static files need the unfiltered ``admin:servers`` scope (admins);
a cookie-authenticated POST needs the ``X-XSRFToken`` header (JupyterHub's
API rule). docs/activity.md.
"""

from __future__ import annotations

import os

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.handlers import BaseHandler
from tornado import web

from hub_ext.activity.service import SETTINGS_KEY, ActivityMonitor
from hub_ext.web.access import require_scope

SCOPE = "admin:servers"
STATIC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static")


class _ActivityAPI(APIHandler):
    @property
    def monitor(self) -> ActivityMonitor:
        return self.settings[SETTINGS_KEY]


class ActivityPageHandler(BaseHandler):
    @web.authenticated
    async def get(self):
        require_scope(self, SCOPE, "see the activity monitor")
        monitor: ActivityMonitor = self.settings[SETTINGS_KEY]
        html = await self.render_template(
            "activity.html",
            static_prefix=self.hub.base_url + "platform/static/",
            sample_interval=monitor.sample_interval,
            retention_days=monitor.retention_days,
            half_life=monitor.half_life,
            inactive_after=monitor.inactive_after,
        )
        self.finish(html)


class ActivityAPIHandler(_ActivityAPI):
    async def get(self):
        require_scope(self, SCOPE, "read the activity monitor")
        await self.monitor.refresh()
        self.set_header("Cache-Control", "no-store")
        self.finish(self.monitor.model())


class ActivityHistoryHandler(_ActivityAPI):
    async def get(self, user_name=None):
        require_scope(self, SCOPE, "read the activity history")
        if user_name is not None and self.find_user(user_name) is None:
            raise web.HTTPError(404, f"No such user: {user_name!r}")
        self.set_header("Cache-Control", "no-store")
        self.finish(await self.monitor.history(user_name))


class ActivityResetHandler(_ActivityAPI):
    async def post(self):
        require_scope(self, SCOPE, "reset the activity history")
        if self.request.body:
            self.get_json_body()  # a body, if any, must be JSON (400 otherwise)
        deleted = await self.monitor.reset()
        self.log.info("Activity history reset by %s", self.current_user.name)
        self.finish({"deleted_samples": deleted})


class PlatformStaticHandler(web.StaticFileHandler):
    """hub_ext/static, public like the hub's own static files (a 2-tuple route)."""

    def initialize(self, path: str = STATIC_DIR, default_filename: str | None = None) -> None:
        super().initialize(path, default_filename)


default_handlers = [
    (r"/activity", ActivityPageHandler),
    (r"/api/activity", ActivityAPIHandler),
    (r"/api/activity/history", ActivityHistoryHandler),
    (r"/api/activity/history/([^/]+)", ActivityHistoryHandler),
    (r"/api/activity/reset", ActivityResetHandler),
    (r"/platform/static/(.*)", PlatformStaticHandler),
]
