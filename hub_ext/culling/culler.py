"""Idle culling and session extensions: the arithmetic, the store and one cull pass.

Pure stdlib (no tornado, no jupyterhub): times are POSIX seconds (floats) and
"now" always comes from the caller, so tests drive scripted timelines with a
fake clock. The JupyterHub side (``hub_ext.culling.handlers``) turns the hub's
servers into :class:`Server` records, calls :func:`cull_once` periodically and
answers the session-info / extend-session API with :func:`session_status` and
:func:`grant_extension` -- the same functions, so what the Session Status card
shows is what the culler does.

Semantics (docs/culling.md):

* idle rule: a server is culled once it has been idle for ``timeout`` seconds
  plus the hours of extension granted to it; idle time counts from the later of
  its last activity and its start.
* max age (when > 0): a server is culled ``max_age`` seconds after its start,
  whatever its activity; extensions do not move this deadline.
* extensions are whole hours, at most ``max_extension_hours`` in total per
  server start: the allowance is keyed on the server's start time, so it
  resets when the server restarts (and a record for an older start is void).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

HOUR = 3600

# An extension request above this many hours is refused as malformed (400)
# rather than truncated; it is also the largest max_extension_hours allowed.
MAX_REQUEST_HOURS = 8760  # one year

REASON_IDLE = "idle"
REASON_MAX_AGE = "max_age"


# --- policy -----------------------------------------------------------------


@dataclass(frozen=True)
class CullPolicy:
    """The culler's settings, as :class:`~hub_ext.culling.service.SessionCuller`'s
    traits hold them (they declare and check the defaults and bounds)."""

    enabled: bool
    timeout: int  # seconds of inactivity before culling
    interval: int  # seconds between cull passes
    max_age: int  # seconds since start; 0 = no limit
    max_extension_hours: int  # total extension allowed per server start
    # Seconds one extension "hour" is worth: 3600 on every real deployment; the
    # integration tests shrink it to see an extended deadline pass in seconds.
    extension_unit: int


# --- remaining time ---------------------------------------------------------


@dataclass(frozen=True)
class SessionStatus:
    """Where one running server stands at ``now``."""

    now: float
    started: float
    last_activity: float | None
    idle_since: float  # later of last_activity and started
    extension_hours: int
    extensions_available_hours: int
    idle_deadline: float
    age_deadline: float | None  # None: no max age
    deadline: float  # the earlier of the two
    reason: str  # what the deadline is: REASON_IDLE or REASON_MAX_AGE

    @property
    def remaining(self) -> float:
        """Seconds until the deadline, never negative."""
        return max(0.0, self.deadline - self.now)

    @property
    def expired(self) -> bool:
        return self.now >= self.deadline


def session_status(
    policy: CullPolicy,
    *,
    now: float,
    started: float,
    last_activity: float | None,
    extension_hours: int = 0,
) -> SessionStatus:
    """Deadline and remaining time of a server started at ``started``.

    ``extension_hours`` is what was granted for this start (see
    :meth:`ExtensionStore.hours_used`); it is clamped to the allowance so a
    lowered ``max_extension_hours`` takes effect at once.
    """
    extension = min(max(0, int(extension_hours)), policy.max_extension_hours)
    idle_since = started if last_activity is None else max(last_activity, started)
    idle_deadline = idle_since + policy.timeout + extension * policy.extension_unit
    age_deadline = started + policy.max_age if policy.max_age > 0 else None
    if age_deadline is not None and age_deadline <= idle_deadline:
        deadline, reason = age_deadline, REASON_MAX_AGE
    else:
        deadline, reason = idle_deadline, REASON_IDLE
    return SessionStatus(
        now=now,
        started=started,
        last_activity=last_activity,
        idle_since=idle_since,
        extension_hours=extension,
        extensions_available_hours=policy.max_extension_hours - extension,
        idle_deadline=idle_deadline,
        age_deadline=age_deadline,
        deadline=deadline,
        reason=reason,
    )


# --- extension requests -----------------------------------------------------


class ExtensionRequestError(ValueError):
    """A malformed extension request; the message is meant for the user (HTTP 400)."""


def parse_extension_request(body) -> int:
    """The ``hours`` of a decoded JSON body ``{"hours": N}``, checked.

    Whole hours from 1 to MAX_REQUEST_HOURS; anything else raises
    ExtensionRequestError with a message saying what is wrong.
    """
    if not isinstance(body, dict):
        raise ExtensionRequestError(
            'Request body must be a JSON object like {"hours": 1}'
        )
    if "hours" not in body:
        raise ExtensionRequestError(
            'Missing "hours": send {"hours": N} with N whole hours'
        )
    hours = body["hours"]
    if isinstance(hours, bool) or not isinstance(hours, int):
        raise ExtensionRequestError(
            f'"hours" must be a whole number of hours (got {hours!r})'
        )
    if hours < 1:
        raise ExtensionRequestError(f'"hours" must be at least 1 (got {hours})')
    if hours > MAX_REQUEST_HOURS:
        raise ExtensionRequestError(
            f'"hours" must be at most {MAX_REQUEST_HOURS} (got {hours})'
        )
    return hours


@dataclass(frozen=True)
class ExtensionGrant:
    requested: int
    granted: int  # 0 when the allowance is used up
    used: int  # total hours for this server start, after the grant
    available: int  # hours still available, after the grant

    @property
    def truncated(self) -> bool:
        return self.granted < self.requested

    @property
    def message(self) -> str:
        if self.granted == 0:
            return (
                f"No extension left: {self.used} of {self.used + self.available} "
                "hours already used since the server started"
            )
        text = (
            f"Session extended by {self.granted} hour{'s' if self.granted != 1 else ''}"
        )
        if self.truncated:
            text += (
                f" (requested {self.requested}, truncated to the {self.granted} "
                "remaining in the allowance)"
            )
        return text


def grant_extension(
    requested: int, used: int, max_extension_hours: int
) -> ExtensionGrant:
    """Truncate a request to what is left of the allowance (whole hours)."""
    used = min(max(0, used), max_extension_hours)
    granted = max(0, min(requested, max_extension_hours - used))
    return ExtensionGrant(
        requested=requested,
        granted=granted,
        used=used + granted,
        available=max_extension_hours - used - granted,
    )


# --- persistent extension state ---------------------------------------------


def server_key(user: str, server_name: str = "") -> str:
    """Store key of a server: ``user`` for the default server, ``user/name`` otherwise."""
    return f"{user}/{server_name}" if server_name else user


def _same_start(a: float, b: float) -> bool:
    return abs(a - b) < 1e-3


def hours_for_start(record: dict | None, started: float) -> int:
    """The hours of an extension record (``{"started", "hours"}``) that count for
    the server start ``started``: 0 for a record of another start, or none."""
    if not record or not _same_start(record.get("started", -1.0), started):
        return 0
    return record["hours"]


def read_extensions_file(path: str | os.PathLike) -> dict[str, dict]:
    """The records of a session extension file of earlier versions (now only migrated).

    ``{"alice": {"started": 1718000000.0, "hours": 3}, ...}``; malformed records
    are left out, an unreadable or corrupt file is logged and reads as empty
    (the worst outcome is a server culled on its unextended deadline).
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.error("Ignoring unreadable session extension file %s: %s", path, e)
        return {}
    if not isinstance(data, dict):
        log.error("Ignoring session extension file %s: not a JSON object", path)
        return {}
    records = {}
    for key, record in data.items():
        if (
            isinstance(record, dict)
            and isinstance(record.get("started"), int | float)
            and isinstance(record.get("hours"), int)
            and not isinstance(record.get("hours"), bool)
        ):
            records[key] = {"started": float(record["started"]), "hours": record["hours"]}
    return records


