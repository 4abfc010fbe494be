"""The hub's storage service: :class:`StorageManager` and its background sizing.

:class:`StorageManager` holds the settings (``c.StorageManager.*``, set from
platform_config.json), runs the storage functions (:mod:`.trash`,
:mod:`.archive`, :mod:`.sizes`) for one user at a time and keeps the size cache,
refreshed every ``sizes_interval`` seconds (a :class:`~hub_ext.periodic.PeriodicService`)
in a low-priority daemon thread. What the API returns is shaped by
:mod:`hub_ext.storage.model` (pure); the HTTP side is :mod:`hub_ext.storage.handlers`;
docs/storage.md has the layout and the semantics.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import time

from jupyterhub.traitlets import ByteSpecification
from traitlets import Bool, Dict, Integer, TraitError, Unicode, validate

from hub_ext.accounts import unix_users as accounts
from hub_ext.periodic import PeriodicService, WorkerThread
from hub_ext.process import CommandError, run_command
from hub_ext.storage import archive, fsops, model, names, quota, quota_ops, sizes, trash

SETTINGS_KEY = "hub_ext_storage"  # tornado settings key the handlers read
WALK_NICE = 10  # niceness of the sizing thread
# seconds the disk quota figures are reused before the usage unit runs again
# (the kernel's figures: one command for every user, no tree walk)
QUOTA_USAGE_MAX_AGE = 10.0
QUOTA_MIN_BYTES = 2**20  # a smaller limit would not even hold a lab's first start


def _account_ids(unix: str) -> tuple[int, int] | None:
    """(uid, gid) of a unix account, None if there is none."""
    try:
        entry = pwd.getpwnam(unix)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


class StorageManager(PeriodicService):
    """Storage operations of the hub and the background size cache."""

    service_name = "Storage sizes"

    users_root = Unicode(
        "/srv/jupyterhub/users", help="Host directory holding <unix name>/{home,workspace,cache}."
    ).tag(config=True)
    shared_dir = Unicode(
        "/srv/jupyterhub/shared", help="Host directory bound at /mnt/shared in every lab."
    ).tag(config=True)
    # The settings (hub_ext/settings.py): each trait is the only declaration of
    # its type, bounds and default; the Ansible variable in its tag sets it.
    unix_username_template = accounts.UnixUsernameTemplate(
        accounts.DEFAULT_UNIX_USERNAME_TEMPLATE,
        help="Unix account of a hub user, as PlatformSpawner.unix_username_template.",
    ).tag(config=True, ansible="jupyterhub_unix_username_template")
    trash_retention_days = Integer(
        7,
        min=1,
        help="Days a reset directory stays restorable before the purge timer deletes it.",
    ).tag(config=True, ansible="jupyterhub_storage_trash_retention_days")
    sizes_interval = Integer(
        3600,
        min=1,
        help="Seconds between two measurements of every user's directory sizes "
        "(JUPYTERHUB_ACTIVITYMON_VOLUMES_UPDATE_INTERVAL of the original; the activity "
        "page shows the latest measurement).",
    ).tag(config=True, ansible="jupyterhub_storage_sizes_interval")
    deleted_user_retention_days = Integer(
        30,
        min=1,
        help="Days a deleted user's directories stay in the admin-only archive, "
        "restorable, before the purge timer deletes them.",
    ).tag(config=True, ansible="jupyterhub_storage_deleted_user_retention_days")
    volume_descriptions = Dict(
        value_trait=Unicode(),
        default_value={
            "home": "User home directory files, configurations",
            "workspace": "Project files, notebooks, code",
            "cache": "Temporary files, pip cache, conda cache",
        },
        help="Text shown next to each volume in the Manage Volumes dialog "
        "(VOLUME_DESCRIPTIONS of the original), keyed home/workspace/cache.",
    ).tag(config=True, ansible="jupyterhub_volume_descriptions")

    quota_enabled = Bool(
        False,
        help="Per-user disk quotas: one limit over each user's home, workspace, cache and "
        "trash, enforced by the kernel. Needs users_root on btrfs, or on ext4/XFS mounted "
        "with prjquota (the storage role checks; docs/storage.md, Disk quotas).",
    ).tag(config=True, ansible="jupyterhub_storage_quota_enabled")
    quota_per_user = ByteSpecification(
        "10G",
        help="Each user's disk quota when quota_enabled: a number with suffix K, M, G or T "
        "(powers of 1024), at least 1M. Applied once per account; a change reaches every "
        "existing user at the next storage pass (hub start).",
    ).tag(config=True, ansible="jupyterhub_storage_quota_per_user")

    quota_shared = ByteSpecification(
        None,
        allow_none=True,
        help="Limit of the shared directory (all users' files there together) when "
        "quota_enabled: a number with suffix K, M, G or T, at least 1M; None: no limit. "
        "Not for a CIFS share (the NAS keeps its own).",
    ).tag(config=True, ansible="jupyterhub_storage_quota_shared")

    @validate("quota_per_user", "quota_shared")
    def _at_least_a_mebibyte(self, proposal):
        value = proposal["value"]
        if value is not None and value < QUOTA_MIN_BYTES:
            raise TraitError(
                f"{proposal['trait'].name}: at least 1M ({QUOTA_MIN_BYTES} bytes), got {value} bytes"
            )
        return value

    @validate("volume_descriptions")
    def _known_volumes(self, proposal):
        unknown = sorted(set(proposal["value"]) - set(names.VOLUMES))
        if unknown:
            raise TraitError(
                f"volume_descriptions: {unknown[0]!r} is not a per-user volume "
                f"(known: {', '.join(names.VOLUMES)})"
            )
        return proposal["value"]

    # seams for tests
    clock = staticmethod(time.time)
    chown = staticmethod(os.fchown)
    account_ids = staticmethod(_account_ids)
    command_runner = staticmethod(run_command)
    quota_usage_file = quota.USAGE_FILE
    quota_applied_dir = quota.APPLIED_DIR
    mountinfo = quota.MOUNTINFO

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.sizes: dict[str, dict] = {}  # unix name -> sizes.measure_user()
        self.measured_at: dict[str, float] = {}  # unix name -> epoch
        self.passes = 0
        self.last_pass_seconds: float | None = None
        self.last_pass_at: float | None = None
        self.measuring = False
        # one walk at a time (a full pass, or one user after a reset/restore)
        self.walker = WorkerThread("storage-sizes", nice=WALK_NICE)
        # disk quotas (hub_ext.storage.quota): None when off, or on and unusable
        # (quota_error says why; spawns then fail rather than run without a limit)
        self.quota: quota.Settings | None = None
        self.shared_quota: quota.Settings | None = None
        self.quota_usage: dict[str, quota.Usage] = {}
        self.quota_read_at: float | None = None
        self.quota_error: str | None = None
        if self.quota_enabled:
            try:
                self.quota = quota_ops.detect(self.quota_per_user, self.users_root, self.mountinfo)
                if self.quota_shared is not None:
                    self.shared_quota = quota_ops.detect(self.quota_shared, self.shared_dir, self.mountinfo)
            except (OSError, ValueError) as e:
                self.quota_error = f"Disk quotas are on but cannot be kept: {e}"
                self.log.error("Storage: %s", self.quota_error)

    # --- names and models ---

    @property
    def retention_seconds(self) -> int:
        return self.trash_retention_days * names.DAY

    def unix_name(self, hub_name: str) -> str:
        return accounts.unix_name(hub_name, self.unix_username_template)

    def trash_model(self, unix: str) -> list[dict]:
        item_sizes = (self.sizes.get(unix) or {}).get("trash_items", {})
        try:
            items = trash.list_trash(unix, self.users_root)
        except fsops.UnsafePathError as e:
            self.log.error("Storage: trash of %s not listed: %s", unix, e)
            return []
        return [
            item.to_json(self.retention_seconds, item_sizes.get(item.id))
            for item in items
        ]

    def volumes_model(self, user) -> dict:
        """What the Manage Volumes dialog shows for a hub user."""
        unix = self.unix_name(user.name)
        sizes = self.sizes.get(unix) or {}
        measured = self.measured_at.get(unix)
        busy = model.busy_reason(user)
        return {
            "user": user.name,
            "server_active": busy is not None,
            "busy_reason": busy,
            "retention_days": self.trash_retention_days,
            "sizes_measured_at": names.iso(measured) if measured else None,
            "sizes_interval_seconds": self.sizes_interval,
            "volumes": model.volumes_entry(sizes, self.volume_descriptions),
            "trash_size_bytes": sizes.get("trash"),
            "trash": self.trash_model(unix),
            "quota": self.quota_model(unix),
        }

    # --- disk quotas ---

    def quota_model(self, unix: str) -> dict | None:
        """``{"used_bytes", "limit_bytes"}`` of a user (used: None until measured); None when off."""
        return model.quota_entry(self.quota.limit_bytes if self.quota else None, self.quota_usage.get(unix))

    async def refresh_quota_usage(self, max_age: float = QUOTA_USAGE_MAX_AGE) -> None:
        """Run the usage unit (the kernel's figures of every user) unless the last
        figures are younger than ``max_age`` seconds; a failure is logged and kept."""
        if self.quota is None:
            return
        now = self.clock()
        if self.quota_read_at is not None and now - self.quota_read_at < max_age:
            return
        self.quota_read_at = now
        result = await self.command_runner(["systemctl", "start", quota.USAGE_UNIT])
        if not result.ok:
            self.quota_error = str(CommandError(result, "disk quota usage"))
            self.log.error("Storage: %s (journalctl -u %s)", self.quota_error, quota.USAGE_UNIT)
            return
        self.quota_error = None
        self.quota_usage = quota_ops.read_usage(self.quota_usage_file)

    async def ensure_quota(self, unix: str) -> None:
        """Before a spawn makes ``unix``'s directories: the apply unit, but only for
        a new user root or one without the configured limit (once per account and
        per change of the limit; otherwise a file read and a stat)."""
        if not self.quota_enabled:
            return
        if self.quota is None:
            raise RuntimeError(self.quota_error)
        if not quota_ops.is_applied(self.quota, unix, self.quota_applied_dir):
            await quota_ops.start_unit(self.command_runner, "apply", unix)

    async def sync_quotas(self) -> None:
        """The sync unit, when an existing user root's record is not the configured
        limit (it was changed); a failure is logged (the unit's journal names the roots)."""
        if self.quota is None:
            return
        behind = [unix for unix in quota_ops.user_roots(self.users_root)
                  if not quota_ops.is_applied(self.quota, unix, self.quota_applied_dir)]
        if self.shared_quota and not quota_ops.is_applied(self.shared_quota, quota.SHARED, self.quota_applied_dir):
            behind.append(self.shared_dir)
        if not behind:
            return
        self.log.info("Storage: bringing the disk quota of %s to the configured limit",
                      ", ".join(behind))
        result = await self.command_runner(["systemctl", "start", quota.SYNC_UNIT])
        if not result.ok:
            self.log.error("Storage: %s (journalctl -u %s)",
                           CommandError(result, "disk quota sync"), quota.SYNC_UNIT)

    async def release_quota(self, hub_name: str) -> None:
        """A deleted user's limit lifted (before its directories go to the archive)."""
        if self.quota is None:
            return
        await quota_ops.start_unit(self.command_runner, "release", self.unix_name(hub_name))
        self.quota_usage.pop(self.unix_name(hub_name), None)

    # --- operations (synchronous: no await between the running check and the change) ---

    def reset(self, user, volumes) -> dict:
        unix = self.unix_name(user.name)
        result = trash.reset_volumes(
            unix,
            self.users_root,
            volumes,
            owner=self.account_ids(unix),
            now=self.clock(),
            chown=self.chown,
        )
        for volume in result.reset_volumes:
            self.log.info("Storage: %s of %s moved to the trash", volume, user.name)
        for failed in result.failed_volumes:
            self.log.warning(
                "Storage: %s of %s not reset: %s", failed["volume"], user.name, failed["reason"]
            )
        return model.reset_response(result, self.retention_seconds, self.trash_retention_days)

    def restore(self, user, item_id) -> dict:
        unix = self.unix_name(user.name)
        result = trash.restore_trash_item(
            unix, self.users_root, item_id, now=self.clock(), chown=self.chown
        )
        self.log.info(
            "Storage: %s of %s restored from %s%s",
            result.volume,
            user.name,
            result.restored.id,
            f" (previous one trashed as {result.displaced.id})" if result.displaced else "",
        )
        return model.restore_response(result, self.retention_seconds)

    # --- deleted users' archive ---

    @property
    def archive_retention_seconds(self) -> int:
        return self.deleted_user_retention_days * names.DAY

    def archive_user(self, hub_name: str) -> names.ArchiveItem | None:
        """Move a deleted hub user's directories out of reach (see archive.archive_user)."""
        unix = self.unix_name(hub_name)
        item = archive.archive_user(unix, self.users_root, now=self.clock())
        if item is not None:
            self.log.info("Storage: directories of deleted user %s archived as %s", hub_name, item.id)
        self.sizes.pop(unix, None)
        return item

    def archive_model(self) -> dict:
        return {
            "retention_days": self.deleted_user_retention_days,
            "items": [
                dict(item.to_json(self.archive_retention_seconds),
                     user=accounts.hub_name_for_unix(item.unix, self.unix_username_template))
                for item in archive.list_archive(self.users_root)
            ],
        }

    def restore_archived(self, item_id) -> dict:
        result = archive.restore_archived_user(self.users_root, item_id, now=self.clock())
        self.log.info(
            "Storage: %s restored from the archive%s", result.restored.unix,
            f" (the directory in place archived as {result.displaced.id})" if result.displaced else "",
        )
        return model.archive_restore_response(result, self.archive_retention_seconds)

    # --- sizes, in the worker thread ---

    def _store(self, measured: dict[str, dict], at: float, complete: bool) -> None:
        if complete:
            self.sizes = measured
            self.measured_at = dict.fromkeys(measured, at)
        else:
            self.sizes.update(measured)
            self.measured_at.update(dict.fromkeys(measured, at))

    async def measure_all(self) -> None:
        """Measure every user's directories off the event loop, then swap the cache."""
        started = time.monotonic()
        self.measuring = True
        try:
            measured = await self.walker.run(sizes.measure_all, self.users_root)
        finally:
            self.measuring = False
        self._store(measured, self.clock(), complete=True)
        self.passes += 1
        self.last_pass_seconds = time.monotonic() - started
        self.last_pass_at = self.clock()

    async def measure_user(self, hub_name: str) -> None:
        """Measure one user again (after a reset or restore)."""
        unix = self.unix_name(hub_name)
        measured = await self.walker.run(sizes.measure_user, unix, self.users_root)
        if measured is None:
            self.sizes.pop(unix, None)
        else:
            self._store({unix: measured}, self.clock(), complete=False)

    def remeasure_soon(self, hub_name: str) -> None:
        """Measure one user again in the background (after a reset or restore)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self.measure_user(hub_name))
        task.add_done_callback(self._log_failure)

    def _log_failure(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.log.error("Storage: measuring sizes failed", exc_info=task.exception())

    # --- the periodic pass ---

    @property
    def period(self) -> float:
        return self.sizes_interval

    def describe(self) -> str:
        return f"measured every {self.sizes_interval}s"

    async def run_pass(self) -> None:
        await self.sync_quotas()
        await self.refresh_quota_usage(max_age=0)
        await self.measure_all()
        self.log.debug(
            "Storage sizes of %d user(s) measured in %.2fs", len(self.sizes), self.last_pass_seconds
        )

    @property
    def sizes_pending(self) -> bool:
        """Whether sizes missing now may come soon: a pass runs, or the first is still
        to come (not after a first pass that failed: the log says why)."""
        return self.measuring or (self.passes == 0 and self.passes_failed == 0)

    def sizes_model(self, hub_names) -> dict:
        users = {}
        for name in sorted(hub_names):
            try:
                unix = self.unix_name(name)
            except accounts.InvalidNameError:
                continue
            users[name] = model.user_sizes_entry(
                unix, self.sizes.get(unix), self.measured_at.get(unix), self.quota_model(unix)
            )
        return {
            "sizes_interval_seconds": self.sizes_interval,
            "passes": self.passes,
            "measuring": self.measuring,
            "last_pass_seconds": self.last_pass_seconds,
            "last_pass_at": names.iso(self.last_pass_at) if self.last_pass_at else None,
            "retention_days": self.trash_retention_days,
            "quota_enabled": self.quota is not None,
            "quota_kind": self.quota.kind if self.quota else None,
            "quota_error": self.quota_error,
            "users": users,
        }

    def activity_sizes(self, hub_names) -> dict[str, dict]:
        """The activity monitor's sizes column (:func:`.model.activity_sizes`)."""
        return model.activity_sizes(self.sizes_model(hub_names)["users"], self.quota is not None)
