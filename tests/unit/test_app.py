"""hub_ext.app.PlatformHub: the one entry point that wires the features into the hub.

A real PlatformHub on an in-memory database: the refusal to run half-wired, the
handlers ahead of JupyterHub's own, the services in the tornado settings, and
the periodic services started only once JupyterHub's own start has returned.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from jupyterhub.app import JupyterHub
from jupyterhub.spawner import LocalProcessSpawner
from nativeauthenticator import NativeAuthenticator

from hub_ext import app as platform_app
from hub_ext.app import PlatformHub, WiringError, wiring_problems
from hub_ext.authenticator import PlatformAuthenticator
from hub_ext.spawner import PlatformSpawner
from hub_ext.web.base import FRONT_END_USER_SETTING


@pytest.fixture
def deployed(hub_config, tmp_path):
    c = hub_config(hub_state_dir=str(tmp_path))
    c.PlatformSpawner.users_root = c.StorageManager.users_root = str(tmp_path / "users")
    c.JupyterHub.db_url = "sqlite://"
    c.GpuSupport.mode = 0
    c.ActivityMonitor.db_file = ":memory:"
    return c


def make_hub(config) -> PlatformHub:
    hub = PlatformHub(config=config)
    hub.init_db()
    hub.init_hub()
    hub.tornado_settings = {}
    return hub


class SiteSpawner(PlatformSpawner):
    """A site's own subclass: fits."""


def test_the_platform_classes_and_their_subclasses_fit():
    assert wiring_problems(spawner_class=PlatformSpawner,
                           authenticator_class=PlatformAuthenticator) == []
    assert wiring_problems(spawner_class=SiteSpawner) == []


def test_a_foreign_spawner_or_authenticator_is_named_with_its_setting():
    problems = wiring_problems(spawner_class=LocalProcessSpawner,
                               authenticator_class=NativeAuthenticator)
    assert len(problems) == 2
    auth, spawner = problems
    assert auth.startswith("c.JupyterHub.authenticator_class is nativeauthenticator.")
    assert "hub_ext.authenticator.PlatformAuthenticator or a subclass" in auth
    assert spawner.startswith("c.JupyterHub.spawner_class is jupyterhub.spawner.LocalProcessSpawner")
    assert "hub_ext.spawner.PlatformSpawner or a subclass" in spawner


def test_the_hub_refuses_to_start_half_wired(deployed, capfd):
    # what an admin's jupyterhub_config.d override would do
    deployed.JupyterHub.spawner_class = LocalProcessSpawner

    async def scenario():
        hub = make_hub(deployed)
        with pytest.raises(WiringError, match=r"c\.JupyterHub\.spawner_class is"):
            hub.check_wiring()
        with pytest.raises(SystemExit) as e:
            hub.init_handlers()
        # the status the unit's RestartPreventExitStatus= names: no restart loop
        assert e.value.code == platform_app.EXIT_CONFIG == 78
        assert hub.platform is None  # nothing was created, nothing started

    asyncio.run(scenario())
    # the application's log goes to stderr (the journal)
    assert "refuses to start half-wired: c.JupyterHub.spawner_class" in capfd.readouterr().err


def test_gpu_mode_1_without_a_gpu_stops_the_hub_with_one_clear_line(deployed, capfd):
    deployed.GpuSupport.mode = 1
    deployed.GpuSupport.nvml_module = "no_such_nvml_module"  # what a host without a driver gives

    async def scenario():
        hub = make_hub(deployed)
        with pytest.raises(SystemExit) as e:
            hub.init_handlers()
        assert e.value.code == platform_app.EXIT_CONFIG
        assert hub.platform is None

    asyncio.run(scenario())
    err = capfd.readouterr().err
    assert ("The hub refuses to start: GPU support is forced on (jupyterhub_gpu_enabled = 1) "
            "but no NVIDIA GPU was found: Python module 'no_such_nvml_module'") in err
    assert "set jupyterhub_gpu_enabled to 2 (auto-detect) or 0 (off)" in err
    assert "GpuRequiredError" not in err  # no traceback of the exception


def test_the_hub_unit_does_not_restart_a_hub_that_refuses_its_configuration():
    unit = (Path(__file__).resolve().parents[2] / "ansible/roles/hub/files/jupyterhub.service").read_text()
    assert f"RestartPreventExitStatus={platform_app.EXIT_CONFIG}" in unit.splitlines()


