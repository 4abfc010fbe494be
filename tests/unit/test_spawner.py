"""Unit properties built from config, down to the systemd-run command line."""

import asyncio
from types import SimpleNamespace

import pytest
from jupyterhub import orm
from jupyterhub.objects import Server
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from systemdspawner import systemd
from tornado import web
from traitlets import TraitError
from traitlets.config import Config

from hub_ext.spawner import PORT_ATTEMPTS
from hub_ext.units.lab_unit import (
    SUDO_CAPABILITIES,
    SYSTEMD_DEFAULT_PATH,
    bind_sources,
    build_environment,
    build_unit_properties,
    systemd_run_argv,
)

from .fakes import FakeSystem, FakeSystemctl


def test_bind_sources_are_the_host_paths():
    assert bind_sources(["/u/home:/home/x", "-/srv/shared:/mnt/shared:rbind", "/data"]) == [
        "/u/home", "/srv/shared", "/data"]


def test_properties_from_options():
    properties = build_unit_properties(
        bind_paths=["/u/home:/home/x", "/u/ws:/home/x/workspace"],
        mem_limit=4 * 1024**3,
        cpu_limit=1.5,
        tasks_max=300,
        isolate_tmp=True,
        isolate_devices=True,
        disable_user_sudo=True,
        readonly_paths=["/opt"],
        readwrite_paths=["/opt/scratch"],
    )
    assert properties == {
        "BindPaths": ["/u/home:/home/x", "/u/ws:/home/x/workspace"],
        # a lab starts only on its mounted directories (a failed NAS mount stops it)
        "RequiresMountsFor": ["/u/home", "/u/ws"],
        "TemporaryFileSystem": [
            "/tmp:size=2G,mode=1777,nosuid,nodev",
            "/var/tmp:size=2G,mode=1777,nosuid,nodev",
            "/dev/shm:size=1G,mode=1777,nosuid,nodev",
        ],
        "PrivateDevices": "yes",
        "MemoryAccounting": "yes",
        "MemoryMax": str(4 * 1024**3),
        "MemorySwapMax": "0",  # no escape past MemoryMax into swap
        "CPUAccounting": "yes",
        "CPUQuota": "150%",
        "TasksAccounting": "yes",
        "TasksMax": "300",
        "NoNewPrivileges": "yes",
        "ReadOnlyPaths": ["/opt"],
        "ReadWritePaths": ["/opt/scratch"],
    }


def test_properties_off():
    properties = build_unit_properties(isolate_tmp=False, disable_user_sudo=False)
    assert properties == {}


def test_extra_properties_merge_bind_paths_and_override_others():
    properties = build_unit_properties(
        bind_paths=["/a:/home/x"],
        cpu_limit=1.0,
        extra_properties={
            "BindPaths": "/data:/mnt/data",
            "CPUQuota": "50%",
            "DeviceAllow": ["/dev/nvidia0 rw", "/dev/nvidiactl rw"],
        },
    )
    assert properties["BindPaths"] == ["/a:/home/x", "/data:/mnt/data"]  # platform first
    assert properties["CPUQuota"] == "50%"
    assert properties["DeviceAllow"] == ["/dev/nvidia0 rw", "/dev/nvidiactl rw"]


def test_environment():
    env = build_environment(
        {"PATH": "/usr/bin:/bin", "JUPYTERHUB_USER": "alice"},
        home="/home/jh-alice",
        shell="/bin/bash",
        extra_paths=["/opt/jupyterlab/bin"],
    )
    assert env == {
        "PATH": "/opt/jupyterlab/bin:/usr/bin:/bin",
        "PLATFORM_LAB_PATH": "/opt/jupyterlab/bin:/usr/bin:/bin",
        "JUPYTERHUB_USER": "alice",
        "HOME": "/home/jh-alice",
        "SHELL": "/bin/bash",
    }


# --- PlatformSpawner, configured as deployed (jupyterhub_config.py, platform_config.json) ---


