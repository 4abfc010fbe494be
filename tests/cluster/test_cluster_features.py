"""The platform's features on the cluster's workers (docs/cluster.md): the same
in-lab paths as on one host, the lab sandbox attacked from inside a lab,
privilege groups, restart and volume reset, idle culling with an extension,
Prometheus metrics by worker. Each test finds the worker its lab landed on
from Slurm, so the tests hold for any number of workers."""

from __future__ import annotations

import re
import time

import pytest

import testhost
from hubclient import (
    HubClient,
    batch_create,
    hub_config_dropin,
    kernel_cell,
    lab_cell,
    lab_shell,
    login_client,
    start_kernel,
    unique_names,
)

SHARED_DIR = "/srv/jupyterhub/shared"  # storage_shared_dir's default, /mnt/shared in every lab


@pytest.fixture(scope="module")
def users(cluster_hub, cluster_admin) -> list[str]:
    """Two platform users who have logged in once (no lab yet); every lab
    still running on the cluster (the admin's, which logging in started, an
    earlier module's) is stopped: the workers' memory is for these tests'
    labs, which would otherwise wait in Slurm's queue on a small worker."""
    for user in cluster_admin.api("GET", "users").json():
        if user["servers"]:
            cluster_admin.stop_server(user["name"])
    names = unique_names(2, "f")
    for name, password in batch_create(cluster_admin, names).items():
        assert login_client(cluster_hub.https_url, name, password, spawn=False).logged_in_as() == name
    return names


def unix(user: str) -> str:
    return f"jh-{user}"


def storage(user: str, volume: str) -> str:
    """A per-user directory on the shared storage (the hub host's view)."""
    return f"/srv/jupyterhub/users/{unix(user)}/{volume}"


def job_of(hub, user: str) -> tuple[str, str, str] | None:
    """(job id, state, node) of the user's lab job, None when Slurm lists none."""
    for line in hub.exec("squeue", "--noheader", "--user", unix(user), "--format=%i|%T|%N").stdout.splitlines():
        job, state, node = line.split("|")
        return job, state, node
    return None


def worker_of(hub, user: str) -> testhost.Host:
    """The test host the user's running lab landed on (its node name is th-<host>)."""
    job = job_of(hub, user)
    assert job and job[1] == "RUNNING", job
    return testhost.Host.load(job[2].removeprefix("th-"))


def shell(admin: HubClient, user: str, command: str) -> str:
    out, status = lab_shell(admin, user, command)
    return out


def ensure_lab(admin: HubClient, user: str) -> None:
    if not admin.server_running(user):
        admin.start_server(user, timeout=300)


# --- 1. the same in-lab paths as on one host ------------------------------------------


def test_a_lab_on_a_worker_sees_its_directories_at_the_in_lab_paths(cluster_hub, cluster_admin, users):
    user = users[0]
    ensure_lab(cluster_admin, user)
    home = f"/home/{unix(user)}"
    out, status = lab_cell(cluster_admin, user, f"""
import os, pathlib
print(os.environ["HOME"], os.getcwd())
pathlib.Path("{home}/workspace/from-lab.txt").write_text("workspace")
pathlib.Path("{home}/.cache/from-lab.txt").write_text("cache")
pathlib.Path("{home}/from-lab.txt").write_text("home")
pathlib.Path("/mnt/shared/{user}.txt").write_text("shared")
""")
    assert status == "ok", out
    # HOME and the working directory are the in-lab paths of one host...
    assert out.split() == [home, f"{home}/workspace"]
    # ...and each is the user's directory on the shared storage
    for volume, in_lab in (("workspace", "workspace"), ("cache", "cache"), ("home", "home")):
        assert cluster_hub.exec("cat", f"{storage(user, volume)}/from-lab.txt").stdout == in_lab
    assert cluster_hub.exec("cat", f"{SHARED_DIR}/{user}.txt").stdout == "shared"
    cluster_hub.exec("rm", "-f", f"{SHARED_DIR}/{user}.txt")


# --- 2. the lab sandbox on a worker, attacked from inside a lab ------------------------


def test_a_lab_on_a_worker_cannot_see_other_users_directories_or_processes(cluster_hub, cluster_admin, users):
    owner, other = users
    ensure_lab(cluster_admin, owner)
    ensure_lab(cluster_admin, other)
    # the other user's directories on the shared storage, by their path there
    listing = shell(cluster_admin, owner, "ls -A /srv/jupyterhub/users /home; echo END")
    assert unix(other) not in listing and listing.split()[-1] == "END", listing
    # only the lab's own processes, all of them the user's (no other lab, no root daemon)
    users_seen = set(shell(cluster_admin, owner, "ps -eo user= | sort -u").split())
    assert users_seen == {unix(owner)}, users_seen


