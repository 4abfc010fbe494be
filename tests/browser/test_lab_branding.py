"""The lab icons (jupyterhub_lab_main_icon_uri, jupyterhub_lab_splash_icon_uri)
are visible in JupyterLab: the module deploys with two icons, opens a lab in
Chromium and compares the top-left logo with the default (the same page with
the platform's custom CSS blocked), then deploys without them and checks the
switch is gone. Screenshots: artifacts/screenshots/lab-logo-{default,branded}.png.
"""

from __future__ import annotations

import json
import re
import secrets

import pytest

import testhost
from browserutil import SCREENSHOTS, login
from hubclient import batch_create

SWITCH = "/opt/jupyterlab/etc/jupyter/jupyter_lab_config.json"
ICON = '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64" fill="{}"/></svg>'


@pytest.fixture(scope="module")
def icons(host, admin, tmp_path_factory):
    d = tmp_path_factory.mktemp("lab-icons")
    (d / "main.svg").write_text(ICON.format("#d00000"))
    (d / "splash.svg").write_text(ICON.format("#0000d0"))
    testhost.deploy(host.name, "-e", json.dumps({
        "jupyterhub_lab_main_icon_uri": f"file://{d / 'main.svg'}",
        "jupyterhub_lab_splash_icon_uri": f"file://{d / 'splash.svg'}",
    }), capture=True)
    admin.wait_hub()
    yield
    testhost.deploy(host.name, capture=True)
    admin.wait_hub()
    assert host.exec("test", "-e", SWITCH, check=False).returncode != 0, "custom CSS outlived its icons"


def logo_shot(chromium, host, name, password, block_custom_css: bool) -> tuple[bytes, dict]:
    context = chromium.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    try:
        if block_custom_css:
            context.route(re.compile(r".*/custom/custom\.css.*"), lambda route: route.abort())
        page = context.new_page()
        login(page, host.https_url, name, password)
        page.wait_for_url(re.compile(rf"/user/{name}/lab"), timeout=180_000)
        logo = page.locator("#jp-MainLogo")
        logo.wait_for(timeout=120_000)
        page.wait_for_selector(".jp-LauncherCard", timeout=120_000)
        style = page.evaluate("""async () => {
            const logo = document.getElementById('jp-MainLogo');
            let css = '';
            try {  // aborted where the test blocks the custom CSS
                const r = await fetch(location.pathname.replace(/\\/lab.*$/, '/custom/custom.css'));
                if (r.ok) { css = await r.text(); }
            } catch (e) { css = ''; }
            return {background: getComputedStyle(logo).backgroundImage,
                    svg: getComputedStyle(logo.querySelector('svg')).visibility,
                    css: css};
        }""")
        css = style.pop("css")
        style["splash_rule"] = "/branding/lab-splash-icon.svg" in css
        return logo.screenshot(), style
    finally:
        context.close()


def test_the_lab_shows_the_platform_icon_instead_of_jupyters(host, admin, icons, chromium):
    name = "brand-" + secrets.token_hex(3)
    password = batch_create(admin, [name])[name]
    try:
        default, default_style = logo_shot(chromium, host, name, password, block_custom_css=True)
        branded, branded_style = logo_shot(chromium, host, name, password, block_custom_css=False)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        (SCREENSHOTS / "lab-logo-default.png").write_bytes(default)
        (SCREENSHOTS / "lab-logo-branded.png").write_bytes(branded)
        # (the blocked request fails in the page, not in what it fetches itself)
        assert default_style["background"] == "none" and default_style["svg"] == "visible", default_style
        assert "/branding/lab-main-icon.svg" in branded_style["background"], branded_style
        assert branded_style["svg"] == "hidden"
        assert branded != default, "the logo looks the same with and without the platform's icon"
        # the lab serves the splash icon's rule too (the splash is gone once the lab has loaded)
        assert branded_style["splash_rule"], branded_style
    finally:
        admin.stop_server(name)
