import copy
import json

import pytest

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
