"""An upgrade from the previous release keeps every running lab and all data (issue 16).

Re-running the playbook is how admins update (docs/operations.md, "Upgrade").
This test deploys the previous release (the newest tag before this checkout,
``git describe --tags --abbrev=0``, of HEAD's parent when HEAD is itself
tagged, or docs/releases.md's newest earlier commit in a checkout without
tags) onto a fresh host of its own, from that tag's tree checked out under
``.cache/upgrade/``, then builds state there: users with files in their home
and workspace, labs running with a kernel that holds a variable, one lab
stopped, an API token, activity samples. Then it runs the procedure of
operations.md: the backup block, the playbook of this checkout with
``--check --diff`` (which must change nothing that runs) and for real, and the
doc's verification block on the host. After it:

* every lab that ran still runs: the same unit process (MainPID), the same
  kernel (its id, its process and the variable it holds), reached through
  nginx by its owner; the stopped one starts with its files;
* every file, the token and every activity sample are still there;
* the hub's database is at the schema of the JupyterHub now installed
  (JupyterHub's own ``check_db_revision``; the hub starts with ``--upgrade-db``);
* every user, the admin included, logs in with the same password.

The host is ``$TESTHOST_NAME-upgrade`` on port base ``$TESTHOST_PORT_BASE + 7000``
(or TESTHOST_UPGRADE_NAME / TESTHOST_UPGRADE_PORT_BASE), torn down afterwards
unless TESTHOST_KEEP=1. Phase times go to artifacts/upgrade-time.json.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path

import pytest

import hostpool
import testhost
from hubclient import (
    HubClient,
    admin_client,
    assert_activity_kept,
    batch_create,
    kernel_cell,
    login_client,
    recorded_activity,
    start_kernel,
    unique_names,
)
from operations_doc import shell_block

REPO = testhost.REPO
ARTIFACTS = REPO / "artifacts"
RELEASE_TREES = REPO / ".cache" / "upgrade"
NAME = hostpool.secondary_name("upgrade")
PORT_BASE = hostpool.secondary_port_base("upgrade", 7000)
ALEMBIC_REVISION = """
import sqlite3
db = sqlite3.connect("file:/var/lib/jupyterhub/jupyterhub.sqlite?mode=ro", uri=True)
print(db.execute("SELECT version_num FROM alembic_version").fetchone()[0])
"""


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, text=True,
                          capture_output=True).stdout.strip()


RELEASES_DOC = REPO / "docs" / "releases.md"


def recorded_releases(text: str) -> list[tuple[str, str]]:
    """(release, commit) rows of docs/releases.md, in the table's order."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith("v") and len(cells[1]) == 40:
            rows.append((cells[0], cells[1]))
    return rows


def is_earlier_commit(commit: str) -> bool:
    """``commit`` is in HEAD's history and is not HEAD itself."""
    head = git("rev-parse", "HEAD")
    return commit != head and subprocess.run(
        ["git", "-C", str(REPO), "merge-base", "--is-ancestor", commit, "HEAD"],
        capture_output=True).returncode == 0


def previous_release() -> str:
    """The newest release before this checkout (HEAD's own tag is this release):
    from the tags, or from docs/releases.md in a checkout without tags."""
    tagged = subprocess.run(["git", "-C", str(REPO), "describe", "--tags", "--exact-match", "HEAD"],
                            capture_output=True).returncode == 0
    found = subprocess.run(["git", "-C", str(REPO), "describe", "--tags", "--abbrev=0",
                            "HEAD^" if tagged else "HEAD"], text=True, capture_output=True)
    if found.returncode == 0:
        return found.stdout.strip()
    earlier = [commit for _release, commit in recorded_releases(RELEASES_DOC.read_text())
               if is_earlier_commit(commit)]
    assert earlier, (
        "no release before this checkout: no tag (git fetch --tags) and no commit of "
        f"docs/releases.md in HEAD's history ({found.stderr.strip()})")
    return earlier[-1]


def release_tree(tag: str) -> Path:
    """A checkout of ``tag`` (a tag or a commit; a git worktree: the hub_ext wheel
    takes its version from git)."""
    tree = RELEASE_TREES / tag
    if tree.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                       capture_output=True)
    git("worktree", "prune")
    RELEASE_TREES.mkdir(parents=True, exist_ok=True)
    git("worktree", "add", "--detach", str(tree), tag)
    return tree


