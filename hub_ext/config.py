"""Map ``platform.json`` (rendered by Ansible) onto JupyterHub's traitlets config.

``platform.json`` is the contract between Ansible and hub_ext (keys in
docs/architecture.md). Every value is checked here, and a bad one raises a
ValueError naming its key, so a typo in group_vars stops the hub at start with
a readable message instead of surfacing later as a failed spawn.

Where values land (a site-local file in ``config_d`` overrides one by setting
the SAME section; a more specific class section wins over a base one):
``c.JupyterHub`` (with ``user_subdomains``: ``subdomain_host``, one origin per
lab, and ``__Host-`` cookies), ``c.ConfigurableHTTPProxy``, ``c.PlatformSpawner`` (every
spawner option), ``c.Authenticator`` (admin_users, allow_all),
``c.NativeAuthenticator``, ``c.PlatformAuthenticator`` (admin_password_file,
platform_group, the managed unix groups), ``c.JupyterHub.load_groups`` (the
built-in privilege groups) and the state files of ``c.SessionCuller`` and
``c.ActivityMonitor``. The features' settings themselves are traits tagged with
their Ansible variable, rendered into platform_config.json (hub_ext/settings.py).
Classes are referenced by import string so this module does not import jupyterhub.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from hub_ext.accounts import privileges
from hub_ext.accounts.unix_users import (
    InvalidNameError,
    check_unix_name,
)

SPAWNER_CLASS = "hub_ext.spawner.PlatformSpawner"
# hub_ext's page templates (home.html with the Session Status card)
TEMPLATES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
SESSION_EXTENSIONS_FILE = "session_extensions.json"  # in state_dir, written by the hub
ACTIVITY_DB_FILE = "activity.sqlite"  # in state_dir, written only by the hub (docs/activity.md)
AUTHENTICATOR_CLASS = "hub_ext.authenticator.PlatformAuthenticator"
_MEMORY_SPEC = re.compile(r"(\d+(\.\d+)?)[KMGT]")

_MISSING = object()


class PlatformSettingsError(ValueError):
    """A platform.json value is missing or invalid; the message names the key."""

    def __init__(self, key: str, problem: str, value: Any = _MISSING):
        got = "" if value is _MISSING else f" (got {value!r})"
        super().__init__(f"platform.json: {key} {problem}{got}")
        self.key = key


# --- value checks: each returns the value or raises PlatformSettingsError ---


def _socket_path(key, value):
    # an absolute path in a directory of its own (the unit's RuntimeDirectory)
    _absolute_path(key, value)
    if re.search(r"[\s%]", value) or value.endswith("/") or value.count("/") < 2:
        raise PlatformSettingsError(
            key, "must be an absolute socket path like /run/<dir>/<name>.sock", value
        )
    return value


def _boolean(key, value):
    if not isinstance(value, bool):
        raise PlatformSettingsError(key, "must be true or false", value)
    return value


def _string(key, value):
    if not isinstance(value, str) or not value:
        raise PlatformSettingsError(key, "must be a non-empty string", value)
    return value


def _absolute_path(key, value):
    if not _string(key, value).startswith("/"):
        raise PlatformSettingsError(key, "must be an absolute path", value)
    return value


def _bindable_path(key, value):
    # systemd BindPaths= splits on whitespace and ":"
    _absolute_path(key, value)
    if re.search(r"[\s:]", value):
        raise PlatformSettingsError(key, "must not contain whitespace or ':'", value)
    return value


def _url_path(key, value):
    if not _string(key, value).startswith("/"):
        raise PlatformSettingsError(key, "must start with '/'", value)
    return value


def _base_url(key, value):
    if not (_string(key, value).startswith("/") and value.endswith("/")):
        raise PlatformSettingsError(key, "must start and end with '/'", value)
    return value


_PUBLIC_HOST = re.compile(
    r"https?://(?P<host>[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*)"
    r"(:(?P<port>[0-9]{1,5}))?"
)
_IPV4 = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}")


def _public_host(key, value):
    """scheme://domain[:port] as browsers reach the hub, without a path."""
    match = _PUBLIC_HOST.fullmatch(_string(key, value))
    if not match or (match["port"] and not 1 <= int(match["port"]) <= 65535):
        raise PlatformSettingsError(
            key, "must be https://<domain>[:port] or http://<domain>[:port] without a path "
            "(a lowercase DNS name or an IPv4 address)", value
        )
    return value


def public_domain(public_host: str) -> str:
    """The domain of a checked public_host (no scheme, no port)."""
    return _PUBLIC_HOST.fullmatch(public_host)["host"]


