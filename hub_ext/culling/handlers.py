"""The session-info / extend-session API of idle culling.

* ``GET  /hub/api/users/{user}/session-info``: where the user's default server stands.
* ``POST /hub/api/users/{user}/extend-session`` with ``{"hours": N}``.

The culling service (:class:`hub_ext.culling.service.SessionCuller`) answers
both; this module is the HTTP side only. docs/culling.md has the semantics.
"""

from __future__ import annotations

from tornado import web

from hub_ext.culling import culler
from hub_ext.culling.service import SETTINGS_KEY, ExtensionRefused, SessionCuller
from hub_ext.web.base import UserResourceHandler


class _SessionHandler(UserResourceHandler):
    resource = "the session"

    @property
    def session_culler(self) -> SessionCuller:
        return self.settings[SETTINGS_KEY]


class SessionInfoHandler(_SessionHandler):
    async def get(self, user_name):
        self.check_access("read:servers", user_name)
        user = self.target_user(user_name)
        self.write(self.session_culler.session_info(user))


class ExtendSessionHandler(_SessionHandler):
    async def post(self, user_name):
        self.check_access("servers", user_name)
        body = self.get_json_body()  # 400 on invalid JSON
        try:
            hours = culler.parse_extension_request(body)
        except culler.ExtensionRequestError as e:
            raise web.HTTPError(400, str(e)) from None
        user = self.target_user(user_name)
        try:
            self.write(self.session_culler.extend(user, hours))
        except ExtensionRefused as e:
            raise web.HTTPError(409, str(e)) from None


default_handlers = [
    (r"/api/users/([^/]+)/session-info", SessionInfoHandler),
    (r"/api/users/([^/]+)/extend-session", ExtendSessionHandler),
]

__all__ = [
    "ExtendSessionHandler",
    "SessionInfoHandler",
    "default_handlers",
]
