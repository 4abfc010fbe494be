"""End to end in a real browser (Debian's Chromium through nginx HTTPS):
signup -> approval on the platform's authorization page (POST forms) -> login ->
the lab opens and runs a cell -> stop -> every admin page renders without
console errors. Screenshots go to artifacts/screenshots/ (docs/img/ keeps a few).
"""

from __future__ import annotations

import re
import secrets
import time

import pytest

from browserutil import login, screenshot

# Every admin page of the platform: (screenshot name, path below the public
# prefix, a selector that only shows once the page has rendered). A new page is a line.
ADMIN_PAGES = [
    ("admin", "hub/admin", "#react-admin-hook table, table"),
    ("authorize", "hub/authorize", "#signup-admin, table"),
    ("platform-users", "hub/platform/users", "#users-table"),
    ("notifications", "hub/notifications", "#notify-form"),
    ("settings", "hub/settings", "#settings-table"),
    ("activity", "hub/activity", "#activity-page"),
    ("storage", "hub/storage", "#storage-table"),
]


@pytest.fixture(scope="module")
def newcomer():
    return "e2e-" + secrets.token_hex(3), "e2e-pw-" + secrets.token_hex(8)


def test_signup_approval_login_lab_cell_stop(host, admin, chromium, newcomer):
    name, password = newcomer
    base = host.https_url
    user_ctx = chromium.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    admin_ctx = chromium.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    try:
        page = user_ctx.new_page()
        # signup: pending until approved
        page.goto(base + "hub/signup")
        page.fill("input[name=username]", name)
        if page.locator("input[name=email]").count():  # only with ask_email_on_signup
            page.fill("input[name=email]", f"{name}@example.org")
        page.fill("input[name=signup_password]", password)
        page.fill("input[name=signup_password_confirmation]", password)
        page.click("button[type=submit], input[type=submit]")
        page.wait_for_load_state()
        screenshot(page, "e2e-1-signup")
        login(page, base, name, password)
        assert "/hub/login" in page.url, "an unapproved signup got in"

        # approval by the admin: the Approve button is a POST form with _xsrf
        apage = admin_ctx.new_page()
        login(apage, base, host.admin_user, host.admin_password)
        apage.goto(base + "hub/authorize")
        row = apage.locator(f"tr#signup-{name}")
        assert row.get_attribute("data-state") == "pending"
        screenshot(apage, "e2e-2-authorize-pending")
        row.locator("button", has_text="Approve").click()
        apage.wait_for_load_state()
        assert apage.locator(f"tr#signup-{name}").get_attribute("data-state") == "authorized"

        # login -> the hub starts the lab -> JupyterLab runs a cell
        login(page, base, name, password)
        page.wait_for_url(re.compile(rf"/user/{name}/lab"), timeout=180_000)
        page.wait_for_selector(".jp-LauncherCard", timeout=120_000)
        screenshot(page, "e2e-3-lab")
        page.locator(".jp-LauncherCard[data-category='Notebook']").first.click()
        cell = page.locator(".jp-Notebook .jp-Cell .cm-content").first
        cell.wait_for(timeout=60_000)
        # run once the kernel is connected (the status bar reads "... | Idle")
        page.get_by_text(re.compile(r"\| Idle")).first.wait_for(timeout=120_000)
        cell.click()
        page.keyboard.type("print(6 * 7)")
        page.keyboard.press("Shift+Enter")
        output = page.locator(".jp-OutputArea-output").first
        try:
            output.wait_for(timeout=120_000)
        except Exception:
            screenshot(page, "e2e-failed-cell")
            raise
        assert output.inner_text().strip() == "42"
        screenshot(page, "e2e-4-cell-ran")

        # stop from the hub's home page
        page.goto(base + "hub/home")
        page.click("#stop")
        page.wait_for_selector("#stop", state="hidden", timeout=120_000)
        screenshot(page, "e2e-5-stopped")
        deadline = time.monotonic() + 60
        while admin.server_running(name) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert admin.server_running(name) is False
        assert host.exec("systemctl", "is-active", f"jupyter-{name}-singleuser",
                         check=False).stdout.strip() != "active"
    finally:
        user_ctx.close()
        admin_ctx.close()
        admin.api("DELETE", f"users/{name}")


@pytest.mark.parametrize("name,path,selector", ADMIN_PAGES, ids=[p[0] for p in ADMIN_PAGES])
def test_admin_page_renders_without_console_errors(host, page, name, path, selector):
    login(page, host.https_url, host.admin_user, host.admin_password)
    response = page.goto(host.https_url + path)
    assert response.status == 200
    page.wait_for_selector(selector, timeout=60_000)
    page.wait_for_load_state("networkidle")
    screenshot(page, f"admin-{name}")
    assert page.console_errors == [], f"{path}: {page.console_errors}"
