"""Reliability: the hub and the proxy restart (or die) without taking labs or routes with them,
and the platform serves many concurrent clients without errors."""

from __future__ import annotations

import concurrent.futures
import secrets
import time

import pytest

from hubclient import HubClient, batch_create, login_client, unique_names

SERVERS = 5
CLIENTS = 50


@pytest.fixture(scope="module")
def five_servers(admin):
    users = [f"rel-{i}-{secrets.token_hex(2)}" for i in range(SERVERS)]
    for user in users:
        assert admin.api("POST", f"users/{user}").status_code == 201
    with concurrent.futures.ThreadPoolExecutor(SERVERS) as pool:
        list(pool.map(admin.start_server, users))
    yield users
    for user in users:
        admin.api("DELETE", f"users/{user}/server")


def lab_pids(host, users) -> dict[str, str]:
    return {u: host.unit_properties(f"jupyter-{u}-singleuser", "MainPID")["MainPID"] for u in users}


def assert_all_served(admin: HubClient, users, timeout: float = 60) -> None:
    """Every lab answers through the proxy and the hub reports it ready."""
    deadline = time.monotonic() + timeout
    missing = list(users)
    while missing and time.monotonic() < deadline:
        missing = [u for u in missing
                   if admin.get(f"user/{u}/api/status", timeout=10).status_code != 200]
        if missing:
            time.sleep(1)
    assert not missing, f"labs not reachable through the proxy: {missing}"
    for user in users:
        assert admin.api("GET", f"users/{user}").json()["servers"][""]["ready"] is True


def test_hub_restart_keeps_all_servers_and_routes(host, admin, five_servers):
    before = lab_pids(host, five_servers)
    host.exec("systemctl", "restart", "jupyterhub")
    admin.wait_hub()
    assert lab_pids(host, five_servers) == before
    assert_all_served(admin, five_servers, timeout=10)


def test_killed_hub_is_brought_back_by_systemd(host, admin, five_servers):
    before = lab_pids(host, five_servers)
    hub_pid = host.unit_properties("jupyterhub", "MainPID")["MainPID"]
    host.exec("kill", "-9", hub_pid)
    time.sleep(1)
    admin.wait_hub(timeout=60)
    assert host.unit_properties("jupyterhub", "MainPID")["MainPID"] != hub_pid
    assert lab_pids(host, five_servers) == before
    assert_all_served(admin, five_servers, timeout=10)


def test_proxy_restart_routes_are_restored_by_the_hub(host, admin, five_servers):
    host.exec("systemctl", "restart", "configurable-http-proxy")
    admin.wait_hub(timeout=30)
    # The new proxy starts empty; the hub's periodic route check re-adds every lab.
    assert_all_served(admin, five_servers, timeout=90)


def test_fifty_concurrent_clients_logging_in_and_polling_for_a_minute_see_no_errors(host, admin):
    """50 users log in through nginx's login form at once (real NativeAuthenticator
    logins, bcrypt included), then poll the API for 60 s, alternating their cookie
    session (with X-XSRFToken) and a token each made for itself."""
    passwords = batch_create(admin, unique_names(CLIENTS, "load"))
    errors: list[str] = []
    calls = [0]
    logins: list[float] = []

    def client(user: str) -> None:
        try:
            started = time.monotonic()
            # spawn=False: the login itself, not 50 labs starting on the test host
            me = login_client(host.https_url, user, passwords[user], spawn=False)
            logins.append(time.monotonic() - started)
            if me.logged_in_as() != user:
                errors.append(f"{user}: login failed")
                return
            with_token = HubClient(host.https_url, token=me.new_token(user))
            end = time.monotonic() + 60
            while time.monotonic() < end:
                r = (me if calls[0] % 2 else with_token).api("GET", "user", timeout=30)
                calls[0] += 1
                if r.status_code != 200 or r.json().get("name") != user:
                    errors.append(f"{user}: {r.status_code}")
                time.sleep(0.5)
        except Exception as exc:  # a refused connection or a timeout is an error too
            errors.append(f"{user}: {exc!r}")

    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(client, passwords))
    for user in passwords:
        admin.api("DELETE", f"users/{user}")
    logins.sort()
    print(f"\n{CLIENTS} concurrent logins: median {logins[len(logins) // 2]:.2f} s, "
          f"max {logins[-1]:.2f} s; {calls[0]} API calls in 60 s")
    assert errors == []
    assert len(logins) == CLIENTS
    assert calls[0] >= CLIENTS * 20
