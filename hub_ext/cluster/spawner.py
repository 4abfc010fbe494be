"""SlurmLabSpawner: the platform's spawner with each lab a Slurm job on a worker.

Everything the hub does before a lab starts stays PlatformSpawner's (the unix
account, the per-user directories on the shared storage, the privilege
groups, the resource profile); the lab itself is a batch job submitted as the
user (hub_ext.cluster.slurm) instead of a transient unit. The account is
exported for the workers first (hub_ext.cluster.accounts_export). The lab
listens on a random port of whichever worker Slurm picked; the proxy routes
to <worker>:<port>, and the lab calls the hub's API through the relay the
slurm role sets up (``hub_connect_url``). docs/cluster.md says what is not
there yet.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from jupyterhub.utils import random_port, url_path_join
from tornado import web
from traitlets import Bool, Float, Integer, Unicode

from hub_ext.cluster import accounts_export, gres, metrics, sandbox, slurm
from hub_ext.gpu.policy import MODE_OFF
from hub_ext.spawner import PlatformSpawner
from hub_ext.storage import layout
from hub_ext.units import readiness

# the lab listens on every address of its worker (the port keeper binds [::] and
# 0.0.0.0 at once): the proxy on the hub host connects to it
LAB_BIND_IP = "0.0.0.0"
# the system directories after the lab's own in a job's $PATH
SYSTEM_PATH = ["/usr/local/bin", "/usr/bin", "/bin"]
# The lab's report of the port it bound (lab/lab_server.py, bind_and_report):
# the variable naming the file, and the file in the user's home directory
PORT_FILE_VARIABLE = "JUPYTERHUB_LAB_PORT_FILE"
PORT_FILE_NAME = ".jupyterhub-lab-port"
# A job still queued this many seconds before the hub's start_timeout is
# cancelled by the spawner, so the user reads Slurm's reason instead of
# JupyterHub's bare "timeout".
QUEUE_DEADLINE_MARGIN = 5.0
# A job usually runs, and its lab reports its port, within a second of the
# submission: squeue is asked again after this many seconds, then twice as
# long each time up to job_poll_interval (slurmctld is not asked 20 times a
# second, a queued lab is still asked about every job_poll_interval).
FIRST_JOB_POLL = 0.1


def job_poll_delays(most: float, first: float = FIRST_JOB_POLL) -> Iterator[float]:
    """The waits between a lab's squeue calls: ``first``, doubling, at most ``most``."""
    delay = min(first, most)
    while True:
        yield delay
        delay = min(delay * 2, most)


