"""The home page's Restart / Manage Volumes controls and the admin storage page, in Chromium."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from browserutil import screenshot


def login(page, base_url: str, user: str, password: str) -> None:
    """Log in and land on the home page (a plain login goes on to /hub/spawn,
    which would start the server these tests want stopped)."""
    home = urlsplit(base_url).path + "hub/home"
    page.goto(base_url + "hub/login?next=" + home)
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url("**/hub/home")


def settled_server(admin, user: str, timeout: float = 180) -> dict:
    """The user's default server model once nothing is pending (a login may have started it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server = admin.api("GET", f"users/{user}").json().get("servers", {}).get("", {})
        if not server.get("pending"):
            return server
        time.sleep(0.5)
    raise AssertionError(f"the server of {user} stayed pending")


def ensure_running(admin, user: str) -> None:
    if settled_server(admin, user).get("ready"):
        admin.wait_lab(user)
    else:
        admin.start_server(user)


def ensure_stopped(admin, user: str) -> None:
    if settled_server(admin, user):
        admin.stop_server(user)


def test_restart_button_restarts_a_running_server(host, admin, page):
    ensure_running(admin, host.admin_user)
    login(page, host.https_url, host.admin_user, host.admin_password)
    assert page.is_disabled("#manage-volumes")  # reset only while stopped
    page.click("#restart")
    page.wait_for_selector("#restart-message.alert-success", timeout=120_000)
    assert "restarted" in page.inner_text("#restart-message") or "starting" in page.inner_text("#restart-message")
    admin.wait_lab(host.admin_user)
    assert page.console_errors == []


def test_manage_volumes_modal_resets_and_restores(host, admin, page):
    ensure_stopped(admin, host.admin_user)
    login(page, host.https_url, host.admin_user, host.admin_password)
    page.click("#manage-volumes")
    page.wait_for_selector("#storage-dialog[data-loaded]", state="visible")
    labels = page.inner_text("#storage-volumes")
    for text in ("home", "workspace", "cache", "Project files, notebooks, code"):
        assert text in labels
    assert page.is_disabled("#storage-reset-button")  # nothing selected yet
    page.check("#storage-volume-cache")
    page.wait_for_timeout(500)  # the dialog's fade-in
    screenshot(page, "home-manage-volumes")
    page.click("#storage-reset-button")
    page.wait_for_selector("#storage-message.alert-success")
    assert "Moved to the trash: cache" in page.inner_text("#storage-message")
    page.wait_for_selector("#storage-trash-rows tr")
    assert "cache" in page.inner_text("#storage-trash-rows")
    screenshot(page, "home-manage-volumes-trash")
    page.click("#storage-trash-rows tr:first-child .storage-restore")
    page.wait_for_selector("#storage-message.alert-success >> text=Restored cache")
    assert page.console_errors == []


def test_admin_storage_page_opens_the_modal_for_a_user(host, admin, page):
    login(page, host.https_url, host.admin_user, host.admin_password)
    page.click("#storage-admin-link")
    page.wait_for_selector("#storage-table")
    row = f'#storage-table tr[data-user="{host.admin_user}"]'
    page.click(f"{row} [data-storage-user]")
    page.wait_for_selector(f'#storage-dialog[data-loaded="{host.admin_user}"]', state="visible")
    assert page.inner_text("#storage-dialog-user") == host.admin_user
    page.wait_for_timeout(500)
    screenshot(page, "admin-storage")
    assert page.console_errors == []
