"""Notifications broadcast, settings page, health endpoint, admin startup scripts and the
lab environment passthrough, on the real hub and real labs of the test host."""

from __future__ import annotations

import json
import re
import secrets
import textwrap
import time

import pytest
import requests

from hubclient import HubClient, client_from, lab_cell

SCRIPTS = "/etc/jupyterhub/start-platform.d"
TOKEN_NOTE = "platform notification broadcast (single delivery)"


def new_user(admin: HubClient, prefix: str = "feat") -> str:
    name = f"{prefix}-" + secrets.token_hex(3)
    assert admin.api("POST", f"users/{name}").status_code == 201
    return name


def as_user(admin: HubClient, name: str) -> HubClient:
    return HubClient(admin.base, token=admin.new_token(name))


def unit_env(host, user: str) -> dict[str, str]:
    """The environment of the lab's main process, as systemd started it (after the launcher's exec)."""
    unit = f"jupyter-{user}-singleuser"
    pid = host.exec("systemctl", "show", "-p", "MainPID", "--value", unit).stdout.strip()
    raw = host.exec("cat", f"/proc/{pid}/environ").stdout
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def journal(host, user: str) -> str:
    return host.exec("journalctl", "-u", f"jupyter-{user}-singleuser", "--no-pager", "-o", "cat").stdout


def fetch_notifications(client: HubClient, user: str) -> list[dict]:
    """What the lab's frontend would fetch (the extension's own API; drains the queue)."""
    r = client.get(f"user/{user}/jupyterlab-notifications-extension/notifications")
    assert r.status_code == 200, r.text
    return r.json()["notifications"]


@pytest.fixture(scope="module")
def admin_browser(host):
    browser = HubClient(host.https_url)
    browser.login(host.admin_user, host.admin_password)
    assert browser.logged_in_as() == host.admin_user
    return browser


@pytest.fixture(scope="module")
def other_browser(host, admin_browser):
    """A plain user logged in with a browser session (signed up and approved)."""
    name, password = "plain-" + secrets.token_hex(3), secrets.token_urlsafe(12)
    browser = HubClient(host.https_url)
    assert browser.signup(name, password).status_code == 200
    admin_browser.approve(name)
    browser.login(name, password)
    assert browser.logged_in_as() == name
    return browser


@pytest.fixture(scope="module")
def two_labs(admin):
    users = [new_user(admin, "ntf"), new_user(admin, "ntf")]
    for u in users:
        admin.start_server(u)
    yield users
    for u in users:
        admin.stop_server(u)


# --- notifications -----------------------------------------------------------------


def test_broadcast_reaches_two_running_labs(admin, two_labs):
    message = f"Maintenance at 18:00 <script>alert('x')</script> {secrets.token_hex(4)}"
    r = admin.api("POST", "notifications/broadcast",
                  json={"message": message, "variant": "warning", "autoClose": False})
    assert r.status_code == 200, r.text
    body = r.json()
    details = {d["username"]: d for d in body["details"]}
    for u in two_labs:
        assert details[u] == {"username": u, "status": "success"}, body
    assert body["total"] == len(body["details"]) == body["successful"] + body["failed"]

    # each user reads it back through the extension's own fetch API, as the user
    for u in two_labs:
        got = [n for n in fetch_notifications(as_user(admin, u), u) if n["message"] == message]
        assert len(got) == 1, f"{u} did not get the notification"
        assert got[0]["type"] == "warning" and got[0]["autoClose"] is False


