"""``python -m hub_ext.storage``: purge expired trash and archive items (the purge
timer's service), print every user's sizes for an operator."""

from __future__ import annotations

import argparse
import json
import sys

from hub_ext import settings as platform_settings
from hub_ext.storage import archive, names, sizes, trash
from hub_ext.storage.service import StorageManager


def _storage_settings(path: str) -> dict:
    """StorageManager's settings as the hub has them (the same file, the same traits)."""
    return platform_settings.configured_values(StorageManager, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hub_ext.storage",
        description="Per-user storage of the platform: purge expired trash, report sizes.",
    )
    parser.add_argument(
        "--config",
        default=platform_settings.PLATFORM_CONFIG_FILE,
        help="platform_config.json giving StorageManager's users_root and retention days",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    purge = sub.add_parser(
        "purge", help="delete trash items and deleted users' archives older than their retention"
    )
    purge.add_argument(
        "--retention-days", type=int, help="override StorageManager.trash_retention_days"
    )
    purge.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    sub.add_parser("sizes", help="print every user's sizes as JSON")
    args = parser.parse_args(argv)

    try:
        settings = _storage_settings(args.config)
    except ValueError as e:
        print(f"hub_ext.storage: {e}", file=sys.stderr)
        return 2
    users_root = settings["users_root"]
    if args.command == "sizes":
        print(json.dumps(sizes.measure_all(users_root), indent=2, sort_keys=True))
        return 0

    days = args.retention_days
    if days is None:
        days = settings["trash_retention_days"]
    if days < 1:
        print("hub_ext.storage: --retention-days must be >= 1", file=sys.stderr)
        return 2
    report = trash.purge_trash(users_root, days * names.DAY, dry_run=args.dry_run)
    archive_days = settings["deleted_user_retention_days"]
    archived = archive.purge_archive(users_root, archive_days * names.DAY, dry_run=args.dry_run)
    report.purged += archived.purged
    report.kept += archived.kept
    report.errors += archived.errors
    verb = "would purge" if args.dry_run else "purged"
    for where, name in report.purged:
        print(f"{verb} {where}/{name}" if where == names.ARCHIVE_DIR else f"{verb} {where}/{names.TRASH_DIR}/{name}")
    for error in report.errors:
        print(f"error: {error}", file=sys.stderr)
    print(
        f"{len(report.purged)} item(s) {verb}, {report.kept} kept "
        f"(retention {days} day(s), deleted users {archive_days}), {len(report.errors)} error(s)"
    )
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
