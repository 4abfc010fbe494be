"""The admin panel (/hub/admin, JupyterHub's React app) with the Docker
original's additions, in Debian's Chromium: Add Users shows each generated
password in the credentials dialog (and one of them logs in), each user row has
a database button opening the Manage Volumes dialog, and the navigation bar
leads an admin to every platform page (and shows a user none of them).
"""

from __future__ import annotations

import secrets
from urllib.parse import urlparse

from browserutil import login, screenshot
from hubclient import batch_create, login_client


def hub_path(host, path: str) -> str:
    """/<prefix>/hub/<path>, as the navigation bar's links are written."""
    return urlparse(host.https_url).path + "hub/" + path


PLATFORM_PAGES = ["platform/users", "authorize", "activity", "storage", "notifications", "settings"]


def test_add_users_shows_the_generated_passwords_and_one_logs_in(host, admin, page):
    names = [f"panel-{secrets.token_hex(3)}" for _ in range(2)]
    login(page, host.https_url, host.admin_user, host.admin_password, next_path=hub_path(host, "home"))
    page.goto(host.https_url + "hub/admin#/add-users")
    page.wait_for_selector("[data-testid=user-textarea]")
    page.fill("[data-testid=user-textarea]", "\n".join(names))
    page.locator("[data-testid=user-textarea]").blur()  # the React form reads the names on blur
    page.click("[data-testid=submit]")
    page.wait_for_selector("#credentials-modal.show #credentials-table tbody tr")
    page.wait_for_timeout(500)  # the dialog's fade-in
    screenshot(page, "admin-panel-add-users-credentials")
    rows = page.locator("#credentials-table tbody tr")
    assert rows.count() == 2
    shown = {rows.nth(i).locator("td").nth(0).inner_text(): rows.nth(i).locator("code").inner_text()
             for i in range(2)}
    assert sorted(shown) == sorted(names)
    assert page.locator("#credentials-download").is_visible()
    assert page.locator("#credentials-copy-all").is_visible()
    # the password read from the dialog is the user's own
    assert login_client(host.https_url, names[0], shown[names[0]], spawn=False).logged_in_as() == names[0]
    assert not page.console_errors, page.console_errors


def test_each_user_row_opens_the_manage_volumes_dialog(host, admin, page):
    login(page, host.https_url, host.admin_user, host.admin_password, next_path=hub_path(host, "home"))
    page.goto(host.https_url + "hub/admin")
    button = page.locator(f'tr.user-row [data-storage-user="{host.admin_user}"]')
    button.wait_for()
    assert page.locator("tr.user-row").count() == page.locator("tr.user-row [data-storage-user]").count()
    button.click()
    page.wait_for_selector(f'#storage-dialog[data-loaded="{host.admin_user}"]', state="visible")
    assert page.inner_text("#storage-dialog-user") == host.admin_user
    page.wait_for_timeout(500)
    screenshot(page, "admin-panel-manage-volumes")
    assert not page.console_errors, page.console_errors


def test_the_navigation_bar_leads_admins_to_every_platform_page(host, admin, page):
    login(page, host.https_url, host.admin_user, host.admin_password, next_path=hub_path(host, "home"))
    page.goto(host.https_url + "hub/home")
    page.click("#platform-admin-menu > a")
    for path in PLATFORM_PAGES:
        link = page.locator(f'#platform-admin-menu a[href="{hub_path(host, path)}"]')
        assert link.is_visible(), path
    page.click(f'#platform-admin-menu a[href="{hub_path(host, "activity")}"]')
    page.wait_for_selector("#activity-page")
    # the menu is on the platform's own pages too
    assert page.locator("#platform-admin-menu").count() == 1


def test_users_see_no_platform_menu(host, admin, page):
    name = f"nav-{secrets.token_hex(3)}"
    password = batch_create(admin, [name])[name]
    login(page, host.https_url, name, password, next_path=hub_path(host, "home"))
    page.goto(host.https_url + "hub/home")
    page.wait_for_selector("#thenavbar")
    assert page.locator("#platform-admin-menu").count() == 0
