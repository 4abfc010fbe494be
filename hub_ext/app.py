"""The platform's hub: JupyterHub with every feature wired in, in one visible place.

``platform-hub`` (or ``python -m hub_ext.app``) takes JupyterHub's own options
(``-f /etc/jupyterhub/jupyterhub_config.py --upgrade-db``); the hub unit runs it.
:class:`PlatformHub` is JupyterHub plus three steps:

1. before any handler is registered, it refuses to run half-wired: the
   configured ``spawner_class`` / ``authenticator_class`` must be the
   platform's (or subclasses), else the hub exits naming the setting;
2. it creates every feature's service (:class:`PlatformServices`), hands them
   to the handlers through the tornado settings and registers the features'
   handlers (:mod:`hub_ext.plugin`) ahead of JupyterHub's own, since some
   replace JupyterHub's (``/api/users/<name>``, ``/api/groups/<name>``);
3. once JupyterHub's ``start`` has returned (the hub serves, the proxy's routes
   are checked), it starts the periodic services, and stops them first thing
   in JupyterHub's ``cleanup``. This is the one place that waits for the hub.

GPU detection runs in step 2, so GPU mode 1 without a GPU stops the hub before
it serves. Which class does what: docs/architecture.md ("How the hub is wired").
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from jupyterhub.app import JupyterHub
from traitlets import Unicode

from hub_ext import plugin
from hub_ext.activity import metrics
from hub_ext.activity import service as activity
from hub_ext.activity.model import targets_from_users
from hub_ext.admin import service as admin
from hub_ext.authenticator import PlatformAuthenticator
from hub_ext.cluster import activity as cluster_activity
from hub_ext.culling import service as culling
from hub_ext.gpu import service as gpu
from hub_ext.gpu.policy import GpuRequiredError
from hub_ext.notifications import service as notifications
from hub_ext.periodic import PeriodicService
from hub_ext.spawner import PlatformSpawner
from hub_ext.storage import service as storage
from hub_ext.web.base import FRONT_END_USER_SETTING

# hub_ext's page templates (home.html with the Session Status card, ...), ahead
# of JupyterHub's own (c.JupyterHub.template_paths, jupyterhub_config.py)
TEMPLATES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")

# what each feature needs from the configured classes
REQUIRED_CLASSES = {
    "spawner_class": (
        PlatformSpawner,
        "lab units, storage, GPUs, the activity monitor and culling",
    ),
    "authenticator_class": (
        PlatformAuthenticator,
        "accounts (signup approval, batch creation, password resets, login delays) "
        "and the archive of deleted users",
    ),
}


class WiringError(RuntimeError):
    """The configured classes do not fit the platform's features."""


def _class_name(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}" if isinstance(cls, type) else repr(cls)


def wiring_problems(**configured) -> list[str]:
    """One sentence per configured class (``spawner_class=...``) that does not fit."""
    problems = []
    for setting, cls in sorted(configured.items()):
        required, needed_by = REQUIRED_CLASSES[setting]
        if not (isinstance(cls, type) and issubclass(cls, required)):
            problems.append(
                f"c.JupyterHub.{setting} is {_class_name(cls)}, but {needed_by} need "
                f"{_class_name(required)} or a subclass of it; fix it in "
                "/etc/jupyterhub/jupyterhub_config.d/ (or remove the override)"
            )
    return problems


