import json
from pathlib import Path

import pytest
from traitlets.config import Config, PyFileConfigLoader

from hub_ext.config import (
    PlatformSettingsError,
    apply_platform_settings,
    load_settings,
    validate_settings,
)

CONFIG_FILE = Path(__file__).resolve().parents[2] / "ansible/roles/hub/files/jupyterhub_config.py"


def rendered(settings):
    c = Config()
    apply_platform_settings(c, settings)
    return c


def test_hub_and_proxy(settings):
    c = rendered(settings)
    assert "base_url" not in c.JupyterHub  # taken from bind_url's path
    assert c.JupyterHub.db_url == "sqlite:////var/lib/jupyterhub/jupyterhub.sqlite"
    assert c.JupyterHub.cookie_secret_file == "/var/lib/jupyterhub/jupyterhub_cookie_secret"
    assert c.JupyterHub.cleanup_servers is False
    assert c.JupyterHub.last_activity_interval == 30  # routes back within 30 s of a proxy restart
    assert c.JupyterHub.spawner_class == "hub_ext.spawner.PlatformSpawner"
    assert c.JupyterHub.authenticator_class == "hub_ext.authenticator.PlatformAuthenticator"
    assert c.ConfigurableHTTPProxy.should_start is False
    # the token comes from CONFIGPROXY_AUTH_TOKEN, never from the config file
    assert "auth_token" not in c.ConfigurableHTTPProxy


def test_labs_get_their_own_origin_by_default(settings):
    c = rendered(settings)
    assert c.JupyterHub.subdomain_host == "https://hub.example.org"
    assert c.JupyterHub.cookie_host_prefix_enabled is True


def test_path_mode_keeps_labs_on_the_hub_origin(settings):
    settings["user_subdomains"] = False
    settings["public_host"] = "https://10.0.0.5:8443"
    c = rendered(settings)
    assert "subdomain_host" not in c.JupyterHub
    assert "cookie_host_prefix_enabled" not in c.JupyterHub


@pytest.mark.parametrize("public_host", ["https://10.0.0.5", "https://hub", "https://hub:8443"])
def test_subdomains_need_a_domain_with_subdomains(settings, public_host):
    settings["public_host"] = public_host
    with pytest.raises(PlatformSettingsError, match="public_host needs a domain of two labels"):
        rendered(settings)


def test_spawner(settings):
    settings["spawner"]["environment"] = {"TZ": "UTC"}
    c = rendered(settings).PlatformSpawner
    assert c.cmd == ["/opt/jupyterlab/bin/jupyterhub-singleuser"]
    assert c.default_url == "/lab"
    assert c.environment == {"TZ": "UTC"}
    assert c.users_root == "/srv/jupyterhub/users"
    assert c.shared_dir == "/srv/jupyterhub/shared"
    assert c.platform_group == "jupyterhub-users"
    assert c.lab_venv == "/opt/jupyterlab"
    # the lab unit's settings come from platform_config.json (test_settings.py)
    assert "mem_limit" not in c


def test_authenticator(settings):
    settings["admin_password_file"] = "/etc/jupyterhub/admin_password"
    c = rendered(settings)
    assert c.Authenticator.allow_all is True
    assert c.NativeAuthenticator.open_signup is False
    assert c.PlatformAuthenticator.admin_password_file == "/etc/jupyterhub/admin_password"
    # the accounts' settings come from platform_config.json (test_settings.py)
    assert "admin_users" not in c.Authenticator and "enable_signup" not in c.NativeAuthenticator