def _optional(check):
    def checked(key, value):
        return None if value is None else check(key, value)

    return checked


def _string_dict(key, value):
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise PlatformSettingsError(key, "must be an object of string values", value)
    return value


def _group_name(key, value):
    try:
        return check_unix_name(_string(key, value), what="group name")
    except InvalidNameError as e:
        raise PlatformSettingsError(key, f"is invalid: {e}") from None


Check = Callable[[str, Any], Any]

# top-level keys: every one is required (Ansible renders them all)
TOP_LEVEL_CHECKS: dict[str, Check] = {
    "state_dir": _absolute_path,
    "base_url": _base_url,
    "public_host": _public_host,
    "user_subdomains": _boolean,
    "hub_socket": _socket_path,
    "proxy_socket": _socket_path,
    "proxy_api_socket": _socket_path,
    "proxy_user": _group_name,
    "admin_password_file": _optional(_absolute_path),
    "platform_group": _group_name,
    "users_root": _bindable_path,
    "shared_dir": _optional(_bindable_path),
    "lab_venv": _absolute_path,
    "default_url": _url_path,
    "spawner": lambda key, value: value,  # checked key by key below
    "config_d": _optional(_absolute_path),
}

# settings["spawner"]: only the lab environment is still mapped here; every
# other spawner setting is a tagged trait of PlatformSpawner, rendered into
# platform_config.json (hub_ext.settings).
SPAWNER_CHECKS: dict[str, Check] = {
    "environment": _string_dict,
}


def _options_object(key, value, checks, defaults, what):
    """An optional object of sub-options: unknown names are errors, missing ones default."""
    if not isinstance(value, Mapping):
        raise PlatformSettingsError(key, "must be a JSON object", value)
    unknown = sorted(set(value) - set(checks))
    if unknown:
        raise PlatformSettingsError(
            f"{key}.{unknown[0]}",
            f"is not a known {what} option (known: {', '.join(checks)})",
        )
    checked = dict(defaults)
    for sub, check in checks.items():
        if sub in value:
            checked[sub] = check(f"{key}.{sub}", value[sub])
    return checked


# settings["accounts"] (optional object): the unix groups behind the privilege
# hub groups, fixed by Ansible. The accounts' settings are PlatformAuthenticator
# and PlatformSpawner traits (hub_ext.settings); docs/accounts.md.
ACCOUNTS_CHECKS: dict[str, Check] = {
    "docker_group": _group_name,
    "sudo_group": _group_name,
}
ACCOUNTS_DEFAULTS: dict[str, Any] = {
    "docker_group": privileges.DEFAULT_DOCKER_UNIX_GROUP,
    "sudo_group": privileges.DEFAULT_SUDO_UNIX_GROUP,
}


def _accounts(key, value):
    return _options_object(key, value, ACCOUNTS_CHECKS, ACCOUNTS_DEFAULTS, "accounts")


# --- lab start, lab environment, branding (optional objects; docs/platform-features.md) ---
LAB_ENV_NAME = re.compile(r"JUPYTERHUB_SERVICE_[A-Z0-9_]+|TF_CPP_MIN_LOG_LEVEL")


def _lab_environment(key, value):
    _string_dict(key, value)
    for name in value:
        if not LAB_ENV_NAME.fullmatch(name):
            raise PlatformSettingsError(
                f"{key}.{name}",
                "is not a passthrough variable (JUPYTERHUB_SERVICE_<NAME> or TF_CPP_MIN_LOG_LEVEL)",
            )
    return dict(value)


def _icon_uri(key, value):
    # an http(s) URL or a URL path served on this site (the playbook's copy of a file://)
    if not isinstance(value, str) or not re.fullmatch(r"(https?://|/)[^\s\"'<>]*", value):
        raise PlatformSettingsError(key, "must be an http(s) URL or a path starting with '/'", value)
    return value


def _object(checks: Mapping[str, Check], defaults: Mapping[str, Any], what: str):
    return lambda key, value: _options_object(key, value, checks, defaults, what)