def test_spawner_defaults(make_spawner):
    spawner = make_spawner()
    assert spawner.unix_name == "jh-alice"
    assert spawner.unit_name == "jupyter-alice-singleuser"
    # the user_env role's launcher runs the startup scripts, then the lab server
    assert spawner.cmd == [
        "/opt/jupyterlab/bin/python", "-I", "/usr/local/lib/jupyterhub/lab_start.py", "--",
        "/opt/jupyterlab/bin/python", "/usr/local/lib/jupyterhub/lab_server.py",
    ]
    assert spawner.isolate_tmp is True
    assert spawner.disable_user_sudo is True
    assert spawner.extra_paths == []  # platform_config.json says [] explicitly
    assert spawner._expand_user_vars(spawner.username_template) == "jh-alice"


def test_unit_spec_from_platform_settings(make_spawner):
    spawner = make_spawner(unit_extra_properties={"BindPaths": "/data/{UNIXNAME}:/mnt/data"})
    spec = spawner.unit_spec({"PATH": "/usr/bin"})
    users = make_spawner.users_root
    assert spec.working_dir == "/home/jh-alice/workspace"
    assert spec.properties["BindPaths"] == [
        f"{users}/jh-alice/home:/home/jh-alice",
        f"{users}/jh-alice/workspace:/home/jh-alice/workspace",
        f"{users}/jh-alice/cache:/home/jh-alice/.cache",
        "/srv/jupyterhub/shared:/mnt/shared",
        "/data/jh-alice:/mnt/data",  # {UNIXNAME} expanded in extra properties too
    ]
    assert spec.properties["MemoryMax"] == str(4 * 1024**3)
    assert spec.properties["CPUQuota"] == "200%"
    assert spec.properties["MemorySwapMax"] == "0"
    assert spec.properties["TasksMax"] == "1024"  # platform_config.json's tasks_max
    assert spec.properties["TemporaryFileSystem"] == [
        "/tmp:size=2G,mode=1777,nosuid,nodev",
        "/var/tmp:size=2G,mode=1777,nosuid,nodev",
        "/dev/shm:size=1G,mode=1777,nosuid,nodev",
    ]
    assert "PrivateTmp" not in spec.properties  # it would win over the capped /tmp
    assert spec.properties["NoNewPrivileges"] == "yes"
    assert spec.environment["HOME"] == "/home/jh-alice"
    assert spec.environment["SHELL"] == "/bin/bash"


def test_unit_spec_templates_and_defaults(make_spawner):
    spawner = make_spawner(
        user_workingdir="/home/{UNIXNAME}/projects/{USERNAME}",
        readonly_paths=["/srv/data/{USERNAME}"],
        isolate_tmp=False,
        disable_user_sudo=False,
        mem_limit=None,
        cpu_limit=None,
        tasks_max=None,
    )
    spec = spawner.unit_spec({})
    assert spec.working_dir == "/home/jh-alice/projects/alice"
    # the admin's read-only paths come after the (sudo profile's) sandbox ones
    assert spec.properties["ReadOnlyPaths"][-1] == "/srv/data/alice"
    for absent in ("TemporaryFileSystem", "NoNewPrivileges", "MemoryMax", "MemorySwapMax",
                   "CPUQuota", "TasksMax"):
        assert absent not in spec.properties


def test_lab_venv_bin_leads_path_whatever_extra_paths_says(make_spawner, platform_config):
    # platform_config.json's extra_paths is [] by default: the venv is still first
    assert make_spawner().unit_spec({}).environment["PATH"] == (
        "/opt/jupyterlab/bin:" + SYSTEMD_DEFAULT_PATH
    )
    spawner = make_spawner(extra_paths=["/opt/tools/{UNIXNAME}/bin", "/opt/jupyterlab/bin"])
    assert spawner.unit_spec({"PATH": "/usr/bin"}).environment["PATH"] == (
        "/opt/jupyterlab/bin:/opt/tools/jh-alice/bin:/usr/bin"  # no second venv entry
    )
    del platform_config["PlatformSpawner"]["extra_paths"]
    assert make_spawner().unit_spec({}).environment["PATH"].startswith("/opt/jupyterlab/bin:")


