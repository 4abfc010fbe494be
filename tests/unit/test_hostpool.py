"""The suite's background provisioning of secondary hosts (tests/hostpool.py), with fake provisioning."""

import subprocess
import threading
from pathlib import Path

import pytest

import hostpool
import testhost


def pool_of(*kinds: str, gate: threading.Event | None = None):
    pool, provisioned = hostpool.HostPool(), []

    def provisioner(kind):
        def provision(main):
            if gate:
                gate.wait(5)
            provisioned.append((kind, main))
            if kind == "broken":
                raise RuntimeError("deploy failed")
            return f"host-{kind}"
        return provision

    for kind in kinds:
        pool.register(kind, f"{kind}_host", f"pytest-{kind}", provisioner(kind))
    return pool, provisioned


def test_kinds_needed_in_the_order_tests_first_ask_for_them():
    pool, _ = pool_of("limits", "acme", "modes")
    tests = [["host", "admin"], ["host", "modes_host"], ["limits_host", "modes_host"], ["modes_host"]]
    assert pool.kinds_needed(tests) == ["modes", "limits"]


def test_prefetched_hosts_are_provisioned_in_order_once_and_handed_out():
    pool, provisioned = pool_of("limits", "acme", "modes")
    pool.prefetch(["modes", "limits"], main="main-host")
    assert pool.get("limits") == "host-limits"
    assert pool.get("modes") == "host-modes"
    assert provisioned == [("modes", "main-host"), ("limits", "main-host")]
    # a kind nobody prefetched is provisioned when asked
    assert pool.get("acme", main="main-host") == "host-acme"
    assert [kind for kind, _ in provisioned] == ["modes", "limits", "acme"]


def test_a_failed_provisioning_reaches_the_fixture_that_asks():
    pool, _ = pool_of("broken", "modes")
    pool.prefetch(["broken", "modes"], main=None)
    with pytest.raises(RuntimeError, match="deploy failed"):
        pool.get("broken")
    assert pool.get("modes") == "host-modes"


def test_close_cancels_what_has_not_started_and_takes_down_hosts_nobody_took(monkeypatch):
    downed = []
    monkeypatch.setattr(testhost, "down", downed.append)
    monkeypatch.delenv("TESTHOST_KEEP", raising=False)
    gate = threading.Event()
    pool, provisioned = pool_of("limits", "acme", "modes", gate=gate)
    pool.prefetch(["limits", "acme", "modes"], main=None)
    while not pool._jobs["limits"].running():  # the thread is inside limits' provisioning
        threading.Event().wait(0.01)
    closing = threading.Thread(target=pool.close)
    closing.start()
    gate.set()
    closing.join(5)
    assert not closing.is_alive()
    assert provisioned == [("limits", None)]  # acme and modes were never started
    assert downed == ["pytest-limits"]  # provisioned, never handed out


def test_close_leaves_handed_out_hosts_to_their_fixtures(monkeypatch):
    downed = []
    monkeypatch.setattr(testhost, "down", downed.append)
    monkeypatch.delenv("TESTHOST_KEEP", raising=False)
    pool, _ = pool_of("limits", "modes")
    pool.prefetch(["limits", "modes"], main=None)
    assert pool.get("limits") == "host-limits"
    assert pool.get("modes") == "host-modes"
    pool.close()
    assert downed == []


def test_hosts_boot_in_their_cgroups_through_a_shell(tmp_path: Path):
    dirs = [tmp_path / "a", tmp_path / "b c"]
    for d in dirs:
        d.mkdir()
    out = subprocess.run(testhost._in_cgroups(dirs, ["sh", "-c", 'echo "$$ $1"', "sh", "x y"]),
                         capture_output=True, text=True, check=True).stdout.split(" ", 1)
    pid, arg = out[0], out[1].strip()
    assert arg == "x y"
    for d in dirs:  # the shell wrote its own pid, which exec kept for the command
        assert (d / "cgroup.procs").read_text().strip() == pid


def test_a_fixture_takes_down_a_host_whose_provisioning_failed(monkeypatch):
    downed = []
    monkeypatch.setattr(testhost, "down", downed.append)
    monkeypatch.delenv("TESTHOST_KEEP", raising=False)
    pool, _ = pool_of("broken")
    monkeypatch.setattr(hostpool, "POOL", pool)
    fixture = hostpool.take("broken")
    with pytest.raises(RuntimeError, match="deploy failed"):
        next(fixture)
    assert downed == ["pytest-broken"]


def test_a_kind_with_a_teardown_of_its_own_is_taken_down_by_it(monkeypatch):
    # a cluster: hosts and their network go with the kind's own teardown, not testhost.down
    downed, clusters_downed = [], []
    monkeypatch.setattr(testhost, "down", downed.append)
    monkeypatch.delenv("TESTHOST_KEEP", raising=False)
    pool = hostpool.HostPool()
    pool.register("cluster", "cluster_hub", "pytest-c-hub", lambda main: "hub",
                  teardown=lambda: clusters_downed.append("pytest-c"))
    pool.register("lone", "lone_host", "pytest-lone", lambda main: "lone",
                  teardown=lambda: clusters_downed.append("pytest-lone"))
    monkeypatch.setattr(hostpool, "POOL", pool)
    fixture = hostpool.take("cluster")
    assert next(fixture) == "hub"
    with pytest.raises(StopIteration):
        next(fixture)
    pool.prefetch(["lone"], main=None)
    assert pool._jobs["lone"].result(5) == "lone"
    pool.close()  # provisioned, never handed out
    assert clusters_downed == ["pytest-c", "pytest-lone"]
    assert downed == []