@dataclass
class PlatformServices:
    """Every feature's long-lived object, created once per hub."""

    culler: culling.SessionCuller
    storage: storage.StorageManager
    gpus: gpu.GpuSupport
    activity: activity.ActivityMonitor
    notifications: notifications.Notifications
    health: admin.HealthEndpoint
    settings_page: admin.SettingsPage

    @classmethod
    def create(cls, hub) -> PlatformServices:
        """The services of ``hub`` (their config is the hub's). GPU detection runs
        here: mode 1 without a GPU raises."""
        gpus = gpu.GpuSupport.instance(parent=hub)
        gpus.start()
        sizes = storage.StorageManager(parent=hub)
        monitor = activity.ActivityMonitor(
            parent=hub,
            targets=lambda: targets_from_users(hub.users.values()),
            gpu_usage=gpus.usage,
            # labs on a cluster's workers: Slurm's accounting instead of units' cgroups
            **cluster_activity.monitor_sources(hub.spawner_class),
        )
        # the directory sizes column: the storage feature's quota figures or background sizing
        monitor.sizes_provider = sizes.activity_sizes
        monitor.sizes_pending = lambda: sizes.sizes_pending
        culler = culling.SessionCuller(parent=hub)
        culler.app = hub
        return cls(
            culler=culler,
            storage=sizes,
            gpus=gpus,
            activity=monitor,
            notifications=notifications.Notifications(parent=hub),
            health=admin.HealthEndpoint(parent=hub),
            settings_page=admin.SettingsPage(parent=hub),
        )

    def tornado_settings(self) -> dict:
        """Where each feature's handlers find its service."""
        return {
            culling.SETTINGS_KEY: self.culler,
            storage.SETTINGS_KEY: self.storage,
            activity.SETTINGS_KEY: self.activity,
            notifications.SETTINGS_KEY: self.notifications,
            admin.HEALTH_KEY: self.health,
            admin.SETTINGS_PAGE_KEY: self.settings_page,
        }

    @property
    def periodic(self) -> list[PeriodicService]:
        """The services with background passes."""
        return [self.culler, self.storage, self.activity]

    def start(self) -> None:
        # the spawners are loaded: the extensions in their state count again
        try:
            self.culler.restore_extensions()
        except Exception:  # worst case a cull at the unextended deadline, never a dead hub
            self.culler.log.exception("Session extensions not restored")
        for service in self.periodic:
            service.start()

    def stop(self) -> None:
        for service in self.periodic:
            service.stop()


# Exit status of a hub that refuses its configuration (sysexits' EX_CONFIG): the
# unit's RestartPreventExitStatus= stops systemd from restarting it in a loop,
# and `systemctl status jupyterhub` shows "status=78/CONFIG" until it is fixed.
EXIT_CONFIG = 78


class PlatformHub(JupyterHub):
    """JupyterHub with the platform's features (the hub unit's ExecStart)."""

    # what PlatformAuthenticator checks: the features are wired by this class
    wires_platform_features = True

    platform: PlatformServices | None = None  # set in init_handlers

    proxy_user = Unicode(
        "jupyterhub-proxy",
        help="""Unix user of configurable-http-proxy: the only peer of the hub's socket
        whose X-Real-IP the hub believes (hub_ext.web.base.request_client).""",
    ).tag(config=True)

    def check_wiring(self) -> None:
        """Raise WiringError when the configured classes do not fit the features."""
        problems = wiring_problems(
            spawner_class=self.spawner_class, authenticator_class=self.authenticator_class
        )
        if problems:
            raise WiringError("; ".join(problems))

    def init_handlers(self):
        try:
            self.check_wiring()
        except WiringError as e:
            self.log.critical("The platform refuses to start half-wired: %s", e)
            self.exit(EXIT_CONFIG)
        try:
            self.platform = PlatformServices.create(self)
        except GpuRequiredError as e:
            self.log.critical("The hub refuses to start: %s", e)
            self.exit(EXIT_CONFIG)
        self.tornado_settings.update(self.platform.tornado_settings())
        self.tornado_settings[FRONT_END_USER_SETTING] = self.proxy_user
        metrics.register(self.platform.activity)
        super().init_handlers()
        # ahead of JupyterHub's own: some replace them
        self.handlers[:0] = self.add_url_prefix(self.hub_prefix, plugin.platform_handlers())

    async def start(self):
        await super().start()
        if self.platform is not None:  # None for --generate-config and the like
            self.platform.start()

    async def cleanup(self):
        if self.platform is not None:
            self.platform.stop()
        await super().cleanup()


main = PlatformHub.launch_instance

if __name__ == "__main__":
    main()
