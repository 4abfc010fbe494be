"""The activity monitor page in a real browser (Chromium): table and plots for
an admin, 403 for anybody else."""

from __future__ import annotations

import re
import secrets
from urllib.parse import urlparse

import pytest

from browserutil import login, screenshot

DROPIN = ("c.ActivityMonitor.sample_interval = 3\nc.ActivityMonitor.live_interval = 1.0\n"
          "c.StorageManager.sizes_interval = 3\n")
# a figure of the sizes column, e.g. "12.0 KiB"
FIGURE = re.compile(r"^\d+(\.\d)? (B|KiB|MiB|GiB)")


@pytest.fixture(scope="module")
def lab_user(host, admin, hub_dropin):
    hub_dropin("90-test-activity-page.py", DROPIN)
    name = "brw-act-" + secrets.token_hex(3)
    assert admin.api("POST", f"users/{name}").status_code == 201
    # a first run makes the user's directories; a reset of the cache puts one in
    # the trash, which the sizes column shows apart from the total
    admin.start_server(name)
    admin.stop_server(name)
    host.sh(f"runuser -u jh-{name} -- sh -c "
            f"'head -c 65536 /dev/urandom > /srv/jupyterhub/users/jh-{name}/cache/blob'")
    r = admin.api("DELETE", f"users/{name}/manage-volumes", json={"volumes": ["cache"]})
    assert r.status_code == 200, r.text
    admin.start_server(name)
    # wait for two samples, so each plot has a line to draw
    import time
    deadline = time.monotonic() + 30
    while len(admin.api("GET", "activity/history").json()["series"]["t"]) < 2:
        assert time.monotonic() < deadline, "no samples"
        time.sleep(1)
    yield name
    admin.stop_server(name)


@pytest.fixture(scope="module")
def offline_user(admin):
    """A user whose server never ran."""
    name = "brw-off-" + secrets.token_hex(3)
    assert admin.api("POST", f"users/{name}").status_code == 201
    return name


def test_admin_sees_the_table_and_the_plots(host, admin, lab_user, offline_user, page):
    login(page, host.https_url, host.admin_user, host.admin_password)
    page.goto(host.https_url + "hub/activity")
    row = page.wait_for_selector(f"#activity-table tr.activity-row[data-user='{lab_user}']")
    # just started: its last activity is well inside inactive_after (60 min)
    assert row.get_attribute("data-status") == "active"
    assert page.locator(f"tr[data-user='{lab_user}'] .activity-status").inner_text().strip() == "active"
    # the sizes column (from the storage feature's sizing, "measuring…" or "n/a"
    # until measured, then the figure at once):
    # the directories' total, and the trash as its own labelled figure
    sizes = page.locator(f"tr[data-user='{lab_user}'] .activity-sizes")
    page.wait_for_function(
        f"/^\\d/.test(document.querySelector(\"tr[data-user='{lab_user}'] .activity-sizes\")"
        ".textContent)", timeout=60_000)
    total, trash = sizes.inner_text().strip().split("\n")
    assert FIGURE.match(total), total
    assert trash.startswith("+ trash ") and FIGURE.match(trash.removeprefix("+ trash ")), trash
    tooltip = sizes.get_attribute("title")
    assert "home: " in tooltip and "trash (not in the total): " in tooltip, tooltip
    # where the figures came from
    assert "memory: psutil" in page.locator(f"tr[data-user='{lab_user}'] .activity-source").inner_text()
    offline = page.locator(f"tr[data-user='{offline_user}']")
    assert offline.get_attribute("data-status") == "offline"
    assert offline.locator(".activity-status").inner_text().strip() == "offline"
    # the platform plots: uPlot canvases with the stored samples
    page.wait_for_selector("#activity-plot-cpu .uplot canvas")
    page.wait_for_selector("#activity-plot-memory .uplot canvas")
    assert int(page.get_attribute("#activity-plot-cpu", "data-points")) >= 2
    screenshot(page, "activity-page")

    # a user's own history, chosen by clicking the row
    row.click()
    page.wait_for_function(
        f"document.querySelector('#activity-history-user').value === {lab_user!r}")
    page.wait_for_function(
        "parseInt(document.querySelector('#activity-plot-memory').dataset.points || '0') >= 1")
    assert page.locator(f"tr.table-active[data-user='{lab_user}']").count() == 1
    screenshot(page, "activity-page-user")
    assert page.console_errors == []


def test_reset_button_clears_the_history(host, admin, lab_user, page):
    login(page, host.https_url, host.admin_user, host.admin_password)
    page.goto(host.https_url + "hub/activity")
    page.wait_for_selector("#activity-plot-cpu .uplot canvas")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#activity-reset")
    page.wait_for_selector("#activity-message.alert-success")
    assert "samples deleted" in page.inner_text("#activity-message")
    assert page.console_errors == []


def test_non_admin_gets_403(host, admin, page):
    name = "brw-act-" + secrets.token_hex(3)
    r = admin.api("POST", "platform/users", json={"usernames": [name]})
    assert r.status_code == 201, r.text
    # to the hub's home page: the default landing would start the user's lab,
    # whose redirects could still be under way when the next page is asked for
    login(page, host.https_url, name, r.json()["users"][0]["password"],
          next_path=urlparse(host.https_url).path + "hub/home")
    response = page.goto(host.https_url + "hub/activity")
    assert response.status == 403
    assert page.locator("#activity-table").count() == 0
