"""Labs as Slurm jobs (hub_ext.cluster): the command lines, the parsers, the
account export and the spawner's start/poll/stop against a fake Slurm."""

import asyncio
import json
import os
import shlex
import time
from pathlib import Path

import pytest
import yaml
from tornado import web
from traitlets.config import Config

from fake_nvml import FakeNvml, fake_gpu
from hub_ext.cluster import accounts_export, gres, slurm
from hub_ext.cluster.spawner import PORT_FILE_VARIABLE, SlurmLabSpawner, job_poll_delays, read_port_file
from hub_ext.gpu.nvml import detect
from hub_ext.process import CommandResult

REQUEST = slurm.JobRequest(job_name="jupyter-jh-alice", partition="labs", uid=1001, gid=1001,
                           workdir="/srv/jupyterhub/users/jh-alice/workspace", mem_limit="2G", cpu_limit=1.5)


@pytest.mark.parametrize("limit, mib", [("512M", 512), ("2G", 2048), ("1T", 1048576), ("1048576", 1),
                                        ("1500K", 2), ("3g", 3072)])
def test_memory_limits_become_mebibytes_rounded_up(limit, mib):
    assert slurm.mem_mib(limit) == mib


def test_a_memory_limit_slurm_cannot_take_is_refused():
    with pytest.raises(ValueError, match="digits with an optional"):
        slurm.mem_mib("2 GB")


def test_the_job_is_submitted_as_the_user_with_the_labs_limits():
    argv = slurm.sbatch_argv(REQUEST)
    assert argv[:2] == ["sbatch", "--parsable"]
    for option in ["--uid=1001", "--gid=1001", "--partition=labs", "--job-name=jupyter-jh-alice",
                   "--chdir=/srv/jupyterhub/users/jh-alice/workspace", "--mem=2048M",
                   "--cpus-per-task=2", "--export=ALL", "--no-requeue"]:
        assert option in argv


def test_without_limits_the_job_asks_for_none():
    argv = slurm.sbatch_argv(slurm.JobRequest("j", "labs", 1, 1, "/w"))
    assert not [a for a in argv if a.startswith(("--mem", "--cpus-per-task"))]


def test_the_batch_script_execs_the_lab_with_its_arguments_quoted():
    script = slurm.batch_script(["/opt/jupyterlab/bin/jupyterhub-singleuser", "--arg=a b"], {"X": "1;rm"})
    lines = script.splitlines()
    assert lines[0] == "#!/bin/sh"
    assert "export X='1;rm'" in lines
    # under NoNewPrivileges, as a lab unit without sudo on one host
    assert lines[-1] == "exec setpriv --no-new-privs /opt/jupyterlab/bin/jupyterhub-singleuser '--arg=a b'"


@pytest.mark.parametrize("out, job", [("42\n", "42"), ("42;cluster\n", "42")])
def test_the_job_id_is_read_from_sbatch(out, job):
    assert slurm.parse_job_id(out) == job


def test_sbatch_output_without_a_job_id_is_an_error():
    with pytest.raises(slurm.SlurmError, match="no job id"):
        slurm.parse_job_id("sbatch: error: something\n")


def test_squeue_lines_give_state_node_and_reason():
    running = slurm.parse_status("RUNNING|th-w1|None\n")
    assert (running.state, running.node, running.running, running.waiting) == ("RUNNING", "th-w1", True, False)
    pending = slurm.parse_status("PENDING||Resources\n")
    assert (pending.waiting, pending.reason) == (True, "Resources")
    assert slurm.parse_status("\n") is None


PASSWD = """root:x:0:0:root:/root:/bin/bash
jh-alice:x:1001:1001::/home/jh-alice:/bin/bash
jh-bob:x:1002:1002::/home/jh-bob:/bin/bash
nginx:x:105:107::/var/www:/usr/sbin/nologin
"""
GROUP = """root:x:0:
jupyterhub-users:x:999:jh-alice,jh-bob
jh-alice:x:1001:
jh-bob:x:1002:
docker:x:998:jh-alice
nginx:x:107:
"""


def test_only_the_platform_accounts_their_own_groups_and_the_platform_group_are_exported():
    passwd, group = accounts_export.platform_entries(PASSWD, GROUP, "jupyterhub-users")
    assert passwd == ["jh-alice:x:1001:1001::/home/jh-alice:/bin/bash",
                      "jh-bob:x:1002:1002::/home/jh-bob:/bin/bash"]
    assert group == ["jupyterhub-users:x:999:jh-alice,jh-bob", "jh-alice:x:1001:", "jh-bob:x:1002:"]


