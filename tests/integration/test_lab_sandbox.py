"""The sandbox of a lab unit (hub_ext.units.lab_unit.lab_hardening, docs/accounts.md),
checked from inside real labs on the test host.

A normal user's lab still runs a notebook cell and a terminal that write to
home, workspace, cache, /tmp and /mnt/shared, speak HTTP over loopback (IPv4,
IPv6, Python and node) and reach the hub's API on its unix socket, map W+X
memory (JIT), use /dev/shm and build a venv with pip; while other homes and
other users' processes are invisible, the file system outside the bound
directories is read-only and it holds no capability.
A docker-sock member reaches a root-owned socket of the docker group. A
docker-privileged member's sudo still installs a Debian package and makes a
setuid file, without the capabilities that reach beyond the lab (mount,
hostname, sysctl). The privileged unit's exposure is saved next to the
normal one's (test_security_matrix.py asserts that one).

/tmp, /var/tmp and /dev/shm are each lab's own capped tmpfs: what one lab
writes there another (here a sudo lab, whose root looks too) never sees, nor
does the host; filling one lab's past its cap fails with ENOSPC there while the
other lab's stay usable; POSIX shared memory (multiprocessing.shared_memory)
still works between a lab's processes.
"""

from __future__ import annotations

import re
import secrets
import textwrap
import time
from pathlib import Path

import pytest

from hubclient import HubClient, lab_cell, lab_shell, unique_names

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
# 8.8 without the sandbox; 7.0 while /tmp was PrivateTmp=, 7.1 with the private
# capped tmpfs mounts, which systemd-analyze does not credit (it reads only PrivateTmp=)
PRIVILEGED_LAB_EXPOSURE_LIMIT = 7.1
FAKE_DOCKER_SOCKET = "/run/sandbox-test-docker.sock"
# a root-owned socket of the docker group, as dockerd's /var/run/docker.sock
FAKE_DOCKERD = textwrap.dedent("""
    import grp, os, socket, sys
    path = sys.argv[1]
    if os.path.exists(path):
        os.remove(path)
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    os.chown(path, 0, grp.getgrnam("docker").gr_gid)
    os.chmod(path, 0o660)
    srv.listen()
    while True:
        conn, _ = srv.accept()
        conn.sendall(b"pong")
        conn.close()
""")


def unit(user: str) -> str:
    return f"jupyter-{user}-singleuser.service"


def new_users(admin: HubClient, n: int, prefix: str) -> list[str]:
    users = unique_names(n, prefix)
    for user in users:
        assert admin.api("POST", f"users/{user}").status_code == 201
    return users


def add_to_group(admin: HubClient, group: str, user: str) -> None:
    r = admin.api("POST", f"groups/{group}/users", json={"users": [user]})
    assert r.status_code == 200, r.text


def shell(admin: HubClient, user: str, command: str) -> tuple[str, int]:
    return lab_shell(admin, user, command, timeout=180)


def shell_ok(admin: HubClient, user: str, command: str) -> str:
    out, status = shell(admin, user, command)
    assert status == 0, f"{command!r} exited {status}: {out}"
    return out


def shell_fails(admin: HubClient, user: str, command: str) -> str:
    out, status = shell(admin, user, command)
    assert status != 0, f"{command!r} succeeded inside the sandbox: {out}"
    return out


@pytest.fixture(scope="module")
def fake_docker_socket(host):
    host.exec("systemd-run", "--unit=sandbox-fake-dockerd", "--collect",
              "/usr/bin/python3", "-c", FAKE_DOCKERD, FAKE_DOCKER_SOCKET)
    for _ in range(50):
        if host.exec("test", "-S", FAKE_DOCKER_SOCKET, check=False).returncode == 0:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the fake docker socket never appeared")
    yield FAKE_DOCKER_SOCKET
    host.exec("systemctl", "stop", "sandbox-fake-dockerd", check=False)
    host.exec("rm", "-f", FAKE_DOCKER_SOCKET)


# POSIX shared memory between two processes of one lab (multiprocessing's
# SharedMemory lives in /dev/shm)
SHARED_MEMORY_ROUND_TRIP = textwrap.dedent("""
    from multiprocessing import Process, shared_memory
    def child(name):
        segment = shared_memory.SharedMemory(name)
        segment.buf[0] = segment.buf[0] + 1
        segment.close()
    if __name__ == "__main__":
        segment = shared_memory.SharedMemory(create=True, size=1 << 20)
        segment.buf[0] = 41
        worker = Process(target=child, args=(segment.name,))
        worker.start()
        worker.join()
        print("shared-memory", segment.buf[0])
        segment.close()
        segment.unlink()
""")

PRIVATE_TEMPORARY_DIRS = ("/tmp", "/var/tmp", "/dev/shm")


def configured_caps(host, unit_name: str) -> dict[str, int]:
    """{mount point: size= in bytes} of the unit's TemporaryFileSystem= entries."""
    value = host.unit_properties(unit_name, "TemporaryFileSystem")["TemporaryFileSystem"]
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    caps = {}
    for path, number, suffix in re.findall(r"(/[^\s:]+):\S*?size=(\d+)([KMGT]?)", value):
        caps[path] = int(number) * units[suffix]
    return caps