def unit(user: str) -> str:
    return f"jupyter-{user}-singleuser"


def main_pid(host, name: str) -> str:
    props = host.unit_properties(name, "MainPID", "ActiveState")
    return props["MainPID"] if props["ActiveState"] == "active" else "not active"


def alembic_revision(host) -> str:
    return host.exec("/opt/jupyterhub/bin/python", "-c", ALEMBIC_REVISION).stdout.strip()


def hub_ext_version(host) -> str:
    return host.exec("/opt/jupyterhub/bin/python", "-c",
                     "import importlib.metadata as m; print(m.version('hub_ext'))").stdout.strip()


def write_file(client: HubClient, user: str, path: str, content: str) -> None:
    r = client.s.put(client.url(f"user/{user}/api/contents/{path}"),
                     json={"type": "file", "format": "text", "content": content},
                     headers={"X-XSRFToken": client.lab_xsrf(user)}, timeout=60)
    assert r.status_code in (200, 201), r.text


def read_file(client: HubClient, user: str, path: str) -> str:
    r = client.get(f"user/{user}/api/contents/{path}")
    assert r.status_code == 200, f"{user}/{path}: {r.status_code} {r.text[:200]}"
    return r.json()["content"]


# phase -> seconds (artifacts/upgrade-time.json); the first two are the provisioning's
PHASES: dict[str, float] = {}


def provision_previous_release(_main) -> testhost.Host:
    """A fresh host with the previous release deployed by its own playbook, from
    that release's checkout (removed by the ``previous`` fixture)."""
    tag = previous_release()
    tree = release_tree(tag)
    started = time.monotonic()
    testhost.build()
    host = testhost.up(NAME, PORT_BASE)
    PHASES["boot"] = round(time.monotonic() - started, 1)
    try:
        started = time.monotonic()
        res = testhost.deploy(NAME, capture=True, repo=tree)
        PHASES[f"deploy {tag}"] = round(time.monotonic() - started, 1)
    except BaseException:
        testhost.down(NAME)
        raise
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "deploy-upgrade-previous.log").write_text(res.stdout + res.stderr)
    return host


hostpool.POOL.register("upgrade", "old_host", NAME, provision_previous_release)


@pytest.fixture(scope="module")
def previous():
    """The previous release's tag; its checkout (made by the provisioning) is removed afterwards."""
    tag = previous_release()
    yield tag
    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(RELEASE_TREES / tag)],
                   capture_output=True)


@pytest.fixture(scope="module")
def timings():
    yield PHASES
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "upgrade-time.json").write_text(json.dumps(PHASES, indent=2))
    print("\nupgrade test phases (s):", json.dumps(PHASES))


@pytest.fixture(scope="module")
def old_host(previous, timings):
    try:
        yield hostpool.POOL.get("upgrade")
    finally:
        started = time.monotonic()
        hostpool.release("upgrade")
        timings["teardown"] = round(time.monotonic() - started, 1)


