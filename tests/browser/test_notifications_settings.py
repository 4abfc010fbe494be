"""Notifications form and settings page in a real browser (Chromium)."""

from __future__ import annotations

import secrets

import pytest

from browserutil import login, screenshot


@pytest.fixture(scope="module")
def lab_user(admin):
    name = "brw-" + secrets.token_hex(3)
    assert admin.api("POST", f"users/{name}").status_code == 201
    admin.start_server(name)
    yield name
    admin.stop_server(name)


def test_form_enforces_140_characters_and_shows_per_user_results(host, admin, lab_user, page):
    login(page, host.https_url, host.admin_user, host.admin_password)
    page.goto(host.https_url + "hub/notifications")
    page.wait_for_selector(f".notify-recipient[value='{lab_user}']")

    page.fill("#notify-message", "x" * 150)
    assert len(page.input_value("#notify-message")) == 140
    assert page.inner_text("#notify-count") == "140"
    page.fill("#notify-message", "")
    assert page.is_disabled("#notify-send")

    message = "<script>window.__pwned = 1</script> <b>bold?</b> " + secrets.token_hex(3)
    page.fill("#notify-message", message)
    page.select_option("#notify-variant", "success")
    page.check("#notify-chosen")
    page.check(f".notify-recipient[value='{lab_user}']")
    page.click("#notify-send")
    row = page.wait_for_selector(f"tr.notify-result[data-user='{lab_user}']")
    assert row.inner_text().split()[:2] == [lab_user, "delivered"]
    # shown as text: the literal characters, no element made from them, nothing ran
    assert page.inner_text("#notify-sent-text") == message
    assert page.locator("#notify-results script, #notify-results b").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert "1 of 1 delivered" in page.inner_text("#notify-summary")
    screenshot(page, "notifications-results")

    # the lab got exactly that text
    token = admin.new_token(lab_user)
    from hubclient import HubClient
    got = HubClient(admin.base, token=token).get(
        f"user/{lab_user}/jupyterlab-notifications-extension/notifications").json()["notifications"]
    assert [n["message"] for n in got if n["message"] == message] == [message]
    assert page.console_errors == []


def test_settings_page_renders(host, page):
    login(page, host.https_url, host.admin_user, host.admin_password)
    page.goto(host.https_url + "hub/settings")
    page.wait_for_selector("#settings-table")
    row = page.locator("tr[data-variable='jupyterhub_idle_culler_timeout']")
    assert row.locator(".setting-value").inner_text() == "86400"
    assert "Seconds without activity" in row.locator(".setting-description").inner_text()
    assert page.locator("tr[data-variable='jupyterhub_admin_password'] .setting-value").inner_text() == "********"
    assert host.admin_password not in page.content()
    assert page.locator("tr.setting").count() >= 50
    screenshot(page, "settings-page")
    assert page.console_errors == []