def test_platform_handlers_come_before_jupyterhubs_own_and_find_their_services(deployed):
    from hub_ext.accounts.handlers import PlatformUserAPIHandler
    from hub_ext.activity.service import SETTINGS_KEY as ACTIVITY_KEY
    from hub_ext.storage.service import SETTINGS_KEY as STORAGE_KEY

    async def scenario():
        hub = make_hub(deployed)
        hub.init_handlers()
        return hub

    hub = asyncio.run(scenario())
    prefix = hub.hub_prefix
    routes = [(path, handler) for path, handler, *_ in hub.handlers]
    users_api = [h for p, h in routes if p == prefix + "api/users/([^/]+)"]
    # the platform's replacement first: tornado takes the first match
    assert users_api[0] is PlatformUserAPIHandler and len(users_api) == 2
    paths = [p for p, _ in routes]
    assert paths.index(prefix + "api/activity") < paths.index(prefix + "api/(.*)")  # before API404
    # JupyterHub's own health probe answers at its paths (nothing of ours shadows it)
    from jupyterhub.handlers.pages import HealthCheckHandler

    for path in ("health$", "api/health$"):
        assert [h for p, h in routes if p == prefix + path][0] is HealthCheckHandler
    assert not [p for p, _ in routes if p.startswith(prefix + "api/health")
                and p != prefix + "api/health$"]
    # NativeAuthenticator's pages are still there, with the platform's replacements
    assert prefix + "signup" in paths
    services = hub.platform
    assert hub.tornado_settings[STORAGE_KEY] is services.storage
    assert hub.tornado_settings[ACTIVITY_KEY] is services.activity
    # the one peer whose X-Real-IP the handlers believe (jupyterhub_proxy_user)
    assert hub.tornado_settings[FRONT_END_USER_SETTING] == "jupyterhub-proxy"
    assert services.culler.app is hub
    # the activity page's sizes column is the storage feature's background sizing
    services.storage.sizes = {"jh-alice": {"home": 1, "workspace": 2, "cache": 3, "trash": 0}}
    assert services.activity.sizes_provider(["alice"])["alice"]["home"] == 1
    # no periodic service runs before the hub has started
    assert not any(s.running for s in services.periodic)


def test_services_start_only_after_jupyterhubs_start_and_stop_at_cleanup(deployed, monkeypatch):
    order = []

    async def jupyterhub_start(self):
        order.append(("jupyterhub started", [s.running for s in self.platform.periodic]))

    async def jupyterhub_cleanup(self):
        order.append(("jupyterhub cleanup", [s.running for s in self.platform.periodic]))

    monkeypatch.setattr(JupyterHub, "start", jupyterhub_start)
    monkeypatch.setattr(JupyterHub, "cleanup", jupyterhub_cleanup)
    deployed.SessionCuller.enabled = True

    async def scenario():
        hub = make_hub(deployed)
        hub.init_handlers()
        await hub.start()
        running = [s.running for s in hub.platform.periodic]
        await hub.cleanup()
        return running

    running = asyncio.run(scenario())
    assert order[0] == ("jupyterhub started", [False, False, False])
    assert running == [True, True, True]
    assert order[1] == ("jupyterhub cleanup", [False, False, False])  # ours stopped first


def test_a_disabled_culler_is_not_started(deployed):
    async def scenario():
        hub = make_hub(deployed)
        hub.init_handlers()
        hub.platform.start()
        running = {type(s).__name__: s.running for s in hub.platform.periodic}
        hub.platform.stop()
        return running

    assert asyncio.run(scenario()) == {
        "SessionCuller": False, "StorageManager": True, "ActivityMonitor": True,
    }


def test_the_authenticator_refuses_a_plain_jupyterhub(deployed):
    async def scenario():
        hub = JupyterHub(config=deployed)
        hub.init_db()
        hub.init_hub()
        with pytest.raises(RuntimeError, match="platform-hub"):
            hub.authenticator.get_handlers(hub)

    asyncio.run(scenario())


def test_the_hub_unit_runs_the_platform_hub():
    import tomllib
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    scripts = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["platform-hub"] == "hub_ext.app:main"
    assert platform_app.main == PlatformHub.launch_instance
    unit = (repo / "ansible" / "roles" / "hub" / "files" / "jupyterhub.service").read_text()
    exec_start = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert exec_start == ["ExecStart=/opt/jupyterhub/bin/platform-hub "
                          "-f /etc/jupyterhub/jupyterhub_config.py --upgrade-db"]