LAB_START_DEFAULTS: dict[str, Any] = {"launcher": None, "aux_scripts_path": None, "server": None}
BRANDING_DEFAULTS: dict[str, Any] = {
    "logo_file": None, "lab_main_icon_uri": None, "lab_splash_icon_uri": None,
}
OPTIONAL_OBJECT_CHECKS: dict[str, tuple[Check, Any]] = {
    "lab_start": (
        _object(
            {
                "launcher": _optional(_absolute_path),
                "aux_scripts_path": _optional(_absolute_path),
                "server": _optional(_absolute_path),
            },
            LAB_START_DEFAULTS,
            "lab start",
        ),
        LAB_START_DEFAULTS,
    ),
    "lab_environment": (_lab_environment, {}),
    "branding": (
        _object(
            {
                "logo_file": _optional(_absolute_path),
                "lab_main_icon_uri": _optional(_icon_uri),
                "lab_splash_icon_uri": _optional(_icon_uri),
            },
            BRANDING_DEFAULTS,
            "branding",
        ),
        BRANDING_DEFAULTS,
    ),
}


def lab_environment(s: Mapping[str, Any]) -> dict[str, str]:
    """Environment every lab gets from the platform (before the admin's spawner environment)."""
    env = dict(s["lab_environment"])
    if s["lab_start"]["aux_scripts_path"]:
        env["JUPYTERLAB_AUX_SCRIPTS_PATH"] = s["lab_start"]["aux_scripts_path"]
    for key, name in (
        ("lab_main_icon_uri", "JUPYTERLAB_MAIN_ICON_URI"),
        ("lab_splash_icon_uri", "JUPYTERLAB_SPLASH_ICON_URI"),
    ):
        if s["branding"][key]:
            env[name] = s["branding"][key]
    return env


def validate_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Check every known key; return a copy with normalised values.

    Unknown top-level keys are kept untouched (other hub_ext modules read
    their own keys); unknown spawner keys are an error (they map onto traits).
    """
    if not isinstance(settings, Mapping):
        raise PlatformSettingsError("(top level)", "must be a JSON object", settings)
    checked = dict(settings)
    for key, check in TOP_LEVEL_CHECKS.items():
        if key not in settings:
            raise PlatformSettingsError(key, "is missing")
        checked[key] = check(key, settings[key])

    spawner = settings["spawner"]
    if not isinstance(spawner, Mapping):
        raise PlatformSettingsError("spawner", "must be a JSON object", spawner)
    unknown = sorted(set(spawner) - set(SPAWNER_CHECKS))
    if unknown:
        raise PlatformSettingsError(
            f"spawner.{unknown[0]}",
            f"is not a known spawner option (known: {', '.join(SPAWNER_CHECKS)})",
        )
    checked["spawner"] = {
        key: SPAWNER_CHECKS[key](f"spawner.{key}", value) for key, value in spawner.items()
    }

    checked["accounts"] = _accounts("accounts", settings.get("accounts", {}))
    for key, (check, default) in OPTIONAL_OBJECT_CHECKS.items():
        checked[key] = check(key, settings[key]) if key in settings else dict(default)

    domain = public_domain(checked["public_host"])
    if checked["user_subdomains"] and ("." not in domain or _IPV4.fullmatch(domain)):
        # each lab is <user>.<domain>: an IP address or a bare name has no subdomains
        raise PlatformSettingsError(
            "public_host", "needs a domain of two labels or more with user_subdomains",
            checked["public_host"],
        )

    sockets = {k: checked[k] for k in ("hub_socket", "proxy_socket", "proxy_api_socket")}
    if len(set(sockets.values())) != len(sockets):
        raise PlatformSettingsError(
            "hub_socket/proxy_socket/proxy_api_socket", "must differ", sockets
        )
    return checked


def load_settings(path: str | os.PathLike) -> dict[str, Any]:
    """Read platform.json; errors name the file."""
    try:
        with open(path, encoding="utf-8") as f:
            settings = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"platform settings file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"platform settings file {path} is not valid JSON: {e}") from None
    if not isinstance(settings, dict):
        raise ValueError(f"platform settings file {path} must hold a JSON object")
    return settings


ROUTE_CHECK_INTERVAL = 30  # seconds
# The hub's socket: root's directory keeps labs from creating or replacing it;
# labs connect to call the hub's API, so the socket itself is open to all.
HUB_SOCKET_MODE = 0o666
# tornado_settings key naming the proxy's unix user, the only peer whose
# X-Real-IP the hub believes (hub_ext.web.base.request_client)
FRONT_END_USER_SETTING = "platform_front_end_user"


def socket_url(path: str, url_path: str = "") -> str:
    """JupyterHub's URL of a unix socket: http+unix://<path, %-encoded><url_path>."""
    return "http+unix://" + quote(path, safe="") + url_path


