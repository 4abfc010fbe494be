"""Reliability: the hub and the proxy restart (or die) without taking labs or routes with them,
and the platform serves many concurrent clients without errors."""

from __future__ import annotations

import concurrent.futures
import secrets
import time

import pytest

from hubclient import HubClient

SERVERS = 5


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


def test_fifty_concurrent_clients_polling_for_a_minute_see_no_errors(host, admin):
    users = [f"load-{i}-{secrets.token_hex(2)}" for i in range(50)]
    tokens = {}
    for user in users:
        assert admin.api("POST", f"users/{user}").status_code == 201
        tokens[user] = admin.new_token(user)
    errors: list[str] = []
    calls = [0]

    def client(user: str) -> None:
        me = HubClient(host.https_url, token=tokens[user])
        end = time.monotonic() + 60
        while time.monotonic() < end:
            r = me.api("GET", "user", timeout=30)
            calls[0] += 1
            if r.status_code != 200 or r.json().get("name") != user:
                errors.append(f"{user}: {r.status_code}")
            time.sleep(0.5)

    with concurrent.futures.ThreadPoolExecutor(len(users)) as pool:
        list(pool.map(client, users))
    print(f"\n{calls[0]} API calls from {len(users)} clients in 60 s")
    assert errors == []
    assert calls[0] >= len(users) * 20
