"""Benchmark: deploy time of a fresh test host, and spawn latency of the platform
next to plain JupyterHub + SystemdSpawner (default settings) on the same host.

Spawn latency = the hub's REST request to start a server -> the lab's
``/api/status`` answers through the proxy. Both hubs are measured through
their configurable-http-proxy on loopback, alternately, 10 spawns each, in
one run; the printout gives medians and their ratio. Nothing here asserts a
time: the numbers are the result (see docs/benchmarks.md).
"""

from __future__ import annotations

import json
import secrets
import statistics
import time
from pathlib import Path

import pytest

from hubclient import HubClient

SPAWNS = 10
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"

PLAIN_CONFIG = """\
# Plain JupyterHub + SystemdSpawner, default settings: only what is needed to
# reach it (ports, state files), to drive it (a service token) and to find
# jupyterhub-singleuser (the lab venv is not on the default PATH).
c.JupyterHub.spawner_class = "systemd"
c.JupyterHub.bind_url = "http://127.0.0.1:{proxy}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api}"
c.ConfigurableHTTPProxy.command = ["/opt/configurable-http-proxy/bin/configurable-http-proxy"]
c.JupyterHub.db_url = "sqlite:////var/lib/plainhub/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "/var/lib/plainhub/cookie_secret"
c.JupyterHub.pid_file = "/var/lib/plainhub/jupyterhub.pid"
c.JupyterHub.services = [{{"name": "bench", "api_token": "{token}"}}]
c.JupyterHub.load_roles = [{{"name": "bench", "services": ["bench"],
                             "scopes": ["admin:users", "admin:servers", "access:servers"]}}]
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
        except Exception:  # noqa: BLE001 - still starting
            pass
        time.sleep(0.5)
    r = client.api("POST", "users/benchplain")
    assert r.status_code in (201, 409), r.text
    yield client, "benchplain"
    host.exec("systemctl", "stop", "plainhub", "plain-benchplain", check=False)
    host.sh("userdel -r benchplain; rm -rf /var/lib/plainhub", check=False)


@pytest.fixture(scope="module")
def platform_hub(host, admin):
    client = HubClient(f"http://127.0.0.1:{host.ports['jupyterhub_proxy_port']}/jupyterhub/",
                       token=admin.s.headers["Authorization"].split()[1])
    r = client.api("POST", "users/benchp")
    assert r.status_code in (201, 409), r.text
    yield client, "benchp"
    client.api("DELETE", "users/benchp/server")


def test_spawn_latency_platform_vs_plain_systemdspawner(host, platform_hub, plain_hub, capsys):
    timings: dict[str, list[float]] = {"platform": [], "plain": []}
    for _ in range(SPAWNS):
        for label, (client, user) in (("platform", platform_hub), ("plain", plain_hub)):
            timings[label].append(client.start_server(user))
            client.stop_server(user)
    deploy = json.loads((ARTIFACTS / "deploy-time.json").read_text()) \
        if (ARTIFACTS / "deploy-time.json").exists() else {}
    medians = {k: statistics.median(v) for k, v in timings.items()}
    result = {"deploy": deploy, "spawn_s": timings, "median_s": medians,
              "ratio_platform_to_plain": medians["platform"] / medians["plain"]}
    (ARTIFACTS / "bench.json").write_text(json.dumps(result, indent=2))
    with capsys.disabled():
        print("\n== benchmark (one run, same test host) ==")
        for key, value in deploy.items():
            print(f"deploy  {key:28s} {value:8.1f} s")
        for label in ("platform", "plain"):
            runs = " ".join(f"{t:.2f}" for t in timings[label])
            print(f"spawn   {label:8s} median {medians[label]:6.2f} s  [{runs}]")
        print(f"spawn   ratio platform/plain      {result['ratio_platform_to_plain']:8.2f}")
    assert len(timings["platform"]) == len(timings["plain"]) == SPAWNS
