"""The hub's culling service: :class:`SessionCuller`.

:class:`SessionCuller` holds the settings (``c.SessionCuller.*``, traits tagged
with their Ansible variable: hub_ext/settings.py), the extension store and the periodic cull
task; it maps the hub's spawners onto the pure arithmetic of
:mod:`hub_ext.culling.culler` and does the I/O. The session-info /
extend-session API is :mod:`hub_ext.culling.handlers`; docs/culling.md has the
semantics.
"""

from __future__ import annotations

import os
import time

from jupyterhub import orm
from traitlets import Bool, Integer, Unicode

from hub_ext.culling import culler
from hub_ext.periodic import PeriodicService
from hub_ext.timeutil import to_epoch, to_iso

SETTINGS_KEY = "hub_ext_session_culler"  # tornado settings key the handlers read


class ExtensionRefused(Exception):
    """An extension that cannot be granted now (the API answers 409 with the message)."""


def _spawner(user, server_name: str):
    """A hub User's spawner, without creating a named server that does not exist."""
    if server_name == "":
        return user.spawner
    if server_name in user.orm_spawners:
        return user.spawners[server_name]
    return None


# --- the culler ---------------------------------------------------------------


class SessionCuller(PeriodicService):
    """Culls idle servers from inside the hub, honouring session extensions."""

    service_name = "Idle culler"

    # The settings (hub_ext/settings.py): each trait is the only declaration of
    # its type, bounds and default; the Ansible variable in its tag sets it.
    enabled = Bool(
        False,
        help="Cull idle servers (JUPYTERHUB_IDLE_CULLER_ENABLED of the original).",
    ).tag(config=True, ansible="jupyterhub_idle_culler_enabled")
    timeout = Integer(
        86400, min=1, help="Seconds without activity before a server is stopped."
    ).tag(config=True, ansible="jupyterhub_idle_culler_timeout")
    interval = Integer(
        600, min=1, help="Seconds between two cull passes."
    ).tag(config=True, ansible="jupyterhub_idle_culler_interval")
    max_age = Integer(
        0,
        min=0,
        help="Seconds after its start a server is stopped whatever its activity (0: never).",
    ).tag(config=True, ansible="jupyterhub_idle_culler_max_age")
    max_extension_hours = Integer(
        24,
        min=0,
        max=culler.MAX_REQUEST_HOURS,
        help="Total hours a user may extend one server start (0: no extensions); "
        "the allowance resets when the server restarts.",
    ).tag(config=True, ansible="jupyterhub_idle_culler_max_extension")
    extension_unit_seconds = Integer(
        culler.HOUR,
        min=1,
        max=culler.HOUR,
        help="Seconds one extension hour is worth (3600; smaller only to test culling quickly).",
    ).tag(config=True)
    state_file = Unicode(
        None,
        allow_none=True,
        help="JSON file of extensions granted by earlier versions: read once at hub start "
        "into the running servers' spawner state, then removed (None: nothing to migrate).",
    ).tag(config=True)

    # seams for tests
    clock = staticmethod(time.time)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # the traits have checked the numbers
        self.policy = culler.CullPolicy(
            enabled=self.enabled,
            timeout=self.timeout,
            interval=self.interval,
            max_age=self.max_age,
            max_extension_hours=self.max_extension_hours,
            extension_unit=self.extension_unit_seconds,
        )
        # the working view; each server's record persists in its spawner's state
        self.store = culler.ExtensionStore()
        self.app = None  # the hub (hub_ext.app.PlatformHub sets it)

    # --- reading the hub ---

    def status(self, spawner) -> culler.SessionStatus | None:
        """The culler's view of a spawner now; None when it is not running."""
        orm_spawner = spawner.orm_spawner
        started = to_epoch(orm_spawner.started) if orm_spawner is not None else None
        if started is None:
            return None
        key = culler.server_key(spawner.user.name, spawner.name)
        return culler.session_status(
            self.policy,
            now=self.clock(),
            started=started,
            last_activity=to_epoch(orm_spawner.last_activity),
            extension_hours=self.store.hours_used(key, started),
        )

    def session_info(self, user, server_name: str = "") -> dict:
        """The session-info model of a user's server (``user`` is a hub User)."""
        spawner = _spawner(user, server_name)
        active = bool(spawner is not None and spawner.active)
        status = self.status(spawner) if active else None
        p = self.policy
        info = {
            "user": user.name,
            "server_name": server_name,
            "culler_enabled": p.enabled,
            "server_active": active,
            "timeout_seconds": p.timeout,
            "max_age_seconds": p.max_age,
            "max_extension_hours": p.max_extension_hours,
            "started": None,
            "last_activity": None,
            "deadline": None,
            "cull_reason": None,
            "time_remaining_seconds": None,
            "extensions_used_hours": 0,
            "extensions_available_hours": p.max_extension_hours,
        }
        if status is not None:
            info.update(
                started=to_iso(status.started),
                last_activity=to_iso(status.last_activity),
                extensions_used_hours=status.extension_hours,
                extensions_available_hours=status.extensions_available_hours,
            )
            if p.enabled:
                info.update(
                    deadline=to_iso(status.deadline),
                    cull_reason=status.reason,
                    time_remaining_seconds=int(status.remaining),
                )
        return info

    def extend(self, user, hours: int, server_name: str = "") -> dict:
        """Grant up to ``hours`` to a running server; raise ExtensionRefused when impossible."""
        p = self.policy
        if not p.enabled:
            raise ExtensionRefused("Idle culling is disabled: sessions need no extension")
        if p.max_extension_hours == 0:
            raise ExtensionRefused("Session extension is disabled (max extension 0 hours)")
        spawner = _spawner(user, server_name)
        status = (
            self.status(spawner) if spawner is not None and spawner.active else None
        )
        if status is None:
            raise ExtensionRefused(f"The server of {user.name} is not running")
        grant = culler.grant_extension(
            hours, status.extension_hours, p.max_extension_hours
        )
        if grant.granted == 0:
            raise ExtensionRefused(grant.message)
        key = culler.server_key(user.name, server_name)
        self.store.add(key, status.started, grant.granted)
        self._persist(spawner, key)
        self.log.info(
            "Session of %s extended by %dh (requested %dh, %d of %dh used)",
            key,
            grant.granted,
            grant.requested,
            grant.used,
            p.max_extension_hours,
        )
        return {
            "success": True,
            "message": grant.message,
            "requested_hours": grant.requested,
            "granted_hours": grant.granted,
            "truncated": grant.truncated,
            "session_info": self.session_info(user, server_name),
        }

    # --- extensions in the spawners' state ---

    def _persist(self, spawner, key: str) -> None:
        """Keep the server's record in its spawner's state (JupyterHub's database)."""
        spawner.session_extension = self.store.record(key)
        if self.app is not None:  # no hub (unit tests): the spawner keeps it in memory
            spawner.orm_spawner.state = spawner.get_state()
            self.app.db.commit()

    def _running_spawners(self) -> dict[str, tuple[object, float]]:
        """server key -> (spawner, start epoch) of every server the database has as started."""
        running = {}
        for orm_spawner in self.app.db.query(orm.Spawner).filter(orm.Spawner.started.isnot(None)):
            if orm_spawner.user is None:
                continue
            user = self.app.users[orm_spawner.user]
            spawner = user.spawners[orm_spawner.name]
            running[culler.server_key(user.name, spawner.name)] = (spawner, to_epoch(orm_spawner.started))
        return running

    def restore_extensions(self) -> None:
        """Refill the working view from the spawners' state at hub start; move the
        records of an extension file of earlier versions there once, then remove it."""
        running = self._running_spawners()
        for key, (spawner, started) in running.items():
            hours = culler.hours_for_start(getattr(spawner, "session_extension", None), started)
            if hours:
                self.store.set(key, started, hours)
        if not self.state_file:
            return
        legacy = culler.read_extensions_file(self.state_file)
        migrated = 0
        for key, record in legacy.items():
            if key not in running or self.store.hours_used(key, running[key][1]):
                continue
            spawner, started = running[key]
            hours = culler.hours_for_start(record, started)
            if hours:
                self.store.set(key, started, hours)
                self._persist(spawner, key)
                migrated += 1
        try:
            os.unlink(self.state_file)
        except FileNotFoundError:
            return
        self.log.info(
            "Session extensions of %d running server(s) moved from %s into the spawners' state; "
            "file removed", migrated, self.state_file,
        )

    # --- culling ---

    def servers(self) -> list[culler.Server]:
        """Every server the hub's database has as started."""
        return [
            culler.Server(
                user=spawner.user.name,
                name=spawner.name,
                started=started,
                last_activity=to_epoch(spawner.orm_spawner.last_activity),
                ready=bool(spawner.ready),
            )
            for spawner, started in self._running_spawners().values()
        ]

    async def stop_server(self, user_name: str, server_name: str) -> None:
        """Stop a server through the hub: ``User.stop``, then its proxy route."""
        app = self.app
        user = app.users[user_name]
        spawner = user.spawners[server_name]
        if spawner.pending:
            raise RuntimeError(f"{user_name}/{server_name} pending {spawner.pending}")
        try:
            # marks the server stop-pending before its first await, so the UI and
            # the API see a stop in progress at once (JupyterHub's cleanup uses it too)
            await user.stop(server_name)
        finally:
            await app.proxy.delete_user(user, server_name)

    async def cull(self) -> culler.CullReport:
        return await culler.cull_once(
            self.policy,
            now=self.clock(),
            servers=self.servers(),
            store=self.store,
            stop=self.stop_server,
        )

    # --- the periodic pass ---

    @property
    def period(self) -> float:
        return self.interval

    def describe(self) -> str:
        return (f"timeout {self.timeout}s, interval {self.interval}s, max age {self.max_age}s, "
                f"max extension {self.max_extension_hours}h")

    async def run_pass(self) -> None:
        report = await self.cull()
        if report.culled:
            self.log.info(
                "Culled %d server(s): %s",
                len(report.culled),
                ", ".join(d.server.key for d in report.culled),
            )

    def start(self) -> None:
        """Start culling in the hub's event loop (nothing when disabled)."""
        if not self.enabled:
            self.log.info("Idle culler disabled")
            return
        super().start()
