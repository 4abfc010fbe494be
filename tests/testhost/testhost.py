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
from collections.abc import Callable, Sequence
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


# ---------------------------------------------------------------- private networks

NETWORKS = CACHE / "networks"
NETNS_DIR = Path("/run/netns")
# Linux interface names hold at most 15 characters.
IFNAME_MAX = 15


@dataclass
class Network:
    """A private network among test hosts (a cluster: hub and workers).

    Built only of namespaces and veth pairs this script creates and removes:
    a switch namespace ``<name>-sw`` holding a bridge, one namespace per host
    (named like the host) whose ``eth0`` is a veth into that bridge, and one
    veth ``<name>-gw`` from this machine's namespace into the bridge, so
    Ansible's SSH and the tests reach the hosts at their own addresses. Nothing
    routes or NATs beyond the /24: package installs go through a forward proxy
    (``serve_package_proxy``) listening on the gateway address, which makes the
    outgoing connections from this machine like any of its processes. The
    hosts share one directory of this machine (``shared_dir``), bound at
    /srv/jupyterhub in each: the per-user directories a cluster keeps on NFS.
    """

    name: str
    subnet: str  # the first three octets of a /24, e.g. "10.120.0"
    members: dict  # host name -> address
    proxy_port: int
    proxy_pid: int = 0

    @property
    def dir(self) -> Path:
        return NETWORKS / self.name

    @property
    def gateway(self) -> str:
        return f"{self.subnet}.1"

    @property
    def switch(self) -> str:
        return f"{self.name}-sw"

    @property
    def gateway_link(self) -> str:
        return f"{self.name}-gw"

    @property
    def proxy_url(self) -> str:
        return f"http://{self.gateway}:{self.proxy_port}"

    @property
    def shared_dir(self) -> Path:
        return self.dir / "shared"

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "network.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, name: str) -> Network:
        return cls(**json.loads((NETWORKS / name / "network.json").read_text()))

    def plug(self, host: str, connected: bool) -> None:
        """Pull (or put back) ``host``'s cable at the switch: it keeps running
        but nobody reaches it, as a worker that died looks to the others."""
        run(["ip", "-n", self.switch, "link", "set", host, "up" if connected else "down"])


def plan_network(name: str, port_base: int, hosts: list[str]) -> Network:
    """Addresses of a private network: the gateway .1, the hosts .2, .3, ... in
    order, in a /24 derived from the port base (each person's base is their own,
    so are their networks); the proxy on the port base + 9."""
    for ifname in [f"{name}-sw", f"{name}-gw", *hosts]:
        if len(ifname) > IFNAME_MAX or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", ifname):
            raise ValueError(f"{ifname!r} cannot name a namespace and interface "
                             f"(a-z, 0-9, '-', at most {IFNAME_MAX} characters)")
    if len(hosts) > 250:
        raise ValueError("a /24 holds at most 250 test hosts")
    subnet = f"10.{(port_base // 100) % 256}.{(port_base // 25600) % 256}"
    return Network(name=name, subnet=subnet,
                   members={h: f"{subnet}.{i}" for i, h in enumerate(hosts, start=2)},
                   proxy_port=port_base + 9)


def hosts_file(network: Network) -> str:
    """/etc/hosts of every member: each host's name (th-<name>, its hostname)
    at its address, so Slurm and the proxy find the others by name."""
    lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    lines += [f"{addr} th-{host}" for host, addr in network.members.items()]
    return "\n".join(lines) + "\n"


