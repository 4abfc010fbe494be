"""hub_ext.gpu (nvml, policy, usage, service) with a fake NVML (tests/fake_nvml.py): detection, modes, policies,
unit properties and environment, usage per user, and the spawner's use of them."""

from __future__ import annotations

import asyncio
import re
import shlex
import sys
from types import SimpleNamespace

import pytest
from systemdspawner import systemd
from traitlets import TraitError
from traitlets.config import Config

from fake_nvml import FakeNvml, NVMLError, NVMLError_LibraryNotFound, fake_gpu
from hub_ext.gpu.nvml import NvmlUnavailable, detect, load_nvml
from hub_ext.gpu.policy import (
    MODE_AUTO,
    MODE_OFF,
    MODE_ON,
    AssignmentBook,
    GpuRequiredError,
    choose_gpus,
    lab_environment,
    resolve_mode,
    unit_properties,
)
from hub_ext.gpu.service import GpuSupport
from hub_ext.gpu.usage import gpu_usage, unit_of_cgroup, usage_by_user

from .fakes import FakeSystemctl


def fake(n=0, **kw) -> FakeNvml:
    return FakeNvml([fake_gpu(i) for i in range(n)], **kw)


# --- detection and modes ---


@pytest.mark.parametrize("count", [0, 1, 4])
def test_detect_lists_every_gpu(count):
    nvml = fake(count)
    d = detect(nvml)
    assert [g.index for g in d.gpus] == list(range(count))
    assert d.errors == () and d.driver_version == "580.00.00"
    if count:
        g = d.gpus[-1]
        assert g.uuid == f"GPU-00000000-0000-0000-0000-{count - 1:012d}"
        assert g.name == "NVIDIA Fake GPU"  # bytes from old pynvml decoded
        assert g.memory_total == 16 * 1024**3 and g.device == f"/dev/nvidia{count - 1}"
    assert nvml.initialised == 0  # shut down again
    assert resolve_mode(MODE_AUTO, d) is (count > 0)
    assert resolve_mode(MODE_OFF, d) is False


def test_device_node_follows_the_minor_number_not_the_index():
    d = detect(FakeNvml([fake_gpu(0, minor=3)]))
    assert d.gpus[0].device == "/dev/nvidia3"


def test_nvml_library_missing_resolves_auto_to_off_and_on_to_an_error():
    d = detect(fake(init_error=NVMLError_LibraryNotFound("NVML Shared Library Not Found")))
    assert d.gpus == ()
    assert d.errors == ("NVML init failed: NVMLError_LibraryNotFound: NVML Shared Library Not Found",)
    assert resolve_mode(MODE_AUTO, d) is False
    with pytest.raises(GpuRequiredError, match=r"forced on.*Library Not Found"):
        resolve_mode(MODE_ON, d)


def test_python_module_missing():
    with pytest.raises(NvmlUnavailable, match="no_such_nvml_module"):
        load_nvml("no_such_nvml_module")


def test_error_mid_enumeration_skips_that_gpu_and_keeps_the_others():
    d = detect(fake(4, fail_at=2))
    assert [g.index for g in d.gpus] == [0, 1, 3]
    assert d.errors == ("GPU 2 skipped: NVMLError: GPU is lost",)
    assert resolve_mode(MODE_ON, d) is True


def test_mode_on_without_gpu_fails():
    with pytest.raises(GpuRequiredError, match="no device"):
        resolve_mode(MODE_ON, detect(fake(0)))


def support(nvml, monkeypatch, **config) -> GpuSupport:
    monkeypatch.setitem(sys.modules, "fake_nvml_unit", nvml)
    c = Config()
    c.GpuSupport.nvml_module = "fake_nvml_unit"
    for key, value in config.items():
        setattr(c.GpuSupport, key, value)
    return GpuSupport.instance(config=c)