def test_spawner_refuses_invalid_hub_name(make_spawner):
    from hub_ext.accounts.unix_users import InvalidNameError

    with pytest.raises(InvalidNameError):
        make_spawner(name="Bad.Name")


def test_start_builds_systemd_run_command(make_spawner, monkeypatch, tmp_path):
    systemctl = FakeSystemctl()
    monkeypatch.setattr(systemd.asyncio, "create_subprocess_exec", systemctl)
    monkeypatch.setattr(systemd, "RUN_ROOT", str(tmp_path / "run"))
    spawner = make_spawner(unit_extra_properties={"TasksMax": "256"})
    spawner.api_token = "secret-token"

    ip, port = asyncio.run(spawner.start())
    assert ip == "127.0.0.1" and port == spawner.port

    # account and directories were made first
    assert spawner.command_runner.commands("useradd")[0][-1] == "jh-alice"
    users = make_spawner.users_root
    assert (users / "jh-alice" / "home" / ".cache").is_dir()
    assert spawner.chown.calls[str(users / "jh-alice" / "workspace")] == (1001, 1001)

    argv = systemctl.systemd_run()
    assert argv[:5] == ["systemd-run", "--unit", "jupyter-alice-singleuser",
                        "--working-directory", "/home/jh-alice/workspace"]
    assert "--uid=1001" in argv and "--gid=1001" in argv
    properties = [a.removeprefix("--property=") for a in argv if a.startswith("--property=")]
    # one --property per BindPaths entry, home first
    assert [p for p in properties if p.startswith("BindPaths=")] == [
        f"BindPaths={users}/jh-alice/home:/home/jh-alice",
        f"BindPaths={users}/jh-alice/workspace:/home/jh-alice/workspace",
        f"BindPaths={users}/jh-alice/cache:/home/jh-alice/.cache",
        "BindPaths=/srv/jupyterhub/shared:/mnt/shared",
    ]
    for expected in ("MemoryMax=4294967296", "CPUQuota=200%", "NoNewPrivileges=yes",
                     "TemporaryFileSystem=/tmp:size=2G,mode=1777,nosuid,nodev",
                     "TemporaryFileSystem=/dev/shm:size=1G,mode=1777,nosuid,nodev",
                     "TasksMax=256"):
        assert expected in properties
    assert argv[-1] == "/usr/local/lib/jupyterhub/lab_server.py"

    env_file = tmp_path / "run" / "jupyter-alice-singleuser" / "jupyter-alice-singleuser.env"
    env = env_file.read_text()
    assert "HOME=/home/jh-alice\n" in env
    assert "JUPYTERHUB_API_TOKEN=secret-token\n" in env


def test_start_tries_other_ports_then_fails_when_systemd_run_fails(
    make_spawner, monkeypatch, tmp_path
):
    class FailingSystemd(FakeSystemctl):
        async def __call__(self, *argv, **kwargs):
            if argv[0] == "systemd-run":
                self.calls.append(list(argv))
                return SimpleNamespace(wait=lambda: asyncio.sleep(0, 1))
            return await super().__call__(*argv, **kwargs)

    systemctl = FailingSystemd()
    monkeypatch.setattr(systemd.asyncio, "create_subprocess_exec", systemctl)
    monkeypatch.setattr(systemd, "RUN_ROOT", str(tmp_path / "run"))
    spawner = make_spawner()
    spawner.api_token = "t"
    with pytest.raises(RuntimeError, match="systemd-run failed"):
        asyncio.run(spawner.start())
    runs = [c for c in systemctl.calls if c[0] == "systemd-run"]
    assert len(runs) == PORT_ATTEMPTS
    # a new port each time: another process may hold the one just tried
    ports = {a for run in runs for a in run if a.startswith("--socket-property=ListenStream=")}
    assert len(ports) == PORT_ATTEMPTS


