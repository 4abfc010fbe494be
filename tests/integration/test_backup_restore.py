"""Backup and restore exactly as docs/operations.md says, onto a freshly built second host.

The shell blocks under "## Backup" and "## Restore onto a fresh host" in
docs/operations.md are extracted and run as they stand (the doc and this test
cannot drift apart). The restore target is a second test host built, booted and
deployed inside this test with the same inventory (admin password included),
and torn down afterwards (TESTHOST_KEEP=1 keeps it).

What must come back: every user (and the admin flag, groups, a pending signup),
every password (a real login through nginx), every user's files (read through
their restarted lab), an API token issued before the backup, and every
activity sample taken before it.
"""

from __future__ import annotations

import re
import secrets
import shutil
from pathlib import Path

import pytest

import hostpool
import testhost
from hubclient import HubClient, assert_activity_kept, batch_create, login_client, recorded_activity, unique_names
from operations_doc import shell_block

RESTORE_NAME = hostpool.secondary_name("restore")
RESTORE_PORT_BASE = hostpool.secondary_port_base("restore", 1000)
BACKUP_DIR = "root/backup"  # the doc's /root/backup, relative to a host's root


def provision_restore_target(source: testhost.Host) -> testhost.Host:
    """A freshly built host, deployed with the source's inventory (same admin password)."""
    return testhost.provision(RESTORE_NAME, RESTORE_PORT_BASE,
                              {**source.extra_vars, "jupyterhub_admin_password": source.admin_password},
                              log_to=hostpool.ARTIFACTS / "deploy-restore.log")


hostpool.POOL.register("restore", "restore_host", RESTORE_NAME, provision_restore_target)


@pytest.fixture(scope="module")
def restore_host(host):
    yield from hostpool.take("restore", host)


def test_backup_restored_on_a_fresh_host_brings_back_users_passwords_files_and_state(
        host, admin, restore_host):
    # --- state on the source host -------------------------------------------------
    passwords = batch_create(admin, unique_names(3, "bk"))
    users = sorted(passwords)
    files = {}
    for user in users:
        me = login_client(host.https_url, user, passwords[user])
        me.ensure_server(user)
        content = f"data of {user} {secrets.token_hex(8)}\n"
        r = me.s.put(me.url(f"user/{user}/api/contents/backup-proof.txt"),
                     json={"type": "file", "format": "text", "content": content},
                     headers={"X-XSRFToken": me.lab_xsrf(user)}, timeout=60)
        assert r.status_code in (200, 201), r.text
        files[user] = content
    group = "bk-team-" + secrets.token_hex(2)
    assert admin.api("POST", f"groups/{group}", json={"users": users[:2]}).status_code == 201
    assert admin.api("PATCH", f"users/{users[2]}", json={"admin": True}).status_code == 200
    pending, = unique_names(1, "bk-pend")
    assert HubClient(host.https_url).signup(pending, "pending-" + secrets.token_hex(8)).status_code == 200
    token = admin.new_token(users[0])
    source_users = {u["name"] for u in admin.api("GET", "users").json()}
    activity = recorded_activity(host, admin, users)

    # --- backup, as documented --------------------------------------------------------
    host.exec("mkdir", "-p", "/root/backup")
    host.sh(shell_block("Backup"))
    admin.wait_hub()
    assert admin.server_running(users[0]), "the backup stopped a lab"

    # --- carry the backup over (an scp in real life) -----------------------------------
    source_dir = Path(host.root) / BACKUP_DIR
    target_dir = Path(restore_host.root) / BACKUP_DIR
    shutil.rmtree(target_dir, ignore_errors=True)
    shutil.copytree(source_dir, target_dir)

    # --- restore, as documented --------------------------------------------------------
    restore_host.sh(shell_block("Restore onto a fresh host"))
    restored = HubClient(restore_host.https_url)
    restored.wait_hub()
    restored_admin = login_client(restore_host.https_url, host.admin_user, host.admin_password)
    assert restored_admin.logged_in_as() == host.admin_user
    restored_admin = HubClient(restore_host.https_url,
                               token=restored_admin.new_token(host.admin_user))

    # every user, their flags and groups
    assert {u["name"] for u in restored_admin.api("GET", "users").json()} == source_users
    assert restored_admin.api("GET", f"users/{users[2]}").json()["admin"] is True
    assert sorted(restored_admin.api("GET", f"groups/{group}").json()["users"]) == users[:2]
    # the pending signup is still pending (listed on the authorization page, cannot log in)
    page = login_client(restore_host.https_url, host.admin_user, host.admin_password).get("hub/authorize")
    assert re.search(rf"{re.escape(pending)}.*?pending", page.text, re.S), "pending signup lost"
    # a token issued before the backup still works
    assert HubClient(restore_host.https_url, token=token).logged_in_as() == users[0]
    # every password and every file (through the user's own, restarted lab)
    for user in users:
        me = login_client(restore_host.https_url, user, passwords[user])
        assert me.logged_in_as() == user, f"{user} cannot log in with the old password"
        me.ensure_server(user)
        r = me.get(f"user/{user}/api/contents/backup-proof.txt")
        assert r.status_code == 200, r.text
        assert r.json()["content"] == files[user]
        # owned by the user's restored unix account, not by a number nobody has
        unix = f"jh-{user}"
        owner = restore_host.exec("stat", "-c", "%U", f"/srv/jupyterhub/users/{unix}/workspace/backup-proof.txt")
        assert owner.stdout.strip() == unix
    assert_activity_kept(activity, restored_admin)
    for user in users:
        admin.api("DELETE", f"users/{user}/server")
