"""Notice at once that a freshly started lab listens.

JupyterHub waits for a new server with exponential backoff (random sleeps
growing to 5 s), so a lab that starts listening after 4 s is noticed one to
three seconds later; SystemdSpawner adds a 1 s poll of the unit on top. The
platform's spawner instead asks the lab for its API root every ``interval``
(the request waits in the socket's queue until the lab serves) and asks systemd
whether the unit still runs every ``alive_every`` seconds, so the hub's own
HTTP check then succeeds on its first try, and a lab that exits before it
listens fails the spawn at once instead of after ``http_timeout``.

Plain asyncio, no JupyterHub import; the checks, clock and sleep are injectable.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Awaitable, Callable


class Readiness(enum.Enum):
    LISTENING = "listening"
    EXITED = "exited before listening"
    TIMED_OUT = "did not listen in time"


async def http_answers(host: str, port: int, path: str, timeout: float = 1.0) -> bool:
    """True when an HTTP server answers a GET of ``path`` on host:port.

    A connect alone proves nothing for a socket-activated lab: systemd holds
    the listening socket before the lab runs, so the lab is ready only once it
    answers.
    """
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
            await writer.drain()
            status_line = await reader.readline()
    except OSError:  # refused, reset, unreachable, or TimeoutError (an OSError since 3.11)
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return status_line.startswith(b"HTTP/")


async def wait_until_listening(
    probe: Callable[[], Awaitable[bool]],
    is_alive: Callable[[], Awaitable[bool]],
    *,
    timeout: float,
    interval: float = 0.05,
    alive_every: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Readiness:
    """Probe until it succeeds, the unit is gone, or ``timeout`` seconds passed."""
    started = clock()
    next_alive_check = started + alive_every
    while True:
        if await probe():
            return Readiness.LISTENING
        now = clock()
        if now >= next_alive_check:
            if not await is_alive():
                return Readiness.EXITED
            next_alive_check = now + alive_every
        if now - started >= timeout:
            return Readiness.TIMED_OUT
        await sleep(interval)
