"""Names in the storage: the volumes, trash and archive items, and the checks
of what a request names (pure).

Trash items are ``<UTC stamp>-<volume>[-<n>]`` in ``<users_root>/<unix>/.trash``,
archive items ``<UTC stamp>-<unix>[.<n>]`` in ``<users_root>/.archive``; the
stamp is the time they were moved there, which their retention counts from.
A name that does not parse is never touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from hub_ext.accounts.unix_users import is_valid_unix_name

VOLUMES = ("home", "workspace", "cache")
TRASH_DIR = ".trash"

DAY = 86400
_STAMP_FORMAT = "%Y%m%dT%H%M%S"
_TRASH_NAME = re.compile(
    r"(?P<stamp>\d{8}T\d{6})\.(?P<micro>\d{6})Z-(?P<volume>home|workspace|cache)(?:-(?P<n>\d{1,4}))?"
)
# how a rejected name is quoted back in messages
_MAX_QUOTED = 40


class VolumeNameError(ValueError):
    """A requested volume list or trash item name is malformed or unknown."""


def _quote(value) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_QUOTED else text[: _MAX_QUOTED - 3] + "..."


def check_volume_names(volumes) -> list[str]:
    """The request's volume names, validated and de-duplicated (order kept).

    Only the per-user names of :data:`VOLUMES` are accepted; anything else
    (``shared``, paths, ``..``, empty, non-strings) raises VolumeNameError.
    """
    if not isinstance(volumes, list):
        raise VolumeNameError(f"'volumes' must be a list of names, got {_quote(volumes)}")
    if not volumes:
        raise VolumeNameError("No volumes specified")
    checked: list[str] = []
    for name in volumes:
        if not isinstance(name, str) or name not in VOLUMES:
            raise VolumeNameError(
                f"Invalid volume {_quote(name)}: choose from {', '.join(VOLUMES)}"
            )
        if name not in checked:
            checked.append(name)
    return checked


@dataclass(frozen=True)
class TrashItem:
    """One trashed directory, named ``<stamp>-<volume>``."""

    id: str
    volume: str
    trashed_at: float  # epoch seconds, from the name

    def to_json(self, retention_seconds: int | None = None, size: int | None = None) -> dict:
        model = {
            "id": self.id,
            "volume": self.volume,
            "trashed_at": iso(self.trashed_at),
            "expires_at": None,
            "size_bytes": size,
        }
        if retention_seconds is not None:
            model["expires_at"] = iso(self.trashed_at + retention_seconds)
        return model


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _stamp(now: float) -> str:
    """The UTC stamp that starts every trash and archive entry's name."""
    stamp = datetime.fromtimestamp(now, UTC)
    return f"{stamp.strftime(_STAMP_FORMAT)}.{stamp.microsecond:06d}Z"


def trash_item_name(volume: str, now: float, n: int = 0) -> str:
    name = f"{_stamp(now)}-{volume}"
    return f"{name}-{n}" if n else name


def _match_stamped(pattern: re.Pattern, name) -> tuple[re.Match, float] | None:
    """(match, epoch seconds of its stamp) for a trash or archive entry name, or None."""
    if not isinstance(name, str):
        return None
    match = pattern.fullmatch(name)
    if match is None:
        return None
    try:
        stamp = datetime.strptime(match["stamp"], _STAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
    return match, stamp.timestamp() + int(match["micro"]) / 1e6


def parse_trash_name(name) -> TrashItem | None:
    """The TrashItem a directory entry of the trash stands for, or None."""
    parsed = _match_stamped(_TRASH_NAME, name)
    if parsed is None:
        return None
    match, at = parsed
    return TrashItem(id=name, volume=match["volume"], trashed_at=at)


def _checked_item(parse, what: str, item_id):
    """parse(item_id), or VolumeNameError naming ``what`` (a 400 for the handlers)."""
    item = parse(item_id)
    if item is None:
        raise VolumeNameError(f"Invalid {what} {_quote(item_id)}")
    return item


def check_trash_item_id(item_id) -> TrashItem:
    return _checked_item(parse_trash_name, "trash item", item_id)

ARCHIVE_DIR = ".archive"  # root-only 0700, like the trash
_ARCHIVE_NAME = re.compile(
    r"(?P<stamp>\d{8}T\d{6})\.(?P<micro>\d{6})Z-(?P<unix>[a-z_][a-z0-9_-]{0,31})(?:\.(?P<n>\d{1,4}))?"
)


@dataclass(frozen=True)
class ArchiveItem:
    """One deleted user's directory, named ``<stamp>-<unix>``."""

    id: str
    unix: str
    archived_at: float  # epoch seconds, from the name

    def to_json(self, retention_seconds: int | None = None) -> dict:
        return {
            "id": self.id,
            "unix_name": self.unix,
            "archived_at": iso(self.archived_at),
            "expires_at": (
                iso(self.archived_at + retention_seconds) if retention_seconds is not None else None
            ),
        }


def archive_item_name(unix: str, now: float, n: int = 0) -> str:
    name = f"{_stamp(now)}-{unix}"
    return f"{name}.{n}" if n else name


def parse_archive_name(name) -> ArchiveItem | None:
    parsed = _match_stamped(_ARCHIVE_NAME, name)
    if parsed is None or not is_valid_unix_name(parsed[0]["unix"]):
        return None
    match, at = parsed
    return ArchiveItem(id=name, unix=match["unix"], archived_at=at)


def check_archive_item_id(item_id) -> ArchiveItem:
    return _checked_item(parse_archive_name, "archive item", item_id)