def test_the_labs_port_is_a_socket_unit_started_before_the_lab(
    make_spawner, monkeypatch, tmp_path
):
    systemctl = FakeSystemctl()
    monkeypatch.setattr(systemd.asyncio, "create_subprocess_exec", systemctl)
    monkeypatch.setattr(systemd, "RUN_ROOT", str(tmp_path / "run"))
    spawner = make_spawner()
    spawner.api_token = "t"
    asyncio.run(spawner.start())
    argv = systemctl.systemd_run()
    assert f"--socket-property=ListenStream=127.0.0.1:{spawner.port}" in argv
    started = [c for c in systemctl.calls if c[:2] == ["systemctl", "start"]]
    assert started == [["systemctl", "start", "jupyter-alice-singleuser.service"]]
    # the lab serves on the inherited socket
    assert argv[-2:] == ["/opt/jupyterlab/bin/python", "/usr/local/lib/jupyterhub/lab_server.py"]

    systemctl.calls.clear()
    asyncio.run(spawner.stop())
    stops = [c for c in systemctl.calls if c[:2] == ["systemctl", "stop"]]
    # the socket first, or a connection would start the lab again
    assert stops == [["systemctl", "stop", "jupyter-alice-singleuser.socket"],
                     ["systemctl", "stop", "jupyter-alice-singleuser"]]


def test_a_hub_stopped_while_a_lab_starts_finds_the_labs_address_in_its_database(
    make_spawner, monkeypatch, tmp_path
):
    """The hub's database as JupyterHub's User.spawn leaves it when the hub stops
    (a restart) while start() still waits for the lab: the next hub process,
    which finds the unit running, must read where the lab listens from it
    (issue 16: it connected to http://<hostname>:<random port>/, gave up and
    stopped the lab)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'jupyterhub.sqlite'}")
    orm.Base.metadata.create_all(engine)
    db = Session(engine)
    orm_user = orm.User(name="alice")
    orm_spawner = orm.Spawner(user=orm_user, name="")
    db.add_all([orm_user, orm_spawner])
    db.commit()
    # User.spawn, before it calls start(): a server record with the ORM's defaults
    orm_server = orm.Server(base_url="/jupyterhub/user/alice/")
    db.add(orm_server)
    db.commit()
    systemctl = FakeSystemctl()
    monkeypatch.setattr(systemd.asyncio, "create_subprocess_exec", systemctl)
    monkeypatch.setattr(systemd, "RUN_ROOT", str(tmp_path / "run"))
    spawner = make_spawner()
    spawner.orm_spawner = orm_spawner
    spawner.server = Server(orm_server=orm_server)
    db.commit()  # User.spawn commits several times before start()
    spawner.api_token = "t"

    async def still_starting(ip, port, path):
        return False

    spawner.lab_probe = still_starting

    async def hub_stops_while_the_lab_starts():
        start = asyncio.create_task(spawner.start())
        while ["systemctl", "start", f"{spawner.unit_name}.service"] not in systemctl.calls:
            await asyncio.sleep(0.01)
        start.cancel()  # the hub's process ends here
        with pytest.raises(asyncio.CancelledError):
            await start

    asyncio.run(hub_stops_while_the_lab_starts())
    listen = next(a for a in systemctl.systemd_run() if a.startswith("--socket-property=ListenStream="))
    # the next hub process reads the database afresh
    (saved,) = Session(engine).query(orm.Spawner).all()
    assert listen == f"--socket-property=ListenStream=127.0.0.1:{saved.server.port}"
    assert Server(orm_server=saved.server).url == (
        f"http://127.0.0.1:{saved.server.port}/jupyterhub/user/alice/"
    )
    assert saved.state["unit_name"] == "jupyter-alice-singleuser"


# --- start() waits for the lab's port (hub_ext.units.readiness) ---------------------------


def test_start_fails_with_the_unit_name_when_the_lab_exits_before_listening(
    make_spawner, monkeypatch, tmp_path
):
    systemctl = FakeSystemctl()
    monkeypatch.setattr(systemd.asyncio, "create_subprocess_exec", systemctl)
    monkeypatch.setattr(systemd, "RUN_ROOT", str(tmp_path / "run"))
    spawner = make_spawner()
    spawner.api_token = "t"

    async def never_listens(ip, port, path):
        # the lab dies while starting: systemd reports the unit inactive from now on
        systemctl.started = False
        return False

    spawner.lab_probe = never_listens
    spawner.ready_poll_interval = 0.01  # the unit check comes after 1 s of probes
    with pytest.raises(web.HTTPError, match=r"exited before listening.*journalctl -u jupyter-alice-singleuser"):
        asyncio.run(spawner.start())


class LeftoverSystemctl(FakeSystemctl):
    """systemctl of a host where the lab's units are ``states`` (unit -> state)."""

    def __init__(self, **states):
        super().__init__()
        self.states = states

    async def __call__(self, *argv, **kwargs):
        verb, units = (argv[1], [a for a in argv[2:] if not a.startswith("-")]) if len(argv) > 1 else ("", [])
        if verb in ("is-active", "is-failed") and not self.started:
            self.calls.append(list(argv))
            wanted = verb.removeprefix("is-")
            code = 0 if any(self.states.get(unit) == wanted for unit in units) else 3
            return SimpleNamespace(wait=lambda: asyncio.sleep(0, code))
        if verb in ("stop", "reset-failed"):
            for unit in units:
                self.states.pop(unit, None)
        return await super().__call__(*argv, **kwargs)


