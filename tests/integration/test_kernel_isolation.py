"""Kernels out of other labs' reach (docs/security.md, "Kernels").

Every lab shares the host's network, so a kernel on loopback TCP ports (Jupyter's
default) is open to every other user's lab: its iopub channel publishes every
output of every cell, unencrypted (the connection file's HMAC key signs
messages, it hides nothing), to whoever subscribes. The attack here runs in
bob's own notebook kernel, as a user would: it lists alice's listening sockets
from /proc/net (TCP ports by owner uid, unix socket paths by name), connects to
each one and subscribes to everything, while alice's notebook prints a secret.
Without the barrier, bob's lab reads the secret.

On the platform, kernels speak ZeroMQ over unix sockets in the lab unit's
private runtime directory (/run/<unit>, the lab user's, mode 0700), so alice's
kernel has no TCP port, and connecting to its sockets fails in bob's lab.
"""

from __future__ import annotations

import re
import secrets

import pytest

from hubclient import batch_create, kernel_cell, start_kernel, unique_names

# bob's first cell: find alice's sockets, connect to every one, collect what
# arrives in a background thread (so the cell returns and alice can print)
ATTACK = """
import errno, os, pwd, socket, threading, time, zmq

victim_uid = pwd.getpwnam({victim!r}).pw_uid
tcp_ports = set()
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    with open(table) as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[7]) == victim_uid:  # LISTEN, owned by alice
                tcp_ports.add(int(fields[1].rsplit(":", 1)[1], 16))
with open("/proc/net/unix") as f:
    unix_paths = sorted({{line.split()[7] for line in f.readlines()[1:]
                         if len(line.split()) == 8 and {victim_dir!r} in line.split()[7]}})

refused = {{}}
for path in unix_paths:
    probe = socket.socket(socket.AF_UNIX)
    refused[path] = errno.errorcode.get(probe.connect_ex(path), "connected")
    probe.close()

context = zmq.Context()
subscribers = []
for endpoint in [f"tcp://127.0.0.1:{{p}}" for p in sorted(tcp_ports)] + [f"ipc://{{p}}" for p in unix_paths]:
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    subscribers.append(sub)
received = []

def listen():
    poller = zmq.Poller()
    for sub in subscribers:
        poller.register(sub, zmq.POLLIN)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for sub, _ in poller.poll(200):
            received.append(b"".join(sub.recv_multipart()))

threading.Thread(target=listen, daemon=True).start()
time.sleep(1)  # ZeroMQ connects in the background; a publisher drops what comes before
print("attack-ready", len(subscribers))
"""

REPORT = """
time.sleep(2)
print("tcp", sorted(tcp_ports))
print("unix", refused)
print("leaked", any({secret!r}.encode() in message for message in received))
"""


@pytest.fixture(scope="module")
def two_labs(admin):
    alice, bob = unique_names(2, "kiso")
    batch_create(admin, [alice, bob])
    for name in (alice, bob):
        admin.start_server(name)
    yield alice, bob
    for name in (alice, bob):
        admin.stop_server(name)
        admin.api("DELETE", f"users/{name}")


def test_another_lab_cannot_reach_a_kernel(host, admin, two_labs):
    alice, bob = two_labs
    secret = secrets.token_hex(8)
    victim_kernel = start_kernel(admin, alice)
    attacker_kernel = start_kernel(admin, bob)
    try:
        out, status = kernel_cell(admin, bob, attacker_kernel, ATTACK.format(
            victim=f"jh-{alice}", victim_dir=f"jupyter-{alice}-singleuser"))
        assert status == "ok" and "attack-ready" in out, out

        # alice's notebook prints its secret while bob listens
        out, status = kernel_cell(admin, alice, victim_kernel,
                                  f"import time\nfor _ in range(20):\n    print({secret!r}); time.sleep(0.1)")
        assert status == "ok" and secret in out, out

        report, status = kernel_cell(admin, bob, attacker_kernel, REPORT.format(secret=secret))
        assert status == "ok", report
        assert "leaked False" in report, f"bob's lab read alice's cell output: {report}"
        # alice's TCP listeners, seen on the host (bob's view by uid also shows
        # other test hosts' users: they share this machine's network), but the
        # lab's HTTP port, which systemd holds for it (docs/security.md): only
        # ipykernel's pipe for forked processes' output, one per kernel (a
        # receive-only socket that drops any message without the kernel's
        # random 128-bit key), none in the lab's server
        processes = dict(line.split(None, 1) for line in
                         host.exec("ps", "-u", f"jh-{alice}", "-o", "pid=,args=").stdout.splitlines())
        kernels = {pid for pid, args in processes.items() if "ipykernel_launcher" in args}
        assert len(kernels) == 1, processes
        listening = [set(re.findall(r"pid=(\d+)", line)) & set(processes)
                     for line in host.exec("ss", "-Hltnp").stdout.splitlines()
                     if '("systemd",pid=1,' not in line]
        assert [pids for pids in listening if pids] == [kernels], (listening, processes)
        # alice's kernel sockets exist (shell, iopub, stdin, control, heartbeat)
        # and refuse bob: the runtime directory is alice's, mode 0700
        refused = dict(re.findall(r"'([^']+)': '(\w+)'", report))
        assert len(refused) >= 5, report
        assert set(refused.values()) <= {"EACCES", "ENOENT"}, report
    finally:
        for user, kernel in ((alice, victim_kernel), (bob, attacker_kernel)):
            admin.s.delete(admin.url(f"user/{user}/api/kernels/{kernel}"), timeout=30)


def test_kernels_on_unix_sockets_restart_and_keep_running_cells(admin, two_labs):
    """A restart (JupyterLab's "Restart Kernel") binds new sockets in the same
    private directory; the kernel answers again."""
    alice, _ = two_labs
    kernel = start_kernel(admin, alice)
    try:
        out, status = kernel_cell(admin, alice, kernel, "x = 6 * 7\nprint(x)")
        assert status == "ok" and "42" in out, out
        r = admin.s.post(admin.url(f"user/{alice}/api/kernels/{kernel}/restart"), timeout=60)
        assert r.status_code == 200, r.text
        out, status = kernel_cell(admin, alice, kernel,
                                  "import json\nfrom ipykernel.connect import get_connection_file\n"
                                  "print('x' in dir(), json.load(open(get_connection_file()))['transport'])")
        assert status == "ok" and "False ipc" in out, out
    finally:
        admin.s.delete(admin.url(f"user/{alice}/api/kernels/{kernel}"), timeout=30)
