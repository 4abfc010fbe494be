"""A hub restart keeps every running Slurm job and its route (issue 18, docs/cluster.md).

A user's lab runs as a Slurm job on a worker with a kernel holding state; one
``systemctl restart jupyterhub`` on the hub host; the same job must still run
on the same worker, the hub must report the lab ready, the kernel must answer
through nginx with its state (so the lab process and the proxy's route to its
worker survived), and the hub's journal since the restart must show no failed
check of the lab. The spawner keeps the job's id in the hub's database
(SlurmLabSpawner.get_state) and polls it with squeue; nothing on the worker
depends on the hub's process."""

import time

from hubclient import batch_create, kernel_cell, start_kernel, unique_names

# what the hub logs when it fails to find a running lab (JupyterHub's user.py, app.py)
FAILED_CHECK = ("Traceback", "Giving up", "never showed up", "does not appear to be running",
                "appears to have stopped", "had invalid url")


def job_of(hub, unix: str) -> tuple[str, str, str]:
    """(job id, state, node) of the unix user's only Slurm job."""
    lines = hub.exec("squeue", "--noheader", f"--user={unix}", "--format=%i|%T|%N").stdout.splitlines()
    assert len(lines) == 1, lines
    job, state, node = lines[0].split("|")
    return job, state, node


def test_a_hub_restart_keeps_the_labs_job_its_kernel_and_its_route(cluster_hub, cluster_admin):
    (user,) = unique_names(1, "cr")
    batch_create(cluster_admin, [user])
    cluster_admin.start_server(user, timeout=300)
    try:
        before = job_of(cluster_hub, f"jh-{user}")
        assert before[1] == "RUNNING", before
        kernel = start_kernel(cluster_admin, user)
        out, status = kernel_cell(cluster_admin, user, kernel, "x = 6 * 7; print(x)")
        assert (status, out.strip()) == ("ok", "42")

        cursor = cluster_hub.exec("journalctl", "-u", "jupyterhub", "-n", "0", "--show-cursor").stdout
        cursor = cursor.strip().rsplit("-- cursor: ", 1)[1]
        cluster_hub.exec("systemctl", "restart", "jupyterhub")
        cluster_admin.wait_hub()

        assert job_of(cluster_hub, f"jh-{user}") == before
        deadline = time.monotonic() + 60
        while not cluster_admin.api("GET", f"users/{user}").json()["servers"].get("", {}).get("ready"):
            assert time.monotonic() < deadline, cluster_admin.api("GET", f"users/{user}").json()
            time.sleep(1)
        # the same kernel, with its state, through nginx and the restored route
        out, status = kernel_cell(cluster_admin, user, kernel, "print(x)")
        assert (status, out.strip()) == ("ok", "42")
        journal = cluster_hub.exec("journalctl", "-u", "jupyterhub", f"--after-cursor={cursor}",
                                   "--no-pager", "-o", "cat").stdout
        assert not [line for line in journal.splitlines() if any(f in line for f in FAILED_CHECK)], journal
    finally:
        cluster_admin.stop_server(user)
    assert not cluster_hub.exec("squeue", "--noheader", f"--user=jh-{user}").stdout.strip()