class ExtensionStore:
    """Hours of extension granted per server start: the hub's working view.

    ``{"alice": {"started": 1718000000.0, "hours": 3}, ...}``. A record counts
    only for the start time it was written for, so a restarted server starts
    with a full allowance even if the hub missed the stop. What survives a hub
    restart is each server's own record in its spawner's state
    (``PlatformSpawner.session_extension``, in JupyterHub's database), from
    which the hub refills this view at start.
    """

    def __init__(self):
        self._records: dict[str, dict] = {}

    def hours_used(self, key: str, started: float) -> int:
        return hours_for_start(self._records.get(key), started)

    def add(self, key: str, started: float, hours: int) -> int:
        """Record ``hours`` more for this start; return the new total."""
        total = self.hours_used(key, started) + hours
        self.set(key, started, total)
        return total

    def set(self, key: str, started: float, hours: int) -> None:
        """``hours`` in total for this start (a record read back from where it persists)."""
        self._records[key] = {"started": float(started), "hours": hours}

    def record(self, key: str) -> dict | None:
        """The record of ``key`` as it is persisted (a copy), or None."""
        record = self._records.get(key)
        return dict(record) if record is not None else None

    def prune(self, running: dict[str, float]) -> None:
        """Drop records of servers not running, or running since another start."""
        stale = [
            key
            for key, record in self._records.items()
            if key not in running or not _same_start(record["started"], running[key])
        ]
        for key in stale:
            del self._records[key]

    def keys(self) -> list[str]:
        return sorted(self._records)