def test_config_reaches_real_traits(settings, platform_config):
    """The rendered config, loaded by the real classes, gives the expected values."""
    from jupyterhub import orm

    from hub_ext.authenticator import PlatformAuthenticator
    from hub_ext.spawner import PlatformSpawner

    c = rendered(settings)
    c.merge(Config(platform_config))
    spawner_traits = PlatformSpawner.class_traits(config=True)
    for key in c.PlatformSpawner:
        assert key in spawner_traits, key
    auth = PlatformAuthenticator(config=c, db=orm.new_session_factory("sqlite://")())
    assert auth.allowed_failed_logins == 5
    assert auth.minimum_password_length == 8
    assert auth.enable_signup is True and auth.open_signup is False
    assert auth.admin_users == {"admin"} and auth.allow_all is True


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("hub_socket", "run/hub.sock", "hub_socket must be an absolute path"),
        ("proxy_socket", "/proxy.sock", "proxy_socket must be an absolute socket path"),
        ("proxy_api_socket", "/run/x/api%.sock", "proxy_api_socket must be an absolute socket path"),
        ("proxy_user", "Bad User", "proxy_user is invalid"),
        ("base_url", "jupyterhub", "base_url must start and end with '/'"),
        ("public_host", "hub.example.org", "public_host must be https://<domain>"),
        ("public_host", "https://hub.example.org/jupyterhub/", "public_host must be https://<domain>"),
        ("public_host", "https://Hub.example.org", "public_host must be https://<domain>"),
        ("public_host", "https://hub.example.org:99999", "public_host must be https://<domain>"),
        ("user_subdomains", "yes", "user_subdomains must be true or false"),
        ("state_dir", "var/lib", "state_dir must be an absolute path"),
        ("platform_group", "Bad Group", "platform_group is invalid"),
        ("users_root", "/srv/my users", "users_root must not contain whitespace"),
        ("shared_dir", "/srv/a:b", "shared_dir must not contain whitespace or ':'"),
        ("spawner.environment", {"A": 1}, "spawner.environment must be an object"),
        ("spawner.no_such_option", 1, "spawner.no_such_option is not a known spawner option"),
    ],
)
def test_bad_values_name_the_key(settings, path, value, message):
    section = settings
    *parents, key = path.split(".")
    for parent in parents:
        section = section[parent]
    section[key] = value
    with pytest.raises(PlatformSettingsError, match=message.replace("(", r"\(")) as info:
        rendered(settings)
    assert info.value.key == path
    assert str(info.value).startswith("platform.json: ")


def test_missing_key_is_named(settings):
    del settings["proxy_api_socket"]
    with pytest.raises(ValueError, match="proxy_api_socket is missing"):
        rendered(settings)


def test_sockets_must_differ(settings):
    settings["hub_socket"] = settings["proxy_socket"]
    with pytest.raises(ValueError, match="must differ"):
        rendered(settings)


def test_internal_endpoints_are_unix_sockets(settings):
    """No internal endpoint of the platform is a TCP port a lab could bind first."""
    c = rendered(settings)
    assert c.JupyterHub.hub_bind_url == "http+unix://%2Frun%2Fjupyterhub%2Fhub.sock"
    assert c.JupyterHub.hub_connect_url == c.JupyterHub.hub_bind_url
    assert c.JupyterHub.bind_url == "http+unix://%2Frun%2Fjupyterhub-proxy%2Fproxy.sock/jupyterhub/"
    assert c.ConfigurableHTTPProxy.api_url == "http+unix://%2Frun%2Fjupyterhub-proxy%2Fapi.sock"
    assert c.JupyterHub.hub_socket_mode == 0o666


def test_unknown_top_level_keys_are_kept_for_other_modules(settings):
    settings["gpu_mode"] = 2
    assert validate_settings(settings)["gpu_mode"] == 2


