"""The test host script's pure parts."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "testhost"))

import testhost  # noqa: E402


def test_own_cgroups_names_every_hierarchy_of_proc_self_cgroup():
    text = ("9:name=systemd:/\n8:pids:/\n4:memory:/process_api/3d8e\n"
            "2:cpu,cpuacct:/a/b\n0::/\n")
    assert testhost.own_cgroups(text) == {
        "systemd": "/", "pids": "/", "memory": "/process_api/3d8e", "cpu,cpuacct": "/a/b",
        "unified": "/"}
