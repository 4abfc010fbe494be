"""The platform on a Slurm cluster (docs/cluster.md): a hub host and two workers
(the limit-enforcing kind) on a private network. The tests run in file order as
one scenario. Four users' labs are Slurm jobs that land on both workers (each
worker has two cores, each lab asks for one), each reached through the hub's
nginx and running a cell on its worker; Slurm's cgroup plugin holds each lab's
limits, and a kernel past its memory limit is killed on its worker only while
every other lab keeps running; with the cluster full a fifth lab waits with
Slurm's reason on its spawn page; a worker dies, its labs are reported stopped
while the other worker's keep running, and one of its users starts again on the
other worker. The hub's API latency is measured without labs and with the four
labs running, and each spawn's latency through Slurm (artifacts/cluster.json,
docs/scaling.md)."""

import json
import re
import statistics
import time
from collections import Counter
from pathlib import Path

import pytest

import testhost
from hubclient import (
    HubClient,
    batch_create,
    kernel_cell,
    lab_cell,
    lab_shell,
    login_client,
    start_kernel,
    unique_names,
)

M = 1024 * 1024
MEM_LIMIT = 512 * M  # the cluster's jupyterhub_spawner_mem_limit (testhost.CLUSTER_HUB_VARS)
LABS = 4  # two per worker: each worker of the test cluster has two cores, each lab asks for one
# every figure this module measures, for docs/scaling.md and docs/cluster.md
RESULTS = Path(__file__).resolve().parents[2] / "artifacts" / "cluster.json"
figures: dict = {}


@pytest.fixture(scope="module")
def users(cluster_hub, cluster_admin) -> list[str]:
    """Five platform users who have logged in once (no lab yet; the fifth is the
    one who waits for a full cluster), on workers with no other lab: the
    admin's, which logging in started, is stopped. Their labs are stopped
    afterwards, so later modules find the cluster empty."""
    if cluster_admin.server_running(cluster_hub.admin_user):
        cluster_admin.stop_server(cluster_hub.admin_user)
    names = unique_names(LABS + 1, "c")
    for name, password in batch_create(cluster_admin, names).items():
        assert login_client(cluster_hub.https_url, name, password, spawn=False).logged_in_as() == name
    yield names
    for name in names:
        if cluster_admin.server_running(name):
            cluster_admin.stop_server(name)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2))


@pytest.fixture(scope="module")
def workers(cluster_hub) -> dict[str, testhost.Host]:
    """Slurm's node name (the host's hostname) -> the worker host."""
    hosts = [testhost.Host.load(name) for name in cluster_hub.workers]
    assert len(hosts) == 2, cluster_hub.workers
    return {f"th-{w.name}": w for w in hosts}


def unix(user: str) -> str:
    return f"jh-{user}"


def jobs(hub) -> list[str]:
    """Slurm's queue on the hub host, a line "unix user|state|node|job name|reason" per job."""
    return hub.exec("squeue", "--noheader", "--format=%u|%T|%N|%j|%r").stdout.splitlines()


def running_labs(hub) -> dict[str, str]:
    """unix user -> the node their lab's job runs on (lab jobs only)."""
    found = {}
    for line in jobs(hub):
        account, state, node, name, _reason = line.split("|")
        if state == "RUNNING" and name == f"jupyter-{account}":
            found[account] = node
    return found


def node_of(hub, user: str) -> str:
    node = running_labs(hub).get(unix(user))
    assert node, (user, jobs(hub))
    return node


def job_cgroup(worker, user: str, controller: str) -> str:
    """The lab job's cgroup directory in one v1 hierarchy on the worker (Slurm's
    cgroup/v1 layout: slurm_<node>/uid_<uid>/job_<id>)."""
    uid = worker.exec("id", "-u", unix(user)).stdout.strip()
    found = worker.sh(f"ls -d /sys/fs/cgroup/{controller}/slurm_th-{worker.name}/uid_{uid}/job_*").stdout.split()
    assert len(found) == 1, found
    return found[0]