def test_support_mode_off_never_touches_nvml(monkeypatch):
    nvml = fake(2)
    s = support(nvml, monkeypatch, mode=0)
    assert s.start() is False and nvml.calls == 0
    assert s.assign("jupyter-a-singleuser", []) == ()
    assert s.usage() == {"enabled": False, "gpus": [], "users": {}, "error": None}


def test_support_auto_without_pynvml_logs_and_stays_off(caplog):
    c = Config()
    c.GpuSupport.nvml_module = "no_such_nvml_module"
    s = GpuSupport.instance(config=c)
    with caplog.at_level("INFO"):
        assert s.start() is False
    assert "GPU support off: no NVIDIA GPU found (Python module 'no_such_nvml_module'" in caplog.text
    assert "Traceback" not in caplog.text


def test_support_forced_on_without_gpu_raises(monkeypatch):
    s = support(fake(0), monkeypatch, mode=1)
    with pytest.raises(GpuRequiredError):
        s.start()


def test_support_detects_once(monkeypatch):
    nvml = fake(2)
    s = support(nvml, monkeypatch)
    assert s.start() and s.start()
    assert nvml.calls == 1


# --- policies ---


def test_policy_all():
    assert choose_gpus("all", [0, 1, 2, 3], load={0: 5}) == (0, 1, 2, 3)


def test_policy_round_robin_takes_the_least_loaded_lowest_index_first():
    book = AssignmentBook()
    got = []
    for n in range(6):
        key = f"server-{n}"
        indices = choose_gpus("round-robin", [0, 1, 2, 3], load=book.load())
        book.hold(key, indices)
        got.append(indices)
    assert got == [(0,), (1,), (2,), (3,), (0,), (1,)]
    book.release("server-2")  # GPU 2 is free again
    assert choose_gpus("round-robin", [0, 1, 2, 3], load=book.load()) == (2,)


def test_policy_group():
    kw = {"group_devices": {"ml": [2, 3], "vision": [3]}, "group_counts": {"ml": 1, "big": 4}}
    choose = choose_gpus
    assert choose("group", [0, 1, 2, 3], groups=["staff"], **kw) == ()  # no GPU group
    assert choose("group", [0, 1, 2, 3], groups=["ml"], **kw) == (2,)
    assert choose("group", [0, 1, 2, 3], groups=["ml"], load={2: 1}, **kw) == (3,)
    assert choose("group", [0, 1, 2, 3], groups=["vision"], **kw) == (3,)  # count = its list
    assert choose("group", [0, 1, 2, 3], groups=["big"], **kw) == (0, 1, 2, 3)  # any GPU
    assert choose("group", [0, 1], groups=["ml", "vision"], **kw) == ()  # indices not present
    assert choose("group", [0, 1, 2, 3], groups=["ml", "vision"], load={2: 1}, **kw) == (3,)


def test_unknown_policy():
    with pytest.raises(ValueError, match="policy"):
        choose_gpus("random", [0])


# --- unit properties and environment ---


GPUS = detect(fake(4)).gpus


def test_unit_properties_for_each_case():
    assert unit_properties(False, GPUS) == {}
    assert unit_properties(True, []) == {"DevicePolicy": "closed"}  # no NVIDIA node at all
    assert unit_properties(True, [GPUS[3], GPUS[1]]) == {
        "DevicePolicy": "closed",
        "DeviceAllow": [
            "/dev/nvidiactl rw", "/dev/nvidia-uvm rw", "/dev/nvidia-uvm-tools rw",
            "/dev/nvidia1 rw", "/dev/nvidia3 rw",
        ],
    }
    assert not any("char-" in line for line in unit_properties(True, GPUS)["DeviceAllow"])