def test_load_settings(write_settings, settings, tmp_path):
    assert load_settings(write_settings(settings)) == settings
    with pytest.raises(ValueError, match="does not exist"):
        load_settings(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_settings(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        load_settings(bad)


def load_jupyterhub_config(platform_json, monkeypatch, platform_config=None):
    monkeypatch.setenv("JUPYTERHUB_PLATFORM_CONFIG", str(platform_json))
    settings_file = platform_json.parent / "platform_config.json"
    settings_file.write_text(json.dumps(platform_config or {}))
    monkeypatch.setenv("JUPYTERHUB_PLATFORM_SETTINGS", str(settings_file))
    loader = PyFileConfigLoader(CONFIG_FILE.name, path=str(CONFIG_FILE.parent))
    return loader.load_config()


def test_jupyterhub_config_file_applies_platform_json_then_config_d(
    settings, platform_config, write_settings, tmp_path, monkeypatch
):
    config_d = tmp_path / "jupyterhub_config.d"
    config_d.mkdir()
    (config_d / "10-first.py").write_text(
        "c.PlatformSpawner.mem_limit = '8G'\nc.JupyterHub.log_level = 'INFO'\n"
    )
    # loaded after 10-first.py: name order, last one wins
    (config_d / "20-second.py").write_text("c.JupyterHub.log_level = 'DEBUG'\n")
    (config_d / "README").write_text("c.JupyterHub.log_level = 'NOT PYTHON CONFIG'\n")
    settings["config_d"] = str(config_d)

    c = load_jupyterhub_config(write_settings(settings), monkeypatch, platform_config)
    assert c.JupyterHub.bind_url == "http+unix://%2Frun%2Fjupyterhub-proxy%2Fproxy.sock/jupyterhub/"
    assert c.JupyterHub.spawner_class == "hub_ext.spawner.PlatformSpawner"
    assert c.PlatformSpawner.cpu_limit == 2.0  # from platform_config.json
    assert c.PlatformSpawner.mem_limit == "8G"  # site-local override wins over it
    assert c.JupyterHub.log_level == "DEBUG"


def test_jupyterhub_config_file_without_config_d(
    settings, platform_config, write_settings, monkeypatch, tmp_path
):
    settings["config_d"] = str(tmp_path / "does-not-exist")
    c = load_jupyterhub_config(write_settings(settings), monkeypatch, platform_config)
    assert c.PlatformSpawner.mem_limit == "4G"
    settings["config_d"] = None
    c = load_jupyterhub_config(write_settings(settings), monkeypatch, platform_config)
    assert c.PlatformAuthenticator.minimum_password_length == 8


def test_jupyterhub_config_file_refuses_bad_platform_json(settings, write_settings, monkeypatch):
    settings["spawner"]["environment"] = {"A": 1}
    with pytest.raises(ValueError, match=r"spawner\.environment"):
        load_jupyterhub_config(write_settings(settings), monkeypatch)


def test_jupyterhub_config_file_refuses_gpus_with_private_devices(
    settings, platform_config, write_settings, monkeypatch
):
    platform_config["GpuSupport"]["mode"] = 1
    platform_config["PlatformSpawner"]["isolate_devices"] = True
    with pytest.raises(ValueError, match="jupyterhub_spawner_isolate_devices"):
        load_jupyterhub_config(write_settings(settings), monkeypatch, platform_config)


# --- accounts (passwords, privilege groups, resource profiles) ------------------------


def test_accounts_defaults_and_traits(settings):
    from traitlets.config import Config

    from hub_ext.config import apply_platform_settings

    c = Config()
    apply_platform_settings(c, settings)  # no "accounts" key: the defaults
    assert c.PlatformSpawner.docker_unix_group == "docker"
    assert c.PlatformAuthenticator.managed_unix_groups == ["docker", "jupyterhub-sudo"]
    assert set(c.JupyterHub.load_groups) == {"docker-sock", "docker-privileged"}


@pytest.mark.parametrize("accounts, key", [
    ({"sudo_group": "Bad Group"}, "accounts.sudo_group"),
    ({"colour": "red"}, "accounts.colour"),
    # now PlatformAuthenticator/PlatformSpawner traits (test_settings.py)
    ({"password_words": 5}, "accounts.password_words"),
])
def test_accounts_errors_name_the_key(settings, accounts, key):
    from hub_ext.config import PlatformSettingsError, validate_settings

    settings["accounts"] = accounts
    with pytest.raises(PlatformSettingsError) as e:
        validate_settings(settings)
    assert e.value.key == key