class SlurmLabSpawner(PlatformSpawner):
    # Settings: each tagged with the slurm role's variable that sets it (the
    # pattern of hub_ext/settings.py; the role's 60-cluster.py drop-in writes them)
    partition = Unicode("labs", help="Slurm partition every lab is submitted to.").tag(
        config=True, ansible="slurm_partition"
    )

    accounts_dir = Unicode(
        "/srv/jupyterhub/accounts",
        help="""Shared directory where the platform's accounts are exported before
        every submission; the workers resolve them from there (libnss-extrausers).""",
    ).tag(config=True, ansible="slurm_accounts_dir")

    lab_sandbox = Bool(
        True,
        help="""Run each lab on its worker in the platform's sandbox (lab/lab_sandbox.py):
        the per-user directories at the same in-lab paths as on one host, the system
        read-only, private /tmp, /var/tmp and /dev/shm, the lab's own processes only,
        no Slurm submission from inside. Needs unprivileged user namespaces on the
        workers (the slurm role checks). Off: the lab runs in the worker's own view,
        HOME its directory on the shared storage.""",
    ).tag(config=True, ansible="slurm_lab_sandbox")

    worker_gpus = Integer(
        0,
        min=0,
        help="""GPUs of the worker with the most, as NVML found them (the slurm role
        writes it); 0: the cluster has no GPU and labs ask for none.""",
    ).tag(config=True)

    job_poll_interval = Float(
        1.0,
        min=0.1,
        help="""Most seconds between two squeue calls while a lab's job waits to run
        or to report its port (the first come sooner: FIRST_JOB_POLL, doubling).""",
    ).tag(config=True)

    job_name_template = Unicode(
        "jupyter-{UNIXNAME}", help="Slurm job name of a lab ({USERNAME}, {UNIXNAME})."
    ).tag(config=True)

    # the running lab's Slurm job, in the spawner state (a hub restart keeps it)
    job_id: str = ""
    # the progress events of the current start, for the spawn page (progress())
    job_events: list[dict] = []

    # seams for unit tests
    slurm_run = staticmethod(slurm.run)
    export_accounts = staticmethod(accounts_export.export_accounts)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        metrics.track(self)  # its lab in the metrics by worker (hub_ext/cluster/metrics.py)

    def get_state(self):
        state = super().get_state()
        if self.job_id:
            state["job_id"] = self.job_id
        return state

    def load_state(self, state):
        super().load_state(state)
        self.job_id = state.get("job_id", "")

    def clear_state(self):
        super().clear_state()
        self.job_id = ""

    @property
    def job_name(self) -> str:
        return self._expand_user_vars(self.job_name_template)

    @property
    def cluster_gpus_on(self) -> bool:
        """The workers have GPUs and GPU support is not off (the hub host's own
        GPUs do not count: labs run on the workers)."""
        return bool(self.worker_gpus) and self.gpu_support.mode != MODE_OFF

    def gpu_request(self) -> int:
        """GPUs this lab's job asks for: the platform's GPU policy over a worker."""
        if not self.cluster_gpus_on:
            return 0
        support = self.gpu_support
        return gres.lab_gpu_count(support.policy, self.worker_gpus, self.hub_groups,
                                  support.group_devices, support.group_counts)

    @property
    def port_file(self) -> Path:
        """Where the lab reports its port: the user's home directory, where no
        other user can write (as the hub sees it, on the shared storage)."""
        return layout.user_dirs(self.unix_name, self.users_root).home / PORT_FILE_NAME

    @property
    def lab_home(self) -> str:
        """HOME as the lab sees it: the in-lab path in the sandbox, else the
        directory on the shared storage."""
        if self.lab_sandbox:
            return self.home_in_lab
        return str(layout.user_dirs(self.unix_name, self.users_root).home)

    def lab_command(self) -> list[str]:
        """The job's command: the lab's (cmd and args), inside the sandbox when it is on."""
        command = [self._expand_user_vars(c) for c in self.cmd] + [self._expand_user_vars(a) for a in self.get_args()]
        if not self.lab_sandbox:
            return command
        spec = sandbox.sandbox_spec(
            self.unix_name, self.users_root, self.shared_dir, self._expand_user_vars(self.user_workingdir),
            isolate_tmp=self.isolate_tmp, tmp_size=self.tmp_size, shm_size=self.shm_size,
        )
        return sandbox.launcher_argv(f"{self.lab_venv}/bin/python", spec, command)

    def job_environment(self, base_env: dict[str, str]) -> dict[str, str]:
        """The job's whole environment (sbatch --export=ALL of a clean one):
        JupyterHub's variables, the lab's PATH, HOME in the user's home
        directory on the shared storage, and with GPUs on the cluster the GPU
        variables of its GRES (Slurm adds CUDA_VISIBLE_DEVICES)."""
        gpu_env = {}
        if self.cluster_gpus_on:
            base_env = {k: v for k, v in base_env.items()
                        if k not in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")}
            gpu_env = gres.lab_environment(self.gpu_request())
        return {
            **base_env,
            **gpu_env,
            "HOME": self.lab_home,
            PORT_FILE_VARIABLE: f"{self.lab_home}/{PORT_FILE_NAME}",
            "USER": self.unix_name,
            "SHELL": self.default_shell,
            "PATH": ":".join(self.lab_paths() + SYSTEM_PATH),
        }

    def job_request(self, uid: int, gid: int) -> slurm.JobRequest:
        return slurm.JobRequest(
            job_name=self.job_name,
            partition=self.partition,
            uid=uid,
            gid=gid,
            workdir=str(layout.user_dirs(self.unix_name, self.users_root).workspace),
            mem_limit=self.mem_limit,
            cpu_limit=self.cpu_limit,
            gpus=self.gpu_request(),
        )

    async def job_status(self) -> slurm.JobStatus | None:
        result = await self.slurm_run(["squeue", "--noheader", "--jobs", self.job_id, "--format=%T|%N|%r"])
        if not result.ok:
            # squeue refuses an id it no longer knows ("Invalid job id specified")
            if "Invalid job id" in result.stderr:
                return None
            raise slurm.SlurmError(f"squeue failed ({result.returncode}): {result.stderr.strip()}")
        return slurm.parse_status(result.stdout)

    async def start(self):
        started = time.monotonic()  # about when the hub's start_timeout began
        self.job_events = []
        account = await self.ensure_account()
        await self.reconcile_privileges(self.privileges)
        # after the privilege groups: the job gets them on its worker (sudo never: NoNewPrivileges)
        exported = self.export_accounts(self.accounts_dir, self.platform_group, (self.docker_unix_group,))
        self.log.debug("exported %s platform accounts to %s", exported, self.accounts_dir)
        self.apply_resource_profile()
        self.port = random_port()  # in JUPYTERHUB_SERVICE_URL; the lab reports the one it listens on
        self.ip = LAB_BIND_IP
        self.port_file.unlink(missing_ok=True)  # an earlier lab's report
        env = self.job_environment(self.get_env())
        script = slurm.batch_script(self.lab_command(), {})
        result = await self.slurm_run(slurm.sbatch_argv(self.job_request(account.uid, account.gid)),
                                      stdin=script, env=env)
        if not result.ok:
            raise web.HTTPError(500, f"Slurm refused the lab's job: {result.stderr.strip()}")
        self.job_id = slurm.parse_job_id(result.stdout)
        self.log.info("user:%s lab is Slurm job %s", self.user.name, self.job_id)
        if self.orm_spawner is not None:
            # in the hub's database now: a hub restart meanwhile finds the job
            self.orm_spawner.state = self.get_state()
        self.report(20, f"Submitted as Slurm job {self.job_id}")
        node = await self.wait_for_node(deadline=started + self.start_timeout - QUEUE_DEADLINE_MARGIN)
        self.report(60, f"Running on {node}; starting the lab")
        self.port = await self.wait_for_port(node)
        return await self.wait_for_lab(node)

    def report(self, progress: int, message: str) -> None:
        """A step of the start for the spawn page (a repeated message once)."""
        if not self.job_events or self.job_events[-1]["message"] != message:
            self.job_events.append({"progress": progress, "message": message})

    async def progress(self):
        """The spawn page's events: each step of the start (submitted, waiting
        with Slurm's reason, running on a worker), none skipped; JupyterHub
        stops iterating when the start ends."""
        shown = 0
        while True:
            while shown < len(self.job_events):
                yield dict(self.job_events[shown])
                shown += 1
            await asyncio.sleep(self.job_poll_interval)

    async def wait_for_node(self, deadline: float) -> str:
        """The worker the job runs on, once it runs; waits while Slurm queues
        it (the reason on the spawn page) until ``deadline`` (monotonic)."""
        delays = job_poll_delays(self.job_poll_interval)
        while True:
            status = await self.job_status()
            if status is None or not (status.waiting or status.running):
                state = status.state if status else "gone"
                raise web.HTTPError(500, f"The lab's Slurm job {self.job_id} ended before it ran ({state})")
            if status.running and status.node:
                return status.node
            why = slurm.waiting_reason(status.reason)
            if time.monotonic() > deadline:
                await self.cancel()
                raise web.HTTPError(
                    503, f"The lab waited {self.start_timeout} s for a worker and was cancelled: {why}. "
                    "Try again later."
                )
            self.report(30, f"Waiting for a worker: {why}; Slurm job {self.job_id}")
            await asyncio.sleep(next(delays))

    async def wait_for_port(self, node: str) -> int:
        """The port the lab listens on on ``node``, once it reports it (http_timeout):
        the report is read every ready_poll_interval, the job asked after less and less often."""
        deadline = time.monotonic() + self.http_timeout
        delays = job_poll_delays(self.job_poll_interval)
        next_status = time.monotonic()
        while (port := read_port_file(self.port_file)) is None:
            if time.monotonic() >= next_status:
                status = await self.job_status()
                if not (status and status.running):
                    raise web.HTTPError(500, f"The lab's Slurm job {self.job_id} on {node} ended before it listened")
                next_status = time.monotonic() + next(delays)
            if time.monotonic() > deadline:
                await self.cancel()
                raise web.HTTPError(
                    500, f"The lab on {node} reported no port within {self.http_timeout} s; Slurm job {self.job_id}"
                )
            await asyncio.sleep(self.ready_poll_interval)
        return port

    async def wait_for_lab(self, node: str) -> tuple[str, int]:
        api = url_path_join(self.server.base_url if self.server else "/", "api")

        async def job_alive() -> bool:
            status = await self.job_status()
            return bool(status and status.running)

        state = await readiness.wait_until_listening(
            lambda: self.lab_probe(node, self.port, api), job_alive,
            timeout=self.http_timeout, interval=self.ready_poll_interval,
        )
        if state is not readiness.Readiness.LISTENING:
            await self.cancel()
            raise web.HTTPError(
                500,
                f"The lab {state.value} on {node}:{self.port} (http_timeout {self.http_timeout} s); "
                f"Slurm job {self.job_id}",
            )
        return (node, self.port)

    async def cancel(self) -> None:
        if self.job_id:
            await self.slurm_run(["scancel", self.job_id])

    async def poll(self):
        if not self.job_id:
            return 0
        status = await self.job_status()
        if status and (status.running or status.waiting):
            return None
        return 1

    async def stop(self, now=False):
        await self.cancel()
        for _ in range(int(self.http_timeout)):
            status = await self.job_status()
            if status is None or not (status.running or status.waiting):
                return
            await asyncio.sleep(1)


def read_port_file(path: Path) -> int | None:
    """The port a lab reported in ``path``, or None while there is none. The
    file is the user's: the hub (root) follows no link, opens no FIFO or device
    (a regular file only, without blocking) and reads a few bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        text = os.read(fd, 16).decode("ascii", errors="replace").strip()
    finally:
        os.close(fd)
    return int(text) if text.isdigit() and 0 < int(text) < 65536 else None
