"""Time conversion between JupyterHub's naive-UTC datetimes, epoch seconds and the
ISO strings of the platform's APIs (pure, stdlib only)."""

from __future__ import annotations

from datetime import UTC, datetime


def to_epoch(dt: datetime | None) -> float | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def to_iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
