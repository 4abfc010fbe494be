"""The test host script's pure parts (tests/conftest.py puts tests/testhost on the path)."""

import testhost


def test_own_cgroups_names_every_hierarchy_of_proc_self_cgroup():
    text = ("9:name=systemd:/\n8:pids:/\n4:memory:/process_api/3d8e\n"
            "2:cpu,cpuacct:/a/b\n0::/\n")
    assert testhost.own_cgroups(text) == {
        "systemd": "/", "pids": "/", "memory": "/process_api/3d8e", "cpu,cpuacct": "/a/b",
        "unified": "/"}
