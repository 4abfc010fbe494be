"""No lab can bind or impersonate the platform's internal endpoints (docs/security.md).

The attack of issue 13, replayed from inside a real lab: a loop binds, every
5 ms with SO_REUSEADDR, whatever the hub, the proxy, the proxy's API and
another user's lab listen on, while each of them restarts. On a platform whose
hub and proxy listen on TCP ports, the loop wins the hub's port when the hub
restarts and reads the login bodies sent to it; a lab that dies frees its
port for the loop while its route still points there. Here the hub, the proxy
and its API listen on unix sockets in root's and the proxy's own runtime
directories, and each lab's port is held by systemd (a socket unit) for as
long as the hub thinks the lab runs: the loop never binds, no request reaches
it, and each component comes back by itself.
"""

from __future__ import annotations

import json
import re
import textwrap
import time

import pytest
import requests

from hubclient import HubClient, lab_cell, unique_names

SQUAT_SECONDS = 75
# Runs detached inside the attacker's lab: binds every target it can, keeps
# what it got, counts the connections that reach it, and writes a report.
SQUATTER = textwrap.dedent("""
    import json, os, socket, sys, time
    targets, seconds, report = json.loads(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    held, bound, received = [], [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for kind, where in targets:
            if [kind, where] in bound:
                continue
            family = socket.AF_INET if kind == "tcp" else socket.AF_UNIX
            sock = socket.socket(family)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", where) if kind == "tcp" else where)
                sock.listen(64)
                sock.setblocking(False)
            except OSError:
                sock.close()
                continue
            held.append(sock)
            bound.append([kind, where])
        for sock in held:
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            received += 1
            conn.close()
        time.sleep(0.005)
    with open(report, "w") as f:
        json.dump({"bound": bound, "received": received}, f)
""")


def new_users(admin: HubClient, n: int) -> list[str]:
    users = unique_names(n, "squat")
    for user in users:
        assert admin.api("POST", f"users/{user}").status_code == 201
    return users


def lab_port(host, user: str) -> int:
    """The port systemd holds for the user's lab (its socket unit)."""
    listen = host.exec("systemctl", "show", "-p", "Listen", "--value",
                       f"jupyter-{user}-singleuser.socket").stdout
    found = re.search(r"127\.0\.0\.1:(\d+)", listen)
    assert found, f"no listening socket unit for {user}: {listen!r}"
    return int(found.group(1))


def tcp_listeners(host, unit: str) -> list[int]:
    """TCP ports the unit's main process listens on."""
    pid = host.exec("systemctl", "show", "-p", "MainPID", "--value", unit).stdout.strip()
    out = host.exec("ss", "-Hltnp").stdout
    return sorted({int(m.group(1)) for line in out.splitlines() if f"pid={pid}," in line
                   for m in [re.search(r":(\d+)\s", line)] if m})


