"""The admin settings page's table (hub_ext.admin.settings_table) and its sources:
the traits for the settings declared as traits, settings.json (rendered from the
roles' defaults and argument specs) for the others. docs/configuration.md is
held to the roles here: one row per variable."""

import json

import pytest
from traitlets.config import Config

from ansible_roles import ROLES, all_defaults, argument_spec, role_names
from hub_ext.admin import settings_table as st
from hub_ext.settings import platform_settings

from .docs_table import doc_rows
from .rendering import HUB_TEMPLATES, ansible_variables, render

KNOBS = all_defaults()
SETTINGS = platform_settings()


def test_every_variable_has_one_row_in_the_configuration_doc():
    rows = doc_rows()
    missing = [name for name in KNOBS if name not in rows]
    assert missing == [], f"add a row to docs/configuration.md for: {missing}"
    doc = (ROLES.parents[1] / "docs" / "configuration.md").read_text()
    names = [line.split("`")[1] for line in doc.splitlines() if line.startswith("| `")]
    assert len(names) == len(set(names)), "a variable has two rows"
    extra = sorted(set(rows) - set(KNOBS))
    assert extra == [], f"rows of docs/configuration.md without a variable in a role's defaults: {extra}"


@pytest.mark.parametrize("name, value, shown", [
    ("jupyterhub_admin_password", "hunter22", st.MASK),
    ("jupyterhub_admin_password", "", ""),
    ("jupyterhub_admin", "admin", "admin"),
    ("jupyterhub_shared_cifs_password", "s3cret", st.MASK),
    # settings about passwords are not secrets (issue 17)
    ("jupyterhub_minimum_password_length", 8, 8),
    ("jupyterhub_password_words", 3, 3),
    ("jupyterhub_password_delimiter", "-", "-"),
    ("jupyterhub_spawner_environment", {"AWS_SECRET_ACCESS_KEY": "s", "API_KEY": "k",
                                        "MLFLOW_TRACKING_TOKEN": "t", "MLFLOW_URI": "http://x"},
     {"AWS_SECRET_ACCESS_KEY": st.MASK, "API_KEY": st.MASK, "MLFLOW_TRACKING_TOKEN": st.MASK,
      "MLFLOW_URI": "http://x"}),
])
def test_secrets_are_masked(name, value, shown):
    assert st.mask_value(name, value) == shown


def test_markdown_cells_are_escaped_before_formatting():
    assert st.markdown_to_html("Use `<b>` & [docs](culling.md) <script>x</script>") == \
        "Use <code>&lt;b&gt;</code> &amp; docs &lt;script&gt;x&lt;/script&gt;"


@pytest.mark.parametrize("single_origin", [True, False])
def test_settings_page_warns_while_labs_share_the_hubs_origin(single_origin):
    from types import SimpleNamespace

    from .realhub import hub_template_env

    html = hub_template_env().get_template("settings.html").render(
        rows=[], cell_html=st.markdown_to_html, single_origin=single_origin,
        user=SimpleNamespace(name="admin", admin=True, spawner=None), base_url="/hub/",
        static_url=lambda *a, **k: "/static/x", xsrf_token="tok")
    assert ('id="single-origin-warning"' in html) is single_origin
    assert 'id="settings-table"' in html


def test_running_values_are_the_hubs_config_or_the_trait_default():
    config = Config({"PlatformSpawner": {"start_timeout": 300, "mem_limit": None}})
    values = st.running_values(config, SETTINGS)
    assert values["jupyterhub_spawner_start_timeout"] == 300  # e.g. a site-local override
    assert values["jupyterhub_spawner_mem_limit"] is None
    assert values["jupyterhub_spawner_http_timeout"] == 60  # nothing set it: the trait's default


