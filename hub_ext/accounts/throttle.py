"""Login delays that grow with failures, per account and per client address.

Pure arithmetic (no tornado, no jupyterhub), with an injectable clock;
PlatformAuthenticator asks it before every password check.

Why not a lock: NativeAuthenticator locked an account after N failures from
anywhere, so anyone could lock the admin out, and renew it for ever. Here the
failures are counted under three keys, and the wait a client sees is the
longest of

* the (account, address) pair: ``free_failures`` free, then 1 s, 2 s, 4 s ...
  up to ``max_delay``;
* the address alone (every account it tried): the same curve after
  ``ADDRESS_FREE_FACTOR`` times as many failures, against name spraying;
* the account alone (every address): the same curve, but only for an address
  that has itself failed on that account, so a distributed guesser is slowed
  while the real user from a fresh address still gets a first try.

A refused (delayed) attempt checks no password and counts nothing. A success
clears the pair and the account, never the address. Counts are forgotten
``forget_after`` seconds after their last failure; at most ``max_keys`` keys
are kept (the stalest go first).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

ADDRESS_FREE_FACTOR = 20  # generous: many people may share one NAT address
FIRST_DELAY_SECONDS = 1.0
DEFAULT_FORGET_AFTER = 86400.0


def delay_after(failures: int, free_failures: int, max_delay: float,
                first_delay: float = FIRST_DELAY_SECONDS) -> float:
    """Seconds to wait after ``failures`` failures: 0 while free, then doubling, capped."""
    if free_failures <= 0 or max_delay <= 0 or failures < free_failures:
        return 0.0
    exponent = min(failures - free_failures, 64)  # 2**64 s is past any cap
    return min(float(max_delay), first_delay * 2.0**exponent)


@dataclass
class _Failures:
    count: int
    last: float


class LoginThrottle:
    """Failure counts and the waits they impose; ``enabled`` is False with 0 free failures or 0 max delay."""

    def __init__(self, free_failures: int, max_delay: float, *,
                 clock: Callable[[], float] = time.monotonic,
                 forget_after: float = DEFAULT_FORGET_AFTER,
                 max_keys: int = 100_000):
        if free_failures < 0 or max_delay < 0:
            raise ValueError("free_failures and max_delay must be >= 0")
        self.free_failures = free_failures
        self.max_delay = float(max_delay)
        self.clock = clock
        self.forget_after = max(float(forget_after), self.max_delay)
        self.max_keys = max_keys
        self._failures: dict[tuple, _Failures] = {}

    @property
    def enabled(self) -> bool:
        return self.free_failures > 0 and self.max_delay > 0

    @staticmethod
    def _keys(account: str, address: str) -> tuple[tuple, tuple, tuple]:
        return ("pair", account, address), ("address", address), ("account", account)

    def _current(self, key: tuple, now: float) -> _Failures | None:
        entry = self._failures.get(key)
        if entry is not None and now - entry.last > self.forget_after:
            del self._failures[key]
            return None
        return entry

    def _remaining(self, entry: _Failures | None, free: int, now: float) -> float:
        if entry is None:
            return 0.0
        delay = delay_after(entry.count, free, self.max_delay)
        return max(0.0, entry.last + delay - now)

    def wait(self, account: str, address: str) -> float:
        """Seconds before this address may try this account again (0: now)."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        pair_key, address_key, account_key = self._keys(account, address)
        pair = self._current(pair_key, now)
        waits = [
            self._remaining(pair, self.free_failures, now),
            self._remaining(self._current(address_key, now),
                            self.free_failures * ADDRESS_FREE_FACTOR, now),
        ]
        if pair is not None:  # the account-wide count slows only addresses that failed it
            waits.append(self._remaining(self._current(account_key, now), self.free_failures, now))
        return max(waits)

    def failed(self, account: str, address: str) -> None:
        if not self.enabled:
            return
        now = self.clock()
        for key in self._keys(account, address):
            entry = self._current(key, now)
            if entry is None:
                if len(self._failures) >= self.max_keys:
                    self._prune(now)
                self._failures[key] = _Failures(1, now)
            else:
                entry.count += 1
                entry.last = now

    def succeeded(self, account: str, address: str) -> None:
        pair_key, _address_key, account_key = self._keys(account, address)
        self._failures.pop(pair_key, None)
        self._failures.pop(account_key, None)

    def clear_account(self, account: str) -> int:
        """Forget every failure counted against ``account`` (an admin's action); how many keys."""
        keys = [k for k in self._failures
                if (k[0] == "account" and k[1] == account) or (k[0] == "pair" and k[1] == account)]
        for key in keys:
            del self._failures[key]
        return len(keys)

    def _prune(self, now: float) -> None:
        for key in [k for k, e in self._failures.items() if now - e.last > self.forget_after]:
            del self._failures[key]
        if len(self._failures) >= self.max_keys:  # all recent: drop the stalest half
            stalest = sorted(self._failures, key=lambda k: self._failures[k].last)
            for key in stalest[: self.max_keys // 2]:
                del self._failures[key]


def format_wait(seconds: float) -> str:
    """'37 seconds', '1 second', '10 minutes' (rounded up: never promise too early)."""
    whole = max(1, int(-(-seconds // 1)))
    if whole < 120:
        return f"{whole} second{'s' if whole != 1 else ''}"
    minutes = -(-whole // 60)
    return f"{minutes} minutes"


class WindowQuota:
    """At most ``limit`` events per key within any ``window`` seconds (signups per address).

    ``limit`` 0 means no limit. At most ``max_keys`` keys are kept (the stalest go first).
    """

    def __init__(self, limit: int, window: float, *,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000):
        if limit < 0 or window <= 0:
            raise ValueError("limit must be >= 0 and window > 0")
        self.limit = limit
        self.window = float(window)
        self.clock = clock
        self.max_keys = max_keys
        self._events: dict[str, list[float]] = {}

    def _recent(self, key: str, now: float) -> list[float]:
        events = [t for t in self._events.get(key, ()) if now - t < self.window]
        if events:
            self._events[key] = events
        else:
            self._events.pop(key, None)
        return events

    def wait(self, key: str) -> float:
        """Seconds until ``key`` may have another event (0: now)."""
        if not self.limit:
            return 0.0
        now = self.clock()
        events = self._recent(key, now)
        if len(events) < self.limit:
            return 0.0
        return events[-self.limit] + self.window - now

    def record(self, key: str) -> None:
        if not self.limit:
            return
        now = self.clock()
        if key not in self._events and len(self._events) >= self.max_keys:
            for stale in list(self._events):
                self._recent(stale, now)  # drops keys without recent events
            if len(self._events) >= self.max_keys:
                for old in sorted(self._events, key=lambda k: self._events[k][-1])[: self.max_keys // 2]:
                    del self._events[old]
        self._events.setdefault(key, []).append(now)