def test_upgrade_from_the_previous_release_keeps_running_labs_files_history_and_passwords(
        previous, old_host, timings):
    host = old_host
    tag = previous
    started = time.monotonic()
    admin = admin_client(host)
    old_version = hub_ext_version(host)
    passwords = batch_create(admin, unique_names(3, "up"))
    users = sorted(passwords)
    running, stopped = users[:2], users[2]
    files, kernels = {}, {}
    for user in users:
        me = login_client(host.https_url, user, passwords[user])
        me.ensure_server(user)
        files[user] = {"workspace-proof.txt": f"workspace of {user} {secrets.token_hex(8)}\n"}
        write_file(me, user, "workspace-proof.txt", files[user]["workspace-proof.txt"])
    token = admin.new_token(users[0])
    for user in running:
        # a kernel that holds state, as a notebook left open overnight does; it
        # also writes a file into the user's home
        kernel = start_kernel(admin, user)
        secret = secrets.token_hex(8)
        home_text = f"home of {user} {secret}\n"
        out, status = kernel_cell(admin, user, kernel, (
            f"import os, pathlib; upgrade_marker = {secret!r}\n"
            f"pathlib.Path.home().joinpath('home-proof.txt').write_text({home_text!r})\n"
            "print(os.getpid())"))
        assert status == "ok", out
        kernels[user] = {"id": kernel, "pid": out.strip(), "secret": secret, "home": home_text}
    activity = recorded_activity(host, admin, users)
    admin.stop_server(stopped)
    lab_pids = {user: main_pid(host, unit(user)) for user in running}
    assert "not active" not in lab_pids.values(), lab_pids
    revision_before = alembic_revision(host)
    timings["state on the previous release"] = round(time.monotonic() - started, 1)

    # --- the upgrade, as docs/operations.md says -----------------------------------
    started = time.monotonic()
    host.sh(shell_block("Backup"))
    admin.wait_hub()
    timings["backup"] = round(time.monotonic() - started, 1)

    started = time.monotonic()
    hub_pid = main_pid(host, "jupyterhub")
    preview = testhost.deploy(NAME, "--check", "--diff", capture=True)
    (ARTIFACTS / "deploy-upgrade-check.log").write_text(preview.stdout + preview.stderr)
    # the preview touches nothing that runs
    assert main_pid(host, "jupyterhub") == hub_pid, "the --check run restarted the hub"
    assert {user: main_pid(host, unit(user)) for user in running} == lab_pids
    assert hub_ext_version(host) == old_version, "the --check run installed hub_ext"
    timings["playbook --check --diff"] = round(time.monotonic() - started, 1)

    started = time.monotonic()
    res = testhost.deploy(NAME, capture=True)
    (ARTIFACTS / "deploy-upgrade.log").write_text(res.stdout + res.stderr)
    timings["playbook"] = round(time.monotonic() - started, 1)
    verified = host.sh(shell_block("Upgrade", index=1), check=False)
    assert verified.returncode == 0, f"the doc's verification failed:\n{verified.stdout}\n{verified.stderr}"
    for user in running:
        assert unit(user) in verified.stdout, f"verification does not list {user}'s lab:\n{verified.stdout}"

    # --- what must have survived -------------------------------------------------------
    started = time.monotonic()
    new_version = hub_ext_version(host)
    assert new_version != old_version, f"hub_ext still {old_version}: the playbook did not upgrade it"
    admin = admin_client(host)  # the admin's password is the same (admin_client logs in with it)
    # every running lab: the same process, the same kernel, its variable, its route
    assert {user: main_pid(host, unit(user)) for user in running} == lab_pids, "a lab was restarted"
    for user in running:
        me = login_client(host.https_url, user, passwords[user], spawn=False)
        assert me.logged_in_as() == user, f"{user} cannot log in with the old password"
        assert me.server_running(user), f"the hub lost {user}'s running lab"
        me.wait_lab(user, timeout=120)
        assert read_file(me, user, "workspace-proof.txt") == files[user]["workspace-proof.txt"]
        listed = me.get(f"user/{user}/api/kernels").json()
        assert kernels[user]["id"] in [k["id"] for k in listed], f"{user}'s kernel is gone: {listed}"
        out, status = kernel_cell(admin, user, kernels[user]["id"],
                                  "import os; print(os.getpid(), upgrade_marker)")
        assert status == "ok", out
        assert out.split() == [kernels[user]["pid"], kernels[user]["secret"]], out
        home = host.exec("cat", f"/srv/jupyterhub/users/jh-{user}/home/home-proof.txt").stdout
        assert home == kernels[user]["home"]
    # the stopped lab starts on the new release with its files
    me = login_client(host.https_url, stopped, passwords[stopped], spawn=False)
    assert me.logged_in_as() == stopped, f"{stopped} cannot log in with the old password"
    me.ensure_server(stopped)
    assert read_file(me, stopped, "workspace-proof.txt") == files[stopped]["workspace-proof.txt"]
    assert HubClient(host.https_url, token=token).logged_in_as() == users[0], "a token was lost"
    assert_activity_kept(activity, admin)
    revision_after = alembic_revision(host)
    timings["checks after the upgrade"] = round(time.monotonic() - started, 1)
    print(f"\nupgraded {tag} (hub_ext {old_version}) -> hub_ext {new_version}; "
          f"database revision {revision_before} -> {revision_after}")
    for user in users:
        admin.api("DELETE", f"users/{user}/server")