def fills_up(admin: HubClient, user: str, path: str, cap: int) -> str:
    """Write one MiB more than ``cap`` into ``path``; the output of the failing write."""
    mib = cap // 2**20 + 1
    # a subshell: exit must not end the terminal's own shell
    return shell_fails(admin, user, f"(dd if=/dev/zero of={path} bs=1M count={mib} 2>&1;"
                                    f" status=$?; rm -f {path}; exit $status)")


def notebook_cell() -> str:
    """A cell doing what notebooks do; prints cell-ok when all of it worked."""
    return textwrap.dedent("""
        import mmap, multiprocessing, os, socket, urllib.request
        home = os.environ["HOME"]
        for d in (home, home + "/workspace", home + "/.cache", "/tmp", "/mnt/shared"):
            probe = f"{d}/sandbox-probe-{os.getpid()}"
            with open(probe, "w") as f:
                f.write("x")
            os.remove(probe)
        # JIT compilers (numba, PyTorch, node) need writable+executable memory
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC).close()
        for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(family) as srv:
                srv.bind((address, 0))
                srv.listen()
                socket.create_connection((address, srv.getsockname()[1])).close()
        # HTTP over loopback: the lab's own server (what a tool running in the lab talks to)
        lab_api = os.environ["JUPYTERHUB_SERVICE_URL"].rstrip("/") + "/api"
        assert urllib.request.urlopen(lab_api).status == 200
        with multiprocessing.Pool(2) as pool:  # semaphores in /dev/shm
            assert pool.map(abs, [-1, -2]) == [1, 2]
        print("cell-ok")
    """)


def test_normal_lab_works_inside_its_sandbox(host, admin, fake_docker_socket):
    user, other, docker_user = new_users(admin, 3, "sbx")
    add_to_group(admin, "docker-sock", docker_user)
    for name in (user, other, docker_user):
        admin.start_server(name)
    try:
        out, status = lab_cell(admin, user, notebook_cell())
        assert status == "ok" and "cell-ok" in out, out
        # jupyter-resource-usage still reads the lab's own processes
        r = admin.s.get(admin.url(f"user/{user}/api/metrics/v1"), timeout=30)
        assert r.status_code == 200 and r.json()["rss"] > 0, r.text

        shell_ok(admin, user, "cd && echo home > t1 && echo tmp > /tmp/t2 && cat t1 /tmp/t2"
                 " && echo ws > workspace/t3 && cat workspace/t3")
        # new files are private, except in the shared dir, whose default ACL wins
        assert shell_ok(admin, user, "umask").split()[-1] == "0077"
        shared = f"/mnt/shared/sbx-{user}"
        shell_ok(admin, user, f"mkdir {shared} && echo x > {shared}/f")
        try:
            modes = shell_ok(admin, user, f"stat -c %A {shared} {shared}/f").split()
            assert modes[-2][5] == "w" and modes[-1][5] == "w", modes  # group-writable
        finally:
            host.exec("rm", "-rf", f"/srv/jupyterhub/shared/sbx-{user}")
        shell_ok(admin, user, "node -e \"require('http').get(process.env.JUPYTERHUB_SERVICE_URL + 'api',"
                 " r => process.exit(r.statusCode === 200 ? 0 : 1))"
                 ".on('error', () => process.exit(2))\"")
        # the hub's API, over its unix socket, as jupyterhub-singleuser reaches it
        shell_ok(admin, user, "curl -sf --unix-socket /run/jupyterhub/hub.sock"
                 " http://hub/jupyterhub/hub/api/ >/dev/null")
        # pip into the user's own venv (the lab venv itself is root's)
        shell_ok(admin, user, "/opt/jupyterlab/bin/python -m venv ~/.sbx-venv && ~/.sbx-venv/bin/pip --version"
                 " && rm -rf ~/.sbx-venv")

        # the sandbox itself
        unix = f"jh-{user}"
        assert shell_ok(admin, user, "ls -A /home").split() == [unix]
        other_pid = host.unit_properties(unit(other), "MainPID")["MainPID"]
        assert other_pid != "0"
        shell_fails(admin, user, f"test -e /proc/{other_pid}")
        assert host.exec("test", "-e", f"/proc/{other_pid}", check=False).returncode == 0
        # /run/lock is world-writable on the host: read-only here
        shell_fails(admin, user, "touch /run/lock/sandbox-probe")
        status = shell_ok(admin, user, "grep -E '^(CapBnd|NoNewPrivs|Seccomp):' /proc/self/status")
        assert "CapBnd:\t0000000000000000" in status and "NoNewPrivs:\t1" in status
        assert "Seccomp:\t2" in status

        # the docker CLI's way to dockerd: AF_UNIX through the docker group
        connect = ("python3 -c \"import socket; s = socket.socket(socket.AF_UNIX);"
                   f" s.connect('{fake_docker_socket}'); print(s.recv(4).decode())\"")
        assert "pong" in shell_ok(admin, docker_user, connect)
        assert "PermissionError" in shell_fails(admin, user, connect)
    finally:
        for name in (user, other, docker_user):
            admin.stop_server(name)


