"""Per-user storage in the hub: restart, reset to trash, restore, sizes, admin page.

* The storage service (:class:`hub_ext.storage.service.StorageManager`) does
  the work; this module is the HTTP side only.
* API (the Docker original's two endpoints keep their JSON):

  - ``DELETE /hub/api/users/{user}/manage-volumes`` ``{"volumes": [...]}`` ->
    ``{"message", "reset_volumes", "failed_volumes", "trash"}``
  - ``GET    /hub/api/users/{user}/manage-volumes``: volumes, descriptions, sizes, trash,
    disk quota (used/limit)
  - ``POST   /hub/api/users/{user}/restart-server``: stop then start through the hub
  - ``GET    /hub/api/users/{user}/trash``: the user's trash items
  - ``POST   /hub/api/users/{user}/trash/restore`` ``{"item": "<id>"}``
  - ``GET    /hub/api/storage``: every user's sizes (admins)
  - ``GET    /hub/api/platform/archive``: deleted users' archived directories (admins)
  - ``POST   /hub/api/platform/archive/restore`` ``{"item": "<id>"}`` (admins)

* ``GET /hub/storage``: the admin page (every user, sizes, the same modal).

Rules: the user themselves or an admin (403 otherwise, also for unknown names),
400 for a malformed request or while the server runs or is starting/stopping,
404 for an unknown user (callers allowed to see any user). State changes are
non-GET requests, so JupyterHub requires ``_xsrf`` or a token for them.
docs/storage.md has the layout and the semantics.
"""

from __future__ import annotations

from jupyterhub import orm
from jupyterhub.handlers.base import BaseHandler
from jupyterhub.scopes import has_scope
from tornado import web

from hub_ext.accounts import unix_users as accounts
from hub_ext.storage import fsops, names
from hub_ext.storage.model import busy_reason
from hub_ext.storage.service import SETTINGS_KEY, StorageManager
from hub_ext.web.base import UserResourceHandler


class _StorageHandler(UserResourceHandler):
    resource = "the storage"

    @property
    def storage_manager(self) -> StorageManager:
        return self.settings[SETTINGS_KEY]

    def check_stopped(self, user) -> None:
        reason = busy_reason(user)
        if reason:
            raise web.HTTPError(400, reason)

    def json_object(self) -> dict:
        body = self.get_json_body()  # 400 on invalid JSON
        if not isinstance(body, dict):
            raise web.HTTPError(400, "The request body must be a JSON object")
        return body


class ManageVolumesHandler(_StorageHandler):
    async def get(self, user_name):
        self.check_access("read:servers", user_name)
        user = self.target_user(user_name)
        await self.storage_manager.refresh_quota_usage()
        self.write(self.storage_manager.volumes_model(user))

    async def delete(self, user_name):
        self.check_access("servers", user_name)
        body = self.json_object()
        try:
            volumes = names.check_volume_names(body.get("volumes"))
        except names.VolumeNameError as e:
            raise web.HTTPError(400, str(e)) from None
        user = self.target_user(user_name)
        self.check_stopped(user)
        # no await from the check above to the renames: no spawn can begin in between
        try:
            result = self.storage_manager.reset(user, volumes)
        except fsops.UnsafePathError as e:
            self.log.error("Storage: reset of %s refused: %s", user.name, e)
            raise web.HTTPError(409, "The user's storage is not in a safe state; see the hub log") from e
        self.storage_manager.remeasure_soon(user.name)
        self.write(result)


class TrashHandler(_StorageHandler):
    async def get(self, user_name):
        self.check_access("read:servers", user_name)
        user = self.target_user(user_name)
        manager = self.storage_manager
        self.write(
            {
                "user": user.name,
                "retention_days": manager.trash_retention_days,
                "items": manager.trash_model(manager.unix_name(user.name)),
            }
        )


class RestoreHandler(_StorageHandler):
    async def post(self, user_name):
        self.check_access("servers", user_name)
        body = self.json_object()
        try:
            names.check_trash_item_id(body.get("item"))
        except names.VolumeNameError as e:
            raise web.HTTPError(400, str(e)) from None
        user = self.target_user(user_name)
        self.check_stopped(user)
        try:
            result = self.storage_manager.restore(user, body["item"])
        except fsops.TrashItemNotFoundError:
            raise web.HTTPError(404, f"No trash item {body['item']!r} for {user.name}") from None
        except (fsops.UnsafePathError, OSError) as e:
            self.log.error("Storage: restore for %s failed: %s", user.name, e)
            raise web.HTTPError(409, f"Could not restore: {getattr(e, 'strerror', None) or e}") from e
        self.storage_manager.remeasure_soon(user.name)
        self.write(result)


