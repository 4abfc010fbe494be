"""Benchmark: the hub's CPU priority during a burst of 20 concurrent spawns (issue 15).

On the enforcing test host (conftest's ``limits_host``: the labs' cpu cgroups
are real), the same burst as test_spawn_latency.py is run twice in one session:
first with the hub, the proxy and nginx at a lab's CPU weight (100, set at
run time with ``systemctl set-property --runtime``), then with the weight
their units ship (``CPUWeight=1000``). Printed: both bursts and the ratio of
the hub API's p95 latency. Nothing asserts a time (docs/benchmarks.md).
"""

from __future__ import annotations

import pytest

from hubclient import HubClient
from spawn_burst import describe_burst, run_burst, write_result

N = 20
SHIPPED_WEIGHT = 1000  # the hub, proxy and nginx roles' units (roles/*/files)
LAB_WEIGHT = 100  # systemd's default, which every lab unit has
SERVICES = ("jupyterhub.service", "configurable-http-proxy.service", "nginx.service")


def set_weight(host, weight: int) -> None:
    for service in SERVICES:
        host.exec("systemctl", "set-property", "--runtime", service, f"CPUWeight={weight}")


@pytest.fixture
def shipped_weight_restored(limits_host):
    yield
    set_weight(limits_host, SHIPPED_WEIGHT)


def test_burst_of_20_spawns_with_and_without_hub_cpu_priority(limits_host, limits_admin,
                                                              shipped_weight_restored, capsys):
    client = HubClient.over_socket(limits_host.internal_socket("proxy"), "/jupyterhub/",
                                   token=limits_admin.s.headers["Authorization"].split()[1],
                                   domain=limits_host.domain)
    results = {}
    for weight in (LAB_WEIGHT, SHIPPED_WEIGHT):
        set_weight(limits_host, weight)
        results[weight] = run_burst(client, N)
    before, after = results[LAB_WEIGHT], results[SHIPPED_WEIGHT]
    write_result(f"hub_priority_burst_{N}", {"hub_weight_100": before, "hub_weight_1000": after})
    with capsys.disabled():
        print(f"\nhub at CPUWeight=100   {describe_burst(before)}"
              f"\nhub at CPUWeight=1000  {describe_burst(after)}"
              f"\nhub API p95 with / without priority = "
              f"{after['hub_api_p95_s'] / before['hub_api_p95_s']:.2f}")
    for result in (before, after):
        assert len(result["each_ready_s"]) == N and result["hub_api_errors"] == []