def test_a_lab_on_a_worker_has_a_read_only_system_and_its_own_tmp(cluster_hub, cluster_admin, users):
    user = users[0]
    ensure_lab(cluster_admin, user)
    worker = worker_of(cluster_hub, user)
    # world-writable places of the worker stay out of reach (ProtectSystem=strict, ReadOnlyPaths=/run)
    # (/run/lock: world-writable, its own tmpfs on Debian, below the read-only /run)
    for path in ("/run/lock", "/home"):
        out = shell(cluster_admin, user, f"touch {path}/f-{user} 2>&1; echo rc=$?")
        assert "rc=0" not in out, (path, out)
    # /tmp, /var/tmp and /dev/shm are the lab's own, capped: nothing lands on the worker's
    out = shell(cluster_admin, user, f"for d in /tmp /var/tmp /dev/shm; do echo x > $d/mark-{user}; done; "
                                     "df --output=size -B1M /tmp /dev/shm | tail -2")
    sizes = [int(n) for n in out.split()[-2:]]
    assert sizes[0] <= 2048 and sizes[1] <= 1024, out  # tmp_size 2G, shm_size 1G (the defaults)
    for directory in ("/tmp", "/var/tmp", "/dev/shm"):
        assert worker.exec("test", "-e", f"{directory}/mark-{user}", check=False).returncode == 1, directory


def test_a_lab_on_a_worker_cannot_submit_slurm_jobs_of_its_own(cluster_hub, cluster_admin, users):
    # munge's socket would let the lab submit jobs as its user, outside the
    # hub's limits and this sandbox
    user = users[0]
    ensure_lab(cluster_admin, user)
    out = shell(cluster_admin, user, "sbatch --wrap=true 2>&1; echo rc=$?")
    assert "rc=0" not in out and "Submitted" not in out, out
    assert "munge" in out.lower(), out
    jobs = cluster_hub.exec("squeue", "--noheader", "--user", unix(user), "--format=%j").stdout.split()
    assert jobs == [f"jupyter-{unix(user)}"], jobs


# --- 3. privilege groups on the workers ------------------------------------------------


def lab_groups(hub, user: str) -> set[str]:
    """The supplementary gids of the user's lab server, as its worker sees them
    (inside the sandbox's user namespace they show as nogroup: only the user's
    own ids are mapped there, the kernel still checks the real ones)."""
    worker = worker_of(hub, user)
    pid = worker.exec("pgrep", "-u", unix(user), "-f", "lab_server").stdout.split()[0]
    status = worker.exec("cat", f"/proc/{pid}/status").stdout
    return set(re.search(r"^Groups:\t(.*)$", status, re.M).group(1).split())


def test_docker_sock_gives_the_docker_group_on_a_worker_and_sudo_is_never_given(cluster_hub, cluster_admin, users):
    member, other = users
    docker = cluster_hub.exec("getent", "group", "docker", check=False)
    assert docker.returncode == 0, "the hub host has no docker group"
    docker_gid = docker.stdout.split(":")[2]
    sudo_gid = cluster_hub.exec("getent", "group", "jupyterhub-sudo").stdout.split(":")[2]
    for group in ("docker-sock", "docker-privileged"):
        r = cluster_admin.api("POST", f"groups/{group}/users", json={"users": [member]})
        assert r.status_code == 200, r.text
    # the groups take effect at the next start, as on one host
    for user in (member, other):
        if cluster_admin.server_running(user):
            cluster_admin.stop_server(user)
        cluster_admin.start_server(user, timeout=300)
    # the job holds the hub's docker gid on its worker: a file of that group
    # (as the Docker socket is) opens for the member's lab only
    secret = f"{SHARED_DIR}/docker-only-{member}.txt"
    cluster_hub.exec("sh", "-c", f"echo opened-as-docker > {secret} && chgrp docker {secret} && chmod 0640 {secret}")
    try:
        in_lab = f"/mnt/shared/docker-only-{member}.txt"
        assert "opened-as-docker" in shell(cluster_admin, member, f"cat {in_lab}")
        out = shell(cluster_admin, other, f"cat {in_lab} 2>&1")
        assert "Permission denied" in out and "opened-as-docker" not in out, out
    finally:
        cluster_hub.exec("rm", "-f", secret)
    assert docker_gid in lab_groups(cluster_hub, member)
    assert docker_gid not in lab_groups(cluster_hub, other)
    # docker-privileged's sudo group is the hub host's only: a lab on a worker
    # runs under NoNewPrivileges, where sudo cannot work
    assert sudo_gid not in lab_groups(cluster_hub, member)
    assert "rc=0" not in shell(cluster_admin, member, "sudo -n true 2>&1; echo rc=$?")


# --- 4. restart, volume reset, culling and metrics with labs on workers ----------------