class RestartServerHandler(_StorageHandler):
    """Restart the default server through the hub: stop, then start with the same options.

    The hub's own stop and spawn paths (proxy route, pending flags, events), so
    the hub and systemd never disagree about the server.
    """

    async def post(self, user_name):
        self.check_access("servers", user_name)
        user = self.target_user(user_name)
        spawner = user.spawner
        if spawner.pending:
            raise web.HTTPError(400, f"The server of {user.name} is {spawner.pending} pending")
        if not spawner.ready:
            raise web.HTTPError(400, "Server is not running")
        options = spawner.user_options
        self.log.info("Restarting the server of %s (requested by %s)", user.name, self.current_user.name)
        stopped = await self.stop_single_user(user, "")
        await stopped  # stop_single_user returns early for a slow stop
        await self.spawn_single_user(user, "", options=options)
        ready = bool(spawner.ready)
        self.set_status(200 if ready else 202)
        self.write(
            {
                "message": f"Server of {user.name} "
                + ("restarted" if ready else "stopped and starting again"),
                "ready": ready,
                "pending": spawner.pending,
            }
        )


class _AdminStorageHandler(_StorageHandler):
    def check_admin(self) -> None:
        if self.current_user is None or not has_scope(
            "admin:users", self.parsed_scopes, db=self.db
        ):
            raise web.HTTPError(403, "Only administrators can read every user's storage")


class ArchiveHandler(_AdminStorageHandler):
    """``GET /api/platform/archive``: deleted users' archived directories (admins)."""

    async def get(self):
        self.check_admin()
        self.write(self.storage_manager.archive_model())


class ArchiveRestoreHandler(_AdminStorageHandler):
    """``POST /api/platform/archive/restore`` ``{"item": id}``: put a deleted user's
    directories back; those in place (a newer user's) are archived first."""

    async def post(self):
        self.check_admin()
        body = self.json_object()
        try:
            item = names.check_archive_item_id(body.get("item"))
        except names.VolumeNameError as e:
            raise web.HTTPError(400, str(e)) from None
        manager = self.storage_manager
        hub_name = accounts.hub_name_for_unix(item.unix, manager.unix_username_template)
        user = self.find_user(hub_name) if hub_name else None
        if user is not None:
            self.check_stopped(user)
        # no await from the check above to the renames: no spawn can begin in between
        try:
            result = manager.restore_archived(item.id)
        except fsops.TrashItemNotFoundError:
            raise web.HTTPError(404, f"No archive item {item.id!r}") from None
        except (fsops.UnsafePathError, OSError) as e:
            self.log.error("Storage: restore of %s failed: %s", item.id, e)
            raise web.HTTPError(409, f"Could not restore: {getattr(e, 'strerror', None) or e}") from e
        self.write(result)


class StorageSizesHandler(_AdminStorageHandler):
    async def get(self):
        self.check_admin()
        names = [u.name for u in self.db.query(orm.User)]
        await self.storage_manager.refresh_quota_usage()
        self.write(self.storage_manager.sizes_model(names))


class StorageAdminPageHandler(BaseHandler):
    """``/hub/storage``: every user's sizes, and the Manage Volumes dialog per user.

    A page of its own rather than a button injected into JupyterHub's React
    admin page (docs/storage.md: that DOM is not a stable interface).
    """

    @web.authenticated
    async def get(self):
        if not has_scope("admin:users", self.parsed_scopes, db=self.db):
            raise web.HTTPError(403, "Only administrators can manage every user's storage")
        manager: StorageManager = self.settings[SETTINGS_KEY]
        users = sorted(self.db.query(orm.User), key=lambda u: u.name)
        await manager.refresh_quota_usage()
        model = manager.sizes_model([u.name for u in users])
        rows = []
        for orm_user in users:
            user = self.users[orm_user]
            sizes = model["users"].get(user.name)
            if sizes is None:
                continue
            rows.append(
                {
                    "name": user.name,
                    "admin": user.admin,
                    "server": "running" if busy_reason(user) else "stopped",
                    "sizes": sizes,
                }
            )
        html = await self.render_template(
            "storage_admin.html",
            rows=rows,
            sizes=model,
            volumes=names.VOLUMES,
            selected=self.get_argument("user", ""),
        )
        self.finish(html)


default_handlers = [
    (r"/api/users/([^/]+)/manage-volumes", ManageVolumesHandler),
    (r"/api/users/([^/]+)/restart-server", RestartServerHandler),
    (r"/api/users/([^/]+)/trash", TrashHandler),
    (r"/api/users/([^/]+)/trash/restore", RestoreHandler),
    (r"/api/storage", StorageSizesHandler),
    (r"/api/platform/archive", ArchiveHandler),
    (r"/api/platform/archive/restore", ArchiveRestoreHandler),
    (r"/storage", StorageAdminPageHandler),
]

__all__ = [
    "ArchiveHandler",
    "ArchiveRestoreHandler",
    "ManageVolumesHandler",
    "RestartServerHandler",
    "RestoreHandler",
    "StorageAdminPageHandler",
    "StorageSizesHandler",
    "TrashHandler",
    "default_handlers",
]
