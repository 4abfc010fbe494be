"""What the storage role installs, checked without a host: the purge service and
timer, the rendered CIFS mount unit and credentials (a CIFS share cannot be
mounted on the test host), and the variables' defaults."""

import configparser
from pathlib import Path

import yaml
from jinja2 import Environment, StrictUndefined

from ansible_roles import all_defaults, role_defaults

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "ansible/roles/storage"


def unit(path):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(path.read_text())
    return parser


def test_purge_service_runs_the_hub_ext_cli_confined():
    service = unit(ROLE / "files/jupyterhub-storage-purge.service")["Service"]
    assert service["Type"] == "oneshot"
    assert service["ExecStart"].split() == [
        "/opt/jupyterhub/bin/python", "-m", "hub_ext.storage",
        "--config", "/etc/jupyterhub/platform_config.json", "purge",
    ]
    assert service["NoNewPrivileges"] == "yes"
    assert set(service["CapabilityBoundingSet"].split()) == {
        "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER"}
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == "-/srv/jupyterhub/users"  # nothing else writable
    assert service["PrivateNetwork"] == "yes" and service["IPAddressDeny"] == "any"


def test_quota_units_run_the_hub_ext_cli_quota_command():
    for name, request in (("jupyterhub-disk-quota@.service", "%i"),
                          ("jupyterhub-disk-quota-usage.service", "usage")):
        service = unit(ROLE / "files" / name)["Service"]
        assert service["ExecStart"].split() == [
            "/opt/jupyterhub/bin/python", "-m", "hub_ext.storage", "quota", request]


def test_purge_timer_is_persistent_and_installed_with_timers():
    timer = unit(ROLE / "files/jupyterhub-storage-purge.timer")
    assert timer["Timer"]["OnCalendar"] == "hourly"
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"


def role_vars(**overrides):
    values = {**all_defaults(), **overrides}
    env = Environment(undefined=StrictUndefined)
    role = yaml.safe_load((ROLE / "vars/main.yml").read_text())
    for key, value in role.items():
        if isinstance(value, str) and value.startswith("{{"):
            value = env.compile_expression(value.strip()[2:-2].strip())(**values)
        values[key] = value
    return values, env


def render(name, values, env):
    return env.from_string((ROLE / "templates" / name).read_text()).render(**values)


def test_cifs_mount_unit_renders_share_credentials_and_ownership():
    values, env = role_vars(
        jupyterhub_shared_cifs_enabled=True,
        jupyterhub_shared_cifs_share="//nas.example.org/data",
        jupyterhub_shared_cifs_username="svc",
        jupyterhub_shared_cifs_password="p@ss word",
        jupyterhub_shared_cifs_options=["vers=3.1.1", "seal"],
    )
    mount = unit_from_text(render("shared.mount.j2", values, env))
    assert mount["Mount"]["What"] == "//nas.example.org/data"
    assert mount["Mount"]["Where"] == "/srv/jupyterhub/shared"
    assert mount["Mount"]["Type"] == "cifs"
    assert mount["Mount"]["Options"].split(",") == [
        "credentials=/etc/jupyterhub/cifs-credentials",
        "uid=root",
        "gid=jupyterhub-users",
        "file_mode=0664",
        "dir_mode=0775",
        "vers=3.1.1",
        "seal",
    ]
    assert "p@ss" not in render("shared.mount.j2", values, env)  # the secret stays in the 0600 file
    assert mount["Unit"]["Before"] == "jupyterhub.service"
    # the unit's name is the escaped mount point, as systemd requires
    assert values["storage_shared_mount_unit"] == "srv-jupyterhub-shared.mount"

    credentials = render("cifs-credentials.j2", values, env)
    assert credentials.splitlines() == ["username=svc", "password=p@ss word"]
    values["jupyterhub_shared_cifs_domain"] = "CORP"
    assert render("cifs-credentials.j2", values, env).splitlines()[-1] == "domain=CORP"


def unit_from_text(text):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(text)
    return parser


def test_storage_defaults_match_the_original():
    defaults = role_defaults("storage")
    assert defaults["jupyterhub_storage_trash_retention_days"] == 7
    assert defaults["jupyterhub_storage_sizes_interval"] == 3600  # JUPYTERHUB_ACTIVITYMON_VOLUMES_UPDATE_INTERVAL
    assert defaults["jupyterhub_volume_descriptions"] == {  # VOLUME_DESCRIPTIONS
        "home": "User home directory files, configurations",
        "workspace": "Project files, notebooks, code",
        "cache": "Temporary files, pip cache, conda cache",
    }
    assert defaults["jupyterhub_shared_cifs_enabled"] is False
