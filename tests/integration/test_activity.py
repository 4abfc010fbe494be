"""Activity monitor on the real hub of the test host (issue 6).

Two users run servers; one burns CPU from its lab's terminal (the lab's
/api/terminals websocket, as a user would). With sampling shortened to a few
seconds by a jupyterhub_config.d drop-in, the API shows the burner busy and
the other idle, the stored samples agree, and the figures say where they
came from: on this host the cgroup controllers are read-only, so memory and
tasks come from the psutil fallback (CPU from the unified hierarchy's
cpu.stat, which cgroup v2 keeps without any controller). Plus: admin-only
access everywhere, reset with XSRF, the Prometheus metrics, the page.
"""

from __future__ import annotations

import secrets
import time

import pytest

from hubclient import HubClient, lab_shell

SAMPLE_INTERVAL = 4
SIZES_INTERVAL = 3
DROPIN = f"""\
# test: sample every {SAMPLE_INTERVAL} s, live readings at most 1 s old, directory
# sizes measured every {SIZES_INTERVAL} s (the page shows the sizing's latest
# figures: a user not measured yet must not wait for anything else)
c.ActivityMonitor.sample_interval = {SAMPLE_INTERVAL}
c.ActivityMonitor.live_interval = 1.0
c.StorageManager.sizes_interval = {SIZES_INTERVAL}
"""
# two busy loops (up to 200 % of a core: a clear signal on a loaded 2-core machine),
# in their own session so closing the terminal does not stop them
BURN = ("for i in 1 2; do setsid nohup timeout 120 bash -c 'while :; do :; done' "
        ">/dev/null 2>&1 </dev/null & done; echo burning")


@pytest.fixture(scope="module")
def fast_sampling(hub_dropin):
    hub_dropin("90-test-activity.py", DROPIN)


@pytest.fixture(scope="module")
def two_users(admin, fast_sampling):
    tag = secrets.token_hex(3)
    burner, idle = f"act-{tag}-burn", f"act-{tag}-idle"
    for name in (burner, idle):
        assert admin.api("POST", f"users/{name}").status_code == 201
        admin.start_server(name)
    yield burner, idle
    for name in (burner, idle):
        admin.stop_server(name)


def users_of(admin: HubClient) -> dict[str, dict]:
    r = admin.api("GET", "activity")
    assert r.status_code == 200, r.text
    assert "no-store" in r.headers.get("Cache-Control", "")
    return {u["name"]: u for u in r.json()["users"]}


def test_busy_user_shows_higher_cpu_and_the_other_idle_with_sources(host, admin, two_users):
    burner, idle = two_users
    out, status = lab_shell(admin, burner, BURN)
    assert status == 0 and "burning" in out
    started = time.monotonic()
    # live figures: within two sample intervals (plus the lab terminal's own start)
    deadline = started + 2 * SAMPLE_INTERVAL + 20
    seen = None
    while time.monotonic() < deadline:
        users = users_of(admin)
        b, i = users[burner], users[idle]
        seen = (b["cpu_percent"], i["cpu_percent"])
        if b["cpu_percent"] is not None and i["cpu_percent"] is not None \
                and b["cpu_percent"] >= 30 and i["cpu_percent"] <= 5:
            break
        time.sleep(1)
    else:
        pytest.fail(f"burner/idle CPU % never separated: {seen}")
    # both just started: their last activity is well inside inactive_after (60 min)
    assert b["status"] == "active" and i["status"] == "active"
    # where the figures came from on this host (read-only controllers)
    for u in (b, i):
        assert u["sources"]["memory"] == "psutil", u["sources"]
        assert u["sources"]["tasks"] == "psutil", u["sources"]
        assert u["sources"]["cpu"] == "cgroup-v2", u["sources"]
        assert "io" not in u["sources"]  # psutil cannot read /proc/<pid>/io in the hardened hub
        assert u["memory_bytes"] > 20 * 2**20 and u["tasks"] >= 1
        assert u["memory_limit"] == 2 * 2**30  # the test host's jupyterhub_spawner_mem_limit
        assert u["unit"] == f"jupyter-{u['name']}-singleuser.service"
    assert b["tasks"] > i["tasks"]

    # sizes come from the storage feature's background sizing (null until its
    # first pass over the user, then at once: no miss is kept): bytes per directory, their total, and the trash
    # apart (not in the total)
    deadline = time.monotonic() + 6 * SIZES_INTERVAL + 10
    while (sizes := users_of(admin)[burner]["sizes"]) is None:
        assert time.monotonic() < deadline, "the burner's directory sizes never showed up"
        time.sleep(1)
    assert set(sizes) == {"total", "dirs", "trash"}, sizes
    assert set(sizes["dirs"]) == {"home", "workspace", "cache"}, sizes
    assert all(isinstance(n, int) and n >= 0 for n in sizes["dirs"].values()), sizes
    assert sizes["total"] == sum(sizes["dirs"].values()) > 0, sizes
    assert sizes["trash"] == 0, sizes  # nothing reset yet

    # the stored samples (what the plots draw) agree within two more sample intervals
    deadline = time.monotonic() + 3 * SAMPLE_INTERVAL + 10
    while time.monotonic() < deadline:
        hb = admin.api("GET", f"activity/history/{burner}").json()["series"]
        hi = admin.api("GET", f"activity/history/{idle}").json()["series"]
        busy = [c for c in hb["cpu_percent"] if c is not None]
        quiet = [c for c in hi["cpu_percent"] if c is not None]
        if busy and quiet and busy[-1] >= 30 and quiet[-1] <= 5:
            break
        time.sleep(1)
    else:
        pytest.fail(f"samples never separated: {hb['cpu_percent']} / {hi['cpu_percent']}")
    assert hb["online"][-1] == 1 and hb["active"][-1] == 1
    platform = admin.api("GET", "activity/history").json()["series"]
    assert platform["online"][-1] >= 2 and platform["cpu_percent"][-1] >= busy[-1] - 1
    model = admin.api("GET", "activity").json()
    assert model["users"] and model["last_tick"]["units"] >= 2
    assert model["settings"]["sample_interval"] == SAMPLE_INTERVAL
    assert users_of(admin)[burner]["samples"] >= 2

    # the hub's own metrics endpoint carries the per-user series
    metrics = admin.get("hub/metrics").text
    assert f'jupyterhub_activity_cpu_seconds_total{{source="cgroup-v2",user="{burner}"}}' in metrics
    assert f'jupyterhub_activity_memory_bytes{{source="psutil",user="{idle}"}}' in metrics
    assert f'jupyterhub_activity_score_ratio{{user="{burner}"}}' in metrics
    lab_shell(admin, burner, "pkill -u \"$(id -un)\" -f 'while :; do :; done' ; true")


