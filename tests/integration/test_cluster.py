"""The platform on a Slurm cluster (docs/cluster.md): a hub host and one worker
on a private network; a user's lab is a Slurm job on the worker, reached
through the hub's nginx."""

import time

import testhost
from hubclient import batch_create, lab_cell, login_client, unique_names


def test_a_lab_runs_as_the_users_slurm_job_on_the_worker_and_stops(cluster_hub, cluster_admin):
    admin = cluster_admin
    worker = testhost.Host.load(cluster_hub.workers[0])
    [name] = unique_names(1, "c")
    password = batch_create(admin, [name])[name]
    unix = f"jh-{name}"

    user = login_client(cluster_hub.https_url, name, password, spawn=False)
    assert user.logged_in_as() == name
    started = time.monotonic()
    admin.start_server(name, timeout=300)
    spawn_s = time.monotonic() - started

    # a running Slurm job of the user's unix account, on the worker
    jobs = cluster_hub.exec("squeue", "--noheader", "--format=%u|%T|%N|%j").stdout.splitlines()
    assert f"{unix}|RUNNING|th-{worker.name}|jupyter-{unix}" in jobs, jobs
    # the same account (uid) on the hub and on the worker, the lab's processes on the worker only
    uid = cluster_hub.exec("id", "-u", unix).stdout.strip()
    assert worker.exec("id", "-u", unix).stdout.strip() == uid
    assert "lab_server" in worker.exec("ps", "-o", "args=", "-u", unix).stdout
    assert cluster_hub.exec("pgrep", "-u", unix, check=False).returncode == 1

    # a kernel cell through nginx runs on the worker as the user
    out, status = lab_cell(admin, name, "import os, socket; print(socket.gethostname(), os.getuid())")
    assert status == "ok", out
    assert out.split() == [f"th-{worker.name}", uid]

    admin.stop_server(name)
    jobs = cluster_hub.exec("squeue", "--noheader", "--format=%u|%T").stdout.splitlines()
    assert not [j for j in jobs if j.startswith(f"{unix}|")], jobs
    print(f"\ncluster spawn (login to lab answering): {spawn_s:.1f} s")
