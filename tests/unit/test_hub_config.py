"""The hub's wiring: jupyterhub_config.py as the hub role renders it (Ansible's
own templating, the roles' defaults) and as the hub loads it, with
platform_config.json merged and the site-local files last."""

from __future__ import annotations

import pytest
from traitlets.config import Config

from hub_ext import settings as st

from .rendering import HUB_CONFIG_TEMPLATE, ansible_variables, render

SOCKET_URLS = {
    "hub": "http+unix://%2Frun%2Fjupyterhub%2Fhub.sock",
    "proxy": "http+unix://%2Frun%2Fjupyterhub-proxy%2Fproxy.sock",
    "api": "http+unix://%2Frun%2Fjupyterhub-proxy%2Fapi.sock",
}
BRANDED = {
    "logo": {"src": "/x/logo.svg", "file": "/usr/local/share/jupyterhub/branding/logo.svg",
             "url": "/jupyterhub/branding/logo.svg"},
    "favicon": {"src": "", "file": "", "url": ""},
    "lab-main-icon": {"src": "/x/main.svg", "file": "/usr/local/share/jupyterhub/branding/lab-main-icon.svg",
                      "url": "/jupyterhub/branding/lab-main-icon.svg"},
    "lab-splash-icon": {"src": "", "file": "", "url": "https://example.org/splash.png"},
}
PASSWORD = "correct horse battery"


def test_hub_and_proxy(hub_config):
    c = hub_config()
    assert "base_url" not in c.JupyterHub  # taken from bind_url's path
    assert c.JupyterHub.db_url == "sqlite:////var/lib/jupyterhub/jupyterhub.sqlite"
    assert c.JupyterHub.cookie_secret_file == "/var/lib/jupyterhub/jupyterhub_cookie_secret"
    assert c.JupyterHub.cleanup_servers is False
    assert c.JupyterHub.last_activity_interval == 30  # routes back within 30 s of a proxy restart
    assert c.JupyterHub.spawner_class == "hub_ext.spawner.PlatformSpawner"
    assert c.JupyterHub.authenticator_class == "hub_ext.authenticator.PlatformAuthenticator"
    assert c.JupyterHub.template_paths[0].endswith("hub_ext/templates")
    assert set(c.JupyterHub.load_groups) == {"docker-sock", "docker-privileged"}
    assert c.PlatformHub.proxy_user == "jupyterhub-proxy"
    assert c.ConfigurableHTTPProxy.should_start is False
    # the token comes from CONFIGPROXY_AUTH_TOKEN, never from the config file
    assert "auth_token" not in c.ConfigurableHTTPProxy
    assert c.SessionCuller.state_file == "/var/lib/jupyterhub/session_extensions.json"
    assert c.ActivityMonitor.db_file == "/var/lib/jupyterhub/activity.sqlite"


def test_internal_endpoints_are_unix_sockets(hub_config):
    """No internal endpoint of the platform is a TCP port a lab could bind first."""
    c = hub_config()
    assert c.JupyterHub.hub_bind_url == SOCKET_URLS["hub"]
    assert c.JupyterHub.hub_connect_url == c.JupyterHub.hub_bind_url
    assert c.JupyterHub.bind_url == SOCKET_URLS["proxy"] + "/jupyterhub/"
    assert c.ConfigurableHTTPProxy.api_url == SOCKET_URLS["api"]
    assert c.JupyterHub.hub_socket_mode == 0o666


def test_the_base_url_is_the_path_of_bind_url(hub_config):
    assert hub_config(jupyterhub_base_url="/").JupyterHub.bind_url == SOCKET_URLS["proxy"] + "/"


def test_labs_get_their_own_origin_by_default(hub_config):
    c = hub_config()
    assert c.JupyterHub.subdomain_host == "https://hub.example.org"
    assert c.JupyterHub.cookie_host_prefix_enabled is True


def test_path_mode_keeps_labs_on_the_hub_origin(hub_config):
    c = hub_config(jupyterhub_user_subdomains=False, base_public_host="https://10.0.0.5:8443")
    assert "subdomain_host" not in c.JupyterHub
    assert "cookie_host_prefix_enabled" not in c.JupyterHub


def test_the_labs(hub_config):
    c = hub_config().PlatformSpawner
    assert c.cmd == [
        "/opt/jupyterlab/bin/python", "-I", "/usr/local/lib/jupyterhub/lab_start.py", "--",
        "/opt/jupyterlab/bin/python", "/usr/local/lib/jupyterhub/lab_server.py",
    ]
    assert c.default_url == "/lab"
    assert c.lab_venv == "/opt/jupyterlab"
    assert c.users_root == "/srv/jupyterhub/users"
    assert c.shared_dir == "/srv/jupyterhub/shared"
    assert c.platform_group == "jupyterhub-users"
    assert (c.docker_unix_group, c.sudo_unix_group) == ("docker", "jupyterhub-sudo")
    assert c.platform_environment == {"JUPYTERLAB_AUX_SCRIPTS_PATH": "/etc/jupyterhub/start-platform.d"}
    # the lab unit's settings come from platform_config.json (test_settings.py)
    assert c.mem_limit == "4G"