def test_no_platform_group_exports_nothing():
    assert accounts_export.platform_entries(PASSWD, "root:x:0:\n", "jupyterhub-users") == ([], [])


def test_the_export_replaces_both_files(tmp_path):
    etc, out = tmp_path / "etc", tmp_path / "accounts"
    etc.mkdir()
    out.mkdir()
    (etc / "passwd").write_text(PASSWD)
    (etc / "group").write_text(GROUP)
    (out / "passwd").write_text("stale:x:1:1::/:/bin/sh\n")
    assert accounts_export.export_accounts(str(out), "jupyterhub-users", etc=str(etc)) == 2
    assert "stale" not in (out / "passwd").read_text()
    assert (out / "group").read_text().startswith("jupyterhub-users:x:999:")
    assert oct((out / "passwd").stat().st_mode & 0o777) == "0o644"


def sandbox_of(script: str) -> dict | None:
    """The sandbox spec in a batch script's exec line (None: no sandbox)."""
    argv = shlex.split(script.splitlines()[-1])
    launcher = next((i for i, a in enumerate(argv) if a.endswith("lab_sandbox.py")), None)
    return None if launcher is None else json.loads(argv[launcher + 1])


def on_storage(in_lab: str, script: str) -> str:
    """Where a path of the lab is on the shared storage: through the sandbox's binds."""
    spec = sandbox_of(script)
    for step in reversed(spec["steps"] if spec else []):
        if step["op"] == "bind" and (in_lab == step["path"] or in_lab.startswith(step["path"] + "/")):
            return step["source"] + in_lab[len(step["path"]):]
    return in_lab


class FakeSlurm:
    """sbatch, squeue and scancel of a cluster whose one job runs on th-w1 after
    ``pending`` squeue calls, until scancel; once running, its lab reports
    ``lab_port`` in the file the job's environment names (None: never)."""

    def __init__(self, pending=1, submit_rc=0, lab_port=4242):
        self.calls, self.pending, self.submit_rc, self.lab_port = [], pending, submit_rc, lab_port
        self.state = None
        self.port_file = None

    async def __call__(self, argv, stdin=None, env=None):
        self.calls.append((list(argv), stdin, env))
        tool = argv[0]
        if tool == "sbatch":
            if self.submit_rc:
                return CommandResult(tuple(argv), self.submit_rc, "", "sbatch: error: Invalid partition")
            self.state = "PENDING"
            self.port_file = Path(on_storage(env[PORT_FILE_VARIABLE], stdin))
            return CommandResult(tuple(argv), 0, "77\n")
        if tool == "scancel":
            self.state = None
            return CommandResult(tuple(argv), 0)
        assert tool == "squeue"
        if self.state is None:
            return CommandResult(tuple(argv), 1, "", "slurm_load_jobs error: Invalid job id specified")
        if self.state == "PENDING":
            if self.pending:
                self.pending -= 1
                return CommandResult(tuple(argv), 0, "PENDING||Resources\n")
            self.state = "RUNNING"
            if self.lab_port:
                self.port_file.parent.mkdir(parents=True, exist_ok=True)
                self.port_file.write_text(f"{self.lab_port}\n")
        return CommandResult(tuple(argv), 0, "RUNNING|th-w1|None\n")


@pytest.fixture
def slurm_spawner(make_spawner, tmp_path):
    spawner = make_spawner(spawner_class=SlurmLabSpawner)
    spawner.slurm_run = FakeSlurm()
    spawner.exported = []
    spawner.export_accounts = lambda d, g, privileged: spawner.exported.append((d, g, privileged)) or 1
    spawner.job_poll_interval = 0.1
    return spawner


