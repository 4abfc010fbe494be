"""A dead lab's port stays out of other users' reach (lab/lab_ports.py, docs/cluster.md).

The attack: a user's lab on a worker dies (here root kills it, as a crash
would); until the hub's next poll of the lab (up to 30 s) its proxy still
routes the user's requests, cookies and tokens included, to that worker and
port. Another user's job on the same worker tries to bind that port, on IPv4
and IPv6, from before the death until well after it. With the labs binding
their own ports it took the port at once; with the worker's port keeper
holding every lab's port until after its lab ended, every try is refused.
"""

import time

import testhost
from hubclient import HubClient, batch_create, unique_names

ATTACK_SECONDS = 45
# runs as the attacker's Slurm job: READY once trying, then TOOK <family> or REFUSED
ATTACK = """
import socket, sys, time
port, until = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
print("READY", flush=True)
while time.monotonic() < until:
    for family, address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        s = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            s.bind((address, port))
            s.listen()
        except OSError:
            s.close()
            continue
        print("TOOK", address, flush=True)
        sys.exit(0)
    time.sleep(0.02)
print("REFUSED", flush=True)
"""
# the keeper's systemd-analyze exposure (a DynamicUser service that must use the network)
KEEPER_EXPOSURE_LIMIT = 1.5


def home(unix: str) -> str:
    return f"/srv/jupyterhub/users/{unix}/home"


def job_node(hub: testhost.Host, unix: str) -> tuple[str, str]:
    """(job id, worker node) of the unix user's only running job."""
    lines = hub.exec("squeue", "--noheader", f"--user={unix}", "--states=RUNNING", "--format=%i|%N").stdout.split()
    assert len(lines) == 1, lines
    job, node = lines[0].split("|")
    return job, node


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def test_another_users_job_cannot_take_a_dead_labs_port(cluster_hub: testhost.Host, cluster_admin: HubClient):
    victim, attacker = unique_names(2, "pk")
    batch_create(cluster_admin, [victim, attacker])
    # room on the worker for the victim's lab and the attacker's job (the
    # admin's lab, started by logging in, would hold a core)
    if cluster_admin.server_running(cluster_hub.admin_user):
        cluster_admin.stop_server(cluster_hub.admin_user)
    # the attacker's account exists on the workers once the hub exported it (at a spawn)
    cluster_admin.start_server(attacker, timeout=300)
    cluster_admin.stop_server(attacker)
    cluster_admin.start_server(victim, timeout=300)
    try:
        attack_the_port_of(cluster_hub, cluster_admin, victim, attacker)
    finally:
        if cluster_admin.server_running(victim):
            cluster_admin.stop_server(victim)


def attack_the_port_of(cluster_hub: testhost.Host, cluster_admin: HubClient, victim: str, attacker: str) -> None:
    _job, node = job_node(cluster_hub, f"jh-{victim}")
    worker = next(testhost.Host.load(w) for w in cluster_hub.workers if f"th-{w}" == node)
    port = cluster_hub.exec("cat", f"{home(f'jh-{victim}')}/.jupyterhub-lab-port").stdout.strip()

    out = f"{home(f'jh-{attacker}')}/attack.out"
    cluster_hub.exec("install", "-m", "0755", "/dev/stdin", "/srv/jupyterhub/attack.py", input=ATTACK)
    attack = cluster_hub.exec(
        "sbatch", "--parsable", f"--uid=jh-{attacker}", f"--gid=jh-{attacker}", "--partition=labs",
        f"--nodelist={node}", "--cpus-per-task=1", "--mem=32M", f"--output={out}", "--chdir=/tmp",
        f"--wrap=exec python3 /srv/jupyterhub/attack.py {port} {ATTACK_SECONDS}").stdout.strip()
    try:
        wait_for(lambda: "READY" in cluster_hub.exec("cat", out, check=False).stdout, 90,
                 f"the attacker's job trying on {node}")
        # the victim's lab dies
        worker.exec("pkill", "-KILL", "-u", f"jh-{victim}", "-f", "lab_server")
        wait_for(lambda: not cluster_admin.server_running(victim), 60, "the hub reporting the dead lab stopped")
        wait_for(lambda: cluster_hub.exec("squeue", "--noheader", "--jobs", attack, check=False).stdout.strip() == "",
                 ATTACK_SECONDS + 30, "the attacker's job ending")
        result = cluster_hub.exec("cat", out).stdout.split()
        assert result == ["READY", "REFUSED"], result
    finally:
        cluster_hub.exec("scancel", attack, check=False)
        cluster_hub.exec("rm", "-f", "/srv/jupyterhub/attack.py", out)

    # the keeper itself is a hardened service of its own
    score, report = worker.exposure("jupyterhub-lab-ports.service")
    assert score <= KEEPER_EXPOSURE_LIMIT, report
