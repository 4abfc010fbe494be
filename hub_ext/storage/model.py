"""What the storage API returns, shaped from the storage service's state: pure.

* :func:`busy_reason`: whether a user's storage may change now (attribute reads
  of the hub's ``User`` only).
* :func:`quota_entry`, :func:`volumes_entry`, :func:`user_sizes_entry`,
  :func:`activity_sizes`: the shapes of the Manage Volumes dialog, the admin's
  sizes table and the activity monitor's sizes column.
* :func:`reset_response`, :func:`restore_response`, :func:`archive_restore_response`:
  what an operation answers.

:class:`~hub_ext.storage.service.StorageManager` holds the state and does the
I/O; this module only shapes what it has.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from hub_ext.storage import names

if TYPE_CHECKING:  # the operations' results; their modules do I/O
    from hub_ext.storage.archive import ArchiveRestoreResult
    from hub_ext.storage.quota import Usage
    from hub_ext.storage.trash import ResetResult, RestoreResult

QUOTA_SIZES_KEY = "all (disk quota)"  # the activity monitor's one sizes column with quotas


def busy_reason(user) -> str | None:
    """Why ``user``'s storage must not change now, or None when every server is stopped.

    Every server of the user (default and named) binds the same directories.
    """
    def label(name):
        return f"server {name!r}" if name else "server"

    for name, spawner in sorted(user.spawners.items()):
        pending = spawner.pending
        if pending == "spawn":
            return f"The {label(name)} of {user.name} is starting; wait, stop it, then retry"
        if pending:
            return f"The {label(name)} of {user.name} is {pending} pending; retry when it is done"
        if spawner.active:
            return f"The {label(name)} of {user.name} is running; stop it first"
    # servers the database has as running whose spawner is not loaded
    for name, orm_spawner in sorted(user.orm_spawners.items()):
        if getattr(orm_spawner, "server", None) is not None:
            return f"The {label(name)} of {user.name} is running; stop it first"
    return None


def quota_entry(limit_bytes: int | None, usage: Usage | None) -> dict | None:
    """``{"used_bytes", "limit_bytes"}`` of a user (used: None until measured; the
    limit the kernel reports, else the configured ``limit_bytes``); None when
    quotas are off (``limit_bytes`` None)."""
    if limit_bytes is None:
        return None
    return {
        "used_bytes": usage.used_bytes if usage else None,
        "limit_bytes": usage.limit_bytes if usage and usage.limit_bytes else limit_bytes,
    }


def volumes_entry(sizes: Mapping, descriptions: Mapping[str, str]) -> list[dict]:
    """The dialog's volumes: name, description, last measured size (None: not yet)."""
    return [
        {
            "name": volume,
            "description": descriptions.get(volume, ""),
            "size_bytes": sizes.get(volume),
        }
        for volume in names.VOLUMES
    ]


def user_sizes_entry(unix: str, sizes: Mapping | None, measured_at: float | None,
                     quota: dict | None) -> dict:
    """One user's row of the sizes table."""
    return {
        "unix_name": unix,
        "sizes_measured_at": names.iso(measured_at) if measured_at else None,
        **{
            volume: (sizes or {}).get(volume)
            for volume in (*names.VOLUMES, "trash")
        },
        "quota": quota,
    }


def activity_sizes(users: Mapping[str, dict], quotas_on: bool) -> dict[str, dict]:
    """The activity monitor's sizes column from the sizes table's ``users``: with
    disk quotas the kernel's figure of everything the user holds (no walk), else
    the walk's per directory."""
    if not quotas_on:
        return dict(users)
    return {
        name: {QUOTA_SIZES_KEY: entry["quota"]["used_bytes"]}
        for name, entry in users.items() if entry["quota"] and entry["quota"]["used_bytes"] is not None
    }


def reset_response(result: ResetResult, retention_seconds: int, retention_days: int) -> dict:
    return {
        "message": f"Successfully reset {len(result.reset_volumes)} volume(s)",
        "reset_volumes": result.reset_volumes,
        "failed_volumes": result.failed_volumes,
        "trash": [item.to_json(retention_seconds) for item in result.trashed],
        "retention_days": retention_days,
    }


def restore_response(result: RestoreResult, retention_seconds: int) -> dict:
    return {
        "message": f"Restored {result.volume} from the trash"
        + (
            "; the directory it replaced is now in the trash"
            if result.displaced
            else ""
        ),
        "volume": result.volume,
        "restored": result.restored.id,
        "trashed": (
            result.displaced.to_json(retention_seconds) if result.displaced else None
        ),
    }


def archive_restore_response(result: ArchiveRestoreResult, archive_retention_seconds: int) -> dict:
    return {
        "message": f"Restored the directories of {result.restored.unix}"
        + ("; the directories they replaced are now archived" if result.displaced else ""),
        "restored": result.restored.id,
        "archived": (
            result.displaced.to_json(archive_retention_seconds)
            if result.displaced else None
        ),
    }