def test_lab_environment():
    assert lab_environment(False, False, []) == {
        "NVIDIA_DETECTED": "0", "JUPYTERHUB_GPU_ENABLED": "0",
        "ENABLE_GPU_SUPPORT": "0", "ENABLE_GPUSTAT": "0",
    }
    env = lab_environment(True, True, [GPUS[2], GPUS[0]])
    uuids = f"{GPUS[0].uuid},{GPUS[2].uuid}"
    assert env == {
        "NVIDIA_DETECTED": "1", "JUPYTERHUB_GPU_ENABLED": "1",
        "ENABLE_GPU_SUPPORT": "1", "ENABLE_GPUSTAT": "1",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_VISIBLE_DEVICES": uuids, "NVIDIA_VISIBLE_DEVICES": uuids,
    }
    none = lab_environment(True, True, [])
    assert none["ENABLE_GPU_SUPPORT"] == "0" and none["CUDA_VISIBLE_DEVICES"] == ""
    assert none["NVIDIA_VISIBLE_DEVICES"] == "void"


# --- usage per user ---

CGROUPS = {
    101: "0::/system.slice/jupyter-alice-singleuser.service\n",
    102: "12:devices:/system.slice/jupyter-bob-singleuser.service\n"
         "1:name=systemd:/system.slice/jupyter-bob-singleuser.service\n",
    103: "0::/user.slice/user-0.slice/session-3.scope\n",
    104: "0::/system.slice/jupyter-alice-singleuser.service/kernel.scope\n",
}


def test_unit_of_cgroup():
    assert unit_of_cgroup(CGROUPS[101]) == "jupyter-alice-singleuser.service"
    assert unit_of_cgroup(CGROUPS[102]) == "jupyter-bob-singleuser.service"
    assert unit_of_cgroup(CGROUPS[103]) is None
    assert unit_of_cgroup(CGROUPS[104]) == "jupyter-alice-singleuser.service"
    assert unit_of_cgroup("") is None


def test_usage_maps_process_memory_to_users_through_cgroups():
    nvml = FakeNvml([
        fake_gpu(0, memory_used=7 * 2**30, utilization=80,
                 processes={101: 2 * 2**30, 103: 2**30, 105: None}),
        fake_gpu(1, memory_used=3 * 2**30, utilization=10, processes={102: 2**30, 104: 2**30}),
    ])
    units = {"jupyter-alice-singleuser.service": "alice", "jupyter-bob-singleuser.service": "bob"}
    usage = gpu_usage(nvml, units=units, read_cgroup=CGROUPS.get)
    assert [(u.index, u.utilization_gpu, u.memory_used) for u in usage] == [
        (0, 80, 7 * 2**30), (1, 10, 3 * 2**30)]
    procs = {p.pid: (p.unit, p.user, p.memory_used) for u in usage for p in u.processes}
    assert procs == {
        101: ("jupyter-alice-singleuser.service", "alice", 2 * 2**30),
        103: (None, None, 2**30),  # not a lab
        105: (None, None, None),  # gone: no cgroup; memory not reported
        102: ("jupyter-bob-singleuser.service", "bob", 2**30),
        104: ("jupyter-alice-singleuser.service", "alice", 2**30),
    }
    assert usage_by_user(usage) == {
        "alice": {"memory_used": 3 * 2**30, "gpus": [0, 1], "processes": 2},
        "bob": {"memory_used": 2**30, "gpus": [1], "processes": 1},
    }
    assert nvml.initialised == 0


def test_usage_reports_a_broken_gpu_and_goes_on():
    nvml = fake(2, fail_at=0)
    usage = gpu_usage(nvml, read_cgroup=CGROUPS.get)
    assert usage[0].error == "NVMLError: GPU is lost" and usage[1].error is None


def test_support_usage_reports_nvml_failure(monkeypatch):
    nvml = fake(1)
    s = support(nvml, monkeypatch)
    assert s.start()
    nvml.init_error = NVMLError("Driver Not Loaded")
    snapshot = s.usage({})
    assert snapshot["enabled"] and snapshot["error"] == "NVMLError: Driver Not Loaded"


# --- the settings: GpuSupport's traits (platform_config.json) ---


