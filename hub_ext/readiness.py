"""Notice at once that a freshly started lab listens.

JupyterHub waits for a new server with exponential backoff (random sleeps
growing to 5 s), so a lab that starts listening after 4 s is noticed one to
three seconds later; SystemdSpawner adds a 1 s poll of the unit on top. The
platform's spawner instead tries to connect to the lab's port every
``interval`` (a refused loopback connect costs microseconds) and asks systemd
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


async def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a TCP connection to host:port is accepted."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except OSError:  # refused, unreachable, or TimeoutError (an OSError since 3.11)
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


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
