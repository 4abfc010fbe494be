"""The port keeper of a cluster's worker: each lab's listening socket outlives the lab.

On one host systemd holds a lab's socket for as long as its unit exists. On a
worker a lab is a Slurm job; if it bound its own port, the port would be free
the moment the lab died, and another user's job on that worker could bind it
and receive the requests (with the user's cookies and tokens) that the hub's
proxy still routes there until the hub's next poll of the lab finds the job
gone. The keeper, a service on every worker (``jupyterhub-lab-ports``, the
slurm role), binds the port instead and hands the lab a copy of the listening
socket over a unix socket (SCM_RIGHTS); it keeps its own copy until
``hold_after_exit`` seconds after the lab's process ended (a pidfd says when),
by which time the hub has dropped the route. The socket is dual-stack and
belongs to the keeper's user, so no other user can bind that port, on IPv4 or
IPv6 (SO_REUSEPORT shares a port only within one uid). A uid holds at most
``MAX_PER_UID`` sockets at a time, so no user can exhaust a worker's ports.

The lab's side is ``lab_server.keeper_socket``. The reply is the port number
("<port>\\n") with the socket attached, or "refused: <why>\\n" without one.
Runs with the system's Python 3 (stdlib only), on the socket systemd passes.
"""

from __future__ import annotations

import array
import os
import selectors
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

SD_LISTEN_FDS_START = 3
# past the hub's poll of a lab (JupyterHub's Spawner.poll_interval, 30 s) with
# margin for a slow poll: then the route to the port is gone
HOLD_AFTER_EXIT = 120.0
MAX_PER_UID = 8


@dataclass
class Held:
    uid: int
    port: int
    listening: socket.socket
    pidfd: int | None  # None once the lab's process ended
    release_at: float | None = None  # monotonic, once the process ended


@dataclass
class Keeper:
    hold_after_exit: float = HOLD_AFTER_EXIT
    clock: Callable[[], float] = time.monotonic
    held: list[Held] = field(default_factory=list)

    def count(self, uid: int) -> int:
        return sum(1 for h in self.held if h.uid == uid)

    def serve_request(self, conn: socket.socket) -> Held | None:
        """Answer one lab's request on ``conn``: a new listening socket held for
        the peer's process, or a refusal."""
        pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                             struct.calcsize("3i")))
        if self.count(uid) >= MAX_PER_UID:
            conn.sendall(f"refused: uid {uid} holds {MAX_PER_UID} lab ports already\n".encode())
            return None
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # the peer is gone already
            return None
        listening = dual_stack_listener()
        port = listening.getsockname()[1]
        held = Held(uid, port, listening, pidfd)
        self.held.append(held)  # before the lab hears of it
        try:
            conn.sendmsg([f"{port}\n".encode()],
                          [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [listening.fileno()]))])
        except OSError:
            self.held.remove(held)
            os.close(pidfd)
            listening.close()
            return None
        return held

    def process_ended(self, held: Held) -> None:
        if held.pidfd is not None:
            os.close(held.pidfd)
            held.pidfd = None
        held.release_at = self.clock() + self.hold_after_exit

    def release_due(self) -> None:
        """Close the sockets held long enough after their lab ended."""
        now = self.clock()
        for h in [h for h in self.held if h.release_at is not None and h.release_at <= now]:
            self.held.remove(h)
            h.listening.close()

    def next_release(self) -> float | None:
        times = [h.release_at for h in self.held if h.release_at is not None]
        return max(0.0, min(times) - self.clock()) if times else None

    def run(self, server: socket.socket) -> None:
        """Serve ``server`` (a listening unix socket) for ever."""
        with selectors.DefaultSelector() as sel:
            sel.register(server, selectors.EVENT_READ, None)
            while True:
                for key, _ in sel.select(self.next_release()):
                    if key.data is None:
                        conn, _ = server.accept()
                        with conn:
                            conn.settimeout(5)
                            held = self.serve_request(conn)
                        if held is not None:
                            sel.register(held.pidfd, selectors.EVENT_READ, held)
                    else:
                        sel.unregister(key.fileobj)
                        self.process_ended(key.data)
                self.release_due()


def dual_stack_listener() -> socket.socket:
    """A listening TCP socket on a port the kernel picks, on every IPv6 and IPv4
    address (IPv4 only where the host has no IPv6)."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", 0))
    except OSError:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("0.0.0.0", 0))
    sock.listen(socket.SOMAXCONN)
    return sock


def main() -> int:
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        print("lab_ports: run by systemd's jupyterhub-lab-ports.socket (one socket)", file=sys.stderr)
        return 2
    Keeper().run(socket.socket(fileno=SD_LISTEN_FDS_START))
    return 0


if __name__ == "__main__":
    sys.exit(main())