def test_privileged_lab_keeps_sudo_and_apt(host, admin):
    user, = new_users(admin, 1, "sbxp")
    add_to_group(admin, "docker-privileged", user)
    admin.start_server(user)
    try:
        shell_ok(admin, user, "sudo -n true")
        # root inside installs a package (dpkg: chown, setuid helpers, /usr, /etc, /var)
        shell_ok(admin, user, "sudo -n apt-get install -y -q --no-install-recommends tree"
                              " >/tmp/apt.log 2>&1 || { tail -20 /tmp/apt.log; false; }")
        shell_ok(admin, user, "tree -L 1 / >/dev/null")
        shell_ok(admin, user, "sudo -n cp /bin/true /usr/local/bin/sbx-true"
                              " && sudo -n chmod 4755 /usr/local/bin/sbx-true"
                              " && test -u /usr/local/bin/sbx-true"
                              " && sudo -n rm /usr/local/bin/sbx-true")
        # but root inside does not reach beyond the lab
        shell_fails(admin, user, "sudo -n mount -t tmpfs none /mnt")
        shell_fails(admin, user, "sudo -n hostname sandbox-probe")
        shell_fails(admin, user, "sudo -n sh -c 'echo 1 > /proc/sys/vm/drop_caches'")
        score, report = host.exposure(unit(user))
    finally:
        admin.stop_server(user)
        host.exec("apt-get", "remove", "-y", "-q", "tree", check=False)
    (ARTIFACTS / "security-privileged-unit.txt").write_text(report)
    print(f"\n{unit(user)} (docker-privileged) exposure: {score}"
          " (details: artifacts/security-privileged-unit.txt)")
    # root inside stays root-equivalent by design (docs/accounts.md)
    assert score <= PRIVILEGED_LAB_EXPOSURE_LIMIT, report


def test_tmp_and_shm_are_private_and_capped_per_lab(host, admin):
    user, privileged = new_users(admin, 2, "sbxt")
    add_to_group(admin, "docker-privileged", privileged)
    for name in (user, privileged):
        admin.start_server(name)
    try:
        marker = "sbx-private-" + secrets.token_hex(4)
        shell_ok(admin, user, " && ".join(f"echo {marker} > {path}/{marker}"
                                          for path in PRIVATE_TEMPORARY_DIRS))
        shell_ok(admin, user, f"cat /dev/shm/{marker} /tmp/{marker} /var/tmp/{marker}")
        for path in PRIVATE_TEMPORARY_DIRS:
            shell_fails(admin, privileged, f"ls -a {path} | grep -F {marker}")
            # not even root in the sudo lab, which cannot unmount its way out
            shell_fails(admin, privileged, f"sudo -n ls -a {path} | grep -F {marker}")
        shell_fails(admin, privileged, "sudo -n umount /dev/shm")
        # nor anywhere on the host (PrivateTmp= would leave it under the host's /tmp)
        found = host.exec("find", "/tmp", "/var/tmp", "/dev/shm", "-name", marker, check=False)
        assert marker not in found.stdout, found.stdout

        caps = configured_caps(host, unit(user))
        assert set(caps) == set(PRIVATE_TEMPORARY_DIRS), caps
        assert configured_caps(host, unit(privileged)) == caps
        # the lab sees its own capped tmpfs, not the host's (its size is the cap)
        for path in PRIVATE_TEMPORARY_DIRS:
            size = shell_ok(admin, user, f"python3 -c \"import os; s = os.statvfs('{path}');"
                                         f" print(s.f_blocks * s.f_frsize)\"").split()[-1]
            assert int(size) == caps[path], (path, size, caps)

        # past the cap: ENOSPC in that lab only
        for path in ("/dev/shm", "/tmp"):
            out = fills_up(admin, user, f"{path}/sbx-fill", caps[path])
            assert "No space left on device" in out, out
            shell_ok(admin, privileged, f"dd if=/dev/zero of={path}/sbx-ok bs=1M count=8"
                                        f" && rm {path}/sbx-ok")
        # a lab's own sudo root is capped the same way
        out = fills_up(admin, privileged, "/dev/shm/sbx-fill", caps["/dev/shm"])
        assert "No space left on device" in out, out

        # POSIX shared memory still works inside each lab
        for name in (user, privileged):
            script = f"/home/jh-{name}/sbx_shm.py"
            host.exec("install", "-o", f"jh-{name}", "-m", "0644", "/dev/stdin",
                      f"/srv/jupyterhub/users/jh-{name}/home/sbx_shm.py",
                      input=SHARED_MEMORY_ROUND_TRIP)
            assert "shared-memory 42" in shell_ok(admin, name, f"python3 {script}")
    finally:
        for name in (user, privileged):
            admin.stop_server(name)
