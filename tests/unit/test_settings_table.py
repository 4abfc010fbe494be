"""Settings page table (hub_ext.admin.settings_table) and its one source of descriptions.

docs/configuration.md IS the source of the descriptions the page shows, so the
checks here are that every variable of the roles' defaults has exactly one row
there, and that the page's parser reads every row of the real document.
"""

from pathlib import Path

import pytest

from ansible_roles import all_defaults
from hub_ext.admin import settings_table as st

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "configuration.md").read_text()
KNOBS = all_defaults()


def test_every_variable_has_one_row_in_the_configuration_doc():
    rows = st.parse_config_doc(DOC)
    missing = st.undocumented(KNOBS, rows)
    assert missing == [], f"add a row to docs/configuration.md for: {missing}"
    table_lines = [line for line in DOC.splitlines() if line.startswith("| `")]
    names = [line.split("`")[1] for line in table_lines]
    assert len(names) == len(set(names)), "a variable has two rows"
    extra = sorted(set(rows) - set(KNOBS))
    assert extra == [], f"rows of docs/configuration.md without a variable in a role's defaults: {extra}"


def test_every_row_parses_with_a_description():
    rows = st.parse_config_doc(DOC)
    for name, row in rows.items():
        assert row.effect and row.original, f"{name}: empty cell"


def test_split_row_honours_escaped_pipes():
    assert st.split_row(r"| `a` | `x\|y` | effect | — |") == ["`a`", "`x|y`", "effect", "—"]


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


def test_rows_join_values_and_docs():
    docs = st.parse_config_doc(
        "| variable | default | effect | Docker original |\n|---|---|---|---|\n"
        "| `a_one` | `1` | First `thing`. | `ORIG_ONE` |\n"
        "| `a_two` | `x` | Second. | — |\n")
    rows = st.settings_rows({"a_one": 5, "a_password": "p", "a_three": ""}, docs)
    assert rows[0] == {"variable": "a_one", "value": "5", "default": "`1`",
                       "description": "First `thing`.", "original": "`ORIG_ONE`"}
    assert rows[1]["value"] == st.MASK
    assert rows[2]["value"] == '""' and "not documented" in rows[2]["description"]
    assert rows[3]["variable"] == "a_two" and rows[3]["value"] == "(not set)"


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
    from traitlets.config import Config

    from hub_ext.settings import platform_settings

    config = Config({"PlatformSpawner": {"start_timeout": 300, "mem_limit": None}})
    values = st.running_values(config, platform_settings())
    assert values["jupyterhub_spawner_start_timeout"] == 300  # e.g. a site-local override
    assert values["jupyterhub_spawner_mem_limit"] is None
    assert values["jupyterhub_spawner_http_timeout"] == 60  # nothing set it: the trait's default
    rows = {row["variable"]: row for row in st.settings_rows(values, {})}
    assert rows["jupyterhub_spawner_start_timeout"]["value"] == "300"
