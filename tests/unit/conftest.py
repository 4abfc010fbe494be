"""Fixtures shared by the unit tests (the fakes themselves are in fakes.py)."""

import copy
import json
from types import SimpleNamespace

import pytest
from jupyterhub import orm
from jupyterhub.objects import Hub
from systemdspawner import systemd
from traitlets.config import Config

from hub_ext.authenticator import PlatformAuthenticator
from hub_ext.config import apply_platform_settings

from .fakes import FakeSystem, RecordingChown

# platform.json as docs/architecture.md specifies it
SAMPLE_SETTINGS = {
    "state_dir": "/var/lib/jupyterhub",
    "base_url": "/jupyterhub/",
    "public_host": "https://hub.example.org",
    "user_subdomains": True,
    "hub_socket": "/run/jupyterhub/hub.sock",
    "proxy_socket": "/run/jupyterhub-proxy/proxy.sock",
    "proxy_api_socket": "/run/jupyterhub-proxy/api.sock",
    "proxy_user": "jupyterhub-proxy",
    "admin_user": "admin",
    "admin_password_file": None,
    "signup_enabled": True,
    "allowed_failed_logins": 5,
    "seconds_before_next_try": 600,
    "minimum_password_length": 8,
    "unix_username_template": "jh-{USERNAME}",
    "platform_group": "jupyterhub-users",
    "users_root": "/srv/jupyterhub/users",
    "shared_dir": "/srv/jupyterhub/shared",
    "lab_venv": "/opt/jupyterlab",
    "default_url": "/lab",
    "spawner": {
        "mem_limit": "4G",
        "cpu_limit": 2.0,
        "tasks_max": 1024,
        "user_workingdir": None,
        "default_shell": "/bin/bash",
        "extra_paths": [],
        "unit_name_template": "jupyter-{USERNAME}-singleuser",
        "unit_extra_properties": {},
        "isolate_tmp": True,
        "tmp_size": "2G",
        "shm_size": "1G",
        "isolate_devices": False,
        "disable_user_sudo": True,
        "lab_hardening": True,
        "readonly_paths": None,
        "readwrite_paths": None,
        "dynamic_users": False,
        "slice": None,
        "start_timeout": 120,
        "http_timeout": 60,
        "ready_poll_interval": 0.05,
        "environment": {},
    },
    "config_d": "/etc/jupyterhub/jupyterhub_config.d",
}


@pytest.fixture
def settings():
    return copy.deepcopy(SAMPLE_SETTINGS)


@pytest.fixture
def write_settings(tmp_path):
    def write(settings, name="platform.json"):
        path = tmp_path / name
        path.write_text(json.dumps(settings))
        return path

    return write


@pytest.fixture(autouse=True)
def _fresh_gpu_support():
    """hub_ext.gpu.service.GpuSupport is one per hub process; one per test here."""
    from hub_ext.gpu.service import GpuSupport

    GpuSupport.clear_instance()
    yield
    GpuSupport.clear_instance()


async def answering(ip, port, path):
    return True


@pytest.fixture
def make_spawner(monkeypatch, settings, tmp_path):
    # no systemctl here; SystemdSpawner.__init__ asks for the version
    monkeypatch.setattr(systemd, "get_systemd_version", lambda: 252)
    from hub_ext.spawner import PlatformSpawner

    users_root = tmp_path / "users"
    users_root.mkdir()
    settings["users_root"] = str(users_root)

    def make(name="alice", extra_config=None, groups=(), spawner_class=PlatformSpawner, **spawner_settings):
        settings["spawner"].update(spawner_settings)
        c = Config()
        apply_platform_settings(c, settings)
        if extra_config:
            c.merge(extra_config)
        user = SimpleNamespace(
            name=name, id=7, url=f"/jupyterhub/user/{name}/", base_url="/jupyterhub/",
            server=None, settings={}, escaped_name=name, host="", spawners={},
            groups=[SimpleNamespace(name=g) for g in groups],
        )
        spawner = spawner_class(user=user, config=c, hub=Hub(base_url="/jupyterhub/hub/"))
        spawner.command_runner = FakeSystem()
        spawner.chown = RecordingChown()
        spawner.lab_probe = answering  # the lab answers at once (readiness has its own tests)
        return spawner

    make.users_root = users_root
    return make


@pytest.fixture
def make_authenticator(settings, tmp_path):
    db = orm.new_session_factory("sqlite://")()

    def make(password=None, **overrides):
        settings.update(overrides)
        if password is not None:
            path = tmp_path / "admin_password"
            path.write_text(password + "\n")
            settings["admin_password_file"] = str(path)
        c = Config()
        apply_platform_settings(c, settings)
        return PlatformAuthenticator(config=c, db=db)

    make.db = db
    return make
