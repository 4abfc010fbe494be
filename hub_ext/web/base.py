"""What the platform's handlers share: who the client is, the access rule and the user lookup."""

from __future__ import annotations

import functools
import pwd
import socket
import struct

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.scopes import has_scope
from tornado import web

from hub_ext.admin import health

# tornado settings key naming the proxy's unix user, the only peer whose
# X-Real-IP the hub believes (hub_ext.app.PlatformHub.proxy_user sets it)
FRONT_END_USER_SETTING = "platform_front_end_user"

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_of(request) -> tuple[str, int | None]:
    """The other end of a request's connection: (label, uid).

    On the hub's unix socket the kernel tells the peer's uid (SO_PEERCRED),
    which no client can forge; on TCP only the address is known (uid None).
    """
    stream = getattr(request.connection, "stream", None)
    sock = getattr(stream, "socket", None)
    if sock is not None and sock.family == socket.AF_UNIX:
        _pid, uid, _gid = _PEERCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        )
        return f"uid:{uid}", uid
    # tornado (xheaders=True in JupyterHub) keeps the socket's own peer here
    context = getattr(request.connection, "context", None)
    return getattr(context, "_orig_remote_ip", None) or request.remote_ip, None


@functools.cache
def _uid_of(user: str) -> int | None:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def request_client(handler) -> str:
    """The client of a request, for rate limits and login throttles: nginx's
    X-Real-IP when the connection came from the proxy, the peer itself otherwise
    (a lab's direct connection cannot claim another address)."""
    label, uid = peer_of(handler.request)
    front_end = handler.settings.get(FRONT_END_USER_SETTING)
    via_front_end = uid is not None and front_end is not None and uid == _uid_of(front_end)
    return health.client_address(label, handler.request.headers, via_front_end=via_front_end)


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
