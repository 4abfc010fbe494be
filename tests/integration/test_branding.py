"""Branding from file:// paths on the controller and from URLs, deployed with the playbook.

The module deploys once with the four branding variables set, checks what
browsers get, then deploys again without them (files removed, defaults back).
"""

from __future__ import annotations

import json
import secrets
from urllib.parse import urlparse

import pytest
import requests

import testhost
from hubclient import HubClient

SPLASH_URL = "https://example.org/brand/splash.png"


@pytest.fixture(scope="module")
def branded(host, admin, tmp_path_factory):
    d = tmp_path_factory.mktemp("branding")
    logo = d / "company-logo.svg"
    logo.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8">'
                    f'<!-- logo {secrets.token_hex(4)} --></svg>')
    favicon = d / "fav.png"
    favicon.write_bytes(b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(16))
    icon = d / "Lab-Icon.SVG"
    icon.write_text(f'<svg xmlns="http://www.w3.org/2000/svg"><!-- main {secrets.token_hex(4)} --></svg>')
    variables = {
        "jupyterhub_logo_uri": f"file://{logo}",
        "jupyterhub_favicon_uri": f"file://{favicon}",
        "jupyterhub_lab_main_icon_uri": f"file://{icon}",
        "jupyterhub_lab_splash_icon_uri": SPLASH_URL,
    }
    testhost.deploy(host.name, "-e", json.dumps(variables), capture=True)
    admin.wait_hub()
    yield {"logo": logo.read_bytes(), "favicon": favicon.read_bytes(), "icon": icon.read_bytes()}
    testhost.deploy(host.name, capture=True)
    admin.wait_hub()
    r = admin.get("hub/logo")
    assert r.status_code == 200 and r.content != logo.read_bytes(), "the logo outlived its variable"
    left = host.exec("ls", "-A", "/usr/local/share/jupyterhub/branding").stdout.split()
    assert left == [], f"branding files left behind: {left}"


def test_logo_and_favicon_are_served_to_hub_pages_and_labs(admin, branded):
    anonymous = HubClient(admin.base)
    r = anonymous.get("hub/logo")
    assert r.status_code == 200 and r.content == branded["logo"]
    r = anonymous.get("hub/static/favicon.ico", params={"v": "x"})
    assert r.status_code == 200 and r.content == branded["favicon"]
    assert r.headers["Content-Type"] == "image/png"
    for lab_favicon in ("favicon.ico", "favicon-busy-1.ico", "favicon-notebook.ico"):
        r = anonymous.get(f"user/anyone/static/favicons/{lab_favicon}")
        assert r.status_code == 200 and r.content == branded["favicon"], lab_favicon
    r = anonymous.get("branding/lab-main-icon.svg")
    assert r.status_code == 200 and r.content == branded["icon"]
    # the login page links the served logo
    assert 'src="/jupyterhub/hub/logo"' in anonymous.get("hub/login").text


def test_labs_get_the_icon_urls(host, admin, branded):
    user = "brand-" + secrets.token_hex(3)
    assert admin.api("POST", f"users/{user}").status_code == 201
    admin.start_server(user)
    try:
        pid = host.exec("systemctl", "show", "-p", "MainPID", "--value",
                        f"jupyter-{user}-singleuser").stdout.strip()
        raw = host.exec("cat", f"/proc/{pid}/environ").stdout
        env = dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)
        assert env["JUPYTERLAB_MAIN_ICON_URI"] == "/jupyterhub/branding/lab-main-icon.svg"
        assert env["JUPYTERLAB_SPLASH_ICON_URI"] == SPLASH_URL
        icon = requests.get(admin.url("branding/lab-main-icon.svg"), verify=False, timeout=10)
        assert icon.content == branded["icon"]
        # the lab loads the path from its own origin (<user>.<domain> by default)
        lab_origin = urlparse(admin.lab_url(user)).netloc
        icon = requests.get(f"https://{lab_origin}{env['JUPYTERLAB_MAIN_ICON_URI']}", verify=False,
                            timeout=10)
        assert icon.status_code == 200 and icon.content == branded["icon"]
    finally:
        admin.stop_server(user)


def test_settings_page_shows_the_branding_values(admin, branded):
    rows = {r["variable"]: r for r in admin.api("GET", "settings").json()["settings"]}
    assert rows["jupyterhub_lab_splash_icon_uri"]["value"] == SPLASH_URL
    assert rows["jupyterhub_logo_uri"]["value"].startswith("file:///")