def test_restart_and_volume_reset_of_a_lab_on_a_worker(cluster_hub, cluster_admin, users):
    user = users[0]
    ensure_lab(cluster_admin, user)
    before = job_of(cluster_hub, user)
    r = cluster_admin.api("POST", f"users/{user}/restart-server", timeout=300)
    assert r.status_code == 200 and r.json()["ready"], r.text
    after = job_of(cluster_hub, user)
    # a new Slurm job; the old one is gone
    assert after and after[1] == "RUNNING" and after[0] != before[0], (before, after)
    # a volume reset needs the lab stopped; the next lab starts with an empty workspace
    cluster_hub.exec("sh", "-c", f"echo kept > {storage(user, 'workspace')}/reset-me.txt")
    cluster_admin.stop_server(user)
    assert job_of(cluster_hub, user) is None
    r = cluster_admin.api("DELETE", f"users/{user}/manage-volumes", json={"volumes": ["workspace"]})
    assert r.status_code == 200, r.text
    cluster_admin.start_server(user, timeout=300)
    assert "reset-me.txt" not in shell(cluster_admin, user, "ls -A ~/workspace; echo END")


def test_the_hub_metrics_label_each_lab_with_its_worker(cluster_hub, cluster_admin, users):
    user = users[0]
    ensure_lab(cluster_admin, user)
    node = job_of(cluster_hub, user)[2]
    r = cluster_admin.get("hub/metrics")
    assert r.status_code == 200, r.status_code
    assert f'jupyterhub_cluster_lab_worker{{user="{user}",worker="{node}"}} 1.0' in r.text
    count = re.search(rf'jupyterhub_cluster_labs{{worker="{node}"}} (\d+)', r.text)
    running_here = cluster_hub.exec("squeue", "--noheader", "--states=RUNNING", "--nodelist", node,
                                    "--format=%i").stdout.split()
    assert count and int(count.group(1)) == len(running_here), r.text


def test_the_activity_monitor_reads_a_worker_labs_cpu_and_memory_from_slurm(cluster_hub, cluster_admin, users):
    user = users[0]
    ensure_lab(cluster_admin, user)
    # a kernel (kept running) holding ~200 MiB and keeping a core busy for a while
    kernel = start_kernel(cluster_admin, user)
    out, status = kernel_cell(cluster_admin, user, kernel, """
import threading, time
ballast = bytearray(200 * 1024 * 1024)
for i in range(0, len(ballast), 4096):
    ballast[i] = 1
def burn(until=time.time() + 60):
    while time.time() < until:
        pass
threading.Thread(target=burn, daemon=True).start()
print("burning")
""")
    assert status == "ok", out
    # Slurm gathers every 15 s (JobAcctGatherFrequency); the monitor reads live on request
    deadline = time.monotonic() + 90
    while True:
        row = next(u for u in cluster_admin.api("GET", "activity").json()["users"] if u["name"] == user)
        if (row["memory_bytes"] or 0) > 200 * 1024 * 1024 and (row["cpu_seconds"] or 0) > 5:
            break
        assert time.monotonic() < deadline, row
        time.sleep(5)
    assert row["sources"] == {"cpu": "slurm", "memory": "slurm"}, row
    cluster_admin.s.delete(cluster_admin.url(f"user/{user}/api/kernels/{kernel}"), timeout=60)


TIMEOUT, UNIT = 10, 15  # culling: idle seconds, and what one extension "hour" is worth here
CULLING = f"""\
c.SessionCuller.enabled = True
c.SessionCuller.timeout = {TIMEOUT}
c.SessionCuller.interval = 1
c.SessionCuller.max_extension_hours = 1
c.SessionCuller.extension_unit_seconds = {UNIT}
c.JupyterHub.last_activity_interval = 1
"""


@pytest.fixture
def culling(cluster_hub, cluster_admin, users):
    """The cluster hub with a seconds-long idle timeout (a jupyterhub_config.d
    drop-in and a hub restart, which keeps the running labs); the other users'
    labs stopped first, so only the test's lab can be culled."""
    for user in (*users, cluster_hub.admin_user):
        if cluster_admin.server_running(user):
            cluster_admin.stop_server(user)
    with hub_config_dropin(cluster_hub, cluster_admin, "90-test-culling.py", CULLING):
        yield


def test_an_idle_lab_on_a_worker_is_culled_after_its_extension_and_its_job_ends(
        cluster_hub, cluster_admin, users, culling):
    user = users[1]
    cluster_admin.start_server(user, timeout=300)
    last_use = time.monotonic()
    r = cluster_admin.api("POST", f"users/{user}/extend-session", json={"hours": 1})
    assert r.status_code == 200 and r.json()["granted_hours"] == 1, r.text
    # the extension holds it past the plain timeout...
    while time.monotonic() < last_use + TIMEOUT + UNIT - 3:
        assert cluster_admin.server_running(user), "culled before its extended deadline"
        time.sleep(1)
    # ...then the culler stops it: its Slurm job ends
    deadline = last_use + TIMEOUT + UNIT + 30
    while cluster_admin.server_running(user):
        assert time.monotonic() < deadline, "an idle lab outlived its extended deadline"
        time.sleep(1)
    while job_of(cluster_hub, user) is not None:
        assert time.monotonic() < deadline + 30, job_of(cluster_hub, user)
        time.sleep(1)