DEPLOYED = {
    "jupyterhub_domain": {"value": "hub.example.org", "default": "{{ ansible_fqdn }}",
                          "description": "DNS name of the hub.", "original": ""},
    "jupyterhub_admin_password": {"value": "********", "default": "", "description": "Admin password.",
                                  "original": ""},
    # a tagged setting: the file's value is the last play's, the hub shows its own
    "jupyterhub_idle_culler_timeout": {"value": 600, "default": 86400, "description": "(spec)",
                                       "original": "JUPYTERHUB_IDLE_CULLER_TIMEOUT"},
    "jupyterhub_logo_uri": {"value": "https://x/logo.png", "default": "", "description": "Logo.",
                            "original": "JUPYTERHUB_LOGO_URI"},
}


def test_tagged_settings_come_from_the_traits_and_the_others_from_the_file():
    config = Config({"SessionCuller": {"timeout": 3600}})
    rows = {row["variable"]: row for row in st.settings_rows(DEPLOYED, SETTINGS, config)}
    assert rows["jupyterhub_domain"] == {
        "variable": "jupyterhub_domain", "value": "hub.example.org", "default": "{{ ansible_fqdn }}",
        "description": "DNS name of the hub.", "original": "—"}
    timeout = rows["jupyterhub_idle_culler_timeout"]
    assert timeout["value"] == "3600"  # the running hub's, not the file's
    assert timeout["default"] == "86400"
    assert timeout["description"] == "Seconds without activity before a server is stopped."
    assert timeout["original"] == "JUPYTERHUB_IDLE_CULLER_TIMEOUT"
    assert rows["jupyterhub_admin_password"]["value"] == st.MASK
    # a tagged setting the file does not know yet still has its row
    assert rows["jupyterhub_spawner_mem_limit"]["value"] == str(4 * 1024**3)  # the trait's default
    assert rows["jupyterhub_spawner_mem_limit"]["original"] == "—"
    assert list(rows)[:4] == list(DEPLOYED)
    assert set(rows) == set(DEPLOYED) | {s.variable for s in SETTINGS}


def test_a_multi_paragraph_help_is_one_line():
    row = next(r for r in st.settings_rows({}, SETTINGS, Config())
               if r["variable"] == "jupyterhub_spawner_ready_poll_interval")
    assert row["description"].startswith("Seconds between connection attempts to a starting lab's port. start()")
    assert "\n" not in row["description"] and "  " not in row["description"]


# --- settings.json as the hub role renders it --------------------------------------


@pytest.fixture(scope="module")
def deployed():
    variables = ansible_variables(
        role_path=str(ROLES / "hub"), ansible_play_role_names=role_names(),
        jupyterhub_admin_password="hunter22", jupyterhub_domain="hub.example.org",
    )
    return json.loads(render(HUB_TEMPLATES / "settings.json.j2", variables))


def test_the_deployed_file_has_every_variable_with_its_spec(deployed):
    assert set(deployed) == set(KNOBS)
    for role in role_names():
        spec = argument_spec(role)
        for name in spec:
            assert deployed[name]["description"] == " ".join(spec[name]["description"].split()), name
    assert deployed["jupyterhub_domain"]["value"] == "hub.example.org"
    assert deployed["jupyterhub_idle_culler_timeout"] == {
        "value": 86400, "default": 86400,
        "description": deployed["jupyterhub_idle_culler_timeout"]["description"],
        "original": "JUPYTERHUB_IDLE_CULLER_TIMEOUT"}
    assert deployed["jupyterhub_logo_uri"]["original"] == "JUPYTERHUB_LOGO_URI"
    assert deployed["jupyterhub_service_tensorboard"]["original"] == "JUPYTERHUB_SERVICE_TENSORBOARD"
    assert deployed["nginx_http_port"]["original"] == ""


def test_the_deployed_file_holds_no_secret(deployed):
    assert deployed["jupyterhub_admin_password"]["value"] == st.MASK
    assert "hunter22" not in json.dumps(deployed)


def test_the_docker_originals_agree_with_the_configuration_doc(deployed):
    """Where both name the Docker original's variable, they name the same one."""
    rows = doc_rows()
    for name, entry in deployed.items():
        if entry["original"]:
            assert entry["original"] in rows[name][3], name
