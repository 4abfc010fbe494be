"""Idle culling with session extensions, on the real hub of the test host.

Timeouts are shrunk to seconds through a jupyterhub_config.d drop-in (the
site-local escape hatch): idle timeout 8 s, a pass every second, and one
extension "hour" worth 10 s, so an extended deadline passes within the test.
"""

from __future__ import annotations

import json
import secrets
import time

import pytest

from hubclient import HubClient

TIMEOUT, UNIT, MAX_EXTENSION = 8, 10, 2
SLACK = 6  # a cull pass every second + the proxy's activity poll + the stop itself

DROPIN = f"""\
c.SessionCuller.enabled = True
c.SessionCuller.timeout = {TIMEOUT}
c.SessionCuller.interval = 1
c.SessionCuller.max_age = {{max_age}}
c.SessionCuller.max_extension_hours = {MAX_EXTENSION}
c.SessionCuller.extension_unit_seconds = {UNIT}
# activity of the labs reaches the hub from the proxy every second
c.JupyterHub.last_activity_interval = 1
"""


@pytest.fixture(scope="module")
def culling(hub_dropin):
    hub_dropin("90-test-culling.py", DROPIN.format(max_age=0))
    return hub_dropin


def new_user(admin: HubClient) -> str:
    name = "cull-" + secrets.token_hex(3)
    assert admin.api("POST", f"users/{name}").status_code == 201
    return name


def wait_stopped(admin: HubClient, user: str, until: float) -> float | None:
    """Monotonic time when the server was seen stopped, or None if still running at ``until``."""
    while time.monotonic() < until:
        if not admin.server_running(user):
            return time.monotonic()
        time.sleep(0.25)
    return None


def keep_active(admin: HubClient, user: str, seconds: float) -> bool:
    """Use the lab through the proxy every second; False as soon as it is gone."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if admin.get(f"user/{user}/api/contents", timeout=10).status_code != 200:
            return False
        time.sleep(1)
    return True


def test_idle_server_without_extension_is_culled_after_the_timeout(admin, culling):
    user = new_user(admin)
    admin.start_server(user)
    last_use = time.monotonic()  # start_server's last lab request
    assert wait_stopped(admin, user, last_use + TIMEOUT - 2) is None, "culled before the timeout"
    stopped = wait_stopped(admin, user, last_use + TIMEOUT + SLACK)
    assert stopped is not None, "an idle server outlived its timeout"


def test_extension_postpones_culling_to_the_extended_deadline(admin, culling):
    user = new_user(admin)
    admin.start_server(user)
    last_use = time.monotonic()
    r = admin.api("POST", f"users/{user}/extend-session", json={"hours": 1})
    assert r.status_code == 200 and r.json()["granted_hours"] == 1, r.text
    info = admin.api("GET", f"users/{user}/session-info").json()
    assert info["extensions_used_hours"] == 1 and info["extensions_available_hours"] == 1
    assert TIMEOUT < info["time_remaining_seconds"] <= TIMEOUT + UNIT

    # alive well past the plain timeout ...
    assert wait_stopped(admin, user, last_use + TIMEOUT + UNIT - 2) is None, \
        "culled before the extended deadline"
    # ... and culled once the extended deadline has passed
    assert wait_stopped(admin, user, last_use + TIMEOUT + UNIT + SLACK) is not None


def test_active_server_is_never_culled_by_the_idle_rule(admin, culling):
    user = new_user(admin)
    admin.start_server(user)
    assert keep_active(admin, user, 3 * TIMEOUT), "an active server was culled"
    assert admin.server_running(user)
    admin.stop_server(user)


def test_extension_survives_a_hub_restart(host, admin, culling):
    user = new_user(admin)
    admin.start_server(user)
    assert admin.api("POST", f"users/{user}/extend-session", json={"hours": 2}).status_code == 200
    host.exec("systemctl", "restart", "jupyterhub")
    admin.wait_hub()
    info = admin.api("GET", f"users/{user}/session-info").json()
    assert info["extensions_used_hours"] == 2 and info["extensions_available_hours"] == 0
    # kept in the spawner's state, in the hub's own database; no file of its own
    state = host.exec("/opt/jupyterhub/bin/python", "-c", (
        "import json, sqlite3, sys; db = sqlite3.connect('/var/lib/jupyterhub/jupyterhub.sqlite');"
        "rows = db.execute('select s.state from spawners s join users u on s.user_id = u.id "
        "where u.name = ? and s.name = ?', (sys.argv[1], '')).fetchall();"
        "print(json.dumps(json.loads(rows[0][0]).get('session_extension')))"), user).stdout
    assert json.loads(state)["hours"] == 2
    assert host.exec("test", "-e", "/var/lib/jupyterhub/session_extensions.json", check=False).returncode == 1
    admin.stop_server(user)


def test_request_above_the_allowance_is_truncated_and_says_so(admin, culling):
    user = new_user(admin)
    admin.start_server(user)
    r = admin.api("POST", f"users/{user}/extend-session", json={"hours": MAX_EXTENSION + 5})
    body = r.json()
    assert r.status_code == 200 and body["truncated"] is True
    assert body["granted_hours"] == MAX_EXTENSION and body["message"]
    admin.stop_server(user)


@pytest.mark.parametrize("body", [
    {"hours": 0}, {"hours": -1}, {"hours": 10**9}, {"hours": "2"}, {"hours": 1.5}, {}, [], "not json",
])
def test_bad_hours_get_400_with_a_message(admin, culling, body):
    user = new_user(admin)
    kw = {"data": body} if isinstance(body, str) else {"json": body}
    r = admin.api("POST", f"users/{user}/extend-session", **kw)
    assert r.status_code == 400, r.text
    assert r.json().get("message"), r.text


def test_another_user_gets_403_on_session_info_and_extend(admin, culling):
    owner, other = new_user(admin), new_user(admin)
    other_client = HubClient(admin.base, token=admin.new_token(other))
    assert other_client.api("GET", f"users/{other}/session-info").status_code == 200
    assert other_client.api("GET", f"users/{owner}/session-info").status_code == 403
    r = other_client.api("POST", f"users/{owner}/extend-session", json={"hours": 1})
    assert r.status_code == 403
    anonymous = HubClient(admin.base)
    assert anonymous.api("GET", f"users/{owner}/session-info").status_code == 403


def test_cookie_requests_need_the_xsrf_header(host, admin, culling):
    user = new_user(admin)
    browser = HubClient(host.https_url)
    browser.login(host.admin_user, host.admin_password)
    url = browser.url(f"hub/api/users/{user}/extend-session")
    without = browser.s.post(url, json={"hours": 1}, timeout=30)
    assert without.status_code == 403
    with_header = browser.s.post(url, json={"hours": 1}, timeout=30,
                                 headers={"X-XSRFToken": browser.hub_xsrf()})
    assert with_header.status_code == 409  # accepted; the user has no server to extend
    assert "not running" in with_header.json()["message"]


def test_max_age_culls_an_active_server(admin, culling):
    max_age = 12
    culling("90-test-culling.py", DROPIN.format(max_age=max_age))
    user = new_user(admin)
    requested = time.monotonic()
    admin.start_server(user)
    # use the lab every second until it is gone: only max age can stop it
    gone = None
    while time.monotonic() < requested + max_age + SLACK:
        if not admin.server_running(user):
            gone = time.monotonic()
            break
        admin.get(f"user/{user}/api/contents", timeout=10)
        time.sleep(1)
    assert gone is not None, "an active server outlived its max age"
    assert gone - requested >= max_age - 1, f"culled {gone - requested:.1f}s after the start request"
