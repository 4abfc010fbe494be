"""GPUs on the test host, which has none.

First as deployed (jupyterhub_gpu_enabled = 2): auto-detection resolves to
off with a log line and no traceback, and labs get no device properties.
Then with a fake device list injected through the seam docs/gpu.md describes:
tests/fake_nvml.py and a JSON list of 4 GPUs copied to /etc/jupyterhub/testing,
and a jupyterhub_config.d drop-in pointing c.GpuSupport.nvml_module at it
(round-robin policy). Labs then get DevicePolicy=closed, path DeviceAllow=
lines for exactly their GPU and CUDA_VISIBLE_DEVICES with its UUID, and the
round continues across a hub restart. Finally the hub unit with the gpu
role's drop-in keeps its systemd-analyze exposure <= 4.0.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import pytest

from hubclient import HubClient

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
FAKE_DIR = "/etc/jupyterhub/testing"
FAKE_GPUS = 4
DROPIN = f"""\
# test only: a fake NVML (tests/fake_nvml.py) with {FAKE_GPUS} GPUs
import sys
sys.path.insert(0, "{FAKE_DIR}")
c.GpuSupport.nvml_module = "fake_nvml"
c.GpuSupport.policy = "round-robin"
"""


def uuid(index: int) -> str:
    return f"GPU-00000000-0000-0000-0000-{index:012d}"


def new_user(admin: HubClient) -> str:
    name = "gpu-" + secrets.token_hex(3)
    assert admin.api("POST", f"users/{name}").status_code == 201
    return name


def lab_unit(user: str) -> str:
    return f"jupyter-{user}-singleuser"


def lab_environment(host, user: str) -> dict[str, str]:
    """The environment of the lab's main process, as the unit started it."""
    pid = host.unit_properties(lab_unit(user), "MainPID")["MainPID"]
    raw = host.exec("cat", f"/proc/{pid}/environ").stdout
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def device_properties(host, user: str) -> tuple[str, list[str]]:
    props = host.exec(
        "systemctl", "show", lab_unit(user), "--property=DevicePolicy", "--property=DeviceAllow"
    ).stdout.splitlines()
    policy = next(p.split("=", 1)[1] for p in props if p.startswith("DevicePolicy="))
    allow = [p.split("=", 1)[1] for p in props if p.startswith("DeviceAllow=") and p != "DeviceAllow="]
    return policy, allow


def hub_journal(host) -> str:
    """The journal of the hub since its last start."""
    since = host.unit_properties("jupyterhub", "ExecMainStartTimestamp")["ExecMainStartTimestamp"]
    return host.exec("journalctl", "-u", "jupyterhub", "--no-pager", "-o", "cat",
                     "--since", " ".join(since.split()[1:3])).stdout


def test_auto_mode_without_gpu_is_off_without_errors(host, admin):
    status = admin.api("GET", "gpus").json()
    assert status["mode"] == 2 and status["enabled"] is False
    # nvidia-ml-py is installed (the role puts it in the hub venv); libnvidia-ml is not
    assert any("NVML" in e for e in status["detection"]["errors"]), status
    host.exec("/opt/jupyterhub/bin/python", "-c", "import pynvml")
    log = hub_journal(host)
    assert "GPU support off: no NVIDIA GPU found" in log
    assert "Traceback" not in log
    # no NVIDIA device on the host: no drop-in for the hub, no dashboards for the labs
    assert host.exec("test", "-e", "/etc/systemd/system/jupyterhub.service.d/50-gpu.conf",
                     check=False).returncode == 1
    assert host.exec("/opt/jupyterlab/bin/python", "-c", "import jupyterlab_nvdashboard",
                     check=False).returncode != 0

    user = new_user(admin)
    admin.start_server(user)
    policy, allow = device_properties(host, user)
    assert (policy, allow) == ("auto", [])  # as without GPU support
    env = lab_environment(host, user)
    assert env["NVIDIA_DETECTED"] == "0" and env["ENABLE_GPU_SUPPORT"] == "0"
    assert env["JUPYTERHUB_GPU_ENABLED"] == "0" and "CUDA_VISIBLE_DEVICES" not in env
    admin.stop_server(user)


