#!/usr/bin/env python3
"""The project's systemd test host: a Debian 12 root booted with systemd-nspawn.

Lifecycle (each step a sub-command, each also importable for the tests):

* ``build``  debootstrap a Debian 12 root once and cache it under
  ``.cache/testhost/base-<recipe hash>``; a change of ``RECIPE`` (or of the
  files copied in from this machine) gives a new hash and so a rebuild.
* ``up NAME --port-base N [--enforce-limits]``  copy the cached root to ``.cache/testhost/hosts/NAME``
  (two containers cannot boot one directory), boot it with
  ``systemd-nspawn --register=no --keep-unit -b`` (there is no host systemd),
  wait until ``systemctl is-system-running`` settles, and write an Ansible
  inventory that reaches it over SSH like a real server. ``--enforce-limits``
  boots it in legacy cgroup mode with writable limit controllers, so the labs'
  memory, task and CPU limits hold (``limits_writable()``).
* ``exec NAME -- CMD``  run a command as root inside (``nsenter -a``).
* ``deploy NAME``  run ``ansible/site.yml`` against it.
* ``down NAME``  power it off and delete its copy.

The host shares this machine's network, so every port it listens on comes
from its port base (see ``ports()``); a demo and a test run can live side by
side with different bases.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "testhost"
HOSTS = CACHE / "hosts"
VENV_BIN = Path(sys.executable).parent

MIRROR = "http://deb.debian.org/debian"
RECIPE = {
    "suite": "bookworm",
    "variant": "minbase",
    # systemd/dbus/python3 boot the host and run Ansible's modules; sshd is how Ansible
    # reaches the host, as it would a real server; procps/iproute2 for debugging.
    "include": [
        "systemd", "systemd-sysv", "dbus", "python3", "openssh-server",
        "ca-certificates", "iproute2", "procps", "curl", "sudo",
    ],
    "version": 3,  # bump to force a rebuild when the post-install steps change
}
# This machine's package-manager settings, copied in so pip/npm/apt inside the
# host trust the same CA and use the same indexes as here.
COPIED_FILES = [
    "/etc/pip.conf",
    "/etc/xdg/pip/pip.conf",
    "/etc/xdg/pip/constraints.txt",
    "/root/.npmrc",
    "/etc/npmrc",
    "/usr/etc/npmrc",
    "/etc/apt/apt.conf.d/99artifact-registry",
]
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# Local package indexes named by /etc/pip.conf; bound read-only when present.
READONLY_BINDS = ["/opt/wheels", "/opt/pypi", "/opt/pypi-more"]
PASSTHROUGH_ENV = ("PIP_", "NODE_EXTRA_CA_CERTS", "NPM_CONFIG_")

ADMIN_USER = "admin"
# Every *.localhost name is the loopback address to a browser (RFC 6761), so a
# host on this machine serves the hub at hub.localhost and each lab at
# <user>.hub.localhost with no DNS set-up (tests/hubclient.py resolves them so).
DOMAIN = "hub.localhost"
BASE_URL = "/jupyterhub/"


def log(msg: str) -> None:
    print(f"[testhost] {msg}", file=sys.stderr, flush=True)


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, **kw)


# ---------------------------------------------------------------- build

def recipe_hash() -> str:
    h = hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode())
    for path in COPIED_FILES + [CA_BUNDLE]:
        p = Path(path)
        h.update(path.encode())
        h.update(p.read_bytes() if p.is_file() else b"<absent>")
    return h.hexdigest()[:12]


def base_root() -> Path:
    return CACHE / f"base-{recipe_hash()}" / "root"


# build() is called by the suite's main thread and its background provisioning
_building = threading.Lock()


def build() -> Path:
    """Return the cached root for the current recipe, building it if needed."""
    with _building:
        return _build()


def _build() -> Path:
    root = base_root()
    if (root.parent / "complete").exists():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / f"build-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp_root = tmp / "root"
    log(f"debootstrap {RECIPE['suite']} into {tmp_root} (about a minute)")
    started = time.monotonic()
    run(["debootstrap", f"--variant={RECIPE['variant']}",
         "--include=" + ",".join(RECIPE["include"]),
         RECIPE["suite"], str(tmp_root), MIRROR], stdout=subprocess.DEVNULL)
    _post_install(tmp_root)
    # Drop the previous bases: only one recipe is current.
    for old in CACHE.glob("base-*"):
        shutil.rmtree(old, ignore_errors=True)
    tmp.rename(root.parent)
    (root.parent / "complete").write_text(json.dumps(RECIPE))
    log(f"base root ready in {time.monotonic() - started:.0f}s: {root}")
    return root


def _post_install(root: Path) -> None:
    # The build machine's CA, so TLS through its registries' proxies verifies.
    ca_dir = root / "usr/local/share/ca-certificates"
    ca_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(CA_BUNDLE, ca_dir / "build-host.crt")
    run(["chroot", str(root), "update-ca-certificates"], stdout=subprocess.DEVNULL)
    for path in COPIED_FILES:
        if Path(path).is_file():
            dest = root / path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dest)
    # Same Debian sources as this machine (security + updates included).
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.is_file():
        shutil.copy(sources, root / "etc/apt/sources.list.d/debian.sources")
        (root / "etc/apt/sources.list").unlink(missing_ok=True)
    # Like container images: maintainer scripts must not start daemons
    # (nginx's postinst would grab port 80 of the shared network); the
    # playbook enables and starts what it installs itself.
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    env_lines = [f"{k}={v}" for k, v in sorted(os.environ.items())
                 if k.startswith(PASSTHROUGH_ENV)]
    env_lines.append(f"NODE_EXTRA_CA_CERTS={CA_BUNDLE}")
    (root / "etc/environment").write_text("\n".join(sorted(set(env_lines))) + "\n")
    (root / "etc/ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
    (root / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
    # No getty on a console nobody reads.
    (root / "etc/systemd/system/console-getty.service").symlink_to("/dev/null")
    (root / "etc/machine-id").write_text("")


# ---------------------------------------------------------------- hosts

def ports(base: int) -> dict[str, int]:
    """Every port a host listens on, from its base: sshd on 127.0.0.1 and nginx
    (the hub, the proxy and its API listen on unix sockets inside the host)."""
    return {
        "ssh": base,
        "nginx_http_port": base + 1,
        "nginx_https_port": base + 2,
    }


def ports_in_use(candidates) -> list[int]:
    """The ports something on this machine already listens on (loopback or any address)."""
    taken = []
    for port in candidates:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                taken.append(port)
    return taken


@dataclass
class Host:
    name: str
    port_base: int
    root: str
    nspawn_pid: int = 0
    init_pid: int = 0
    admin_user: str = ADMIN_USER
    admin_password: str = ""
    ports: dict = field(default_factory=dict)
    extra_vars: dict = field(default_factory=dict)
    # boot in legacy cgroup mode with writable memory/pids/cpu controllers, so
    # the labs' MemoryMax=, TasksMax= and CPUQuota= take effect (limits_writable())
    enforce_limits: bool = False
    cgroups: list = field(default_factory=list)  # this host's cgroups on the build machine
    # size of a btrfs image (in the host's directory) loop-mounted as the users'
    # root before boot, so disk quotas (btrfs qgroups) hold there; "" for none
    users_btrfs: str = ""

    @property
    def dir(self) -> Path:
        return HOSTS / self.name

    @property
    def inventory(self) -> Path:
        return self.dir / "inventory.yml"

    @property
    def ssh_key(self) -> Path:
        return CACHE / "ssh" / "id_ed25519"

    @property
    def exec_prefix(self) -> list[str]:
        """argv prefix running a command as root inside the host."""
        return ["nsenter", "-t", str(self.init_pid), "-a", "--",
                "/usr/bin/env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=/root", "LANG=C.UTF-8"]

    @property
    def domain(self) -> str:
        return self.extra_vars.get("jupyterhub_domain", DOMAIN)

    @property
    def user_subdomains(self) -> bool:
        """Each lab on its own origin (the default), or every lab on the hub's."""
        return bool(self.extra_vars.get("jupyterhub_user_subdomains", True))

    @property
    def https_url(self) -> str:
        """The hub's public URL (its origin + base URL)."""
        return f"https://{self.domain}:{self.ports['nginx_https_port']}{BASE_URL}"

    @property
    def lab_url_pattern(self) -> str:
        """Where the lab of {user} answers (names that are not DNS labels get
        JupyterHub's encoded label instead; lab_url() gives the exact one)."""
        if not self.user_subdomains:
            return f"{self.https_url}user/{{user}}/"
        return f"https://{{user}}.{self.domain}:{self.ports['nginx_https_port']}{BASE_URL}user/{{user}}/"

    def lab_url(self, user: str) -> str:
        """The public URL of user's lab, as the hub computes it (for the tests,
        which have tests/ on sys.path)."""
        from hubclient import HubClient

        return HubClient(self.https_url, user_subdomains=self.user_subdomains).lab_url(user)

    def internal_socket(self, name: str) -> str:
        """Path, from this machine, of the host's internal unix socket ``name``
        ("hub", "proxy", "api"): through the container's root as its init sees it."""
        paths = {"hub": "/run/jupyterhub/hub.sock", "proxy": "/run/jupyterhub-proxy/proxy.sock",
                 "api": "/run/jupyterhub-proxy/api.sock"}
        return f"/proc/{self.init_pid}/root{paths[name]}"

    def exec(self, *argv: str, check: bool = True, timeout: float | None = 600,
             input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.exec_prefix + list(argv), check=check, text=True,
                              capture_output=True, timeout=timeout, input=input)

    def sh(self, script: str, **kw) -> subprocess.CompletedProcess:
        return self.exec("/bin/sh", "-c", script, **kw)

    def unit_properties(self, unit: str, *props: str) -> dict[str, str]:
        out = self.exec("systemctl", "show", unit, *[f"--property={p}" for p in props]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def exposure(self, unit: str) -> tuple[float, str]:
        """``systemd-analyze security`` of a unit: (overall exposure, full report)."""
        out = self.exec("systemd-analyze", "security", "--no-pager", unit).stdout
        found = re.search(rf"Overall exposure level for {re.escape(unit)}: ([\d.]+)", out)
        assert found, out[-2000:]
        return float(found.group(1)), out

    def save(self) -> None:
        (self.dir / "host.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, name: str) -> Host:
        data = json.loads((HOSTS / name / "host.json").read_text())
        return cls(**data)

    def is_running(self) -> bool:
        return bool(self.nspawn_pid) and Path(f"/proc/{self.nspawn_pid}").exists()


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def _find_init(nspawn_pid: int, timeout: float = 30) -> int:
    """The container's systemd: the first descendant of nspawn whose comm is systemd."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        todo = _children(nspawn_pid)
        while todo:
            pid = todo.pop(0)
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if comm == "systemd":
                return pid
            todo += _children(pid)
        if not Path(f"/proc/{nspawn_pid}").exists():
            break
        time.sleep(0.2)
    raise RuntimeError(f"systemd-nspawn {nspawn_pid} did not start a systemd")


# The v1 controllers a lab's limits need: MemoryMax= (memory), TasksMax= (pids),
# CPUQuota=/CPUWeight= (cpu), and cpuacct: systemd handles cpu and cpuacct as
# one joined pair and, with cpuacct read-only, realizes neither. (Mounted apart,
# as the build machine has them, it still leaves the units in cpuacct's root,
# so CPUUsageNSec stays unset; docs/testing.md.)
LIMIT_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct")
# cpu.shares of an enforcing host's cgroup on the build machine. With the
# default 1024 the whole host weighs as much as one busy process of the build
# machine: with ten of them it gets a tenth of a core, and no lab's CPU limit
# (half a core, one core) could ever bind. It stands in for a server of its own.
HOST_CPU_SHARES = 10240


def own_cgroups(proc_cgroup: str) -> dict[str, str]:
    """Hierarchy name -> this process's cgroup in it, from /proc/self/cgroup text
    ("4:memory:/a/b" -> {"memory": "/a/b"}; the unified one is "unified")."""
    found = {}
    for line in proc_cgroup.splitlines():
        _id, controllers, path = line.split(":", 2)
        name = controllers.removeprefix("name=") if controllers else "unified"
        found[name] = path
    return found


def _cgroup_dirs(name: str, enforce_limits: bool = False) -> list[Path]:
    """This host's own cgroup on the build machine, one per hierarchy it needs.

    Without a host systemd, nspawn nests the container under the caller's cgroup
    as ``payload``; two hosts started from the same cgroup would share
    ``/payload/system.slice/<unit>`` and see each other's units (a lab
    named jupyter-admin-singleuser in both, for instance). Each host therefore
    boots from a cgroup of its own, below the caller's (the build machine may
    put this process in a memory cgroup of its own: a host must stay inside it).
    An enforcing host also gets one in each of LIMIT_CONTROLLERS.
    """
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():  # pure cgroup v2
        return [root / f"testhost-{name}"]
    # hybrid/v1: the named systemd hierarchy and the unified one
    wanted = ["systemd", "unified"] + (list(LIMIT_CONTROLLERS) if enforce_limits else [])
    mine = own_cgroups(Path("/proc/self/cgroup").read_text())
    dirs = []
    for hierarchy in wanted:
        mount = root / hierarchy
        if mount.is_dir() and hierarchy in mine:
            dirs.append(mount / mine[hierarchy].lstrip("/") / f"testhost-{name}")
    if enforce_limits:
        missing = [c for c in LIMIT_CONTROLLERS if not (root / c / "cgroup.procs").exists()]
        if missing:
            raise SystemExit(f"test host {name!r}: --enforce-limits needs the cgroup v1 "
                             f"controller hierarchies {missing} mounted under {root}")
    return dirs


def _in_cgroups(dirs: list[Path], argv: list[str]) -> list[str]:
    """``argv`` started in ``dirs``: a shell moves itself there, then execs it.
    (Not Popen's preexec_fn: the suite provisions hosts from a background thread,
    and Python code between fork and exec can deadlock with threads.)"""
    enter = "".join(f'echo $$ > "${i + 1}/cgroup.procs" && ' for i in range(len(dirs)))
    return ["/bin/sh", "-c", f'{enter}shift {len(dirs)} && exec "$@"', "sh",
            *[str(d) for d in dirs], *argv]


def limits_writable(host: Host) -> None:
    """Make the host's limit controllers writable, then let its systemd use them.

    nspawn mounts each v1 controller hierarchy read-only, so systemd inside
    cannot create a unit's memory/pids/cpu cgroup and every limit stays on
    paper. From inside the container's mount and cgroup namespaces a fresh
    mount of the same controller is rooted at the container's own cgroup
    (nothing outside it is reachable) and writable. A plain ``remount,rw`` is
    refused as busy for memory, hence umount + mount. daemon-reexec makes
    systemd re-probe the controllers and realize every unit's cgroup in them.
    """
    script = "set -e\n" + "".join(
        f"umount -l /sys/fs/cgroup/{c}\n"
        f"mount -t cgroup -o {c},nosuid,nodev,noexec cgroup /sys/fs/cgroup/{c}\n"
        for c in LIMIT_CONTROLLERS)
    host.sh(script)
    host.exec("systemctl", "daemon-reexec")


def _remove_cgroups(dirs: list[Path]) -> None:
    for top in dirs:
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            try:
                os.rmdir(dirpath)
            except OSError as exc:
                log(f"cgroup {dirpath} not removed: {exc}")


# Where the platform keeps the users' directories (the storage role's
# storage_users_root), seen from the build machine below a host's root.
USERS_ROOT = "srv/jupyterhub/users"
USERS_IMAGE = "users-btrfs.img"


def users_mount(name: str) -> Path:
    return HOSTS / name / "root" / USERS_ROOT


def _mount_users_btrfs(host: Host) -> None:
    """A fresh btrfs image of ``host.users_btrfs`` bytes loop-mounted on the users'
    root of the host's tree, before boot: nspawn binds the tree recursively, so
    inside the host /srv/jupyterhub/users is that btrfs (docs/testing.md)."""
    image, mount = host.dir / USERS_IMAGE, users_mount(host.name)
    run(["truncate", "-s", host.users_btrfs, str(image)])
    run(["mkfs.btrfs", "-q", "-f", str(image)])
    mount.mkdir(parents=True, exist_ok=True)
    run(["mount", "-o", "loop", str(image), str(mount)])  # the loop device goes with the umount


def _unmount_users_btrfs(name: str) -> None:
    """Undo _mount_users_btrfs; only this host's own users' root is touched."""
    mount = str(users_mount(name).resolve())
    if any(line.split()[1] == mount for line in Path("/proc/mounts").read_text().splitlines()):
        run(["umount", mount])


def _ensure_ssh_key(path: Path) -> None:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "testhost", "-f", str(path)])


def up(name: str, port_base: int, extra_vars: dict | None = None,
       enforce_limits: bool = False, users_btrfs: str = "") -> Host:
    if (HOSTS / name / "host.json").exists():
        old = Host.load(name)
        if old.is_running():
            raise SystemExit(f"test host {name!r} is already up; run `down {name}` first")
        down(name)
    taken = ports_in_use(ports(port_base).values())
    if taken:
        # hosts share this machine's network: a second sshd on the port would
        # answer for this host (and refuse its key)
        raise SystemExit(f"test host {name!r}: port(s) {taken} on 127.0.0.1 are in use "
                         f"(another test host?); choose another port base than {port_base}")
    base = build()
    host = Host(name=name, port_base=port_base, root=str(HOSTS / name / "root"),
                ports=ports(port_base), extra_vars=extra_vars or {},
                admin_password=secrets.token_urlsafe(12), enforce_limits=enforce_limits,
                users_btrfs=users_btrfs)
    host.dir.mkdir(parents=True, exist_ok=True)
    log(f"copying base root for {name}")
    run(["cp", "-a", "--reflink=auto", str(base), host.root])
    root = Path(host.root)
    _ensure_ssh_key(host.ssh_key)
    auth = root / "root/.ssh/authorized_keys"
    auth.write_text(Path(str(host.ssh_key) + ".pub").read_text())
    auth.chmod(0o600)
    (root / "etc/ssh/sshd_config.d/10-testhost.conf").write_text(
        f"Port {host.ports['ssh']}\nListenAddress 127.0.0.1\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n")
    (root / "etc/hostname").write_text(f"th-{name}\n")
    _write_inventory(host)
    host.save()  # down() finds what to undo from here on
    if users_btrfs:
        try:
            _mount_users_btrfs(host)
        except BaseException:
            down(name)
            raise

    argv = ["systemd-nspawn", "-D", host.root, "--register=no", "--keep-unit", "-b",
            f"--machine=th-{name}", "--console=read-only"]
    argv += [f"--bind-ro={p}" for p in READONLY_BINDS if Path(p).is_dir()]
    cgroups = _cgroup_dirs(name, enforce_limits)
    for d in cgroups:
        d.mkdir(exist_ok=True)
        if (d / "cpu.shares").exists():
            (d / "cpu.shares").write_text(str(HOST_CPU_SHARES))
    host.cgroups = [str(d) for d in cgroups]
    env = dict(os.environ)
    if enforce_limits:
        # legacy mode: the container sees the v1 controllers (limits_writable()
        # opens them); in the hybrid default its systemd uses the empty unified one
        env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "0"
    # the container keeps writing its console; this process's copy is closed at once
    with open(host.dir / "console.log", "wb") as console:
        proc = subprocess.Popen(_in_cgroups(cgroups, argv), stdin=subprocess.DEVNULL, stdout=console,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env)
    host.nspawn_pid = proc.pid
    host.init_pid = _find_init(proc.pid)
    host.save()
    try:
        if enforce_limits:
            _wait_running(host)
            limits_writable(host)
        _wait_running(host)
        _wait_ssh(host)
    except BaseException:
        # a host that booted but never became usable is not left running
        down(name)
        raise
    log(f"{name} is up (init pid {host.init_pid}, ssh 127.0.0.1:{host.ports['ssh']}"
        f"{', limits enforced' if enforce_limits else ''})")
    return host


def _wait_running(host: Host, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        res = host.exec("systemctl", "is-system-running", "--wait", check=False, timeout=timeout)
        state = res.stdout.strip()
        if state == "running":
            return
        if state == "degraded":
            failed = host.exec("systemctl", "--failed", "--no-legend", check=False).stdout
            log(f"{host.name} booted degraded: {failed.strip()}")
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{host.name}: system state {state!r} after {timeout}s")
        time.sleep(0.5)


def _wait_ssh(host: Host, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        res = subprocess.run(_ssh_argv(host) + ["true"], capture_output=True, text=True)
        if res.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{host.name}: ssh not answering: {res.stderr.strip()}")
        time.sleep(0.5)


def _ssh_argv(host: Host) -> list[str]:
    return ["ssh", "-i", str(host.ssh_key), "-p", str(host.ports["ssh"]),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "root@127.0.0.1"]


def _write_inventory(host: Host) -> None:
    hostvars = {
        "ansible_host": "127.0.0.1",
        "ansible_port": host.ports["ssh"],
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(host.ssh_key),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        "ansible_python_interpreter": "/usr/bin/python3",
        "jupyterhub_admin": host.admin_user,
        "jupyterhub_admin_password": host.admin_password,
        "jupyterhub_domain": host.domain,
        "jupyterhub_user_subdomains": host.user_subdomains,
        # The test host's cgroup controllers are read-only: limits are set on
        # the unit but not enforced there (docs/testing.md); small values still show.
        "jupyterhub_spawner_mem_limit": "2G",
        "jupyterhub_spawner_cpu_limit": 1.0,
        # the suite signs up dozens of users from 127.0.0.1 within minutes; the
        # quota's own test sets a small one with a jupyterhub_config.d drop-in
        "jupyterhub_signups_per_address_per_hour": 0,
        # small caps of the labs' private /tmp and /dev/shm, so filling one
        # (test_lab_sandbox.py) costs the build machine little RAM
        "jupyterhub_spawner_tmp_size": "256M",
        "jupyterhub_spawner_shm_size": "64M",
    }
    hostvars.update({k: v for k, v in host.ports.items() if k != "ssh"})
    hostvars.update(host.extra_vars)
    inventory = {"all": {"hosts": {f"th-{host.name}": hostvars}}}
    # JSON is valid YAML; Ansible's YAML inventory plugin reads it.
    host.inventory.write_text(json.dumps(inventory, indent=2))


# The suite's enforcing host (tests/conftest.py limits_host): small limits, so
# the labs reach them cheaply (a lab with JupyterLab and a kernel fits in 512M),
# a profile with more memory and one with half a core.
LIMITS_HOST_VARS = {
    "jupyterhub_spawner_mem_limit": "512M",
    "jupyterhub_spawner_cpu_limit": 1.0,
    "jupyterhub_spawner_tasks_max": 200,
    "jupyterhub_resource_profiles": {"big-mem": {"mem_limit": "1G"}, "half-cpu": {"cpu_limit": 0.5}},
    # the hub-priority bench starts 20 labs at once, each capped at one core, on
    # two shared cores: a lab may take over a minute to listen
    "jupyterhub_spawner_start_timeout": 300,
    "jupyterhub_spawner_http_timeout": 300,
    # per-user disk quotas on the users' root, a btrfs image (LIMITS_HOST_USERS_BTRFS)
    "jupyterhub_storage_quota_enabled": True,
    "jupyterhub_storage_quota_per_user": "100M",
}
# size of the enforcing host's btrfs users' root (sparse: only what is written
# takes space on the build machine)
LIMITS_HOST_USERS_BTRFS = "3G"

# The suite's modes host (tests/conftest.py modes_host): plain HTTP behind a TLS
# terminator, signup switched off, and no admin password (the quick start: the
# admin signs up and is approved at once), three modes one deploy can hold.
MODES_HOST_VARS = {
    "jupyterhub_ssl_enabled": False,
    "jupyterhub_signup_enabled": False,
    "jupyterhub_admin_password": "",
}

# Every lab on the hub's origin (jupyterhub_user_subdomains false), reached by
# address: tests/hubclient.py takes a hub URL with an IP address for this mode.
SINGLE_ORIGIN_VARS = {"jupyterhub_user_subdomains": False, "jupyterhub_domain": "127.0.0.1"}


def set_origins(name: str, user_subdomains: bool) -> Host:
    """Switch a host between one origin per user and the single origin; deploy next."""
    host = Host.load(name)
    for key in SINGLE_ORIGIN_VARS:
        host.extra_vars.pop(key, None)
    if not user_subdomains:
        host.extra_vars.update(SINGLE_ORIGIN_VARS)
    host.save()
    _write_inventory(host)
    return host


def deploy(name: str, *ansible_args: str, check: bool = True, capture: bool = False,
           repo: Path = REPO, playbook: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``repo``'s ansible/site.yml (or ``playbook``, another playbook using its
    roles) against the host: this checkout's, or another tree's (the upgrade
    test deploys the previous release's checkout first)."""
    host = Host.load(name)
    # ansible.cfg's roles_path (relative to it) finds the roles for any playbook
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    cfg = repo / "ansible" / "ansible.cfg"
    if cfg.exists():
        env["ANSIBLE_CONFIG"] = str(cfg)
    argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(host.inventory),
            str(playbook or repo / "ansible" / "site.yml"), *ansible_args]
    log(" ".join(argv))
    if capture:
        res = subprocess.run(argv, env=env, text=True, capture_output=True, cwd=repo)
        if check and res.returncode:
            raise RuntimeError(f"ansible-playbook failed ({res.returncode}):\n"
                               f"{res.stdout[-6000:]}\n{res.stderr[-3000:]}")
        return res
    return subprocess.run(argv, env=env, check=check, cwd=repo)