def test_branding_reaches_the_hub_and_the_labs(hub_config):
    c = hub_config(branding_served=BRANDED, jupyterlab_aux_scripts_path="")
    assert c.JupyterHub.logo_file == "/usr/local/share/jupyterhub/branding/logo.svg"
    assert c.PlatformSpawner.platform_environment == {
        "JUPYTERLAB_MAIN_ICON_URI": "/jupyterhub/branding/lab-main-icon.svg",
        "JUPYTERLAB_SPLASH_ICON_URI": "https://example.org/splash.png",
    }
    assert "logo_file" not in hub_config().JupyterHub


def test_accounts(hub_config):
    c = hub_config()
    assert c.Authenticator.allow_all is True
    assert c.NativeAuthenticator.open_signup is False
    assert c.PlatformAuthenticator.platform_group == "jupyterhub-users"
    assert c.PlatformAuthenticator.managed_unix_groups == ["docker", "jupyterhub-sudo"]
    # jupyterhub_admin_password "": no file, the first signup of the admin name is approved
    assert "admin_password_file" not in c.PlatformAuthenticator
    c = hub_config(jupyterhub_admin_password=PASSWORD)
    assert c.PlatformAuthenticator.admin_password_file == "/etc/jupyterhub/admin_password"


def test_every_value_set_is_a_trait_of_its_class(hub_config):
    """A misspelt trait in the template would only be a warning at hub start."""
    from jupyterhub.app import JupyterHub
    from jupyterhub.auth import Authenticator
    from jupyterhub.proxy import ConfigurableHTTPProxy
    from nativeauthenticator import NativeAuthenticator

    from hub_ext.activity.service import ActivityMonitor
    from hub_ext.app import PlatformHub
    from hub_ext.authenticator import PlatformAuthenticator
    from hub_ext.cluster.spawner import SlurmLabSpawner
    from hub_ext.culling.service import SessionCuller
    from hub_ext.gpu.service import GpuSupport
    from hub_ext.spawner import PlatformSpawner
    from hub_ext.storage.service import StorageManager

    classes = {cls.__name__: cls for cls in (
        JupyterHub, PlatformHub, ConfigurableHTTPProxy, PlatformSpawner, Authenticator,
        PlatformAuthenticator, NativeAuthenticator, SessionCuller, ActivityMonitor, StorageManager,
        GpuSupport, SlurmLabSpawner)}
    c = hub_config(branding_served=BRANDED, jupyterhub_admin_password=PASSWORD)
    for section, values in c.items():
        traits = classes[section].class_traits(config=True)
        for name in values:
            assert name in traits, f"{section}.{name}"


def test_the_deployed_classes_take_the_config(hub_config):
    from jupyterhub import orm

    from hub_ext.authenticator import PlatformAuthenticator

    auth = PlatformAuthenticator(config=hub_config(), db=orm.new_session_factory("sqlite://")())
    assert auth.allowed_failed_logins == 5
    assert auth.enable_signup is True and auth.open_signup is False
    assert auth.admin_users == {"admin"} and auth.allow_all is True


@pytest.mark.parametrize("variables", [
    {},
    {"jupyterhub_user_subdomains": False, "jupyterhub_base_url": "/", "branding_served": BRANDED,
     "jupyterhub_admin_password": PASSWORD, "jupyterlab_aux_scripts_path": ""},
])
def test_the_rendered_file_is_python(variables):
    compile(render(HUB_CONFIG_TEMPLATE, ansible_variables(**variables)), "jupyterhub_config.py", "exec")


def config_d(tmp_path):
    directory = tmp_path / "etc-jupyterhub" / "jupyterhub_config.d"
    directory.mkdir()
    return directory


def test_site_local_files_come_last_in_name_order(hub_config, tmp_path):
    directory = config_d(tmp_path)
    (directory / "10-first.py").write_text(
        "c.PlatformSpawner.mem_limit = '8G'\nc.JupyterHub.log_level = 'INFO'\n"
    )
    # loaded after 10-first.py: name order, last one wins
    (directory / "20-second.py").write_text("c.JupyterHub.log_level = 'DEBUG'\n")
    (directory / "README").write_text("c.JupyterHub.log_level = 'NOT PYTHON CONFIG'\n")
    c = hub_config()
    assert c.PlatformSpawner.cpu_limit == 2.0  # from platform_config.json
    assert c.PlatformSpawner.mem_limit == "8G"  # the site-local override wins over it
    assert c.JupyterHub.log_level == "DEBUG"


def test_the_combinations_are_checked_after_the_site_local_files(hub_config, platform_config, tmp_path):
    platform_config["GpuSupport"]["mode"] = 1
    platform_config["PlatformSpawner"]["isolate_devices"] = True
    with pytest.raises(ValueError, match="jupyterhub_spawner_isolate_devices"):
        hub_config()
    (config_d(tmp_path) / "50-no-private-devices.py").write_text("c.PlatformSpawner.isolate_devices = False\n")
    assert hub_config().PlatformSpawner.isolate_devices is False


def test_an_unreadable_platform_config_names_the_file(tmp_path):
    settings_file = tmp_path / "platform_config.json"
    settings_file.write_text("{not json")
    with pytest.raises(ValueError, match=r"platform_config\.json"):
        st.merge_config_file(Config(), str(settings_file))
