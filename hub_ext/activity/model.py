"""What the activity monitor reads and how it shapes history: pure.

* :class:`Target`: a hub user and its default server as the monitor sees it at
  one moment; :func:`targets_from_users` builds them from the hub's ``User``
  objects (attribute reads only).
* :func:`user_entry`, :func:`sizes_entry`, :func:`downsample`, :func:`columns`:
  the shapes the API returns.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hub_ext.timeutil import to_epoch, to_iso


@dataclass(frozen=True)
class Target:
    """A hub user as the monitor sees it at one moment."""

    user: str
    unit: str | None = None  # full unit name (".service") of the running default server
    running: bool = False
    last_activity: float | None = None  # the SERVER's last activity (epoch), not the hub page's
    mem_limit: int | None = None
    cpu_limit: float | None = None


def unit_of(spawner) -> str | None:
    """The full systemd name of a spawner's unit (SystemdSpawner keeps it without ".service")."""
    name = getattr(spawner, "unit_name", None)
    if not name:
        return None
    return name if "." in name else f"{name}.service"


def targets_from_users(users: Iterable) -> list[Target]:
    """Targets from the hub's User objects (``app.users.values()``): default servers only."""
    targets = []
    for user in users:
        spawner = user.spawners.get("")
        if spawner is None:
            targets.append(Target(user.name))
            continue
        running = bool(spawner.active)
        last = getattr(getattr(spawner, "orm_spawner", None), "last_activity", None)
        mem = spawner.mem_limit
        targets.append(
            Target(
                user=user.name,
                unit=unit_of(spawner) if running else None,
                running=running,
                last_activity=to_epoch(last) if running else None,
                mem_limit=int(mem) if mem else None,
                cpu_limit=float(spawner.cpu_limit) if spawner.cpu_limit else None,
            )
        )
    return targets


def _round(value, digits):
    return None if value is None else round(value, digits)


def user_entry(target: Target, status: str, figures: Mapping[str, Any],
               score: tuple[float | None, int], sizes: dict | None) -> dict:
    """One user of ``GET /hub/api/activity``: ``figures`` the last reading's
    (empty: none), ``score`` (ratio, samples) and ``sizes`` (:func:`sizes_entry`)."""
    ratio, samples = score
    return {
        "name": target.user,
        "status": status,
        "last_activity": to_iso(target.last_activity),
        "unit": target.unit,
        "cpu_percent": _round(figures.get("cpu_percent"), 1),
        "cpu_seconds": _round(figures.get("cpu_seconds"), 2),
        "cpu_limit": target.cpu_limit,
        "memory_bytes": figures.get("memory_bytes"),
        "memory_limit": target.mem_limit,
        "tasks": figures.get("tasks"),
        "oom_kills": figures.get("oom_kills"),
        "last_oom_kill_at": to_iso(figures.get("last_oom_kill_at")),
        "io_read_bytes": figures.get("io_read_bytes"),
        "io_write_bytes": figures.get("io_write_bytes"),
        "gpu_memory_bytes": figures.get("gpu_memory_bytes"),
        "sources": figures.get("sources", {}),
        "sizes": sizes,
        "score": None if ratio is None else int(round(ratio * 100)),
        "samples": samples,
    }


# the provider's figure for a user's trash (reset directories kept restorable),
# as StorageManager.sizes_model names it
TRASH_KEY = "trash"


def sizes_entry(value: Mapping[str, Any] | None) -> dict | None:
    """A provider's entry for one user -> ``{"total", "dirs", "trash"}``, None when nothing is measured.

    Byte counts are the int values (other keys, e.g. a unix name or a time, are
    ignored; None = that directory is not measured). ``trash`` (reset
    directories kept restorable) is its own figure, not part of ``total``:
    ``total`` is what the user's directories hold now."""
    if not value:
        return None
    counts = {
        k: v for k, v in value.items() if isinstance(v, int) and not isinstance(v, bool)
    }
    trash = counts.pop(TRASH_KEY, None)
    if not counts:
        return None
    return {"total": sum(counts.values()), "dirs": counts, "trash": trash}


def downsample(rows: list[tuple], max_points: int) -> list[tuple]:
    """At most ``max_points`` rows: consecutive rows averaged per bucket (None ignored)."""
    if len(rows) <= max_points or max_points <= 0:
        return rows
    size = math.ceil(len(rows) / max_points)
    out = []
    for start in range(0, len(rows), size):
        bucket = rows[start:start + size]
        merged = []
        for column in zip(*bucket, strict=True):
            values = [v for v in column if v is not None]
            merged.append(sum(values) / len(values) if values else None)
        out.append(tuple(merged))
    return out


def columns(rows: list[tuple], names: tuple[str, ...]) -> dict[str, list]:
    """Row tuples -> one list per column (what the charting library draws)."""
    return {name: [row[i] for row in rows] for i, name in enumerate(names)}


USER_HISTORY_COLUMNS = ("t", "active", "online", "cpu_percent", "memory_bytes", "gpu_memory_bytes")
TOTAL_HISTORY_COLUMNS = ("t", "online", "active", "cpu_percent", "memory_bytes", "gpu_memory_bytes")