def network_commands(network: Network) -> list[list[str]]:
    """The ip(8) commands that build the network (network_up runs them)."""
    sw, gw = network.switch, network.gateway_link
    cmds = [
        ["ip", "netns", "add", sw],
        ["ip", "-n", sw, "link", "set", "lo", "up"],
        ["ip", "-n", sw, "link", "add", "br0", "type", "bridge"],
        ["ip", "-n", sw, "link", "set", "br0", "up"],
        ["ip", "link", "add", gw, "type", "veth", "peer", "name", "gw", "netns", sw],
        ["ip", "-n", sw, "link", "set", "gw", "master", "br0", "up"],
        ["ip", "addr", "add", f"{network.gateway}/24", "dev", gw],
        ["ip", "link", "set", gw, "up"],
    ]
    for host, addr in network.members.items():
        cmds += [
            ["ip", "netns", "add", host],
            ["ip", "-n", host, "link", "set", "lo", "up"],
            ["ip", "-n", sw, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", host],
            ["ip", "-n", sw, "link", "set", host, "master", "br0", "up"],
            ["ip", "-n", host, "addr", "add", f"{addr}/24", "dev", "eth0"],
            ["ip", "-n", host, "link", "set", "eth0", "up"],
        ]
    return cmds


def network_up(name: str, port_base: int, hosts: list[str]) -> Network:
    network = plan_network(name, port_base, hosts)
    if (NETWORKS / name / "network.json").exists():
        network_down(name)
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True, check=True).stdout
    if f"{network.subnet}.0/24" in routes:
        raise SystemExit(f"network {name!r}: {network.subnet}.0/24 is already routed here; "
                         f"choose another port base than {port_base}")
    network.shared_dir.mkdir(parents=True, exist_ok=True)
    network.save()  # before the first command: network_down removes a half-built one
    try:
        for argv in network_commands(network):
            run(argv)
        # an outgoing proxy for package installs, detached from this process
        with open(network.dir / "proxy.log", "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, __file__, "package-proxy", network.gateway, str(network.proxy_port)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        network.proxy_pid = proc.pid
        network.save()
    except BaseException:
        network_down(name)
        raise
    log(f"network {name} is up: {network.subnet}.0/24, proxy {network.proxy_url}")
    return network


def network_down(name: str) -> None:
    """Stop the proxy, delete the namespaces (their veths go with them) and the
    shared directory. Its hosts must be down first."""
    path = NETWORKS / name / "network.json"
    if not path.exists():
        return
    network = Network.load(name)
    if network.proxy_pid:
        try:
            os.killpg(network.proxy_pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        _reap(network.proxy_pid)
    for ns in [*network.members, network.switch]:
        if (NETNS_DIR / ns).exists():
            subprocess.run(["ip", "netns", "del", ns], check=False)
    subprocess.run(["ip", "link", "del", network.gateway_link], check=False, capture_output=True)
    shutil.rmtree(network.dir)
    log(f"network {name} is down")


async def _pipe(reader, writer) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


# connection attempts to a package server (a refused or reset connect under load
# failed a whole deploy with apt's "502 Bad Gateway")
PROXY_CONNECT_TRIES = 4


async def _open_upstream(host: str, port: int):
    import asyncio

    for attempt in range(1, PROXY_CONNECT_TRIES + 1):
        try:
            return await asyncio.wait_for(asyncio.open_connection(host, port), 30)
        except (TimeoutError, OSError) as exc:
            print(f"package proxy: {host}:{port} attempt {attempt}: {exc!r}", file=sys.stderr, flush=True)
            if attempt == PROXY_CONNECT_TRIES:
                raise
            await asyncio.sleep(attempt)


async def _proxy_client(reader, writer) -> None:
    """One client of the package proxy: CONNECT host:port (HTTPS: pip, npm) or
    an absolute-URI request (HTTP: apt), each on a connection of its own."""
    import asyncio
    from urllib.parse import urlsplit

    try:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *headers = head.decode("latin-1").split("\r\n")
        method, target, version = request_line.split(" ", 2)
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            up_reader, up_writer = await _open_upstream(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            url = urlsplit(target)
            up_reader, up_writer = await _open_upstream(url.hostname, url.port or 80)
            kept = [h for h in headers if h and not h.lower().startswith(("proxy-", "connection:"))]
            path = url.path + (f"?{url.query}" if url.query else "")
            up_writer.write("\r\n".join([f"{method} {path} {version}", *kept, "Connection: close", "", ""])
                            .encode("latin-1"))
    except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
        writer.write(f"HTTP/1.1 502 Bad Gateway\r\n\r\n{exc}\n".encode())
        writer.close()
        return
    await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


def serve_package_proxy(address: str, port: int) -> None:
    import asyncio

    async def serve() -> None:
        server = await asyncio.start_server(_proxy_client, address, port)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


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
    # the v1 controllers an enforcing host may write (LIMIT_CONTROLLERS, plus
    # SLURM_CONTROLLERS on a cluster's worker)
    limit_controllers: list = field(default_factory=lambda: list(LIMIT_CONTROLLERS))
    cgroups: list = field(default_factory=list)  # this host's cgroups on the build machine
    # size of a btrfs image (in the host's directory) loop-mounted as the users'
    # root before boot, so disk quotas (btrfs qgroups) hold there; "" for none
    users_btrfs: str = ""
    # A host of a private network (Network): its address there, its network
    # namespace, and (on a cluster's hub) the names of its worker hosts.
    # Empty: the host shares this machine's network (the single-host default).
    address: str = ""
    netns: str = ""
    workers: list = field(default_factory=list)

    @property
    def ssh_address(self) -> str:
        return self.address or "127.0.0.1"

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
# What Slurm's cgroup v1 plugins need besides (a cluster's worker): cpuset
# (ConstrainCores), devices (ConstrainDevices), freezer (proctrack/cgroup).
SLURM_CONTROLLERS = ("cpuset", "devices", "freezer")
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


def _cgroup_dirs(name: str, limit_controllers: Sequence[str] = ()) -> list[Path]:
    """This host's own cgroup on the build machine, one per hierarchy it needs.

    Without a host systemd, nspawn nests the container under the caller's cgroup
    as ``payload``; two hosts started from the same cgroup would share
    ``/payload/system.slice/<unit>`` and see each other's units (a lab
    named jupyter-admin-singleuser in both, for instance). Each host therefore
    boots from a cgroup of its own, below the caller's (the build machine may
    put this process in a memory cgroup of its own: a host must stay inside it).
    An enforcing host also gets one in each of its ``limit_controllers``.
    """
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():  # pure cgroup v2
        return [root / f"testhost-{name}"]
    # hybrid/v1: the named systemd hierarchy and the unified one
    wanted = ["systemd", "unified", *limit_controllers]
    mine = own_cgroups(Path("/proc/self/cgroup").read_text())
    dirs = []
    for hierarchy in wanted:
        mount = root / hierarchy
        if mount.is_dir() and hierarchy in mine:
            dirs.append(mount / mine[hierarchy].lstrip("/") / f"testhost-{name}")
    if limit_controllers:
        missing = [c for c in limit_controllers if not (root / c / "cgroup.procs").exists()]
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
        for c in host.limit_controllers)
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
       enforce_limits: bool = False, users_btrfs: str = "", network: Network | None = None,
       workers: list[str] | None = None,
       limit_controllers: Sequence[str] = LIMIT_CONTROLLERS) -> Host:
    """Boot a host; with ``network`` in that private network (its own
    namespace, address and /etc/hosts, the network's shared directory at
    /srv/jupyterhub, package installs through its proxy), else on this
    machine's network. ``workers``: the hosts its inventory lists as the
    cluster's ``workers`` group (they are up already)."""
    if (HOSTS / name / "host.json").exists():
        old = Host.load(name)
        if old.is_running():
            raise SystemExit(f"test host {name!r} is already up; run `down {name}` first")
        down(name)
    taken = [] if network else ports_in_use(ports(port_base).values())
    if taken:
        # hosts share this machine's network: a second sshd on the port would
        # answer for this host (and refuse its key)
        raise SystemExit(f"test host {name!r}: port(s) {taken} on 127.0.0.1 are in use "
                         f"(another test host?); choose another port base than {port_base}")
    base = build()
    host = Host(name=name, port_base=port_base, root=str(HOSTS / name / "root"),
                ports=ports(port_base), extra_vars=extra_vars or {},
                admin_password=secrets.token_urlsafe(12), enforce_limits=enforce_limits,
                limit_controllers=list(limit_controllers),
                users_btrfs=users_btrfs,
                address=network.members[name] if network else "", netns=name if network else "",
                workers=list(workers or []))
    host.dir.mkdir(parents=True, exist_ok=True)
    log(f"copying base root for {name}")
    run(["cp", "-a", "--reflink=auto", str(base), host.root])
    root = Path(host.root)
    _ensure_ssh_key(host.ssh_key)
    auth = root / "root/.ssh/authorized_keys"
    auth.write_text(Path(str(host.ssh_key) + ".pub").read_text())
    auth.chmod(0o600)
    (root / "etc/ssh/sshd_config.d/10-testhost.conf").write_text(
        f"Port {host.ports['ssh']}\nListenAddress {host.ssh_address}\n"
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
    if network:
        _join_network(root, network)
        argv += [f"--network-namespace-path={NETNS_DIR / name}", "--resolv-conf=off",
                 f"--bind={network.shared_dir}:/srv/jupyterhub"]
    cgroups = _cgroup_dirs(name, limit_controllers if enforce_limits else ())
    for d in cgroups:
        d.mkdir(exist_ok=True)
        if (d / "cpuset.cpus").exists():  # a new cpuset is empty: no process may enter
            for knob in ("cpuset.cpus", "cpuset.mems"):
                (d / knob).write_text((d.parent / knob).read_text())
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
    log(f"{name} is up (init pid {host.init_pid}, ssh {host.ssh_address}:{host.ports['ssh']}"
        f"{', limits enforced' if enforce_limits else ''})")
    return host


def _join_network(root: Path, network: Network) -> None:
    """Names, no DNS (there is none on the private network: a lookup fails at
    once instead of timing out), the package proxy for apt, pip and npm
    (pam_env gives /etc/environment to Ansible's SSH sessions), and dpkg
    without fsync."""
    (root / "etc/hosts").write_text(hosts_file(network))
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("# private test network: names are in /etc/hosts\n")
    local = ["localhost", "127.0.0.1", "::1", ".localhost",
             *network.members.values(), *[f"th-{h}" for h in network.members]]
    proxy = network.proxy_url
    env = root / "etc/environment"
    env.write_text(env.read_text() + "".join(
        f"{k}={v}\n" for k, v in [("http_proxy", proxy), ("https_proxy", proxy), ("HTTP_PROXY", proxy),
                                  ("HTTPS_PROXY", proxy), ("no_proxy", ",".join(local)),
                                  ("NO_PROXY", ",".join(local))]))
    # apt retries a download that failed half-way (the proxy retries connecting)
    (root / "etc/apt/apt.conf.d/90testhost-proxy").write_text(
        f'Acquire::http::Proxy "{proxy}";\nAcquire::Retries "3";\n')
    # dpkg without an fsync per file, as container images do: a cluster's
    # workers unpack some 900 packages each side by side on the build
    # machine's disk (a crash loses the host, which the tests rebuild anyway)
    (root / "etc/dpkg/dpkg.cfg.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/dpkg/dpkg.cfg.d/90testhost-unsafe-io").write_text("force-unsafe-io\n")


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
            "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", f"root@{host.ssh_address}"]


def _connection_vars(host: Host) -> dict:
    return {
        "ansible_host": host.ssh_address,
        "ansible_port": host.ports["ssh"],
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(host.ssh_key),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        "ansible_python_interpreter": "/usr/bin/python3",
    }


def _write_inventory(host: Host) -> None:
    hostvars = {
        **_connection_vars(host),
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
    if host.workers:
        # the platform's variables for every host of the cluster (the workers'
        # roles check and use the same ones); connections stay per host
        connection = _connection_vars(host)
        inventory["all"] = {
            "hosts": {f"th-{host.name}": connection},
            "vars": {k: v for k, v in hostvars.items() if k not in connection},
            "children": {"workers": {"hosts": {
                f"th-{w}": _connection_vars(Host.load(w)) for w in host.workers}}},
        }
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

    def fresh() -> Host:
        host = up(name, port_base, extra_vars, enforce_limits, users_btrfs)
        if before_deploy:
            before_deploy(host)
        return host

    return _kept_or_deployed(name, reuse, log_to, fresh)


def provision_cluster(name: str, port_base: int, workers: int = 1, reuse: bool = False,
                      log_to: Path | None = None, times_to: Path | None = None) -> Host:
    """A cluster (hub + ``workers``) with the platform deployed; its hub host.
    A kept one is reused only with the same workers. ``times_to``: a JSON file
    with the seconds of the network and boots and of the playbook."""
    hub_name, worker_names = cluster_names(name, workers)
    if reuse and (HOSTS / hub_name / "host.json").exists() and Host.load(hub_name).workers != worker_names:
        reuse = False
    times = {}

    def fresh() -> Host:
        started = time.monotonic()
        cluster_down(name)
        hub = cluster_up(name, port_base, workers)
        times["network_and_boots_s"] = round(time.monotonic() - started, 1)
        return hub

    started = time.monotonic()
    hub = _kept_or_deployed(hub_name, reuse, log_to, fresh)
    if times and times_to:
        times["playbook_s"] = round(time.monotonic() - started - times["network_and_boots_s"], 1)
        times_to.write_text(json.dumps(times, indent=2))
    return hub


def _kept_or_deployed(name: str, reuse: bool, log_to: Path | None, boot: Callable[[], Host]) -> Host:
    marker = HOSTS / name / "deployed"
    if reuse and marker.exists():
        existing = Host.load(name)
        if existing.is_running():
            return existing
    host = boot()
    res = deploy(host.name, capture=True)
    if log_to:
        log_to.write_text(res.stdout + res.stderr)
    marker.write_text("")
    return host


def cluster_names(name: str, workers: int) -> tuple[str, list[str]]:
    """The hub host and worker hosts of cluster ``name``: <name>-hub, <name>-w1 ..."""
    return f"{name}-hub", [f"{name}-w{i}" for i in range(1, workers + 1)]


# A cluster's hub (tests/cluster/test_cluster.py): every lab on the hub's
# origin, reached at its address on the private network; small labs (a lab with
# a kernel fits in 512M), so one reaches its memory limit cheaply; a worker
# silent for 30 s is down (its labs stopped) sooner than Slurm's default.
CLUSTER_HUB_VARS = {"jupyterhub_user_subdomains": False, "jupyterhub_spawner_mem_limit": "512M",
                    "slurm_worker_timeout": 30}

# The test cluster's lab environment: the user_env role's own pinned list, less
# the data-science stack and the lab services' servers, which no cluster test
# uses and the single-host suite installs and proves. Each worker would
# otherwise download and install them too (docs/testing.md, "The cluster tier").
CLUSTER_LAB_LEFT_OUT = ("numpy", "pandas", "scipy", "scikit-learn", "matplotlib", "mlflow", "tensorboard", "glances")


def cluster_lab_packages() -> list[str]:
    import yaml

    role_default = yaml.safe_load((REPO / "ansible/roles/user_env/defaults/main.yml").read_text())
    return [pin for pin in role_default["jupyterhub_lab_packages"]
            if re.split(r"[\[=<>~!; ]", pin, maxsplit=1)[0] not in CLUSTER_LAB_LEFT_OUT]


def cluster_up(name: str, port_base: int, workers: int = 1, extra_vars: dict | None = None) -> Host:
    """A private network with a hub host and ``workers`` worker hosts on it;
    the hub's inventory lists the workers (deploy the hub to deploy them all)."""
    hub_name, worker_names = cluster_names(name, workers)
    network = network_up(name, port_base, [hub_name, *worker_names])
    try:
        for worker in worker_names:
            # the enforcing kind: Slurm's cgroup plugins hold the labs' limits
            up(worker, port_base, network=network, enforce_limits=True,
               limit_controllers=LIMIT_CONTROLLERS + SLURM_CONTROLLERS)
        hub_vars = {**CLUSTER_HUB_VARS, "jupyterhub_lab_packages": cluster_lab_packages(),
                    "jupyterhub_domain": network.members[hub_name], **(extra_vars or {})}
        return up(hub_name, port_base, hub_vars, network=network, workers=worker_names)
    except BaseException:
        cluster_down(name)
        raise


def cluster_down(name: str) -> None:
    """Every host of the cluster, then its network (namespaces, veths, proxy, shared directory)."""
    path = NETWORKS / name / "network.json"
    if not path.exists():
        return
    members = list(Network.load(name).members)
    # all of them shut down at once: a worker's may take down()'s whole 30 s
    # (slurmstepd ending its jobs), and one after another they added up
    for host in members:
        _start_poweroff(host)
    for host in members:
        down(host)
    network_down(name)


def _start_poweroff(name: str) -> None:
    if not (HOSTS / name / "host.json").exists():
        return
    host = Host.load(name)
    if host.is_running():
        _request_poweroff(host)


def _request_poweroff(host: Host) -> None:
    """Tell the host to power off, without waiting for it to finish."""
    try:
        host.exec("systemctl", "poweroff", "--no-block", check=False, timeout=30)
    except subprocess.TimeoutExpired:
        pass  # a host already shutting down: down() waits for it and kills what does not stop


def down(name: str) -> None:
    hdir = HOSTS / name
    if not hdir.exists():
        return
    try:
        host = Host.load(name)
    except (OSError, ValueError, TypeError):
        host = None
    if host and host.is_running():
        _request_poweroff(host)
        deadline = time.monotonic() + 30
        while host.is_running() and time.monotonic() < deadline:
            _reap(host.nspawn_pid)
            time.sleep(0.3)
        if host.is_running():
            os.killpg(host.nspawn_pid, signal.SIGKILL)
            time.sleep(1)
        _kill_container_init(host)
    _remove_cgroups([Path(d) for d in host.cgroups] if host and host.cgroups else _cgroup_dirs(name))
    _unmount_users_btrfs(name)
    root = (hdir / "root").resolve()
    if any(line.split()[1].startswith(str(root)) for line in Path("/proc/mounts").read_text().splitlines()):
        raise RuntimeError(f"refusing to delete {root}: something is still mounted below it")
    shutil.rmtree(hdir)
    log(f"{name} is down")


def _kill_container_init(host: Host, timeout: float = 10) -> None:
    """The container's init outlives a killed nspawn (it is PID 1 of its own
    namespace, reparented here): a host stuck in its shutdown (a worker's
    slurmstepd ignoring SIGTERM for 90 s) would keep running after ``down``.
    SIGKILL to it ends the whole namespace. Only while it is still in this
    host's cgroup, so a reused pid is never hit."""
    try:
        if f"testhost-{host.name}" not in Path(f"/proc/{host.init_pid}/cgroup").read_text():
            return
        os.kill(host.init_pid, signal.SIGKILL)
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{host.init_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)


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
    p = sub.add_parser("cluster-up", help="a private network with NAME-hub and NAME-w1.. on it")
    p.add_argument("name")
    p.add_argument("--port-base", type=int, required=True)
    p.add_argument("--workers", type=int, default=1)
    p = sub.add_parser("cluster-down", help="every host of cluster NAME, then its network")
    p.add_argument("name")
    p = sub.add_parser("package-proxy", help="(internal) the forward proxy of a private network")
    p.add_argument("address")
    p.add_argument("port", type=int)
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
    elif args.cmd == "cluster-up":
        host = cluster_up(args.name, args.port_base, args.workers)
        print(f"{host.name} and its workers {host.workers} are up; deploy {host.name} next")
    elif args.cmd == "cluster-down":
        cluster_down(args.name)
    elif args.cmd == "package-proxy":
        serve_package_proxy(args.address, args.port)
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
