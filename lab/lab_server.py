"""Run the user's lab on the listening socket systemd holds for its unit.

Each lab unit comes with a socket unit (hub_ext.units.lab_unit.lab_socket_properties):
systemd, as PID 1, binds the lab's port before the lab starts and keeps it
until the hub stops the lab, so no other user's lab can take the port, even
while this lab restarts or after it crashed (docs/security.md). This script
runs ``jupyterhub-singleuser`` with a server that serves on that inherited
socket (the sd_listen_fds protocol: ``LISTEN_PID``, ``LISTEN_FDS``, fd 3)
instead of binding a port of its own.

Installed by the playbook as ``/usr/local/lib/jupyterhub/lab_server.py``
(root, 0644) and run by every lab unit, as the lab's user, under the lab
venv's Python (after lab/lab_start.py's startup scripts). Imports only the
standard library at module level, so its pure part is tested without a lab.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import MutableMapping

SD_LISTEN_FDS_START = 3  # the first file descriptor systemd passes
LISTEN_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def inherited_fd(environ: MutableMapping[str, str], pid: int) -> int | None:
    """The listening socket's descriptor systemd passed to process ``pid``, or None.

    The variables are removed either way: kernels and terminals started by
    the lab must not believe they were given sockets.
    """
    owner = environ.get("LISTEN_PID", "")
    count = environ.get("LISTEN_FDS", "")
    for name in LISTEN_VARIABLES:
        environ.pop(name, None)
    if owner != str(pid) or not count.isdigit() or int(count) < 1:
        return None
    return SD_LISTEN_FDS_START


def adopt_socket(fd: int) -> socket.socket:
    """The inherited listening socket, closed in the lab's child processes."""
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    sock.setblocking(False)
    return sock


def main() -> None:
    from jupyter_server.serverapp import ServerApp
    from jupyterhub.singleuser.extension import JupyterHubSingleUser

    fd = inherited_fd(os.environ, os.getpid())
    listening = adopt_socket(fd) if fd is not None else None
    if listening is None:
        print("lab_server: no socket from systemd; the lab binds its own port",
              file=sys.stderr, flush=True)

    class SocketActivatedServerApp(ServerApp):
        # jupyter_server 2.x binds in these two steps: a trial bind to find a
        # free port (it would fail: systemd holds it), then the real bind
        def _find_http_port(self) -> None:
            if listening is None:
                super()._find_http_port()

        def _bind_http_server_tcp(self) -> bool:
            if listening is None:
                return super()._bind_http_server_tcp()
            self.http_server.add_sockets([listening])
            return True

    # set on JupyterHub's own extension app (a subclass would be looked up as an
    # extension package of its own, "__main__"); this process only
    JupyterHubSingleUser.serverapp_class = SocketActivatedServerApp
    JupyterHubSingleUser.launch_instance()


if __name__ == "__main__":
    main()
