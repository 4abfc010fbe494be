"""Shared fixtures: the systemd test host with the platform deployed on it.

One host per test session (name and port base from TESTHOST_NAME /
TESTHOST_PORT_BASE, so a demo host and a test run can coexist), with one
origin per user's lab unless TESTHOST_SINGLE_ORIGIN=1. It is built,
booted and deployed with ansible/site.yml once, then torn down at the end
unless TESTHOST_KEEP=1 (a developer's loop; TESTHOST_REUSE=1 then picks the
kept host up again without redeploying).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS / "testhost"))

import acme_ca  # noqa: E402
import hostpool  # noqa: E402
import testhost  # noqa: E402
from hubclient import HubClient, admin_client  # noqa: E402

ARTIFACTS = TESTS.parent / "artifacts"

# Each directory under tests/ is one tier, marked on its tests by
# pytest_collection_modifyitems (the markers are registered in pytest.ini).
TIERS = ("unit", "static", "integration", "browser", "bench", "cluster")
_tier_of_test: dict[str, str] = {}
_tier_seconds: dict[str, float] = defaultdict(float)
# the secondary hosts' kinds the collected tests need, in the order they run
_secondary_kinds: list[str] = []


def tier_of(path: Path) -> str:
    tier = path.relative_to(TESTS).parts[0]
    if tier not in TIERS:
        raise pytest.UsageError(f"{path}: tests live in one tier directory under tests/: {TIERS}")
    return tier


def pytest_collection_modifyitems(items):
    for item in items:
        tier = tier_of(item.path)
        item.add_marker(tier)
        _tier_of_test[item.nodeid] = tier
    secondary_host_modules_last(items)
    _secondary_kinds.extend(hostpool.POOL.kinds_needed([item.fixturenames for item in items]))


def secondary_host_modules_last(items) -> None:
    """Within each tier, the modules that need a secondary host run after those
    that need only the main host, grouped by the kind they need first, so the
    background provisioning (tests/hostpool.py) has the main host's tests' time."""
    kinds = hostpool.POOL.kinds_needed([item.fixturenames for item in items])
    kind_of_fixture = {k.fixture: k.name for k in hostpool.POOL.kinds.values()}
    first_kind: dict[Path, int] = {}  # module -> 1 + rank of the first kind it needs
    for item in items:
        for fixture in item.fixturenames:
            if fixture in kind_of_fixture:
                rank = 1 + kinds.index(kind_of_fixture[fixture])
                first_kind[item.path] = min(first_kind.get(item.path, rank), rank)
    tier_rank: dict[str, int] = {}
    for item in items:
        tier_rank.setdefault(_tier_of_test[item.nodeid], len(tier_rank))
    items.sort(key=lambda item: (tier_rank[_tier_of_test[item.nodeid]], first_kind.get(item.path, 0)))


def pytest_sessionfinish(session):
    hostpool.POOL.close()


def pytest_runtest_logreport(report):
    # setup + call + teardown, so a session fixture (the test host) counts in the
    # tier of the first test that needs it
    _tier_seconds[_tier_of_test[report.nodeid]] += report.duration


def pytest_terminal_summary(terminalreporter):
    if not _tier_seconds:
        return
    terminalreporter.section("time per tier")
    for tier in TIERS:
        if tier in _tier_seconds:
            terminalreporter.write_line(f"{tier:<12} {_tier_seconds[tier]:8.1f} s")


@pytest.fixture(scope="session")
def host():
    name = os.environ.get("TESTHOST_NAME", "pytest")
    port_base = int(os.environ.get("TESTHOST_PORT_BASE", "23000"))
    ARTIFACTS.mkdir(exist_ok=True)
    reuse = os.environ.get("TESTHOST_REUSE") == "1"
    existing = None
    if reuse and (testhost.HOSTS / name / "deployed").exists():
        existing = testhost.Host.load(name)
    if existing and existing.is_running():
        h = existing
        hostpool.POOL.prefetch(_secondary_kinds, h)
    else:
        started = time.monotonic()
        testhost.build()
        built = time.monotonic()
        # TESTHOST_SINGLE_ORIGIN=1: every lab on the hub's origin (the default is
        # one origin per user)
        single = os.environ.get("TESTHOST_SINGLE_ORIGIN") == "1"
        h = testhost.up(name, port_base, testhost.SINGLE_ORIGIN_VARS if single else None)
        booted = time.monotonic()
        hostpool.POOL.prefetch(_secondary_kinds, h)
        res = testhost.deploy(name, capture=True)
        (ARTIFACTS / "deploy-1.log").write_text(res.stdout + res.stderr)
        done = time.monotonic()
        (testhost.HOSTS / name / "deployed").write_text("")
        (ARTIFACTS / "deploy-time.json").write_text(json.dumps({
            "base_build_s": round(built - started, 1),
            "boot_s": round(booted - built, 1),
            "playbook_s": round(done - booted, 1),
            "fresh_host_to_platform_s": round(done - built, 1),
        }, indent=2))
    yield h
    if os.environ.get("TESTHOST_KEEP") != "1":
        testhost.down(name)


@pytest.fixture(scope="session")
def admin(host) -> HubClient:
    """The admin of the suite's host."""
    return admin_client(host)