@pytest.mark.parametrize("states", [
    {},
    {"jupyter-alice-singleuser": "active"},
    {"jupyter-alice-singleuser.socket": "failed", "jupyter-alice-singleuser": "active"},
])
def test_leftover_units_are_cleared_and_cost_two_systemctl_calls_when_there_are_none(
    make_spawner, monkeypatch, tmp_path, states
):
    systemctl = LeftoverSystemctl(**states)
    monkeypatch.setattr(systemd.asyncio, "create_subprocess_exec", systemctl)
    monkeypatch.setattr(systemd, "RUN_ROOT", str(tmp_path / "run"))
    spawner = make_spawner()
    spawner.api_token = "t"

    async def answers(ip, port, path):
        return True

    spawner.lab_probe = answers
    asyncio.run(spawner.start())
    before = systemctl.calls[:systemctl.calls.index(systemctl.systemd_run())]
    units = ["jupyter-alice-singleuser.socket", "jupyter-alice-singleuser"]
    one_call_each = [["systemctl", "is-active", "--quiet", *units], ["systemctl", "is-failed", "--quiet", *units]]
    assert before[0] == one_call_each[0]
    assert (before == one_call_each) == (not states)
    assert systemctl.states == {}  # stopped or reset before the new start


def test_start_refuses_foreign_account(make_spawner, monkeypatch):
    from hub_ext.accounts.unix_users import ForeignAccountError

    async def not_running(unit):
        return False

    monkeypatch.setattr(systemd, "service_running", not_running)
    monkeypatch.setattr(systemd, "service_failed", not_running)
    spawner = make_spawner(name="root")
    spawner.unix_username_template = "{USERNAME}"
    spawner.command_runner = FakeSystem(
        users={"root": (0, 0, "/root")}, groups={"jupyterhub-users": set()}
    )
    with pytest.raises(ForeignAccountError):
        asyncio.run(spawner.start())
    assert not (make_spawner.users_root / "root").exists()


# --- privilege groups and resource profiles at start -------------------------------


