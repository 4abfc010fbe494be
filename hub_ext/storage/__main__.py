"""``python -m hub_ext.storage``: purge expired trash and archive items (the purge
timer's service), print every user's sizes for an operator, do the disk quota
units' work (``quota apply-<unix>|release-<unix>|sync|usage``, as root)."""

from __future__ import annotations

import argparse
import json
import sys

from hub_ext import settings as platform_settings
from hub_ext.accounts.unix_users import check_unix_name
from hub_ext.storage import archive, names, quota, quota_ops, sizes, trash
from hub_ext.storage.service import StorageManager


def _storage_settings(path: str) -> dict:
    """StorageManager's settings as the hub has them (the same file, the same traits)."""
    return platform_settings.configured_values(StorageManager, path)


def _quota_settings(values: dict, mountinfo_path: str) -> tuple[quota.Settings, quota.Settings | None] | None:
    """The users' and the shared directory's quota settings (None without a shared
    limit) from StorageManager's ``values``; None when quotas are off."""
    if not values["quota_enabled"]:
        return None
    shared = values["quota_shared"]
    return (quota_ops.detect(values["quota_per_user"], values["users_root"], mountinfo_path),
            quota_ops.detect(shared, values["shared_dir"], mountinfo_path) if shared else None)


def run_quota(config_file: str, request: str, usage_file: str, io: quota_ops.Executor,
              mountinfo_path: str = quota.MOUNTINFO) -> int:
    """One request of the disk quota units (the instance of ``jupyterhub-disk-quota@``,
    or ``usage``); 2 when quotas are off, 1 when something failed."""
    try:
        found = _quota_settings(_storage_settings(config_file), mountinfo_path)
        if found is None:
            print(f"disk quota: quotas are off ({config_file})", file=sys.stderr)
            return 2
        settings, shared = found
        if request == "usage":
            figures = quota_ops.usage(settings, io)
            quota_ops.write_usage(figures, usage_file)
            print(f"usage of {len(figures)} user(s) written to {usage_file}")
            return 0
        if request == "sync":
            done, failed = quota_ops.sync(settings, io, shared)
            for line in done:
                print(line)
            for line in failed:
                print(f"disk quota: {line}", file=sys.stderr)
            print(f"sync: {len(done)} brought to their limit, {len(failed)} failed")
            return 1 if failed else 0
        action, _, unix = request.partition("-")
        if action not in quota.ACTIONS:
            raise ValueError(f"unknown request {request!r}: apply-<unix>, release-<unix>, sync or usage")
        check_unix_name(unix)
        print((quota_ops.apply if action == "apply" else quota_ops.release)(settings, unix, io))
        return 0
    except (OSError, ValueError, RuntimeError) as e:
        print(f"disk quota: {e}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None, quota_io: quota_ops.Executor | None = None,
         mountinfo_path: str = quota.MOUNTINFO) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hub_ext.storage",
        description="Per-user storage of the platform: purge expired trash, report sizes, disk quotas.",
    )
    parser.add_argument(
        "--config",
        default=platform_settings.PLATFORM_CONFIG_FILE,
        help="platform_config.json giving StorageManager's users_root, retention days and quota settings",
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
    quota_command = sub.add_parser(
        "quota", help="the disk quota units' work (as root; hub_ext.storage.quota)"
    )
    quota_command.add_argument("--usage-file", default=quota.USAGE_FILE)
    quota_command.add_argument(
        "request", help="apply-<unix>, release-<unix> (the unit's instance), sync or usage"
    )
    args = parser.parse_args(argv)
    if args.command == "quota":
        return run_quota(args.config, args.request, args.usage_file,
                         quota_io or quota_ops.Executor(), mountinfo_path)

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
