"""PlatformSpawner: SystemdSpawner running each lab as its own platform unix user.

On start it creates the unix account (``jh-<hubname>``) and the per-user
directories if needed, reconciles the account's privilege groups with the
user's hub groups (docker-sock, docker-privileged), resolves the resource
profile of those groups, then starts the transient unit with the directories
bound at the in-lab paths of the Docker original (docs/architecture.md,
docs/accounts.md).
"""

from __future__ import annotations

import asyncio
import os

from jupyterhub.utils import random_port, url_path_join
from sqlalchemy import inspect as orm_inspect
from systemdspawner import SystemdSpawner, systemd
from tornado import web
from traitlets import default

from hub_ext.accounts import privileges
from hub_ext.accounts import unix_users as accounts
from hub_ext.gpu.policy import lab_environment, unit_properties
from hub_ext.gpu.service import GpuSupport
from hub_ext.process import run_command
from hub_ext.storage import layout
from hub_ext.storage.service import SETTINGS_KEY as STORAGE_SETTINGS_KEY
from hub_ext.units import lab_unit as units
from hub_ext.units import readiness
from hub_ext.units.environment import LabEnvironmentSettings
from hub_ext.units.lab_unit import UnitSpec, build_unit_spec
from hub_ext.units.settings import LabUnitSettings

# ports tried when another process holds the chosen one (the socket unit fails to bind)
PORT_ATTEMPTS = 3
# where a lab listens unless c.Spawner.ip says otherwise (the proxy and the hub are local)
LAB_IP = "127.0.0.1"


async def _run_logged(argv: list[str]) -> int:
    """Run a systemd command, its output into the hub's journal; its exit status."""
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL)
    return await proc.wait()


async def _any_unit_is(state: str, units: tuple[str, ...]) -> bool:
    """``systemctl is-<state>`` of several units in one call: True when at least one is."""
    proc = await asyncio.create_subprocess_exec(
        "systemctl", f"is-{state}", "--quiet", *units, stdin=asyncio.subprocess.DEVNULL
    )
    return await proc.wait() == 0