def _start(make_spawner, monkeypatch, tmp_path, system=None, **kw):
    systemctl = FakeSystemctl()
    monkeypatch.setattr(systemd.asyncio, "create_subprocess_exec", systemctl)
    monkeypatch.setattr(systemd, "RUN_ROOT", str(tmp_path / "run"))
    spawner = make_spawner(**kw)
    if system is not None:
        spawner.command_runner = system
    spawner.api_token = "t"
    asyncio.run(spawner.start())
    argv = systemctl.systemd_run()
    properties = [a.removeprefix("--property=") for a in argv if a.startswith("--property=")]
    env = (tmp_path / "run" / spawner.unit_name / f"{spawner.unit_name}.env").read_text()
    return spawner, properties, env


def test_docker_sock_member_gets_docker_group_and_keeps_no_new_privileges(
    make_spawner, monkeypatch, tmp_path
):
    spawner, properties, _ = _start(make_spawner, monkeypatch, tmp_path, groups=["docker-sock"])
    assert "SupplementaryGroups=docker" in properties
    assert "NoNewPrivileges=yes" in properties
    assert "jh-alice" in spawner.command_runner.groups["docker"]
    assert "jh-alice" not in spawner.command_runner.groups.get("jupyterhub-sudo", set())


def test_docker_privileged_member_gets_sudo_group_without_no_new_privileges(
    make_spawner, monkeypatch, tmp_path
):
    spawner, properties, _ = _start(
        make_spawner, monkeypatch, tmp_path, groups=["docker-privileged"]
    )
    assert not any(p.startswith("NoNewPrivileges") for p in properties)
    assert not any(p.startswith("SupplementaryGroups") for p in properties)
    assert "jh-alice" in spawner.command_runner.groups["jupyterhub-sudo"]
    # the sudo profile of the sandbox: capabilities cut, no seccomp
    assert f"CapabilityBoundingSet={SUDO_CAPABILITIES}" in properties
    assert not any(p.startswith(("SystemCallFilter", "ProtectSystem")) for p in properties)


def test_lab_hardening_from_settings(make_spawner):
    assert make_spawner().unit_spec({}).properties["ProtectSystem"] == "strict"
    spawner = make_spawner(lab_hardening=False)
    assert "ProtectSystem" not in spawner.unit_spec({}).properties


def test_non_member_is_removed_from_stale_unix_groups(make_spawner, monkeypatch, tmp_path):
    # the unix groups still list alice (e.g. added by hand, or she left the hub group)
    system = FakeSystem(
        users={"jh-alice": (1001, 1001, "/home/jh-alice")},
        groups={"jupyterhub-users": {"jh-alice"}, "docker": {"jh-alice"},
                "jupyterhub-sudo": {"jh-alice"}, "jh-alice": {"jh-alice"}},
    )
    _spawner, properties, _ = _start(make_spawner, monkeypatch, tmp_path, system=system)
    assert "jh-alice" not in system.groups["docker"]
    assert "jh-alice" not in system.groups["jupyterhub-sudo"]
    assert "NoNewPrivileges=yes" in properties
    assert not any(p.startswith("SupplementaryGroups") for p in properties)


def test_resource_profile_largest_wins_and_env_matches_unit(
    make_spawner, monkeypatch, tmp_path, platform_config
):
    platform_config["PlatformSpawner"]["resource_profiles"] = {
        "big-mem": {"mem_limit": "16G"},
        "gpu-team": {"mem_limit": "8G", "cpu_limit": 6},
    }
    _spawner, properties, env = _start(
        make_spawner, monkeypatch, tmp_path, groups=["big-mem", "gpu-team"]
    )
    assert f"MemoryMax={16 * 1024**3}" in properties
    assert "CPUQuota=600%" in properties
    assert f"MEM_LIMIT={16 * 1024**3}\n" in env
    assert "CPU_LIMIT=6.0\n" in env