def test_gpu_settings_from_the_deployed_file(platform_config):
    platform_config["GpuSupport"] = {"mode": 1, "policy": "group", "group_devices": {"ml": [0, 1]},
                                     "group_counts": {"ml": 1}}
    s = GpuSupport(config=Config(platform_config))
    assert (s.mode, s.policy) == (1, "group")
    assert s.group_devices == {"ml": [0, 1]} and s.group_counts == {"ml": 1}
    assert GpuSupport().mode == 2 and GpuSupport().policy == "all"  # the defaults


@pytest.mark.parametrize("trait, value", [
    ("mode", 3),
    ("mode", "1"),
    ("policy", "random"),
    ("group_devices", {"ml": []}),
    ("group_devices", {"ml": [-1]}),
    ("group_counts", {"ml": 0}),
])
def test_bad_gpu_settings_name_the_trait(trait, value):
    with pytest.raises(TraitError, match=trait):
        GpuSupport(**{trait: value})


def test_policy_group_needs_a_map(platform_config):
    from hub_ext.settings import check_combinations

    platform_config["GpuSupport"]["policy"] = "group"
    with pytest.raises(ValueError, match="jupyterhub_gpu_group_devices"):
        check_combinations(Config(platform_config))
    platform_config["GpuSupport"]["group_counts"] = {"ml": 1}
    check_combinations(Config(platform_config))


def test_forced_gpus_and_isolate_devices_conflict(platform_config):
    from hub_ext.settings import check_combinations

    platform_config["GpuSupport"]["mode"] = 1
    platform_config["PlatformSpawner"]["isolate_devices"] = True
    c = Config(platform_config)
    with pytest.raises(ValueError, match="PrivateDevices hides the GPUs"):
        check_combinations(c)
    c.PlatformSpawner.isolate_devices = False
    check_combinations(c)


# --- the spawner: unit properties, env file, state across a hub restart ---


@pytest.fixture
def gpu_spawner(make_spawner, monkeypatch, tmp_path):
    systemctl = FakeSystemctl()
    monkeypatch.setattr(systemd.asyncio, "create_subprocess_exec", systemctl)
    monkeypatch.setattr(systemd, "RUN_ROOT", str(tmp_path / "run"))

    def make(name, nvml, groups=(), **gpu_settings):
        monkeypatch.setitem(sys.modules, "fake_nvml_unit", nvml)
        extra = Config()
        extra.GpuSupport.update(gpu_settings)
        extra.GpuSupport.nvml_module = "fake_nvml_unit"
        spawner = make_spawner(name=name, extra_config=extra)
        spawner.user.groups = [SimpleNamespace(name=g) for g in groups]
        return spawner

    def started(spawner):
        systemctl.calls.clear()
        systemctl.started = False
        asyncio.run(spawner.start())
        argv = systemctl.systemd_run()
        properties = [a.removeprefix("--property=") for a in argv if a.startswith("--property=")]
        env_file = tmp_path / "run" / spawner.unit_name / f"{spawner.unit_name}.env"
        # systemd EnvironmentFile syntax, as SystemdSpawner writes it (shell quoting)
        env = {k: "".join(shlex.split(v)) for k, v in
               (line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)}
        return properties, env

    make.started = started
    return make


def device_lines(properties):
    return [p for p in properties if p.startswith(("DeviceAllow=", "DevicePolicy=", "PrivateDevices="))]


def test_spawn_without_gpus_has_no_device_properties(gpu_spawner):
    spawner = gpu_spawner("alice", fake(0))
    properties, env = gpu_spawner.started(spawner)
    assert device_lines(properties) == []
    assert env["NVIDIA_DETECTED"] == "0" and env["ENABLE_GPU_SUPPORT"] == "0"
    assert "CUDA_VISIBLE_DEVICES" not in env
    assert spawner.get_state().get("gpu_indices") is None