def test_activity_database_is_the_hubs_own_file(host, two_users):
    out = host.exec("stat", "-c", "%a %U", "/var/lib/jupyterhub/activity.sqlite").stdout.split()
    assert out == ["600", "root"]
    # the hub's process holds it open (the monitor keeps one connection), and nothing else
    hub_pid = host.exec("systemctl", "show", "-P", "MainPID", "jupyterhub").stdout.strip()
    holders = host.sh("for p in /proc/[0-9]*; do ls -l $p/fd 2>/dev/null | grep -q activity.sqlite "
                      "&& echo ${p#/proc/}; done; true").stdout.split()
    assert holders == [hub_pid], f"holders {holders}, hub {hub_pid}"


def test_non_admins_get_403_and_anonymous_is_refused(host, admin, fast_sampling):
    name = "act-" + secrets.token_hex(3)
    r = admin.api("POST", "platform/users", json={"usernames": [name]})
    assert r.status_code == 201, r.text
    password = r.json()["users"][0]["password"]
    user = HubClient(host.https_url)
    user.login(name, password)
    assert user.logged_in_as() == name
    token_user = HubClient(host.https_url, token=user.new_token(name))
    for client in (user, token_user):
        assert client.api("GET", "activity").status_code == 403
        assert client.api("GET", "activity/history").status_code == 403
        assert client.api("GET", f"activity/history/{name}").status_code == 403
        assert client.api("POST", "activity/reset").status_code == 403
    assert user.get("hub/activity").status_code == 403
    anonymous = HubClient(host.https_url)
    assert anonymous.api("GET", "activity").status_code == 403
    assert anonymous.api("POST", "activity/reset").status_code == 403
    r = anonymous.get("hub/activity", allow_redirects=False)
    assert r.status_code == 302 and "/hub/login" in r.headers["Location"]
    # the charting library is served by the hub itself
    js = anonymous.get("hub/platform/static/uplot/uPlot.iife.min.js")
    assert js.status_code == 200 and "uPlot" in js.text[:200]


def test_reset_needs_xsrf_and_clears_the_history(host, admin, two_users):
    deadline = time.monotonic() + 3 * SAMPLE_INTERVAL
    while admin.api("GET", "activity/history").json()["series"]["t"] == []:
        assert time.monotonic() < deadline, "no sample was taken"
        time.sleep(1)
    browser = HubClient(host.https_url)
    browser.login(host.admin_user, host.admin_password)
    page = browser.get("hub/activity")
    assert page.status_code == 200 and 'id="activity-table"' in page.text
    assert "platform/static/uplot/uPlot.iife.min.js" in page.text
    r = browser.s.post(browser.url("hub/api/activity/reset"), timeout=30)
    assert r.status_code == 403  # cookie-authenticated POST without X-XSRFToken
    assert admin.api("GET", "activity/history").json()["series"]["t"] != []
    r = browser.api("POST", "activity/reset")  # with the header, as the page's button sends it
    assert r.status_code == 200 and r.json()["deleted_samples"] > 0
    users = users_of(admin)
    assert all(u["samples"] <= 2 for u in users.values())  # a tick or two since
    assert admin.api("GET", "activity/history/no-such-user").status_code == 404