def test_no_profiled_group_gives_the_defaults(make_spawner, monkeypatch, tmp_path, platform_config):
    platform_config["PlatformSpawner"]["resource_profiles"] = {"big-mem": {"mem_limit": "16G"}}
    _spawner, properties, env = _start(make_spawner, monkeypatch, tmp_path, groups=["other"])
    assert f"MemoryMax={4 * 1024**3}" in properties and "CPUQuota=200%" in properties
    assert f"MEM_LIMIT={4 * 1024**3}\n" in env and "CPU_LIMIT=2.0\n" in env


def test_tmpfs_sizes_set_in_a_site_config_file_are_checked_too(make_spawner):
    # jupyterhub_config.d bypasses the deploy-time check: the traits check themselves
    site = Config()
    site.PlatformSpawner.shm_size = "64M"
    assert make_spawner(extra_config=site).unit_spec({}).properties["TemporaryFileSystem"][-1] == (
        "/dev/shm:size=64M,mode=1777,nosuid,nodev")
    site.PlatformSpawner.shm_size = "1.5G"
    with pytest.raises(TraitError, match="shm_size must be a positive whole number"):
        make_spawner(extra_config=site)


def test_systemd_run_argv_repeats_list_values_and_needs_an_absolute_command():
    argv = systemd_run_argv(
        "u", ["/bin/lab", "--x"], working_dir="/w",
        properties={"BindPaths": ["/a:/b", "/c:/d"], "MemoryMax": "1"},
        socket_properties={"ListenStream": "127.0.0.1:5"}, uid=7, gid=8, slice="s.slice",
    )
    assert argv == ["systemd-run", "--unit", "u", "--working-directory", "/w", "--uid=7",
                    "--gid=8", "--slice=s.slice", "--property=BindPaths=/a:/b",
                    "--property=BindPaths=/c:/d", "--property=MemoryMax=1",
                    "--socket-property=ListenStream=127.0.0.1:5", "/bin/lab", "--x"]
    with pytest.raises(ValueError, match="absolute path"):
        systemd_run_argv("u", ["lab"], working_dir="/w", properties={})


def test_the_session_extension_lives_in_the_spawner_state(make_spawner):
    """JupyterHub keeps a spawner's state in its database: the extension of this
    start survives a hub restart there, and a stop (clear_state) ends it."""
    spawner = make_spawner()
    assert "session_extension" not in spawner.get_state()
    spawner.session_extension = {"started": 1_700_000_000.0, "hours": 2}
    state = spawner.get_state()
    assert state["session_extension"] == {"started": 1_700_000_000.0, "hours": 2}
    restarted = make_spawner()  # a new hub process loads the saved state
    restarted.load_state(state)
    assert restarted.session_extension == {"started": 1_700_000_000.0, "hours": 2}
    restarted.clear_state()
    assert restarted.session_extension is None
    assert "session_extension" not in restarted.get_state()


def test_the_lab_environment_under_the_admins(make_spawner, platform_config):
    platform_config["PlatformSpawner"].update(
        service_tensorboard="0",
        service_extra={"JUPYTERHUB_SERVICE_GLANCES": "1"},
        environment={"JUPYTERHUB_SERVICE_MLFLOW": "0", "TZ": "UTC"},
    )
    env = make_spawner().get_env()
    assert env["JUPYTERHUB_SERVICE_MLFLOW"] == "0"  # the admin's environment wins
    assert env["JUPYTERHUB_SERVICE_TENSORBOARD"] == "0"
    assert env["JUPYTERHUB_SERVICE_RESOURCES_MONITOR"] == "1"
    assert env["JUPYTERHUB_SERVICE_GLANCES"] == "1"
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "3"
    assert env["JUPYTERLAB_AUX_SCRIPTS_PATH"] == "/etc/jupyterhub/start-platform.d"
    assert env["TZ"] == "UTC"
    # JupyterHub's own variables are still there
    assert env["JUPYTERHUB_USER"] == "alice"