def test_spawn_policy_all_grants_every_gpu(gpu_spawner):
    spawner = gpu_spawner("alice", fake(2), policy="all")
    properties, env = gpu_spawner.started(spawner)
    assert device_lines(properties) == [
        "DevicePolicy=closed", "DeviceAllow=/dev/nvidiactl rw", "DeviceAllow=/dev/nvidia-uvm rw",
        "DeviceAllow=/dev/nvidia-uvm-tools rw", "DeviceAllow=/dev/nvidia0 rw",
        "DeviceAllow=/dev/nvidia1 rw",
    ]
    assert env["CUDA_VISIBLE_DEVICES"] == f"{GPUS[0].uuid},{GPUS[1].uuid}"
    assert env["ENABLE_GPU_SUPPORT"] == "1" and env["NVIDIA_DETECTED"] == "1"
    assert spawner.get_state()["gpu_indices"] == [0, 1]


def test_granted_gpus_replace_private_devices(gpu_spawner, platform_config):
    platform_config["PlatformSpawner"]["isolate_devices"] = True
    spawner = gpu_spawner("alice", fake(1))
    properties, _ = gpu_spawner.started(spawner)
    assert "PrivateDevices=yes" not in properties and "DevicePolicy=closed" in properties


def test_spawn_policy_group_user_outside_gets_no_nvidia_device(gpu_spawner, platform_config):
    platform_config["PlatformSpawner"]["isolate_devices"] = True
    spawner = gpu_spawner("bob", fake(4), groups=["staff"], policy="group",
                          group_devices={"ml": [1, 2]}, group_counts={"ml": 1})
    properties, env = gpu_spawner.started(spawner)
    # no GPU granted: PrivateDevices stays, DevicePolicy closed, no DeviceAllow at all
    assert device_lines(properties) == ["PrivateDevices=yes", "DevicePolicy=closed"]
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["ENABLE_GPU_SUPPORT"] == "0"


def test_spawn_policy_group_member(gpu_spawner):
    spawner = gpu_spawner("carol", fake(4), groups=["ml"], policy="group",
                          group_devices={"ml": [1, 2]}, group_counts={"ml": 1})
    properties, env = gpu_spawner.started(spawner)
    gpu_nodes = [p for p in properties if re.match(r"DeviceAllow=/dev/nvidia[0-9]", p)]
    assert gpu_nodes == ["DeviceAllow=/dev/nvidia1 rw"]
    assert env["CUDA_VISIBLE_DEVICES"] == GPUS[1].uuid


def test_round_robin_continues_across_a_hub_restart(gpu_spawner):
    nvml = fake(3)
    a = gpu_spawner("alice", nvml, policy="round-robin")
    b = gpu_spawner("bob", nvml, policy="round-robin")
    gpu_spawner.started(a)
    gpu_spawner.started(b)
    assert (a.gpu_indices, b.gpu_indices) == ((0,), (1,))
    saved = {"alice": a.get_state(), "bob": b.get_state()}

    # hub restart: a new process, spawners rebuilt from the database's state
    GpuSupport.clear_instance()
    for name, state in saved.items():
        gpu_spawner(name, nvml, policy="round-robin").load_state(state)
    c = gpu_spawner("carol", nvml, policy="round-robin")
    _, env = gpu_spawner.started(c)
    assert c.gpu_indices == (2,) and env["CUDA_VISIBLE_DEVICES"] == GPUS[2].uuid
    d = gpu_spawner("dave", nvml, policy="round-robin")
    gpu_spawner.started(d)
    assert d.gpu_indices == (0,)

    # a stopped server frees its GPU
    b2 = gpu_spawner("bob", nvml, policy="round-robin")
    b2.load_state(saved["bob"])
    b2.clear_state()
    e = gpu_spawner("erin", nvml, policy="round-robin")
    gpu_spawner.started(e)
    assert e.gpu_indices == (1,)
    assert GpuSupport.instance().book.as_dict() == {
        "jupyter-alice-singleuser": [0], "jupyter-carol-singleuser": [2],
        "jupyter-dave-singleuser": [0], "jupyter-erin-singleuser": [1],
    }