def provision(name: str, port_base: int, extra_vars: dict | None = None,
              enforce_limits: bool = False, reuse: bool = False, log_to: Path | None = None,
              before_deploy: Callable[[Host], None] | None = None,
              users_btrfs: str = "") -> Host:
    """A running host with the platform deployed: the kept one when ``reuse``
    and it was deployed and still runs, else a fresh one (up, ``before_deploy``
    (what the deployment needs inside the host, e.g. a local ACME CA), deploy)."""
    marker = HOSTS / name / "deployed"
    if reuse and marker.exists():
        existing = Host.load(name)
        if existing.is_running():
            return existing
    host = up(name, port_base, extra_vars, enforce_limits, users_btrfs)
    if before_deploy:
        before_deploy(host)
    res = deploy(name, capture=True)
    if log_to:
        log_to.write_text(res.stdout + res.stderr)
    marker.write_text("")
    return host


def down(name: str) -> None:
    hdir = HOSTS / name
    if not hdir.exists():
        return
    try:
        host = Host.load(name)
    except (OSError, ValueError, TypeError):
        host = None
    if host and host.is_running():
        host.exec("systemctl", "poweroff", "--no-block", check=False, timeout=30)
        deadline = time.monotonic() + 30
        while host.is_running() and time.monotonic() < deadline:
            _reap(host.nspawn_pid)
            time.sleep(0.3)
        if host.is_running():
            os.killpg(host.nspawn_pid, signal.SIGKILL)
            time.sleep(1)
    _remove_cgroups([Path(d) for d in host.cgroups] if host and host.cgroups else _cgroup_dirs(name))
    _unmount_users_btrfs(name)
    root = (hdir / "root").resolve()
    if any(line.split()[1].startswith(str(root)) for line in Path("/proc/mounts").read_text().splitlines()):
        raise RuntimeError(f"refusing to delete {root}: something is still mounted below it")
    shutil.rmtree(hdir)
    log(f"{name} is down")


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def write_demo_facts(host: Host, path: Path) -> dict:
    facts = {
        "url": host.https_url,
        "lab_url": host.lab_url_pattern,
        "admin_user": host.admin_user,
        "admin_password": host.admin_password,
        "exec": host.exec_prefix,
    }
    path.write_text(json.dumps(facts, indent=2))
    path.chmod(0o600)
    return facts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="build (or reuse) the cached Debian 12 root")
    single_origin = {"action": "store_true",
                     "help": "every lab on the hub's origin (jupyterhub_user_subdomains false)"}
    p = sub.add_parser("up", help="boot a fresh host from the cached root")
    p.add_argument("name")
    p.add_argument("--port-base", type=int, required=True)
    p.add_argument("--single-origin", **single_origin)
    p.add_argument("--enforce-limits", action="store_true",
                   help="legacy cgroup mode with writable memory/pids/cpu controllers: "
                        "the labs' limits take effect (see docs/testing.md)")
    p.add_argument("--users-btrfs", metavar="SIZE", default="",
                   help="the users' root on a loop-mounted btrfs image of SIZE (e.g. 3G), "
                        "for disk quotas (set jupyterhub_storage_quota_enabled in the inventory)")
    p = sub.add_parser("origins", help="switch a host's lab origins (then deploy it)")
    p.add_argument("name")
    p.add_argument("mode", choices=["subdomains", "single"])
    p = sub.add_parser("exec", help="run a command as root inside")
    p.add_argument("name")
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p = sub.add_parser("deploy", help="run ansible/site.yml against the host")
    p.add_argument("name")
    p.add_argument("ansible_args", nargs=argparse.REMAINDER)
    p = sub.add_parser("down", help="power off and delete the host")
    p.add_argument("name")
    p = sub.add_parser("demo", help="build, boot and deploy the demo host, print how to log in")
    p.add_argument("--name", default="demo")
    p.add_argument("--port-base", type=int, default=18000)
    p.add_argument("--single-origin", **single_origin)
    p.add_argument("--no-enforce-limits", dest="enforce_limits", action="store_false",
                   help="the suite's default kind (limits set on the units, not enforced)")
    args = ap.parse_args(argv)
    extra_vars = SINGLE_ORIGIN_VARS if getattr(args, "single_origin", False) else {}

    if args.cmd == "build":
        print(build())
    elif args.cmd == "up":
        host = up(args.name, args.port_base, extra_vars, args.enforce_limits, args.users_btrfs)
        print(json.dumps(asdict(host), indent=2))
    elif args.cmd == "origins":
        host = set_origins(args.name, args.mode == "subdomains")
        print(f"{host.name}: labs at {host.lab_url_pattern}; deploy it now")
    elif args.cmd == "exec":
        cmd = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        return subprocess.run(Host.load(args.name).exec_prefix + cmd).returncode
    elif args.cmd == "deploy":
        extra = args.ansible_args[1:] if args.ansible_args[:1] == ["--"] else args.ansible_args
        return deploy(args.name, *extra, check=False).returncode
    elif args.cmd == "down":
        down(args.name)
    elif args.cmd == "demo":
        # a newcomer should see the limits work: the demo enforces them
        host = up(args.name, args.port_base, extra_vars, args.enforce_limits)
        deploy(host.name)
        facts_path = host.dir / "demo.json"
        facts = write_demo_facts(host, facts_path)
        print(f"\nThe platform runs at {facts['url']} (self-signed certificate)\n"
              f"Each lab at {facts['lab_url']} (browsers resolve *.localhost to this machine)\n"
              f"Log in as {facts['admin_user']} / {facts['admin_password']}\n"
              f"Facts for scripts: {facts_path}\n"
              f"Shell inside: {sys.executable} tests/testhost/testhost.py exec {host.name} -- bash\n"
              f"Tear down:    {sys.executable} tests/testhost/testhost.py down {host.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