def test_chosen_recipients_and_a_stopped_user(admin, two_labs):
    stopped = new_user(admin, "ntf")
    message = "only for the first " + secrets.token_hex(4)
    r = admin.api("POST", "notifications/broadcast",
                  json={"message": message, "variant": "info", "autoClose": 5000,
                        "recipients": [two_labs[0], stopped, "no-such-user-x"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 3 and body["successful"] == 1 and body["failed"] == 2
    details = {d["username"]: d for d in body["details"]}
    assert details[two_labs[0]]["status"] == "success"
    assert details[stopped] == {"username": stopped, "status": "failed", "error": "Server not running"}
    assert details["no-such-user-x"]["error"] == "No such user"
    assert any(n["message"] == message for n in fetch_notifications(as_user(admin, two_labs[0]), two_labs[0]))
    assert not any(n["message"] == message
                   for n in fetch_notifications(as_user(admin, two_labs[1]), two_labs[1]))


def test_active_servers_lists_the_running_labs(admin, two_labs):
    r = admin.api("GET", "notifications/active-servers")
    assert r.status_code == 200
    names = [s["username"] for s in r.json()["servers"]]
    assert set(two_labs) <= set(names)


def test_delivery_tokens_are_gone_after_the_delivery(admin, two_labs):
    r = admin.api("POST", "notifications/broadcast", json={"message": "token check"})
    assert r.status_code == 200
    for u in two_labs:
        tokens = admin.api("GET", f"users/{u}/tokens").json()["api_tokens"]
        assert not [t for t in tokens if t["note"] == TOKEN_NOTE], "a delivery token outlived its delivery"


@pytest.mark.parametrize("body, message", [
    ({"message": "x" * 141}, "140 characters"),
    ({"message": ""}, "empty"),
    ({"message": "x", "variant": "shout"}, "Variant must be one of"),
    ({"message": "x", "recipients": "bob"}, "list of user names"),
    ("not json", "Invalid JSON"),
])
def test_bad_broadcasts_get_400_with_a_message(admin, body, message):
    kw = {"data": body} if isinstance(body, str) else {"json": body}
    r = admin.api("POST", "notifications/broadcast", **kw)
    assert r.status_code == 400, r.text
    assert message in r.json()["message"]


def test_notifications_page_renders_for_the_admin(admin_browser):
    r = admin_browser.get("hub/notifications")
    assert r.status_code == 200
    assert 'id="notify-form"' in r.text and 'maxlength="140"' in r.text
    for t in ("default", "info", "success", "warning", "error", "in-progress"):
        assert f'value="{t}"' in r.text


def test_cookie_broadcast_needs_the_xsrf_header(host, admin):
    browser = HubClient(host.https_url)
    browser.login(host.admin_user, host.admin_password)
    url = browser.url("hub/api/notifications/broadcast")
    assert browser.s.post(url, json={"message": "x"}, timeout=30).status_code == 403
    ok = browser.s.post(url, json={"message": "xsrf ok", "recipients": ["nobody-here"]}, timeout=30,
                        headers={"X-XSRFToken": browser.hub_xsrf()})
    assert ok.status_code == 200, ok.text


# --- access rules of every new page and API ---------------------------------------

PAGES = ["hub/notifications", "hub/settings"]
APIS = [("GET", "notifications/active-servers"), ("POST", "notifications/broadcast"),
        ("GET", "settings")]


def test_another_user_gets_403_everywhere(admin, other_browser):
    for page in PAGES:
        r = other_browser.get(page, allow_redirects=False)
        assert r.status_code == 403, f"{page}: {r.status_code}"
    other = as_user(admin, new_user(admin, "plain"))
    for client in (other, other_browser):
        for method, path in APIS:
            r = client.api(method, path, json={"message": "x"} if method == "POST" else None)
            assert r.status_code == 403, f"{path}: {r.status_code}"


def test_anonymous_is_refused(admin):
    anonymous = HubClient(admin.base)
    for page in PAGES:
        r = anonymous.get(page, allow_redirects=False)
        assert r.status_code == 302 and "/hub/login" in r.headers["Location"], page
    for method, path in APIS:
        r = anonymous.api(method, path, json={"message": "x"} if method == "POST" else None)
        assert r.status_code == 403, f"{path}: {r.status_code}"


# --- settings page ----------------------------------------------------------------


def test_settings_page_lists_every_variable_with_value_and_description(host, admin, admin_browser):
    r = admin.api("GET", "settings")
    assert r.status_code == 200
    rows = {row["variable"]: row for row in r.json()["settings"]}
    assert rows["jupyterhub_admin"]["value"] == host.admin_user
    assert rows["jupyterhub_idle_culler_timeout"]["value"] == "86400"
    assert rows["jupyterlab_aux_scripts_path"]["value"] == SCRIPTS
    assert "JUPYTERHUB_LOGO_URI" in rows["jupyterhub_logo_uri"]["original"]
    assert all(row["description"] and "not documented" not in row["description"]
               for row in rows.values()), [n for n, row in rows.items() if "not documented" in row["description"]]
    assert rows["jupyterhub_admin_password"]["value"] == "********"
    # settings about passwords are not secrets; the spawner's values are the running hub's
    assert rows["jupyterhub_password_words"]["value"] == "3"
    assert rows["jupyterhub_minimum_password_length"]["value"] == "8"
    assert rows["jupyterhub_spawner_start_timeout"]["value"] == "120"

    page = admin_browser.get("hub/settings")
    assert page.status_code == 200 and 'id="settings-table"' in page.text
    assert 'data-variable="jupyterhub_spawner_mem_limit"' in page.text


def test_nothing_secret_on_the_settings_page_or_files(host, admin, admin_browser):
    page = admin_browser.get("hub/settings")
    assert page.status_code == 200 and 'id="settings-table"' in page.text
    page = page.text
    api = admin.api("GET", "settings").text
    proxy_token = host.exec("sed", "-n", "s/^CONFIGPROXY_AUTH_TOKEN=//p", "/etc/jupyterhub/proxy.env").stdout.strip()
    cookie_secret = host.exec("cat", "/var/lib/jupyterhub/jupyterhub_cookie_secret").stdout.strip()
    settings_file = host.exec("cat", "/etc/jupyterhub/settings.json").stdout
    for secret in (host.admin_password, proxy_token, cookie_secret):
        assert secret and secret not in page and secret not in api and secret not in settings_file
    mode = host.exec("stat", "-c", "%U %a", "/etc/jupyterhub/settings.json").stdout.split()
    assert mode == ["root", "600"]


# --- health ---------------------------------------------------------------------------


def test_jupyterhubs_own_health_probe_keeps_its_paths(host, admin):
    """/hub/health and /hub/api/health are JupyterHub's probe: an empty 200, never
    rate limited (the platform's detailed health has a path of its own)."""
    for path in ("hub/health", "hub/api/health"):
        answers = [requests.get(admin.url(path), verify=False, timeout=10) for _ in range(3)]
        assert [(r.status_code, r.text) for r in answers] == [(200, "")] * 3, path


def test_health_is_status_only_for_anonymous_callers_and_rate_limited(host, admin):
    url = admin.url("hub/api/platform/health")
    time.sleep(1.1)  # an earlier request from this address may be within the interval
    first = requests.get(url, verify=False, timeout=10)
    second = requests.get(url, verify=False, timeout=10)
    assert first.status_code == 200, first.text
    # versions, uptime and user counts help an attacker: status only
    assert first.json() == {"status": "ok"}
    assert second.status_code == 429 and int(second.headers["Retry-After"]) >= 1
    time.sleep(1.1)
    assert requests.get(url, verify=False, timeout=10).status_code == 200


def test_health_details_need_a_token_with_read_hub(host, admin):
    time.sleep(1.1)
    body = admin.api("GET", "platform/health").json()
    assert body["status"] == "ok" and body["uptime_seconds"] >= 0 and body["uptime"]
    assert body["version"]["jupyterhub"]
    # the platform's version is the installed hub_ext wheel's, which setuptools-scm took from git
    wheel = host.exec("ls", "/opt/jupyterhub/wheels").stdout.split()
    assert len(wheel) == 1 and wheel[0].startswith("hub_ext-"), wheel
    assert body["version"]["platform"] == wheel[0].split("-")[1] != "0.0.0+unknown"
    assert body["users"]["total"] >= 1 and body["users"]["active_servers"] >= 0
    # a token without read:hub (a user's own) sees the status only
    user = as_user(admin, new_user(admin, "hlt"))
    time.sleep(1.1)
    r = user.api("GET", "platform/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}, r.text


def _health_codes(host, client_addresses, headers=None):
    """GET the health endpoint through nginx, one request per client address in
    turn (client_from: the demo's nginx listens on every loopback address)."""
    return [client_from(host, address).get("hub/api/platform/health", headers=headers).status_code
            for address in client_addresses]


def test_health_limit_is_per_client_address(host):
    """Through nginx: the limit is per client address, and a client cannot pick
    another address with X-Real-IP (nginx replaces it)."""
    time.sleep(1.1)
    assert _health_codes(host, ["127.0.0.2", "127.0.0.2", "127.0.0.3"]) == [200, 429, 200]
    time.sleep(1.1)
    spoofed = _health_codes(host, ["127.0.0.2", "127.0.0.2"], headers={"X-Real-IP": "192.0.2.99"})
    assert spoofed == [200, 429]


def test_a_lab_cannot_claim_a_client_address(host, admin):
    """A lab reaches the hub's socket directly; its X-Real-IP is not believed, so
    every request of its user shares one limit (the peer's uid)."""
    user = new_user(admin, "hip")
    admin.start_server(user)
    try:
        out, status = lab_cell(admin, user, textwrap.dedent("""
            import subprocess
            codes = []
            for ip in ("192.0.2.10", "192.0.2.11", "192.0.2.12"):
                codes.append(subprocess.run(
                    ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                     "--unix-socket", "/run/jupyterhub/hub.sock",
                     "-H", f"X-Real-IP: {ip}", "http://hub/jupyterhub/hub/api/platform/health"],
                    capture_output=True, text=True).stdout)
            print("codes", codes)
        """))
        assert status == "ok", out
        assert "codes ['200', '429', '429']" in out, out
    finally:
        admin.stop_server(user)


# --- startup scripts and the lab's environment ------------------------------------


@pytest.fixture
def startup_scripts(host):
    scripts = {
        "10-root-ok": '#!/bin/sh\necho "ran as $(id -un) with $JUPYTERHUB_SERVICE_MLFLOW" '
                      '> "$HOME/workspace/aux-root-ok.txt"\n',
        "15-fails": "#!/bin/sh\necho failing on purpose >&2\nexit 7\n",
        "20-not-root": '#!/bin/sh\necho ran > "$HOME/workspace/aux-not-root.txt"\n',
    }
    for name, text in scripts.items():
        path = f"{SCRIPTS}/{name}"
        host.exec("tee", path, input=text)
        host.exec("chmod", "0755", path)
    host.exec("chown", "nobody", f"{SCRIPTS}/20-not-root")
    yield scripts
    host.exec("rm", "-f", *[f"{SCRIPTS}/{n}" for n in scripts])


def test_root_owned_script_runs_non_root_is_refused_failure_is_logged(host, admin, startup_scripts):
    user = new_user(admin, "aux")
    admin.start_server(user)
    try:
        r = admin.get(f"user/{user}/api/contents/aux-root-ok.txt", params={"content": "1"})
        assert r.status_code == 200, "the root-owned script did not run before the lab"
        assert r.json()["content"].strip() == f"ran as jh-{user} with 1"
        assert admin.get(f"user/{user}/api/contents/aux-not-root.txt").status_code == 404
        log = journal(host, user)
        assert f"REFUSED startup script {SCRIPTS}/20-not-root: owned by uid" in log, log[-2000:]
        assert f"startup script {SCRIPTS}/15-fails failed: exit status 7; the lab starts anyway" in log
        assert "failing on purpose" in log
    finally:
        admin.stop_server(user)


def test_every_lab_gets_the_service_variables(host, admin, two_labs):
    env = unit_env(host, two_labs[0])
    assert env["JUPYTERHUB_SERVICE_MLFLOW"] == "1"
    assert env["JUPYTERHUB_SERVICE_RESOURCES_MONITOR"] == "1"
    assert env["JUPYTERHUB_SERVICE_TENSORBOARD"] == "1"
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "3"
    assert env["JUPYTERLAB_AUX_SCRIPTS_PATH"] == SCRIPTS
    # the launcher exec'd the lab: the unit's main process is the lab server itself
    pid = host.exec("systemctl", "show", "-p", "MainPID", "--value",
                    f"jupyter-{two_labs[0]}-singleuser").stdout.strip()
    cmdline = host.exec("cat", f"/proc/{pid}/cmdline").stdout.split("\0")
    assert any(part.endswith("lab_server.py") for part in cmdline[:3]), cmdline


def test_lab_reports_memory_against_its_limit(host, admin, two_labs):
    """jupyter-resource-usage in the lab venv reads MEM_LIMIT (the unit's MemoryMax)."""
    r = admin.get(f"user/{two_labs[0]}/api/metrics/v1")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rss"] > 0
    memory_max = host.unit_properties(f"jupyter-{two_labs[0]}-singleuser", "MemoryMax")["MemoryMax"]
    assert body["limits"]["memory"]["rss"] == int(memory_max) > 0


def test_bad_feature_variables_fail_the_play_naming_them(host):
    import testhost
    for variable, value in [("jupyterhub_logo_uri", "ftp://x/logo.svg"),
                            ("jupyterhub_service_extra", {"PATH": "/tmp"}),
                            ("jupyterlab_aux_scripts_path", "relative/dir")]:
        res = testhost.deploy(host.name, "-e", json.dumps({variable: value}), capture=True, check=False)
        assert res.returncode != 0
        # a role's assert: its fail_msg starts with the variable's name; a setting
        # declared as a trait: the deploy check's line names it and Class.trait
        assert re.search(rf"msg: '?{variable} must|^\s*{variable} \(\w+\.\w+\): ", res.stdout, re.M), \
            res.stdout[-3000:]
