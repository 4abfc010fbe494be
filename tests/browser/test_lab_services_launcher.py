"""The lab services in JupyterLab's launcher (docs/lab-services.md): a user logs
in, their lab opens, and the launcher shows one tile per service (the default
host has every switch on), each with its icon; clicking the Glances tile opens
Glances' own page in a new tab. Screenshot: artifacts/screenshots/lab-services-launcher.png.
"""

from __future__ import annotations

import re

from browserutil import login, screenshot
from hubclient import batch_create, unique_names

TITLES = ("MLflow", "TensorBoard", "Glances")


def test_the_launcher_shows_each_service_and_opens_it(page, host, admin):
    name, = unique_names(1, "svc-ui")
    password = batch_create(admin, [name])[name]
    try:
        login(page, host.https_url, name, password)
        page.wait_for_url(re.compile(rf"/user/{name}/lab"), timeout=180_000)
        page.wait_for_selector(".jp-LauncherCard", timeout=120_000)
        for title in TITLES:
            card = page.locator(f".jp-LauncherCard[title='{title}'], .jp-LauncherCard:has-text('{title}')").first
            card.wait_for(timeout=60_000)
            icon = card.locator(".jp-LauncherCard-icon img")
            icon.wait_for(timeout=60_000)
            # the platform's SVG, loaded (a broken image has no natural width)
            assert icon.evaluate("img => img.complete && img.naturalWidth > 0"), f"{title}: icon not loaded"
            assert icon.get_attribute("src").endswith(f"server-proxy/icon/{title.lower()}")
        screenshot(page, "lab-services-launcher")
        with page.context.expect_page(timeout=60_000) as opened:
            page.locator(".jp-LauncherCard:has-text('Glances')").first.click()
        tab = opened.value
        tab.wait_for_load_state(timeout=120_000)
        assert tab.url.endswith(f"/user/{name}/glances/"), tab.url
        # Glances titles its page "<host name> - Glances" once its first figures arrived
        tab.wait_for_function("document.title.endsWith('Glances')", timeout=60_000)
    finally:
        admin.stop_server(name)
        admin.api("DELETE", f"users/{name}")