def test_non_admin_gets_403_on_gpu_status(admin):
    user = new_user(admin)
    assert HubClient(admin.base, token=admin.new_token(user)).api("GET", "gpus").status_code == 403


@pytest.fixture(scope="module")
def fake_gpus(host, hub_dropin):
    host.exec("mkdir", "-p", FAKE_DIR)
    host.exec("tee", f"{FAKE_DIR}/fake_nvml.py", input=(TESTS / "fake_nvml.py").read_text())
    gpus = {"gpus": [{"index": i, "name": "NVIDIA Fake H100"} for i in range(FAKE_GPUS)]}
    host.exec("tee", f"{FAKE_DIR}/fake_nvml.json", input=json.dumps(gpus))
    hub_dropin("90-test-gpu.py", DROPIN)
    yield
    host.exec("rm", "-rf", FAKE_DIR)


def test_fake_gpus_are_detected(admin, fake_gpus):
    status = admin.api("GET", "gpus").json()
    assert status["enabled"] is True and status["policy"] == "round-robin"
    assert [g["uuid"] for g in status["detection"]["gpus"]] == [uuid(i) for i in range(FAKE_GPUS)]
    assert status["usage"]["error"] is None and len(status["usage"]["gpus"]) == FAKE_GPUS


def expect_gpu(host, user: str, index: int) -> None:
    policy, allow = device_properties(host, user)
    assert policy == "closed"
    assert sorted(allow) == sorted([
        "/dev/nvidiactl rw", "/dev/nvidia-uvm rw", "/dev/nvidia-uvm-tools rw",
        f"/dev/nvidia{index} rw",
    ])
    env = lab_environment(host, user)
    assert env["CUDA_VISIBLE_DEVICES"] == uuid(index) == env["NVIDIA_VISIBLE_DEVICES"]
    assert env["NVIDIA_DETECTED"] == "1" and env["ENABLE_GPU_SUPPORT"] == "1"


def test_round_robin_units_get_their_gpu_and_survive_a_hub_restart(host, admin, fake_gpus):
    first, second, third = new_user(admin), new_user(admin), new_user(admin)
    admin.start_server(first)
    admin.start_server(second)
    expect_gpu(host, first, 0)
    expect_gpu(host, second, 1)

    host.exec("systemctl", "restart", "jupyterhub")
    admin.wait_hub()
    assignments = admin.api("GET", "gpus").json()["assignments"]
    assert assignments[lab_unit(first)] == [0] and assignments[lab_unit(second)] == [1]

    admin.start_server(third)
    expect_gpu(host, third, 2)  # the round went on where it was
    admin.stop_server(first)
    fourth = new_user(admin)
    admin.start_server(fourth)
    expect_gpu(host, fourth, 0)  # GPU 0 was freed, 3 never used: least loaded, lowest index
    for user in (second, third, fourth):
        admin.stop_server(user)
    assert admin.api("GET", "gpus").json()["assignments"] == {}


def test_hub_with_the_gpu_drop_in_stays_hardened(host):
    """The gpu role's drop-in for a host with 4 GPUs keeps exposure <= 4.0."""
    template = (REPO / "ansible/roles/gpu/templates/50-gpu.conf.j2").read_text()
    body = re.sub(r"\{%.*?%\}\n", "", template).replace(
        "DeviceAllow={{ node }} rw\n",
        "".join(f"DeviceAllow=/dev/nvidia{i} rw\n" for i in range(FAKE_GPUS)))
    path = "/etc/systemd/system/jupyterhub.service.d/50-gpu.conf"
    host.exec("mkdir", "-p", "/etc/systemd/system/jupyterhub.service.d")
    host.exec("tee", path, input=body)
    try:
        host.exec("systemctl", "daemon-reload")
        score, out = host.exposure("jupyterhub.service")
        print(f"\njupyterhub.service exposure with the GPU drop-in: {score}")
        assert score <= 4.0, out[-3000:]
        assert "DevicePolicy=closed" in host.exec("systemctl", "cat", "jupyterhub").stdout
    finally:
        host.exec("rm", "-f", path)
        host.exec("systemctl", "daemon-reload")