def oom_kills(worker, user: str) -> int:
    """OOM kills inside the lab job's memory cgroup (and its step cgroups below)."""
    memory = job_cgroup(worker, user, "memory")
    out = worker.sh(f"find {memory} -name memory.oom_control -exec grep -h oom_kill {{}} +").stdout
    return sum(int(line.split()[1]) for line in out.splitlines() if line.startswith("oom_kill "))


def port_report(user: str) -> str:
    """Where the user's lab reports the port it bound (docs/cluster.md)."""
    return f"/srv/jupyterhub/users/{unix(user)}/home/.jupyterhub-lab-port"


def lab_server_pid(worker, user: str) -> str:
    return worker.exec("pgrep", "-u", unix(user), "-f", "lab_server", check=False).stdout.strip()


def progress_messages(admin: HubClient, user: str, until: str, timeout: float = 120) -> list[str]:
    """The spawn page's progress messages of user's pending spawn (the event
    stream it reads), up to the first one containing ``until``."""
    messages = []
    deadline = time.monotonic() + timeout
    with admin.api("GET", f"users/{user}/server/progress", stream=True, timeout=timeout) as r:
        assert r.status_code == 200, r.status_code
        for line in r.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                messages.append(json.loads(line[len("data:"):])["message"])
                if until in messages[-1]:
                    return messages
            assert time.monotonic() < deadline, messages
    raise AssertionError(f"the progress stream ended before {until!r}: {messages}")