def test_a_lab_starts_as_the_users_job_and_is_reached_on_its_worker(slurm_spawner):
    ip, port = asyncio.run(slurm_spawner.start())
    # the worker and the port the lab itself bound and reported
    assert (ip, port) == ("th-w1", 4242) and slurm_spawner.port == 4242
    # the account was exported for the workers before the job was submitted
    assert slurm_spawner.exported == [("/srv/jupyterhub/accounts", "jupyterhub-users", ("docker",))]
    argv, script, env = slurm_spawner.slurm_run.calls[0]
    assert argv[0] == "sbatch"
    assert script.splitlines()[-1].startswith("exec ")
    assert env["JUPYTERHUB_SERVICE_URL"].startswith("http://0.0.0.0:")  # the port there is not used
    # in the sandbox (on by default) HOME is the in-lab path, as on one host
    assert env["HOME"] == "/home/jh-alice"
    assert env[PORT_FILE_VARIABLE] == "/home/jh-alice/.jupyterhub-lab-port"
    assert slurm_spawner.get_state()["job_id"] == "77"
    assert asyncio.run(slurm_spawner.poll()) is None


def test_a_refused_submission_is_an_error_with_slurms_message(slurm_spawner):
    slurm_spawner.slurm_run = FakeSlurm(submit_rc=1)
    with pytest.raises(Exception, match="Invalid partition"):
        asyncio.run(slurm_spawner.start())


def test_stop_cancels_the_job_and_poll_then_reports_it_stopped(slurm_spawner):
    asyncio.run(slurm_spawner.start())
    asyncio.run(slurm_spawner.stop())
    assert ["scancel", "77"] in [c[0] for c in slurm_spawner.slurm_run.calls]
    assert asyncio.run(slurm_spawner.poll()) == 1


def test_a_job_still_waiting_at_start_timeout_is_cancelled_with_slurms_reason(slurm_spawner):
    slurm_spawner.slurm_run = FakeSlurm(pending=10**6)
    slurm_spawner.start_timeout = 1
    with pytest.raises(Exception, match="Resources"):
        asyncio.run(slurm_spawner.start())
    assert slurm_spawner.slurm_run.calls[-1][0] == ["scancel", "77"]


def test_a_restarted_hub_knows_the_job_from_the_state(make_spawner):
    spawner = make_spawner(spawner_class=SlurmLabSpawner)
    spawner.load_state({"job_id": "77"})
    assert spawner.job_id == "77"
    spawner.clear_state()
    assert spawner.job_id == ""


@pytest.mark.parametrize("reason, said", [
    ("Resources", "every worker is busy (Slurm: Resources)"),
    ("ReqNodeNotAvail, UnavailableNodes:th-w1",
     "no worker is available (down or drained) (Slurm: ReqNodeNotAvail, UnavailableNodes:th-w1)"),
    ("QOSMaxJobsPerUserLimit", "Slurm: QOSMaxJobsPerUserLimit"),
    ("", "Slurm: no reason given"),
])
def test_a_waiting_jobs_reason_is_explained_to_the_user(reason, said):
    assert slurm.waiting_reason(reason) == said


def test_the_spawn_page_shows_each_step_with_slurms_reason_while_the_job_waits(slurm_spawner):
    slurm_spawner.slurm_run = FakeSlurm(pending=3)

    async def start_and_watch():
        events = []

        async def watch():
            async for event in slurm_spawner.progress():
                events.append(event)

        watcher = asyncio.ensure_future(watch())
        await slurm_spawner.start()
        await asyncio.sleep(2 * slurm_spawner.job_poll_interval)  # the last step reaches the page
        watcher.cancel()
        return events

    events = asyncio.run(start_and_watch())
    assert [e["message"] for e in events] == [
        "Submitted as Slurm job 77",
        "Waiting for a worker: every worker is busy (Slurm: Resources); Slurm job 77",
        "Running on th-w1; starting the lab",
    ]
    assert [e["progress"] for e in events] == sorted(e["progress"] for e in events)


def test_a_job_waiting_until_the_hubs_timeout_is_cancelled_before_it(slurm_spawner):
    # the spawner gives up QUEUE_DEADLINE_MARGIN before JupyterHub's own
    # start_timeout, so the user reads why instead of a bare timeout
    slurm_spawner.slurm_run = FakeSlurm(pending=10**6)
    slurm_spawner.start_timeout = 6
    started = time.monotonic()
    with pytest.raises(web.HTTPError) as refused:
        asyncio.run(slurm_spawner.start())
    assert time.monotonic() - started < slurm_spawner.start_timeout
    assert refused.value.status_code == 503
    assert "every worker is busy (Slurm: Resources)" in refused.value.log_message


