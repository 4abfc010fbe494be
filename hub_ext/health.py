"""Rules of the unauthenticated health endpoint: client address, rate limit, uptime.

Pure (no tornado, no jupyterhub); hub_ext.handlers.health does the I/O.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Mapping


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip()).is_loopback
    except ValueError:
        return False


def client_address(peer: str, headers: Mapping[str, str]) -> str:
    """The address a request came from, behind nginx and configurable-http-proxy.

    The hub only listens on 127.0.0.1, so forwarded headers are trusted only
    from a loopback peer. nginx sets ``X-Real-IP`` to the address it saw
    (replacing whatever the client sent), so it wins; otherwise the right-most
    non-loopback ``X-Forwarded-For`` entry (the proxy appends 127.0.0.1 itself).
    """
    if not _is_loopback(peer):
        return peer
    real_ip = (headers.get("X-Real-IP") or "").strip()
    if real_ip:
        return real_ip
    forwarded = [a.strip() for a in (headers.get("X-Forwarded-For") or "").split(",") if a.strip()]
    for address in reversed(forwarded):
        if not _is_loopback(address):
            return address
    return forwarded[0] if forwarded else peer


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


def health_report(*, started: float, now: float, versions: Mapping[str, str],
                  users: int, active_servers: int) -> dict:
    """The endpoint's JSON: nothing in it is secret (no names, no paths, no settings)."""
    uptime = int(max(0, now - started))
    return {
        "status": "ok",
        "uptime_seconds": uptime,
        "uptime": format_uptime(uptime),
        "version": dict(versions),
        "users": {"total": users, "active_servers": active_servers},
    }