class PlatformSpawner(LabUnitSettings, LabEnvironmentSettings, SystemdSpawner):
    """The lab unit's settings and the lab's environment are traits of the mixins
    (hub_ext.units.settings, hub_ext.units.environment); this class is the spawn."""

    # GPU indices held by the running server (hub_ext.gpu.policy); kept in the spawner
    # state so a hub restart knows them (round-robin load, same devices)
    gpu_indices: tuple[int, ...] = ()
    # session extension of this start ({"started", "hours"}, hub_ext.culling): in the
    # spawner state, so JupyterHub's database keeps it across hub restarts
    session_extension: dict | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # the configured limits; a resource profile may replace them per start
        self.default_limits = privileges.Limits(self.mem_limit, self.cpu_limit)

    # seams for unit tests (plain attributes, not config)
    command_runner = staticmethod(run_command)
    chown = staticmethod(os.fchown)
    lab_probe = staticmethod(readiness.http_answers)

    # SystemdSpawner's own knob for the unix name; kept coherent with ours
    @default("username_template")
    def _default_username_template(self):
        return "{UNIXNAME}"

    @default("cmd")
    def _default_cmd(self):
        return [f"{self.lab_venv}/bin/jupyterhub-singleuser"]

    def get_env(self):
        env = super().get_env()
        # the platform's variables, under the admin's environment
        for name, value in self.platform_variables().items():
            if name not in self.environment:
                env[name] = value
        return env

    @property
    def socket_unit(self) -> str:
        """The unit holding the lab's listening socket (units.lab_socket_properties)."""
        return f"{self.unit_name}.socket"

    @property
    def lab_ip(self) -> str:
        """The address the lab's socket unit binds and the hub connects to."""
        return self.ip or LAB_IP

    @property
    def unix_name(self) -> str:
        return accounts.unix_name(self.user.name, self.unix_username_template)

    @property
    def home_in_lab(self) -> str:
        return layout.home_in_lab(self.unix_name)

    def _expand_user_vars(self, string):
        """SystemdSpawner's template expansion, plus {UNIXNAME}."""
        return string.format(
            USERNAME=self.user.name, USERID=self.user.id, UNIXNAME=self.unix_name
        )

    def _expand_property(self, value):
        # SystemdSpawner 1.0.2 calls str.format on every value and breaks on lists
        if isinstance(value, str):
            return self._expand_user_vars(value)
        return [self._expand_user_vars(v) for v in value]

    def _expand_paths(self, paths):
        return None if paths is None else [self._expand_user_vars(p) for p in paths]

    @property
    def storage_manager(self):
        """The hub's StorageManager (hub_ext.app hands it over in the tornado
        settings, which every User holds); None outside a platform hub."""
        return (getattr(self.user, "settings", None) or {}).get(STORAGE_SETTINGS_KEY)

    @property
    def gpu_support(self) -> GpuSupport:
        return GpuSupport.instance(config=self.config)

    def get_state(self):
        state = super().get_state()
        if self.gpu_indices:
            state["gpu_indices"] = list(self.gpu_indices)
        if self.session_extension:
            state["session_extension"] = dict(self.session_extension)
        return state

    def load_state(self, state):
        super().load_state(state)
        self.gpu_indices = tuple(state.get("gpu_indices", ()))
        self.session_extension = state.get("session_extension")
        if self.gpu_indices:
            self.gpu_support.book.hold(self.unit_name, self.gpu_indices)

    def clear_state(self):
        super().clear_state()
        self.gpu_support.book.release(self.unit_name)
        self.gpu_indices = ()
        self.session_extension = None

    def assign_gpus(self) -> tuple[int, ...]:
        """Choose this server's GPUs by the policy (detects GPUs on first use)."""
        groups = [g.name for g in getattr(self.user, "groups", None) or ()]
        self.gpu_indices = self.gpu_support.assign(self.unit_name, groups)
        return self.gpu_indices

    @property
    def hub_groups(self) -> list[str]:
        return sorted(g.name for g in self.user.groups)

    @property
    def privileges(self) -> privileges.Privileges:
        return privileges.privileges_for(self.hub_groups)

    def apply_resource_profile(self) -> privileges.Limits:
        """Set mem_limit/cpu_limit from the user's groups (before get_env, which
        turns them into MEM_LIMIT/CPU_LIMIT)."""
        limits = privileges.resolve_limits(
            self.hub_groups, self.resource_profiles, self.default_limits
        )
        self.mem_limit = limits.mem_limit
        self.cpu_limit = limits.cpu_limit
        return limits

    async def reconcile_privileges(self, granted: privileges.Privileges) -> None:
        """Make the unix account's docker/sudo groups follow the hub groups."""
        current = await accounts.account_groups(self.unix_name, self.command_runner)
        plan = privileges.unix_group_plan(
            granted, current, self.docker_unix_group, self.sudo_unix_group
        )
        if plan.add or plan.remove:
            self.log.info(
                "user:%s unix groups of %s: adding %s, removing %s",
                self.user.name, self.unix_name, list(plan.add), list(plan.remove),
            )
            await accounts.reconcile_unix_groups(
                self.unix_name, plan.add, plan.remove, runner=self.command_runner
            )

    def lab_paths(self) -> list[str]:
        """What the lab's $PATH starts with: the lab venv's bin (python, pip and
        jupyter in terminals are the lab's), then extra_paths."""
        paths = [f"{self.lab_venv}/bin"]
        for path in self.extra_paths:
            expanded = self._expand_user_vars(path)
            if expanded not in paths:
                paths.append(expanded)
        return paths

    def unit_spec(
        self, base_env: dict[str, str], granted: privileges.Privileges | None = None
    ) -> UnitSpec:
        """Properties, environment and working directory of this user's lab unit.

        Pure given the traits and ``granted`` (no systemd, no account changes),
        so tests can check what a configuration produces. docker-sock adds the
        docker group; docker-privileged lifts NoNewPrivileges (so sudo's setuid
        bit works) and selects the sudo profile of the sandbox (lab_hardening).
        unit_extra_properties still win over all of these.
        """
        support = self.gpu_support
        assigned = support.by_index(self.gpu_indices) if support.enabled else []
        granted = granted or privileges.Privileges()
        extra = privileges.unit_privilege_properties(granted, self.docker_unix_group)
        extra.update(
            {key: self._expand_property(value) for key, value in self.unit_extra_properties.items()}
        )
        return build_unit_spec(
            base_env={
                **base_env,
                **lab_environment(support.enabled, bool(support.gpus), assigned),
            },
            home=self.home_in_lab,
            working_dir=self._expand_user_vars(self.user_workingdir),
            shell=self.default_shell,
            extra_paths=self.lab_paths(),
            bind_paths=layout.bind_paths(self.unix_name, self.users_root, self.shared_dir),
            mem_limit=self.mem_limit,
            cpu_limit=self.cpu_limit,
            tasks_max=self.tasks_max,
            isolate_tmp=self.isolate_tmp,
            tmp_size=self.tmp_size,
            shm_size=self.shm_size,
            isolate_devices=self.isolate_devices,
            disable_user_sudo=self.disable_user_sudo and not granted.sudo,
            hardening=self.lab_hardening,
            readonly_paths=self._expand_paths(self.readonly_paths),
            readwrite_paths=self._expand_paths(self.readwrite_paths),
            device_access=unit_properties(support.enabled, assigned),
            extra_properties=extra,
        )

    async def ensure_account(self) -> accounts.UnixAccount:
        """Create the unix account and the per-user directories if missing."""
        account = await accounts.ensure_unix_user(
            self.unix_name,
            group=self.platform_group,
            home=self.home_in_lab,
            runner=self.command_runner,
        )
        storage = self.storage_manager
        if storage is not None:
            # the user root becomes the quota's unit (a btrfs subvolume) before the
            # directories are made in it; once per account (hub_ext.storage.quota)
            await storage.ensure_quota(self.unix_name)
        layout.ensure_user_dirs(
            self.unix_name, self.users_root, account.uid, account.gid, chown=self.chown
        )
        return account

    async def _clear_leftover_unit(self):
        """Stop units of this lab JupyterHub does not know, reset failed ones.

        Same as the opening of SystemdSpawner.start, which 1.0.2 does not
        expose separately, plus the lab's socket unit. The usual case, neither
        unit active nor failed, costs two systemctl calls (one per state, for
        both units), not four: each is a process the hub starts per spawn.
        """
        units = (self.socket_unit, self.unit_name)
        if not await _any_unit_is("active", units) and not await _any_unit_is("failed", units):
            return
        for unit in units:
            if await systemd.service_running(unit):
                self.log.info("user:%s stopping unknown leftover unit %s", self.user.name, unit)
                await systemd.stop_service(unit)
                if await systemd.service_running(unit):
                    raise RuntimeError(f"Could not stop already existing unit {unit}")
            if await systemd.service_failed(unit):
                await systemd.reset_service(unit)

    async def start(self):
        # SystemdSpawner.start inlines the property assembly; replaced as a
        # whole so BindPaths, list-valued properties and the socket unit work
        if self.dynamic_users:
            raise ValueError(
                "PlatformSpawner.dynamic_users is not supported: platform users "
                "are real unix accounts with bound per-user directories"
            )
        await self._clear_leftover_unit()
        account = await self.ensure_account()
        # the hub groups are the source of truth, read at every start
        granted = self.privileges
        await self.reconcile_privileges(granted)
        self.apply_resource_profile()
        self.assign_gpus()
        for attempt in range(1, PORT_ATTEMPTS + 1):
            self.port = random_port()
            self.record_address()
            returncode = await self.start_unit(self.unit_spec(self.get_env(), granted), account)
            if returncode == 0:
                break
            # most likely another process took the port before systemd bound it
            self.log.warning(
                "user:%s systemd-run failed (%s) for %s on port %s (attempt %s of %s)",
                self.user.name, returncode, self.unit_name, self.port, attempt, PORT_ATTEMPTS,
            )
            await self._clear_leftover_unit()
        else:
            # fail now instead of polling a unit that never started
            raise RuntimeError(
                f"systemd-run failed ({returncode}) for {self.unit_name}; see the hub's journal "
                f"and journalctl -u {self.unit_name} (e.g. a directory's mount that failed)"
            )
        # no wait for "active" first (SystemdSpawner's loop): a lab that
        # already exited would keep it polling until start_timeout
        return await self.wait_until_listening()

    def record_address(self) -> None:
        """Save where the lab will listen, and the spawner's state, in the hub's
        database now, before its unit exists.

        JupyterHub fills in the server record (ip, port) and saves the state
        only when start() returns. A hub stopped in between (a restart while a
        lab is starting, e.g. one launched from the spawn page, which answers
        after a second) left the record as JupyterHub creates it: ip '' and a
        random port. At its next start the hub found the unit running, looked
        for the lab at http://<hostname>:<that port>/, gave up after
        http_timeout and stopped a healthy lab (docs/operations.md).
        """
        if self.server is None or self.orm_spawner is None:
            return  # not started through JupyterHub's User.spawn (tests)
        self.server.ip = self.lab_ip
        self.server.port = self.port
        self.orm_spawner.state = self.get_state()
        orm_inspect(self.orm_spawner).session.commit()

    async def start_unit(self, spec: UnitSpec, account: accounts.UnixAccount) -> int:
        """Start the lab's socket unit (systemd binds the port), then the lab;
        the exit status of the first command that failed, else 0. Their output
        goes to the hub's journal, as SystemdSpawner's does."""
        properties = {**units.transient_defaults(self.unit_name), **spec.properties}
        runtime_dir = os.path.join(systemd.RUN_ROOT, properties["RuntimeDirectory"].split()[0])
        env_file = systemd.make_environment_file(runtime_dir, self.unit_name, spec.environment)
        properties["EnvironmentFile"] = env_file
        argv = units.systemd_run_argv(
            self.unit_name,
            [self._expand_user_vars(c) for c in self.cmd]
            + [self._expand_user_vars(a) for a in self.get_args()],
            working_dir=spec.working_dir,
            properties=properties,
            socket_properties=units.lab_socket_properties(self.lab_ip, self.port),
            uid=account.uid,
            gid=account.gid,
            slice=self.slice,
        )
        returncode = await _run_logged(argv)
        if returncode == 0:
            # systemd would start the lab on the first connection; start it now
            returncode = await _run_logged(["systemctl", "start", f"{self.unit_name}.service"])
        return returncode

    async def stop(self, now=False):
        # the socket first: systemd would start the lab again on the next connection
        await systemd.stop_service(self.socket_unit)
        await super().stop(now)

    async def wait_until_listening(self) -> tuple[str, int]:
        """(ip, port) once the lab accepts connections; an HTTPError JupyterHub
        relays to the user (spawn page, API) if it exits first or does not
        listen within http_timeout."""
        ip = self.lab_ip
        api = url_path_join(self.server.base_url if self.server else "/", "api")
        state = await readiness.wait_until_listening(
            lambda: self.lab_probe(ip, self.port, api),
            lambda: systemd.service_running(self.unit_name),
            timeout=self.http_timeout,
            interval=self.ready_poll_interval,
        )
        if state is not readiness.Readiness.LISTENING:
            # nothing may start the lab again through its socket
            await systemd.stop_service(self.socket_unit)
            # the lab's own failure, not the request's: a server error with the
            # message the hub shows instead of a bare "Internal Server Error"
            raise web.HTTPError(
                500,
                f"The lab {state.value} on port {self.port} (http_timeout "
                f"{self.http_timeout} s); an admin finds why with "
                f"journalctl -u {self.unit_name}",
            )
        return (ip, self.port)
