"""The test host script's pure parts (tests/conftest.py puts tests/testhost on the path)."""

import asyncio
import json

import pytest
import yaml

import testhost


def test_own_cgroups_names_every_hierarchy_of_proc_self_cgroup():
    text = ("9:name=systemd:/\n8:pids:/\n4:memory:/process_api/3d8e\n"
            "2:cpu,cpuacct:/a/b\n0::/\n")
    assert testhost.own_cgroups(text) == {
        "systemd": "/", "pids": "/", "memory": "/process_api/3d8e", "cpu,cpuacct": "/a/b",
        "unified": "/"}


def test_a_private_network_gives_the_gateway_dot_one_and_the_hosts_the_next_addresses():
    net = testhost.plan_network("hcl", 12000, ["hcl-hub", "hcl-w1", "hcl-w2"])
    assert net.gateway == "10.120.0.1"
    assert net.members == {"hcl-hub": "10.120.0.2", "hcl-w1": "10.120.0.3", "hcl-w2": "10.120.0.4"}
    assert net.proxy_url == "http://10.120.0.1:12009"
    # another port base, another /24
    assert testhost.plan_network("x", 23000, ["x-hub"]).subnet != net.subnet


def test_a_name_too_long_for_an_interface_is_refused():
    with pytest.raises(ValueError, match="at most 15"):
        testhost.plan_network("hcl", 12000, ["hcl-a-very-long-worker"])


def test_every_member_finds_the_others_by_their_hostname():
    net = testhost.plan_network("hcl", 12000, ["hcl-hub", "hcl-w1"])
    lines = testhost.hosts_file(net).splitlines()
    assert "10.120.0.2 th-hcl-hub" in lines
    assert "10.120.0.3 th-hcl-w1" in lines


def test_each_host_gets_its_own_namespace_with_a_veth_into_the_switch():
    net = testhost.plan_network("hcl", 12000, ["hcl-hub", "hcl-w1"])
    cmds = [" ".join(c) for c in testhost.network_commands(net)]
    assert "ip netns add hcl-sw" in cmds
    for host, addr in net.members.items():
        assert f"ip netns add {host}" in cmds
        assert f"ip -n hcl-sw link set {host} master br0 up" in cmds
        assert f"ip -n {host} addr add {addr}/24 dev eth0" in cmds
    # the only address this machine's namespace gets is the gateway's, on the network's own veth
    assert [c for c in cmds if c.startswith("ip addr")] == ["ip addr add 10.120.0.1/24 dev hcl-gw"]


def test_a_cluster_hub_inventory_lists_its_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(testhost, "HOSTS", tmp_path)
    worker = testhost.Host(name="c-w1", port_base=12000, root="", ports=testhost.ports(12000),
                           address="10.120.0.3")
    hub = testhost.Host(name="c-hub", port_base=12000, root="", ports=testhost.ports(12000),
                        address="10.120.0.2", workers=["c-w1"])
    for h in (worker, hub):
        h.dir.mkdir()
        h.save()
    testhost._write_inventory(hub)
    inventory = json.loads(hub.inventory.read_text())["all"]
    assert inventory["hosts"]["th-c-hub"]["ansible_host"] == "10.120.0.2"
    # the platform's variables hold for the workers too
    assert inventory["vars"]["jupyterhub_admin"] == "admin"
    assert inventory["children"]["workers"]["hosts"]["th-c-w1"]["ansible_host"] == "10.120.0.3"



def fake_package_server(monkeypatch, refusals: int) -> list:
    """asyncio.open_connection refusing the first ``refusals`` connects (no waits between tries)."""
    tries = []

    async def open_connection(host, port):
        tries.append((host, port))
        if len(tries) <= refusals:
            raise ConnectionRefusedError(111, "Connection refused")
        return "reader", "writer"

    async def no_wait(_seconds):
        return None

    monkeypatch.setattr(asyncio, "open_connection", open_connection)
    monkeypatch.setattr(asyncio, "sleep", no_wait)
    return tries


def test_the_package_proxy_connects_again_to_a_package_server_that_refused(monkeypatch):
    tries = fake_package_server(monkeypatch, refusals=testhost.PROXY_CONNECT_TRIES - 1)
    assert asyncio.run(testhost._open_upstream("deb.debian.org", 80)) == ("reader", "writer")
    assert tries == [("deb.debian.org", 80)] * testhost.PROXY_CONNECT_TRIES


def test_the_package_proxy_gives_up_after_its_tries(monkeypatch):
    tries = fake_package_server(monkeypatch, refusals=testhost.PROXY_CONNECT_TRIES)
    with pytest.raises(ConnectionRefusedError):
        asyncio.run(testhost._open_upstream("deb.debian.org", 80))
    assert len(tries) == testhost.PROXY_CONNECT_TRIES


def test_the_test_clusters_lab_environment_is_the_roles_pins_less_what_it_leaves_out():
    role = yaml.safe_load((testhost.REPO / "ansible/roles/user_env/defaults/main.yml").read_text())
    full = role["jupyterhub_lab_packages"]
    slim = testhost.cluster_lab_packages()
    names = {pin.split("==")[0].split("[")[0] for pin in full}
    # every name it leaves out is still in the role's list (a rename would keep it silently)
    assert set(testhost.CLUSTER_LAB_LEFT_OUT) <= names
    assert [pin for pin in full if pin not in slim] == [
        pin for pin in full if pin.split("==")[0].split("[")[0] in testhost.CLUSTER_LAB_LEFT_OUT]
    # what a lab, its kernels and the cluster tests need stays, at the role's pins
    assert {"jupyterlab", "jupyterhub", "ipykernel"} <= {pin.split("==")[0] for pin in slim}
    assert set(slim) <= set(full)


def test_a_clusters_hosts_are_all_told_to_power_off_before_any_is_waited_for(monkeypatch, tmp_path):
    monkeypatch.setattr(testhost, "NETWORKS", tmp_path)
    network = testhost.plan_network("pc", 43600, ["pc-hub", "pc-w1", "pc-w2"])
    network.save()
    steps = []
    monkeypatch.setattr(testhost, "_start_poweroff", lambda host: steps.append(("poweroff", host)))
    monkeypatch.setattr(testhost, "down", lambda host: steps.append(("down", host)))
    monkeypatch.setattr(testhost, "network_down", lambda name: steps.append(("network_down", name)))
    testhost.cluster_down("pc")
    hosts = ["pc-hub", "pc-w1", "pc-w2"]
    assert steps == [("poweroff", h) for h in hosts] + [("down", h) for h in hosts] + [("network_down", "pc")]
