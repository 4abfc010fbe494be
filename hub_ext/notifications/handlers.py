"""Admin notification broadcast: the page and the original's two APIs.

* ``GET  /hub/notifications``: the admin's form (templates/notifications.html).
* ``GET  /hub/api/notifications/active-servers``: ``{"servers": [{"username": ...}]}``.
* ``POST /hub/api/notifications/broadcast`` with ``{"message", "variant",
  "autoClose", "recipients"}``: ``{"total", "successful", "failed", "details":
  [{"username", "status", "error"?}]}``.

All three need the unfiltered ``admin:servers`` scope (admins). Each delivery
uses a token minted for that one user, limited to ``access:servers!user=<name>``
(what the lab's ingest endpoint checks), expiring after ``token_expires_in``
seconds and deleted as soon as the delivery is over; never an admin token.
Rules and the parallel delivery: :mod:`hub_ext.notifications.broadcast`.
"""

from __future__ import annotations

from jupyterhub import orm
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.handlers import BaseHandler
from tornado import web

from hub_ext.notifications import broadcast as notifications
from hub_ext.notifications.service import SETTINGS_KEY, Notifications
from hub_ext.web.access import require_scope

SCOPE = "admin:servers"
TOKEN_NOTE = "platform notification broadcast (single delivery)"


def _ready_servers(handler) -> dict[str, str]:
    """user name -> lab URL (as the hub reaches it) of every ready default server."""
    active = {}
    for orm_user in handler.db.query(orm.User).order_by(orm.User.name):
        if "" not in orm_user.orm_spawners:
            continue
        user = handler.users[orm_user]
        spawner = user.spawners[""]
        if spawner.ready and spawner.server is not None:
            active[user.name] = spawner.server.url
    return active


class NotificationsPageHandler(BaseHandler):
    @web.authenticated
    async def get(self):
        require_scope(self, SCOPE, "send notifications")
        html = await self.render_template(
            "notifications.html",
            max_length=notifications.MAX_MESSAGE_LENGTH,
            notification_types=notifications.NOTIFICATION_TYPES,
            default_type=notifications.DEFAULT_TYPE,
        )
        self.finish(html)


class ActiveServersHandler(APIHandler):
    async def get(self):
        require_scope(self, SCOPE, "list active servers")
        self.finish({"servers": [{"username": name} for name in _ready_servers(self)]})


class BroadcastHandler(APIHandler):
    @property
    def config_(self) -> Notifications:
        return self.settings[SETTINGS_KEY]

    async def post(self):
        require_scope(self, SCOPE, "broadcast notifications")
        try:
            broadcast = notifications.parse_broadcast(self.get_json_body())
        except notifications.BroadcastRequestError as e:
            raise web.HTTPError(400, str(e)) from None

        known = [name for (name,) in self.db.query(orm.User.name)]
        plan = notifications.plan_delivery(_ready_servers(self), broadcast.recipients, known)
        payload = broadcast.payload()
        cfg = self.config_
        tokens = {t.username: self._delivery_token(t.username) for t in plan.targets}

        async def send(target: notifications.Target) -> None:
            await cfg.post(target.url, tokens[target.username], payload, cfg.timeout)

        try:
            delivered = await notifications.deliver_all(plan.targets, send, cfg.timeout)
        finally:
            self._revoke(tokens.values())
        results = delivered + plan.refused
        summary = notifications.summarize(results)
        self.log.info(
            "Notification (%s) from %s: %d/%d delivered%s",
            broadcast.variant,
            self.current_user.name,
            summary["successful"],
            summary["total"],
            "".join(f"; {r.username}: {r.error}" for r in results if r.error),
        )
        self.finish(summary)

    def _delivery_token(self, username: str) -> str:
        user = self.find_user(username)
        return user.new_api_token(
            scopes=[f"access:servers!user={username}"],
            note=TOKEN_NOTE,
            expires_in=self.config_.token_expires_in,
        )

    def _revoke(self, tokens) -> None:
        for token in tokens:
            orm_token = orm.APIToken.find(self.db, token)
            if orm_token is not None:
                self.db.delete(orm_token)
        self.db.commit()


default_handlers = [
    (r"/notifications", NotificationsPageHandler),
    (r"/api/notifications/active-servers", ActiveServersHandler),
    (r"/api/notifications/broadcast", BroadcastHandler),
]
