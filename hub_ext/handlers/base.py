"""What the platform's handlers share: who the client is, the access rule and the user lookup."""

from __future__ import annotations

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.scopes import has_scope
from tornado import web

from .. import health


def request_client(handler) -> str:
    """The client of a handler's request, for rate limits and login delays.

    :func:`hub_ext.health.client_address` over the socket's peer: the one rule
    for who a client is (health rate limit, login delays, signup quota).
    """
    request = handler.request
    # tornado (xheaders=True in JupyterHub) keeps the socket's peer here
    context = getattr(request.connection, "context", None)
    peer = getattr(context, "_orig_remote_ip", None) or request.remote_ip
    return health.client_address(peer, request.headers)


class UserResourceHandler(APIHandler):
    """An API about one user's resource (``/api/users/<name>/...``).

    ``resource`` names it in the 403 message (e.g. "the session").
    """

    resource = "the resources"

    def check_access(self, scope: str, user_name: str) -> None:
        """403 unless the caller has ``scope`` on ``user_name`` (own user, or admin).

        Checked before anything else and the same for unknown names, so a user
        learns nothing about other accounts (JupyterHub's needs_scope answers 404
        for another user's resources; the platform's API contract is 403).
        """
        if self.current_user is None:
            raise web.HTTPError(403, "Missing or invalid credentials.")
        if not has_scope(f"{scope}!user={user_name}", self.parsed_scopes, db=self.db):
            raise web.HTTPError(403, f"Not allowed to access {self.resource} of {user_name!r}")

    def target_user(self, user_name: str):
        user = self.find_user(user_name)
        if user is None:
            raise web.HTTPError(404, f"No such user: {user_name!r}")
        return user