def wait_stopped(admin: HubClient, user: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while admin.server_running(user):
        assert time.monotonic() < deadline, f"{user}'s lab still reported running after {timeout} s"
        time.sleep(2)


def api_latencies(admin: HubClient, user: str, seconds: float) -> dict:
    """A hub API call (``GET /hub/api/users/<name>``, as in the burst benchmark,
    docs/benchmarks.md) every 0.1 s for ``seconds``: p50, p95, max in ms.
    Every call must answer 200."""
    took = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        r = admin.api("GET", f"users/{user}", timeout=30)
        took.append(time.monotonic() - started)
        assert r.status_code == 200, (r.status_code, r.text)
        time.sleep(0.1)
    took.sort()
    return {"calls": len(took), "p50_ms": round(1000 * statistics.median(took)),
            "p95_ms": round(1000 * took[int(0.95 * (len(took) - 1))]), "max_ms": round(1000 * took[-1])}


# half the hub's poll cycle (JupyterHub's Spawner.poll_interval, 30 s): the four
# labs' squeue polls are spread over the cycle, so a window sees about two of them
API_WINDOW_S = 15


def test_the_hub_api_without_labs(cluster_admin, users):
    assert not any(cluster_admin.server_running(u) for u in users)
    figures["api_no_labs"] = api_latencies(cluster_admin, users[0], API_WINDOW_S)
    print(f"\nhub API without labs: {figures['api_no_labs']}")


def test_four_labs_land_on_both_workers_and_run_a_cell_through_nginx(cluster_hub, cluster_admin, users, workers):
    spawns = []
    for user in users[:LABS]:
        # polled as often as the single-host spawn benchmark polls (POLL_S, tests/bench)
        spawns.append(cluster_admin.start_server(user, timeout=300, poll=0.05))
    figures["spawn_s"] = [round(s, 2) for s in spawns]
    print(f"\ncluster spawns (API request to lab answering through nginx): {figures['spawn_s']} s, "
          f"median {statistics.median(spawns):.2f} s")

    # each lab is the running Slurm job of its user's unix account, two on each worker
    placed = {user: node_of(cluster_hub, user) for user in users[:LABS]}
    assert Counter(placed.values()) == dict.fromkeys(workers, 2), jobs(cluster_hub)
    for user, node in placed.items():
        assert f"{unix(user)}|RUNNING|{node}|jupyter-{unix(user)}|None" in jobs(cluster_hub)
        worker = workers[node]
        # the same account (uid) on the hub and the worker; the lab's processes on its worker only
        uid = cluster_hub.exec("id", "-u", unix(user)).stdout.strip()
        assert worker.exec("id", "-u", unix(user)).stdout.strip() == uid
        assert lab_server_pid(worker, user)
        for elsewhere in [cluster_hub, *(w for n, w in workers.items() if n != node)]:
            assert elsewhere.exec("pgrep", "-u", unix(user), check=False).returncode == 1, elsewhere.name

        # a kernel cell through the hub's nginx runs on the worker as the user
        out, status = lab_cell(cluster_admin, user, "import os, socket; print(socket.gethostname(), os.getuid())")
        assert status == "ok", out
        assert out.split() == [node, uid]
        # the lab listens, as the user, on the port it reported in its home directory
        port = int(worker.exec("cat", port_report(user)).stdout)
        listener = worker.exec("ss", "-Hltnp", f"sport = :{port}").stdout
        pid = re.search(r"pid=(\d+)", listener)
        assert pid, listener
        assert worker.exec("ps", "-o", "user=", "-p", pid.group(1)).stdout.strip() == unix(user)
        # under NoNewPrivileges, so lab_start's seccomp barrier is in place too
        status = worker.exec("cat", f"/proc/{pid.group(1)}/status").stdout
        assert "NoNewPrivs:\t1" in status and "Seccomp:\t2" in status, status


def test_the_hub_api_holds_with_labs_on_both_workers(cluster_hub, cluster_admin, users):
    assert len(running_labs(cluster_hub)) == LABS, jobs(cluster_hub)
    figures["api_four_labs"] = api_latencies(cluster_admin, users[0], API_WINDOW_S)
    print(f"\nhub API with {LABS} labs on two workers: {figures['api_four_labs']} "
          f"(without labs: {figures.get('api_no_labs')})")


def test_the_hub_api_relay_is_the_workers_only(cluster_hub, workers):
    # the labs' way to the hub API: open to every worker (a lab calls it)...
    url = f"http://th-{cluster_hub.name}:8081/jupyterhub/hub/api/"
    for worker in workers.values():
        answer = worker.exec("python3", "-c", f"import urllib.request; print(urllib.request.urlopen({url!r}).status)")
        assert answer.stdout.strip() == "200", worker.name
    # ...and systemd's firewall on its socket lets only the workers' addresses
    # in. (Its packet drop needs cgroup-v2 BPF, which the test hosts lack, as
    # docs/security.md says: what is checked here is the unit as deployed.)
    firewall = cluster_hub.unit_properties("jupyterhub-cluster-api.socket", "IPAddressDeny", "IPAddressAllow")
    assert set(firewall["IPAddressDeny"].split()) == {"0.0.0.0/0", "::/0"}, firewall
    assert sorted(firewall["IPAddressAllow"].split()) == sorted(f"{w.address}/32" for w in workers.values()), firewall


def test_slurms_cgroups_hold_each_labs_limits_on_its_worker(cluster_hub, cluster_admin, users, workers):
    cores: dict[str, list[str]] = {node: [] for node in workers}
    for user in users[:LABS]:
        node = node_of(cluster_hub, user)
        worker = workers[node]
        memory = job_cgroup(worker, user, "memory")
        assert int(worker.exec("cat", f"{memory}/memory.limit_in_bytes").stdout) == MEM_LIMIT
        # nothing beyond the limit in swap either (ConstrainSwapSpace)
        assert int(worker.exec("cat", f"{memory}/memory.memsw.limit_in_bytes").stdout) == MEM_LIMIT
        # ConstrainCores: one core (jupyterhub_spawner_cpu_limit 1.0) of the worker's two
        cpus = worker.exec("cat", f"{job_cgroup(worker, user, 'cpuset')}/cpuset.cpus").stdout.strip()
        assert cpus.isdigit(), cpus
        cores[node].append(cpus)
        out, status = lab_cell(cluster_admin, user, "import os; print(sorted(os.sched_getaffinity(0)))")
        assert (status, out.strip()) == ("ok", f"[{cpus}]")
    # the two labs of a worker hold different cores
    assert all(len(set(held)) == 2 for held in cores.values()), cores


def test_a_kernel_past_its_memory_limit_is_killed_on_its_worker_only(cluster_hub, cluster_admin, users, workers):
    victim, others = users[0], users[1:LABS]
    placed = {user: node_of(cluster_hub, user) for user in users[:LABS]}
    lab_pids = {user: lab_server_pid(workers[node], user) for user, node in placed.items()}
    # every other lab, on both workers, holds a kernel with a value in it
    kernels = {user: start_kernel(cluster_admin, user) for user in others}
    for user, kernel in kernels.items():
        assert kernel_cell(cluster_admin, user, kernel, f"value = {user!r}") == ("", "ok")
    try:
        allocate = (f"chunks = []\nfor i in range({2 * MEM_LIMIT // (16 * M)}):\n"
                    f"    chunks.append(bytearray(b'x' * {16 * M}))\nprint('allocated')\n")
        out, status = lab_cell(cluster_admin, victim, allocate, timeout=120)
        # the lab reports the kernel restarting ("The kernel appears to have died")
        assert status == "died", (status, out[-500:])
        assert "allocated" not in out
        # the kernel's OOM killer acted inside the victim's job's memory cgroup, and in no other job's
        assert oom_kills(workers[placed[victim]], victim) >= 1
        assert {user: oom_kills(workers[placed[user]], user) for user in others} == dict.fromkeys(others, 0)
        # every lab server (same process) and job stays up, the other labs' kernels with their values
        assert {user: lab_server_pid(workers[node], user) for user, node in placed.items()} == lab_pids
        assert {unix(user): node for user, node in placed.items()}.items() <= running_labs(cluster_hub).items()
        for user, kernel in kernels.items():
            out, status = kernel_cell(cluster_admin, user, kernel, "print(value)")
            assert (status, out.strip()) == ("ok", user), (user, status, out[-500:])
        # the victim's lab runs a new kernel
        out, status = lab_cell(cluster_admin, victim, "print(6 * 7)")
        assert (status, out.strip()) == ("ok", "42")
    finally:
        for user, kernel in kernels.items():
            cluster_admin.s.delete(cluster_admin.url(f"user/{user}/api/kernels/{kernel}"), timeout=30)


def test_a_lab_waiting_for_a_full_cluster_says_why_then_starts(cluster_hub, cluster_admin, users):
    # four labs hold every core of the two workers (allocated/idle/other/total)
    allocated, idle, _other, total = cluster_hub.exec("sinfo", "--noheader", "--format=%C").stdout.strip().split("/")
    assert (allocated, idle) == (total, "0"), (allocated, idle, total)
    waiting, leaving = users[LABS], users[LABS - 1]
    freed = node_of(cluster_hub, leaving)
    r = cluster_admin.api("POST", f"users/{waiting}/server")
    assert r.status_code == 202, (r.status_code, r.text)
    messages = progress_messages(cluster_admin, waiting, until="Slurm: Resources")
    assert any(m.startswith("Submitted as Slurm job ") for m in messages), messages
    assert messages[-1].startswith("Waiting for a worker: every worker is busy (Slurm: Resources)"), messages
    assert cluster_admin.api("GET", f"users/{waiting}").json()["servers"][""]["pending"] == "spawn"
    # a lab stops: the waiting one starts on the core it freed
    cluster_admin.stop_server(leaving)
    cluster_admin.wait_lab(waiting, timeout=180)
    assert node_of(cluster_hub, waiting) == freed
    # back to three labs: a core free on one worker for the dead worker's user below
    cluster_admin.stop_server(waiting)
    assert not [j for j in jobs(cluster_hub) if j.startswith(f"{unix(waiting)}|")], jobs(cluster_hub)


def test_another_users_lab_cannot_forge_or_read_a_labs_port_report(cluster_hub, cluster_admin, users):
    # the attack the report closes: steering the proxy to a port of one's own,
    # here from a lab on the other worker (the report is on the shared storage)
    placed = {user: node_of(cluster_hub, user) for user in users[:LABS - 1]}
    victim = users[0]
    attacker = next(u for u, node in placed.items() if node != placed[victim])
    out, status = lab_shell(cluster_admin, attacker, f"echo 1 > {port_report(victim)}")
    assert status != 0 and "Permission denied" in out, (status, out)
    out, status = lab_shell(cluster_admin, attacker, f"cat {port_report(victim)}")
    assert status != 0 and "Permission denied" in out, (status, out)


def test_a_dead_workers_labs_are_reported_stopped_the_others_run_on_and_its_users_start_elsewhere(
        cluster_hub, cluster_admin, users, workers):
    placed = {user: node_of(cluster_hub, user) for user in users[:LABS - 1]}
    # the worker with two labs dies; the other keeps its lab and has a core free
    dead = Counter(placed.values()).most_common(1)[0][0]
    (alive,) = set(workers) - {dead}
    lost = [u for u, node in placed.items() if node == dead]
    kept = [u for u, node in placed.items() if node == alive]
    assert (len(lost), len(kept)) == (2, 1), placed
    kept_pids = {user: lab_server_pid(workers[alive], user) for user in kept}
    kernels = {user: start_kernel(cluster_admin, user) for user in kept}
    for user, kernel in kernels.items():
        assert kernel_cell(cluster_admin, user, kernel, f"value = {user!r}") == ("", "ok")

    network = testhost.Network.load(cluster_hub.name.removesuffix("-hub"))
    # slurm_worker_timeout (30 s here) for Slurm to call the worker down, then
    # the hub's poll of each lab (every 30 s) reports it stopped
    bound = 30 + 30 + 30
    network.plug(workers[dead].name, connected=False)
    cut = time.monotonic()
    try:
        for user in lost:
            wait_stopped(cluster_admin, user, timeout=bound + 60 - (time.monotonic() - cut))
        stopped_s = time.monotonic() - cut
        figures.setdefault("dead_worker_reported_s", []).append(round(stopped_s))
        print(f"\nworker cut off: its {len(lost)} labs reported stopped after {stopped_s:.0f} s")
        assert running_labs(cluster_hub) == {unix(u): alive for u in kept}, jobs(cluster_hub)
        # the other worker's lab runs on: same process, its kernel and value, answering through nginx
        assert {user: lab_server_pid(workers[alive], user) for user in kept} == kept_pids
        for user, kernel in kernels.items():
            assert cluster_admin.server_running(user)
            out, status = kernel_cell(cluster_admin, user, kernel, "print(value)")
            assert (status, out.strip()) == ("ok", user), (user, status, out[-500:])
        # a user of the dead worker starts again, on the other worker, while it is still cut off
        again = lost[0]
        cluster_admin.start_server(again, timeout=300)
        assert node_of(cluster_hub, again) == alive
        out, status = lab_cell(cluster_admin, again, "import socket; print(socket.gethostname())")
        assert (status, out.strip()) == ("ok", alive)
    finally:
        network.plug(workers[dead].name, connected=True)
        for user, kernel in kernels.items():
            cluster_admin.s.delete(cluster_admin.url(f"user/{user}/api/kernels/{kernel}"), timeout=30)
    # the worker comes back as after a reboot: its slurmd starts and registers
    # (left alone, slurmctld asks a down worker to register again only every
    # 20 pings, minutes later); Slurm returns it to service
    # (ReturnToService=2), its orphaned labs are ended
    workers[dead].exec("systemctl", "restart", "slurmd")
    deadline = time.monotonic() + 120
    while (state := cluster_hub.exec("sinfo", "--noheader", "--nodes", dead, "--format=%T").stdout.strip()) \
            not in ("idle", "mixed"):
        assert time.monotonic() < deadline, (state, cluster_hub.exec("sinfo", "--noheader", "--long").stdout)
        time.sleep(2)
    for user in lost:
        while workers[dead].exec("pgrep", "-u", unix(user), check=False).returncode == 0:
            assert time.monotonic() < deadline, workers[dead].exec("ps", "-fu", unix(user)).stdout
            time.sleep(2)
