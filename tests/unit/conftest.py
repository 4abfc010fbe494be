"""Fixtures shared by the unit tests (the fakes themselves are in fakes.py)."""

import copy
from types import SimpleNamespace

import pytest
from jupyterhub import orm
from jupyterhub.objects import Hub
from systemdspawner import systemd

from hub_ext.authenticator import PlatformAuthenticator

from .fakes import FakeSystem, RecordingChown
from .rendering import load_hub_config

# platform_config.json as the hub role renders it with the default variables
# (test_settings.py checks that it is exactly that rendering)
SAMPLE_PLATFORM_CONFIG = {
    "PlatformSpawner": {
        "mem_limit": "4G",
        "cpu_limit": 2.0,
        "tasks_max": 1024,
        "user_workingdir": "/home/{UNIXNAME}/workspace",
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
        "unix_username_template": "jh-{USERNAME}",
        "resource_profiles": {},
        "environment": {},
        "service_mlflow": "1",
        "service_resources_monitor": "1",
        "service_tensorboard": "1",
        "service_extra": {},
        "tf_cpp_min_log_level": "3",
    },
    "PlatformAuthenticator": {
        "admin_user": "admin",
        "unix_username_template": "jh-{USERNAME}",
        "enable_signup": True,
        "allowed_failed_logins": 5,
        "seconds_before_next_try": 600,
        "minimum_password_length": 8,
        "password_words": 3,
        "password_delimiter": "-",
        "signup_max_pending": 100,
        "signups_per_address_per_hour": 30,
    },
    "SessionCuller": {
        "enabled": False,
        "timeout": 86400,
        "interval": 600,
        "max_age": 0,
        "max_extension_hours": 24,
    },
    "StorageManager": {
        "unix_username_template": "jh-{USERNAME}",
        "trash_retention_days": 7,
        "deleted_user_retention_days": 30,
        "sizes_interval": 3600,
        "volume_descriptions": {
            "home": "User home directory files, configurations",
            "workspace": "Project files, notebooks, code",
            "cache": "Temporary files, pip cache, conda cache",
        },
        "quota_enabled": False,
        "quota_per_user": "10G",
        "quota_shared": None,
    },
    "ActivityMonitor": {
        "sample_interval": 600,
        "retention_days": 7,
        "half_life": 72.0,
        "inactive_after": 60.0,
    },
    "GpuSupport": {"mode": 2, "policy": "all", "group_devices": {}, "group_counts": {}},
    "SlurmLabSpawner": {"partition": "labs", "accounts_dir": "/srv/jupyterhub/accounts", "lab_sandbox": True},
}


@pytest.fixture
def platform_config():
    return copy.deepcopy(SAMPLE_PLATFORM_CONFIG)


@pytest.fixture
def hub_config(tmp_path, platform_config):
    """``hub_config(**variables)``: the hub's config as jupyterhub_config.py loads
    it on a host deployed with the default variables (and ``variables``), with
    ``platform_config`` as its platform_config.json (change it before the call)."""
    directory = tmp_path / "etc-jupyterhub"
    directory.mkdir()
    return lambda **variables: load_hub_config(directory, platform_config, **variables)


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
def make_spawner(monkeypatch, hub_config, tmp_path):
    # no systemctl here; SystemdSpawner.__init__ asks for the version
    monkeypatch.setattr(systemd, "get_systemd_version", lambda: 252)
    from hub_ext.spawner import PlatformSpawner

    users_root = tmp_path / "users"
    users_root.mkdir()

    def make(name="alice", extra_config=None, groups=(), spawner_class=PlatformSpawner, **spawner_settings):
        c = hub_config()
        c.PlatformSpawner.users_root = str(users_root)
        c.PlatformSpawner.update(spawner_settings)
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
def make_authenticator(hub_config, tmp_path):
    db = orm.new_session_factory("sqlite://")()

    def make(password=None, **traits):
        """PlatformAuthenticator as deployed, with ``traits`` set on top."""
        c = hub_config()
        if password is not None:
            path = tmp_path / "admin_password"
            path.write_text(password + "\n")
            c.PlatformAuthenticator.admin_password_file = str(path)
        c.PlatformAuthenticator.update(traits)
        return PlatformAuthenticator(config=c, db=db)

    make.db = db
    return make