def test_the_slurm_roles_drop_in_sets_only_what_depends_on_the_inventory():
    # SlurmLabSpawner's settings are platform settings (hub_ext/settings.py,
    # tests/unit/test_settings.py): the role's drop-in sets none of them, only
    # the spawner class, the relay's URL and the workers' GPU count
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    from hub_ext.settings import settings_of

    role = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "slurm"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    tagged = {s.name for s in settings_of([SlurmLabSpawner])}
    assert {"partition", "accounts_dir", "lab_sandbox"} <= tagged
    changed = {**defaults, "ansible_managed": "managed", "ansible_hostname": "hub", "slurm_worker_gpus": {"w1": 2}}
    template = (role / "templates" / "60-cluster.py.j2").read_text()
    code = Templar(loader=DataLoader(), variables=changed).template(template)
    c = Config()
    exec(compile(code, "60-cluster.py", "exec"), {"get_config": lambda: c})
    assert set(c.SlurmLabSpawner) == {"hub_connect_url", "worker_gpus"}
    assert c.SlurmLabSpawner.worker_gpus == 2  # from the workers' facts, not a setting


# --- GPUs as GRES (hub_ext.cluster.gres), with the fake NVML ---------------------


def test_a_workers_gpus_found_by_nvml_become_its_gres_lines():
    # each GPU by its device file (its minor number, not NVML's index), in NVML's order
    detection = detect(FakeNvml([fake_gpu(0, minor=7), fake_gpu(1, minor=3)]))
    assert gres.worker_gres("th-w1", detection) == {
        "count": 2,
        "gres_conf": ["NodeName=th-w1 Name=gpu File=/dev/nvidia7", "NodeName=th-w1 Name=gpu File=/dev/nvidia3"],
        "errors": [],
    }


def test_a_gpu_nvml_cannot_read_is_left_out_and_named():
    detection = detect(FakeNvml([fake_gpu(0), fake_gpu(1)], fail_at=1))
    found = gres.worker_gres("th-w1", detection)
    assert found["count"] == 1 and found["gres_conf"] == ["NodeName=th-w1 Name=gpu File=/dev/nvidia0"]
    assert "GPU is lost" in " ".join(found["errors"])