# --- one cull pass ----------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """A server as the culler sees it (built from the hub's spawners)."""

    user: str
    name: str  # "" for the default server
    started: float | None  # None: not running
    last_activity: float | None
    ready: bool = True  # running and no spawn/stop pending

    @property
    def key(self) -> str:
        return server_key(self.user, self.name)


@dataclass(frozen=True)
class CullDecision:
    server: Server
    status: SessionStatus
    culled: bool
    error: str | None = None


@dataclass
class CullReport:
    checked: list[CullDecision] = field(default_factory=list)

    @property
    def culled(self) -> list[CullDecision]:
        return [d for d in self.checked if d.culled]

    @property
    def failed(self) -> list[CullDecision]:
        return [d for d in self.checked if d.error]


StopServer = Callable[[str, str], Awaitable[None]]


async def cull_once(
    policy: CullPolicy,
    *,
    now: float,
    servers: Iterable[Server],
    store: ExtensionStore,
    stop: StopServer,
) -> CullReport:
    """Stop every ready server past its deadline; return what was decided.

    ``stop(user, server_name)`` does the I/O (in the hub: remove the proxy route
    and stop the spawner). A failing stop is logged and reported, and the pass
    goes on with the other servers. Servers that are pending (starting or
    stopping) or not running are skipped. Extension records of servers no
    longer running (or restarted) are pruned.
    """
    report = CullReport()
    running: dict[str, float] = {}
    for server in servers:
        if server.started is None:
            continue
        running[server.key] = server.started
        if not policy.enabled or not server.ready:
            continue
        status = session_status(
            policy,
            now=now,
            started=server.started,
            last_activity=server.last_activity,
            extension_hours=store.hours_used(server.key, server.started),
        )
        if not status.expired:
            report.checked.append(CullDecision(server, status, culled=False))
            continue
        log.info(
            "Culling server %s (%s: idle since %.0f, started %.0f, extension %dh)",
            server.key,
            status.reason,
            status.idle_since,
            server.started,
            status.extension_hours,
        )
        try:
            await stop(server.user, server.name)
        except Exception as e:  # one failing stop must not end the pass
            log.exception("Failed to cull server %s", server.key)
            report.checked.append(
                CullDecision(server, status, culled=False, error=str(e))
            )
            continue
        running.pop(server.key, None)
        report.checked.append(CullDecision(server, status, culled=True))
    store.prune(running)
    return report
