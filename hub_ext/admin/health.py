"""Rules of the health endpoint: client address, rate limit, uptime, what whom sees.

Pure (no tornado, no jupyterhub); hub_ext.admin.health_handlers does the I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping


def client_address(peer: str, headers: Mapping[str, str], *, via_front_end: bool) -> str:
    """Who a request came from, as a key for rate limits and throttles.

    nginx sets ``X-Real-IP`` to the address it saw (replacing whatever the
    client sent). The header counts only when the connection came from the
    front end (the proxy's unix user on the hub's socket): a lab connects to
    the hub's socket directly and could send any header, so it is known by its
    peer (``uid:<n>``, from the socket's peer credentials) instead.
    """
    if not via_front_end:
        return peer
    return (headers.get("X-Real-IP") or "").strip() or peer


class RateLimiter:
    """At most one request per ``interval`` seconds per key; remembers at most ``max_keys``."""

    def __init__(self, interval: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 10_000):
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self.interval = interval
        self.clock = clock
        self.max_keys = max_keys
        self._last: dict[str, float] = {}

    def check(self, key: str) -> float:
        """0 when allowed now (and counted), else the seconds to wait."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            return self.interval - (now - last)
        if len(self._last) >= self.max_keys:
            self._prune(now)
        self._last[key] = now
        return 0.0

    def _prune(self, now: float) -> None:
        stale = [k for k, t in self._last.items() if now - t >= self.interval]
        for k in stale:
            del self._last[k]
        if len(self._last) >= self.max_keys:  # all recent: forget the oldest half
            for k in sorted(self._last, key=self._last.get)[: self.max_keys // 2]:
                del self._last[k]


def format_uptime(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, _ = divmod(rest, 60)
    return f"{days}d {hours}h {minutes}m"


ANONYMOUS_REPORT = {"status": "ok"}


def health_report(*, started: float, now: float, versions: Mapping[str, str],
                  users: int, active_servers: int) -> dict:
    """The endpoint's JSON for a caller allowed to read the hub's details
    (versions and counts help an attacker; anonymous callers get ANONYMOUS_REPORT)."""
    uptime = int(max(0, now - started))
    return {
        "status": "ok",
        "uptime_seconds": uptime,
        "uptime": format_uptime(uptime),
        "version": dict(versions),
        "users": {"total": users, "active_servers": active_servers},
    }