def test_a_worker_without_nvml_has_no_gres(capsys):
    assert gres.main(["th-w1", "--nvml-module", "no_such_nvml_module"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert (found["count"], found["gres_conf"]) == (0, [])
    assert "no_such_nvml_module" in found["errors"][0]


@pytest.mark.parametrize("policy, groups, counts, devices, gpus", [
    ("all", [], {}, {}, 4),
    ("round-robin", [], {}, {}, 1),
    ("group", ["ml"], {"ml": 2}, {}, 2),
    ("group", ["ml"], {}, {"ml": [0, 1, 2]}, 3),
    ("group", ["other"], {"ml": 2}, {}, 0),
])
def test_the_gpu_policy_becomes_the_jobs_gpu_count(policy, groups, counts, devices, gpus):
    assert gres.lab_gpu_count(policy, 4, groups, devices, counts) == gpus


def test_a_lab_on_a_gpu_cluster_asks_slurm_for_its_gpus(make_spawner):
    spawner = make_spawner(spawner_class=SlurmLabSpawner, groups=["ml"], extra_config=Config(
        {"GpuSupport": {"policy": "group", "group_counts": {"ml": 2}}, "SlurmLabSpawner": {"worker_gpus": 4}}))
    assert "--gres=gpu:2" in slurm.sbatch_argv(spawner.job_request(1001, 1001))
    env = spawner.job_environment({"CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": "void", "X": "1"})
    # Slurm sets CUDA_VISIBLE_DEVICES for the GPUs it allocates: the hub's (none) must not hide them
    assert "CUDA_VISIBLE_DEVICES" not in env and "NVIDIA_VISIBLE_DEVICES" not in env
    assert (env["ENABLE_GPU_SUPPORT"], env["X"]) == ("1", "1")


@pytest.mark.parametrize("config", [{"SlurmLabSpawner": {"worker_gpus": 0}},
                                    {"SlurmLabSpawner": {"worker_gpus": 4}, "GpuSupport": {"mode": 0}}])
def test_without_gpus_on_the_workers_or_with_gpus_off_a_lab_asks_for_none(make_spawner, config):
    spawner = make_spawner(spawner_class=SlurmLabSpawner, extra_config=Config(config))
    assert not [a for a in slurm.sbatch_argv(spawner.job_request(1001, 1001)) if a.startswith("--gres")]
    assert spawner.job_environment({"CUDA_VISIBLE_DEVICES": ""})["CUDA_VISIBLE_DEVICES"] == ""


# --- the lab's port: bound by the lab, reported in the user's home ---------------


def test_a_stale_report_is_removed_before_the_job_and_the_new_one_is_awaited(slurm_spawner):
    slurm_spawner.port_file.parent.mkdir(parents=True, exist_ok=True)
    slurm_spawner.port_file.write_text("1111\n")  # an earlier lab's
    slurm_spawner.slurm_run = FakeSlurm(lab_port=None)
    slurm_spawner.http_timeout = 1
    with pytest.raises(web.HTTPError, match="reported no port"):
        asyncio.run(slurm_spawner.start())
    assert slurm_spawner.slurm_run.calls[-1][0] == ["scancel", "77"]
    # the job was told where to report, in the user's own home directory
    _, script, env = slurm_spawner.slurm_run.calls[0]
    assert on_storage(env[PORT_FILE_VARIABLE], script) == str(slurm_spawner.port_file)
    assert slurm_spawner.port_file.parent.name == "home"


def test_the_port_file_is_read_without_following_links_or_blocking(tmp_path):
    report = tmp_path / "port"
    assert read_port_file(report) is None
    report.write_text("8888\n")
    assert read_port_file(report) == 8888
    for junk in ("", "0", "70000", "12ab", "-1"):
        report.write_text(junk)
        assert read_port_file(report) is None, junk
    secret = tmp_path / "secret"
    secret.write_text("4321\n")
    link = tmp_path / "link"
    link.symlink_to(secret)
    assert read_port_file(link) is None
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert read_port_file(fifo) is None  # returns at once: a FIFO never blocks the hub


def render_slurm_conf(worker_gpus: dict) -> list[str]:
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    role = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "slurm"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    workers = sorted(worker_gpus)
    hostvars = {w: {"ansible_hostname": f"th-{w}", "ansible_processor_vcpus": 8, "ansible_memtotal_mb": 65536}
                for w in workers}
    hostvars["hub"] = {"ansible_hostname": "th-hub"}
    variables = {**defaults, "ansible_managed": "managed", "groups": {"workers": workers, "all": ["hub", *workers]},
                 "hostvars": hostvars, "slurm_controller": "hub", "slurm_worker_gpus": worker_gpus}
    return Templar(loader=DataLoader(), variables=variables).template(
        (role / "templates" / "slurm.conf.j2").read_text()).splitlines()


def test_slurm_conf_offers_each_workers_gpus_as_gres():
    conf = render_slurm_conf({"w1": 2, "w2": 0})
    assert "GresTypes=gpu" in conf
    nodes = {line.split()[0]: line for line in conf if line.startswith("NodeName=")}
    assert "Gres=gpu:2" in nodes["NodeName=th-w1"].split()
    assert "Gres" not in nodes["NodeName=th-w2"]


def test_slurm_conf_of_a_cluster_without_gpus_names_no_gres():
    conf = render_slurm_conf({"w1": 0})
    assert not [line for line in conf if "Gres" in line]
    assert "SlurmdTimeout=60" in conf  # slurm_worker_timeout's default


def test_squeue_is_asked_soon_after_a_submission_then_less_and_less_often():
    delays = job_poll_delays(1.0)
    assert [next(delays) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert next(job_poll_delays(0.05)) == 0.05  # never more than the setting


def test_waiting_for_the_port_reads_the_report_often_and_asks_slurm_seldom(slurm_spawner):
    slurm = slurm_spawner.slurm_run = FakeSlurm(lab_port=None)
    slurm.state = "RUNNING"
    slurm_spawner.job_id = "77"
    slurm_spawner.ready_poll_interval = 0.01
    slurm_spawner.job_poll_interval = 1.0
    report = slurm_spawner.port_file
    report.parent.mkdir(parents=True, exist_ok=True)

    async def scenario():
        async def lab_reports():
            await asyncio.sleep(0.5)
            report.write_text("4242\n")

        reporting = asyncio.create_task(lab_reports())
        port = await slurm_spawner.wait_for_port("th-w1")
        await reporting
        return port

    assert asyncio.run(scenario()) == 4242
    # squeue at 0, 0.1, 0.3 (and 0.7) s, not at each of the ~50 reads of the report
    squeues = [argv for argv, _, _ in slurm.calls if argv[0] == "squeue"]
    assert 2 <= len(squeues) <= 4, squeues