def wait_active(host, unit: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if host.exec("systemctl", "is-active", unit, check=False).stdout.strip() == "active":
            return
        time.sleep(0.5)
    raise AssertionError(f"{unit} did not come back within {timeout}s")


@pytest.fixture
def two_labs(admin):
    attacker, victim = new_users(admin, 2)
    for user in (attacker, victim):
        admin.start_server(user)
    yield attacker, victim
    for user in (attacker, victim):
        if admin.server_running(user):
            admin.stop_server(user)


def test_no_internal_endpoint_is_a_tcp_port(host):
    """The hub, the proxy and its API listen on unix sockets only (nginx stays on TCP)."""
    for unit in ("jupyterhub.service", "configurable-http-proxy.service"):
        assert tcp_listeners(host, unit) == [], unit
    modes = host.exec("stat", "-c", "%A %U %G", "/run/jupyterhub", "/run/jupyterhub/hub.sock",
                      "/run/jupyterhub-proxy", "/run/jupyterhub-proxy/proxy.sock").stdout.splitlines()
    assert modes[0] == "drwxr-xr-x root root"  # only root creates in it
    assert modes[1].startswith("s")
    # the proxy's directory: only its own user writes, only its group (nginx) enters
    assert modes[2] == "drwxr-x--- jupyterhub-proxy jupyterhub-proxy"
    assert modes[3] == "srwxrwx--- jupyterhub-proxy jupyterhub-proxy"


def test_a_squatting_lab_never_binds_and_never_receives(host, admin, two_labs):
    attacker, victim = two_labs
    victim_port = lab_port(host, victim)
    targets = [["tcp", victim_port],
               ["unix", "/run/jupyterhub/hub.sock"],
               ["unix", "/run/jupyterhub-proxy/proxy.sock"],
               ["unix", "/run/jupyterhub-proxy/api.sock"]]
    targets += [["tcp", port] for unit in ("jupyterhub.service", "configurable-http-proxy.service")
                for port in tcp_listeners(host, unit)]
    out, status = lab_cell(admin, attacker, textwrap.dedent(f"""
        import subprocess, sys
        open("/tmp/squat.py", "w").write({SQUATTER!r})
        subprocess.Popen([sys.executable, "/tmp/squat.py", {json.dumps(targets)!r},
                          "{SQUAT_SECONDS}", "/tmp/squat.json"], start_new_session=True)
        print("squatting")
    """))
    assert status == "ok" and "squatting" in out, out
    started = time.monotonic()

    # the hub restarts: a user logs in with a password meanwhile
    host.exec("systemctl", "restart", "jupyterhub")
    admin.wait_hub()
    browser = HubClient(host.https_url)
    assert browser.login(host.admin_user, host.admin_password, spawn=False).status_code == 200
    assert browser.logged_in_as() == host.admin_user
    # the proxy restarts
    host.exec("systemctl", "restart", "configurable-http-proxy")
    wait_active(host, "configurable-http-proxy.service")
    admin.wait_hub()
    # the victim's lab process dies behind the hub's back: its port stays systemd's
    pid = host.exec("systemctl", "show", "-p", "MainPID", "--value",
                    f"jupyter-{victim}-singleuser.service").stdout.strip()
    host.exec("kill", "-9", pid)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = admin.get(f"user/{victim}/api/status", allow_redirects=False, timeout=30)
        # the victim's own lab again (systemd starts it on the next connection),
        # or the hub once it noticed the death: never an answer from the squatter
        if r.status_code == 200 or r.status_code in (302, 424, 503):
            break
        time.sleep(1)
    assert not admin.server_running(victim) or lab_port(host, victim) == victim_port

    time.sleep(max(0.0, SQUAT_SECONDS + 3 - (time.monotonic() - started)))
    out, status = lab_cell(admin, attacker, textwrap.dedent("""
        import os, time
        deadline = time.monotonic() + 30
        while not os.path.exists("/tmp/squat.json") and time.monotonic() < deadline:
            time.sleep(0.5)
        print("REPORT:" + open("/tmp/squat.json").read())
    """), timeout=90)
    assert status == "ok", out
    reports = [line for line in out.splitlines() if line.startswith("REPORT:")]
    assert reports, out
    report = json.loads(reports[-1].removeprefix("REPORT:"))
    assert report == {"bound": [], "received": 0}, report
    for unit in ("jupyterhub.service", "configurable-http-proxy.service"):
        assert host.exec("systemctl", "is-active", unit).stdout.strip() == "active"


def test_a_proxy_that_cannot_listen_fails_and_comes_back_by_itself(host, admin):
    """configurable-http-proxy logs a failed listen and stays up without listening;
    the unit counts the start only once both sockets exist, so Restart= retries."""
    dropin = "/etc/systemd/system/configurable-http-proxy.service.d/50-test-cannot-listen.conf"
    env_file = "/etc/jupyterhub/test-cannot-listen.env"
    # a socket path in a directory the proxy's user cannot write (a later
    # EnvironmentFile= wins over proxy.env)
    host.exec("tee", env_file, input="PROXY_SOCKET=/run/jupyterhub/proxy.sock\n")
    host.exec("tee", dropin, input=f"[Service]\nEnvironmentFile={env_file}\n")
    try:
        host.exec("systemctl", "daemon-reload")
        before = int(host.exec("systemctl", "show", "-p", "NRestarts", "--value",
                               "configurable-http-proxy").stdout)
        host.exec("systemctl", "restart", "configurable-http-proxy", check=False, timeout=120)
        deadline = time.monotonic() + 60
        restarts = before
        while time.monotonic() < deadline and restarts <= before:
            restarts = int(host.exec("systemctl", "show", "-p", "NRestarts", "--value",
                                     "configurable-http-proxy").stdout)
            time.sleep(1)
        assert restarts > before, "the proxy's unit was not restarted after a failed listen"
        state = host.exec("systemctl", "is-active", "configurable-http-proxy", check=False).stdout
        assert state.strip() != "active"
        journal = host.exec("journalctl", "-u", "configurable-http-proxy", "--since", "2 minutes ago",
                            "--no-pager").stdout
        assert "is not listening on /run/jupyterhub/proxy.sock" in journal
    finally:
        host.exec("rm", "-f", dropin, env_file)
        host.exec("systemctl", "daemon-reload")
    # no one touches it: Restart= brings it back with the fixed configuration
    wait_active(host, "configurable-http-proxy.service", timeout=90)
    admin.wait_hub()
    assert requests.get(admin.url("hub/api/health"), verify=False, timeout=10).status_code == 200