def apply_platform_settings(c, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Validate settings and set them on the traitlets Config ``c``; return the checked settings."""
    s = validate_settings(settings)

    hub = c.JupyterHub
    # Everything internal listens on unix sockets in directories no lab can
    # write (docs/security.md). The path of bind_url is the hub's base URL
    # (setting base_url too only warns); the proxy's own unit binds it.
    hub.bind_url = socket_url(s["proxy_socket"], s["base_url"])
    hub.hub_bind_url = hub.hub_connect_url = socket_url(s["hub_socket"])
    hub.hub_socket_mode = HUB_SOCKET_MODE
    hub.tornado_settings = {FRONT_END_USER_SETTING: s["proxy_user"]}
    hub.db_url = f"sqlite:///{s['state_dir']}/jupyterhub.sqlite"
    hub.cookie_secret_file = f"{s['state_dir']}/jupyterhub_cookie_secret"
    # labs are transient units that outlive a hub restart; keep them
    hub.cleanup_servers = False
    # The proxy is its own unit and starts with an empty routing table after a
    # restart or crash; JupyterHub re-adds missing routes (and collects activity
    # from the proxy) on this interval, 300 s by default.
    hub.last_activity_interval = ROUTE_CHECK_INTERVAL
    hub.spawner_class = SPAWNER_CLASS
    hub.authenticator_class = AUTHENTICATOR_CLASS
    hub.template_paths = [TEMPLATES_DIR]
    if s["user_subdomains"]:
        # Each lab on its own origin, <user>.<domain>: a user controls whatever
        # answers under their server, so on the hub's origin a page they serve
        # could read /hub/token and call the API as whoever opens it.
        hub.subdomain_host = s["public_host"]
        # __Host- cookies are host-only: a lab cannot set (toss) the hub's
        # login cookie from its subdomain
        hub.cookie_host_prefix_enabled = True

    # files in the hub's state directory (the features' settings themselves are
    # traits tagged with their Ansible variable, in platform_config.json)
    c.SessionCuller.state_file = f"{s['state_dir']}/{SESSION_EXTENSIONS_FILE}"
    c.ActivityMonitor.db_file = f"{s['state_dir']}/{ACTIVITY_DB_FILE}"
    c.StorageManager.users_root = s["users_root"]

    # the proxy runs in its own unit; its token comes from CONFIGPROXY_AUTH_TOKEN
    # (EnvironmentFile=/etc/jupyterhub/proxy.env), which the trait reads by default
    c.ConfigurableHTTPProxy.should_start = False
    c.ConfigurableHTTPProxy.api_url = socket_url(s["proxy_api_socket"])

    spawner = c.PlatformSpawner
    if s["lab_start"]["server"]:
        # jupyterhub-singleuser serving on the socket systemd holds (lab/lab_server.py)
        lab_command = [f"{s['lab_venv']}/bin/python", s["lab_start"]["server"]]
    else:
        lab_command = [f"{s['lab_venv']}/bin/jupyterhub-singleuser"]
    spawner.cmd = lab_command
    spawner.default_url = s["default_url"]
    spawner.lab_venv = s["lab_venv"]
    spawner.users_root = s["users_root"]
    spawner.shared_dir = s["shared_dir"]
    spawner.platform_group = s["platform_group"]
    # platform environment first (service passthrough, startup scripts path, lab
    # icons); the admin's spawner.environment wins on a name both set
    spawner.environment = {**lab_environment(s), **s["spawner"].get("environment", {})}
    if s["lab_start"]["launcher"]:
        # startup scripts run as the user before the lab (lab/lab_start.py)
        spawner.cmd = [
            f"{s['lab_venv']}/bin/python", "-I", s["lab_start"]["launcher"], "--", *lab_command,
        ]
    if s["branding"]["logo_file"]:
        hub.logo_file = s["branding"]["logo_file"]

    # accounts and privileges (docs/accounts.md)
    acc = s["accounts"]
    spawner.docker_unix_group = acc["docker_group"]
    spawner.sudo_unix_group = acc["sudo_group"]
    # the built-in privilege groups, recreated at every hub start if deleted
    # (members are kept; JupyterHub only adds the users listed here)
    hub.load_groups = {name: {} for name in privileges.BUILTIN_GROUPS}

    # JupyterHub 5+ admits nobody but admins without this; NativeAuthenticator's
    # approval (UserInfo.is_authorized) is what gates logins here
    c.Authenticator.allow_all = True

    native = c.NativeAuthenticator
    native.open_signup = False

    authenticator = c.PlatformAuthenticator
    authenticator.admin_password_file = s["admin_password_file"]
    authenticator.platform_group = s["platform_group"]
    authenticator.managed_unix_groups = [acc["docker_group"], acc["sudo_group"]]
    return s