@pytest.fixture(scope="module")
def hub_dropin(host, admin):
    """Install site-local hub config in jupyterhub_config.d (the escape hatch the
    platform offers admins), restart the hub; removed and restarted afterwards."""
    installed = []

    def install(name: str, text: str) -> None:
        path = f"/etc/jupyterhub/jupyterhub_config.d/{name}"
        host.exec("tee", path, input=text)
        if path not in installed:
            installed.append(path)
        host.exec("systemctl", "restart", "jupyterhub")
        admin.wait_hub()

    yield install
    if installed:
        host.exec("rm", "-f", *installed)
        host.exec("systemctl", "restart", "jupyterhub")
        admin.wait_hub()


# --- the suite's other hosts -----------------------------------------------------
# Each is deployed differently from the main host, once per run, in the
# background while the main host's tests run (tests/hostpool.py), and shared by
# every test that needs that deployment; kept and reused like the main host with
# TESTHOST_KEEP / TESTHOST_REUSE. Name and port base: $TESTHOST_NAME-<kind> on
# $TESTHOST_PORT_BASE + offset (or TESTHOST_<KIND>_NAME / _PORT_BASE).

# The enforcing test host (docs/testing.md, "Resource limits"): the labs' limits
# take effect; shared by tests/integration/test_resource_limits.py and
# tests/bench/test_hub_priority.py.
hostpool.register_deployed("limits", "limits_host", 4000, testhost.LIMITS_HOST_VARS,
                           enforce_limits=True, users_btrfs=testhost.LIMITS_HOST_USERS_BTRFS)
# The ACME test host (docs/tls.md, "How it is tested"): its certificate comes
# from a local ACME CA (tests/acme_ca.py) through the playbook's nginx_acme_*
# settings; otherwise deployed like the suite's host, so a test of another
# setting that works with either certificate can share it.
hostpool.register_deployed("acme", "acme_host", 5000, acme_ca.host_vars,
                           before_deploy=acme_ca.start)
# The modes host (docs/testing.md, "Modes"): HTTP only behind a TLS terminator,
# signup off, the quick start's admin (testhost.MODES_HOST_VARS); used by
# tests/integration/test_modes.py.
hostpool.register_deployed("modes", "modes_host", 2000, testhost.MODES_HOST_VARS)


@pytest.fixture(scope="session")
def limits_host():
    yield from hostpool.take("limits")


@pytest.fixture(scope="session")
def limits_admin(limits_host) -> HubClient:
    """The enforcing host's admin, with an API token."""
    return admin_client(limits_host)


@pytest.fixture(scope="session")
def acme_host():
    yield from hostpool.take("acme")


@pytest.fixture(scope="session")
def modes_host():
    yield from hostpool.take("modes")


# --- the cluster (docs/cluster.md): a hub host and two workers on a private network --
# A pool kind like the hosts above, provisioned in the background too: needed by
# the last tier, it is the last the pool deploys (the longest deploy: three hosts),
# while the other tiers run. Cluster ``$TESTHOST_NAME-c`` (hosts <name>-hub,
# <name>-w1, <name>-w2; "-c", not "-cluster": a network interface is named after
# each host, at most 15 characters) on port base ``$TESTHOST_PORT_BASE + 6000``
# (or TESTHOST_CLUSTER_NAME / TESTHOST_CLUSTER_PORT_BASE).
CLUSTER_WORKERS = 2
_cluster_name = hostpool.secondary_name("cluster", suffix="c")


def _provision_cluster(_main: testhost.Host | None) -> testhost.Host:
    ARTIFACTS.mkdir(exist_ok=True)
    return testhost.provision_cluster(_cluster_name, hostpool.secondary_port_base("cluster", 6000),
                                      workers=CLUSTER_WORKERS,
                                      reuse=os.environ.get("TESTHOST_REUSE") == "1",
                                      log_to=ARTIFACTS / "deploy-cluster.log",
                                      times_to=ARTIFACTS / "deploy-cluster-time.json")


hostpool.POOL.register("cluster", "cluster_hub", testhost.cluster_names(_cluster_name, CLUSTER_WORKERS)[0],
                       _provision_cluster, teardown=lambda: testhost.cluster_down(_cluster_name))


@pytest.fixture(scope="session")
def cluster_hub():
    """The cluster's hub host (its ``workers``: the worker hosts' names); kept
    and reused like the main host."""
    yield from hostpool.take("cluster")


@pytest.fixture(scope="session")
def cluster_admin(cluster_hub) -> HubClient:
    """The cluster hub's admin, with an API token."""
    return admin_client(cluster_hub)
