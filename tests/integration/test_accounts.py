"""Accounts and privileges on the real hub of the test host (issue 4).

Batch creation with generated passwords, the safe authorization page, the
unix account lifecycle, docker-sock / docker-privileged mapped to unix
privileges (checked from a shell in the lab's own terminal, over the lab's
terminal websocket), resource profiles, and the login delays.
"""

from __future__ import annotations

import json
import re
import secrets

import pytest

from hub_ext.accounts.privileges import memory_bytes
from hubclient import (
    HubClient,
    batch_create,
    client_from,
    fail_until_delayed,
    lab_shell,
    login_client,
    unique_names,
)

G = 1024**3
PROFILE_DROPIN = 'c.PlatformSpawner.resource_profiles = {"big-mem": {"mem_limit": "8G", "cpu_limit": 3}}\n'


@pytest.fixture(scope="module")
def profiles(hub_dropin):
    # the site-local escape hatch sets the same trait platform_config.json's
    # PlatformSpawner.resource_profiles sets (jupyterhub_resource_profiles)
    hub_dropin("90-test-profiles.py", PROFILE_DROPIN)


def names(n: int, prefix: str = "acc") -> list[str]:
    return unique_names(n, prefix)


batch = batch_create


def login(host, name: str, password: str) -> HubClient:
    return login_client(host.https_url, name, password)


def add_to_group(admin: HubClient, group: str, user: str) -> None:
    r = admin.api("POST", f"groups/{group}/users", json={"users": [user]})
    assert r.status_code == 200, r.text


# --- batch creation ---------------------------------------------------------------


def test_batch_create_three_users_each_logs_in_with_the_shown_password(host, admin):
    created = batch(admin, names(3))
    assert len(created) == 3
    for name, password in created.items():
        assert re.fullmatch(r"[a-z]+-[a-z]+-[a-z]+", password), password
        assert login(host, name, password).logged_in_as() == name
    # only the bcrypt hash is stored, and no password reached the hub's journal
    journal = host.exec("journalctl", "-u", "jupyterhub", "--no-pager", "-o", "cat").stdout
    for password in created.values():
        assert password not in journal
        found = host.exec("grep", "-a", "-q", "-F", "--", password,
                          "/var/lib/jupyterhub/jupyterhub.sqlite", check=False)
        assert found.returncode == 1, "plaintext password in the hub database"


def test_jupyterhubs_add_users_api_answers_each_generated_password_once(host, admin):
    # the admin panel's Add Users calls POST /hub/api/users {"usernames", "admin"}
    fresh = names(2, "panel")
    r = admin.api("POST", "users", json={"usernames": fresh, "admin": False})
    assert r.status_code == 201, r.text
    assert r.headers["Cache-Control"].startswith("no-store")
    models = {m["name"]: m for m in r.json()}
    assert sorted(models) == sorted(fresh)
    for name, model in models.items():
        assert model["kind"] == "user" and model["admin"] is False
        assert login(host, name, model["password"]).logged_in_as() == name
        # answered once: the user model never shows it again
        assert "password" not in admin.api("GET", f"users/{name}").json()


def test_add_users_api_makes_admins_and_refuses_taken_names_whole(host, admin):
    (promoted,) = names(1, "panel")
    r = admin.api("POST", "users", json={"usernames": [promoted], "admin": True})
    assert r.status_code == 201, r.text
    assert admin.api("GET", f"users/{promoted}").json()["admin"] is True
    fresh = names(1, "panel")[0]
    r = admin.api("POST", "users", json={"usernames": [fresh, promoted]})
    assert r.status_code == 400
    assert r.json()["errors"] == [{"name": promoted, "error": "a user of this name already exists"}]
    assert admin.api("GET", f"users/{fresh}").status_code == 404
    r = admin.api("POST", "users", json={"usernames": [fresh], "admin": "yes"})
    assert r.status_code == 400 and "admin" in r.json()["message"]


@pytest.mark.parametrize("usernames, bad", [
    (["ok-{t}-a", "ok-{t}-a"], "ok-{t}-a"),  # duplicate in the list
    (["ok-{t}-b", "Bad.Name"], "Bad.Name"),
    (["ok-{t}-c", "x" * 40], "x" * 40),
    (["ok-{t}-d", 5], "5"),
])
def test_bad_names_refuse_the_whole_batch_with_per_name_errors(admin, usernames, bad):
    t = secrets.token_hex(3)
    usernames = [u.format(t=t) if isinstance(u, str) else u for u in usernames]
    bad = bad.format(t=t)
    r = admin.api("POST", "platform/users", json={"usernames": usernames})
    assert r.status_code == 400, r.text
    body = r.json()
    assert "nothing was created" in body["message"]
    assert any(e["name"] == bad and e["error"] for e in body["errors"]), body
    for name in usernames:
        if isinstance(name, str) and name != bad:
            assert admin.api("GET", f"users/{name}").status_code == 404  # not half-created


def test_existing_user_is_refused(admin):
    (existing,) = batch(admin, names(1))
    fresh = names(1)[0]
    r = admin.api("POST", "platform/users", json={"usernames": [fresh, existing]})
    assert r.status_code == 400
    assert r.json()["errors"] == [{"name": existing, "error": "a user of this name already exists"}]
    assert admin.api("GET", f"users/{fresh}").status_code == 404


@pytest.mark.parametrize("body", [{"usernames": []}, {}, {"usernames": "alice"}, [], "not json"])
def test_empty_or_malformed_batch_is_a_400_with_a_message(admin, body):
    kw = {"data": body} if isinstance(body, str) else {"json": body}
    r = admin.api("POST", "platform/users", **kw)
    assert r.status_code == 400, r.text
    assert r.json().get("message")


def test_a_thousand_names_at_once_are_refused_and_nothing_is_created(admin):
    many = names(1000, "bulk")
    r = admin.api("POST", "platform/users", json={"usernames": many})
    assert r.status_code == 400
    assert "at most 100" in r.json()["message"]
    assert admin.api("GET", f"users/{many[0]}").status_code == 404


def test_password_reset_shows_a_new_password_once(host, admin):
    (name, old), = batch(admin, names(1)).items()
    r = admin.api("POST", f"platform/users/{name}/password")
    assert r.status_code == 200 and "no-store" in r.headers["Cache-Control"]
    new = r.json()["password"]
    assert new != old
    assert login(host, name, old).logged_in_as() is None
    assert login(host, name, new).logged_in_as() == name
    assert admin.api("POST", "platform/users/no-such-user/password").status_code == 404


# --- authorization page ---------------------------------------------------------------


def admin_browser(host) -> HubClient:
    browser = HubClient(host.https_url)
    browser.login(host.admin_user, host.admin_password)
    return browser


def test_only_pending_signups_can_be_discarded(host, admin):
    pending = names(1, "sig")[0]
    assert HubClient(host.https_url).signup(pending, "pending-password-1").status_code == 200
    (existing,) = batch(admin, names(1))
    browser = admin_browser(host)

    page = browser.get("hub/authorize").text
    row = re.search(rf'<tr id="signup-{pending}".*?</tr>', page, re.S).group(0)
    assert f"discard/{pending}" in row and 'data-state="pending"' in row
    existing_row = re.search(rf'<tr id="signup-{existing}".*?</tr>', page, re.S).group(0)
    assert "discard/" not in existing_row  # no discard offered for an existing user

    # GET no longer changes state (NativeAuthenticator's links did)
    assert browser.get(f"hub/discard/{pending}", allow_redirects=False).status_code == 405
    assert browser.get(f"hub/authorize/{pending}", allow_redirects=False).status_code == 405
    assert 'data-state="pending"' in browser.get("hub/authorize").text.split(f"signup-{pending}")[1][:60]

    # a forged POST for an existing user is refused and changes nothing
    r = browser.post_form(f"hub/discard/{existing}", {}, allow_redirects=False)
    assert r.status_code == 400
    assert admin.api("GET", f"users/{existing}").status_code == 200

    r = browser.post_form(f"hub/discard/{pending}", {}, allow_redirects=False)
    assert r.status_code == 302
    assert f"signup-{pending}" not in browser.get("hub/authorize").text


def test_approve_by_post_lets_the_signup_log_in(host, admin):
    name = names(1, "sig")[0]
    HubClient(host.https_url).signup(name, "approve-me-please")
    assert login(host, name, "approve-me-please").logged_in_as() is None
    r = admin_browser(host).post_form(f"hub/authorize/{name}", {"action": "approve"},
                                      allow_redirects=False)
    assert r.status_code == 302
    assert login(host, name, "approve-me-please").logged_in_as() == name


def test_csrf_without_xsrf_is_403(host, admin):
    pending = names(1, "sig")[0]
    HubClient(host.https_url).signup(pending, "pending-password-1")
    browser = admin_browser(host)
    # form POSTs without _xsrf
    for path in (f"hub/discard/{pending}", f"hub/authorize/{pending}"):
        r = browser.s.post(browser.url(path), data={"action": "approve"}, timeout=30,
                           allow_redirects=False)
        assert r.status_code == 403, path
    # cookie-authenticated API POSTs without X-XSRFToken
    for path in ("hub/api/platform/users", f"hub/api/platform/users/{pending}/password"):
        r = browser.s.post(browser.url(path), json={"usernames": names(1)}, timeout=30)
        assert r.status_code == 403, path
    assert f'signup-{pending}" data-state="pending"' in browser.get("hub/authorize").text


def test_non_admins_get_403_and_anonymous_is_refused(host, admin):
    (user, password), = batch(admin, names(1)).items()
    (victim,) = batch(admin, names(1))
    other = login(host, user, password)
    token_client = HubClient(host.https_url, token=other.new_token(user))
    for client in (other, token_client):
        assert client.api("POST", "platform/users", json={"usernames": names(1)}).status_code == 403
        assert client.api("POST", f"platform/users/{victim}/password").status_code == 403
        assert client.api("PATCH", f"users/{victim}", json={"name": "renamed"}).status_code in (403, 404)
        assert client.api("DELETE", "groups/docker-sock").status_code in (403, 404)
    for page in ("hub/platform/users", "hub/authorize"):
        assert other.get(page).status_code == 403, page
    for path in (f"hub/discard/{victim}", f"hub/authorize/{victim}"):
        assert other.post_form(path, {"action": "unauthorize"}, allow_redirects=False).status_code == 403
    anonymous = HubClient(host.https_url)
    assert anonymous.api("POST", "platform/users", json={"usernames": names(1)}).status_code == 403
    assert anonymous.api("POST", f"platform/users/{victim}/password").status_code == 403
    for page in ("hub/platform/users", "hub/authorize"):
        r = anonymous.get(page, allow_redirects=False)
        assert r.status_code == 302 and "/hub/login" in r.headers["Location"]
    # the victim's password was not changed by any of this
    assert login(host, user, password).logged_in_as() == user


def test_admin_pages_render(host):
    browser = admin_browser(host)
    page = browser.get("hub/platform/users")
    assert page.status_code == 200
    for element in ("add-users-form", "credentials-modal", "credentials-copy-all",
                    "credentials-download"):
        assert f'id="{element}"' in page.text


# --- lifecycle ------------------------------------------------------------------------


def test_rename_is_refused_with_a_clear_message(admin):
    (name,) = batch(admin, names(1))
    r = admin.api("PATCH", f"users/{name}", json={"name": name + "x"})
    assert r.status_code == 400 and "Renaming users is not supported" in r.json()["message"]
    assert admin.api("GET", f"users/{name}").status_code == 200
    # other changes still go through
    assert admin.api("PATCH", f"users/{name}", json={"admin": False}).status_code == 200


def test_builtin_groups_exist_and_cannot_be_deleted(admin):
    groups = {g["name"] for g in admin.api("GET", "groups").json()}
    assert {"docker-sock", "docker-privileged"} <= groups
    r = admin.api("DELETE", "groups/docker-sock")
    assert r.status_code == 400 and "built-in" in r.json()["message"]
    assert admin.api("GET", "groups/docker-sock").status_code == 200


def test_builtin_group_is_recreated_at_hub_start(host, admin):
    host.exec("/opt/jupyterhub/bin/python", "-c",
              "import sqlite3; db = sqlite3.connect('/var/lib/jupyterhub/jupyterhub.sqlite'); "
              "db.execute(\"DELETE FROM groups WHERE name = 'docker-privileged'\"); db.commit()")
    host.exec("systemctl", "restart", "jupyterhub")
    admin.wait_hub()
    assert admin.api("GET", "groups/docker-privileged").status_code == 200


def test_deleting_a_user_stops_the_server_disables_the_account_and_archives_the_data(host, admin):
    (name,) = batch(admin, names(1))
    admin.start_server(name)
    unix = f"jh-{name}"
    unit = f"jupyter-{name}-singleuser"
    assert admin.api("DELETE", f"users/{name}").status_code == 204
    assert host.exec("systemctl", "is-active", unit, check=False).stdout.strip() != "active"
    shadow = host.exec("getent", "shadow", unix).stdout.split(":")
    assert shadow[7] == "1"  # expired: disabled, not removed
    # the directories moved to the admin-only archive (test_account_abuse.py: a new
    # user of the name starts empty, the admin restores)
    assert host.exec("test", "-e", f"/srv/jupyterhub/users/{unix}", check=False).returncode == 1
    archived = host.exec("sh", "-c", f"ls -d /srv/jupyterhub/users/.archive/*-{unix}/home").stdout
    assert archived.strip()


# --- privileges in the lab ----------------------------------------------------------------


def test_docker_sock_member_has_the_docker_group_and_a_non_member_does_not(host, admin):
    member, other = batch(admin, names(2, "dock"))
    add_to_group(admin, "docker-sock", member)
    # the unix group lists the non-member already: the hub group must win
    admin.start_server(other)  # creates jh-<other>
    admin.stop_server(other)
    host.exec("gpasswd", "--add", f"jh-{other}", "docker")
    for user in (member, other):
        admin.start_server(user)
    out, _ = lab_shell(admin, member, "id -Gn")
    assert "docker" in out.split()
    out, _ = lab_shell(admin, other, "id -Gn")
    assert "docker" not in out.split()
    assert f"jh-{other}" not in host.exec("getent", "group", "docker").stdout
    for user in (member, other):
        admin.stop_server(user)


def test_docker_privileged_member_can_sudo_in_the_lab_terminal_and_others_cannot(host, admin):
    member, other = batch(admin, names(2, "priv"))
    add_to_group(admin, "docker-privileged", member)
    for user in (member, other):
        admin.start_server(user)
    _, status = lab_shell(admin, member, "sudo -n true")
    assert status == 0
    _, status = lab_shell(admin, other, "sudo -n true")
    assert status != 0
    assert host.unit_properties(f"jupyter-{other}-singleuser", "NoNewPrivileges") == {
        "NoNewPrivileges": "yes"}
    # leaving the hub group takes sudo away at the next spawn
    r = admin.api("DELETE", "groups/docker-privileged/users", json={"users": [member]})
    assert r.status_code == 200
    admin.stop_server(member)
    admin.start_server(member)
    _, status = lab_shell(admin, member, "sudo -n true")
    assert status != 0
    for user in (member, other):
        admin.stop_server(user)


def test_high_memory_group_gets_the_larger_memory_max_and_env(host, admin, profiles):
    r = admin.api("POST", "groups/big-mem")
    assert r.status_code in (201, 409), r.text
    big, plain = batch(admin, names(2, "mem"))
    add_to_group(admin, "big-mem", big)
    for user in (big, plain):
        admin.start_server(user)
    default_mem = memory_bytes(json.loads(host.exec("cat", "/etc/jupyterhub/platform_config.json").stdout)[
        "PlatformSpawner"]["mem_limit"])
    assert default_mem != 8 * G
    big_unit = host.unit_properties(f"jupyter-{big}-singleuser", "MemoryMax", "CPUQuotaPerSecUSec")
    plain_unit = host.unit_properties(f"jupyter-{plain}-singleuser", "MemoryMax")
    assert int(big_unit["MemoryMax"]) == 8 * G
    assert big_unit["CPUQuotaPerSecUSec"] == "3s"
    assert int(plain_unit["MemoryMax"]) == default_mem
    out, _ = lab_shell(admin, big, 'echo "MEM=$MEM_LIMIT CPU=$CPU_LIMIT"')
    assert f"MEM={8 * G} CPU=3.0" in out
    out, _ = lab_shell(admin, plain, 'echo "MEM=$MEM_LIMIT"')
    assert f"MEM={default_mem}" in out
    for user in (big, plain):
        admin.stop_server(user)


# --- brute force ---------------------------------------------------------------------------


def test_login_delay_after_the_configured_failures(host, admin):
    allowed = int(json.loads(host.exec("cat", "/etc/jupyterhub/platform_config.json").stdout)[
        "PlatformAuthenticator"]["allowed_failed_logins"])
    (name, password), = batch(admin, names(1, "lock")).items()
    client = client_from(host, "127.0.0.10")
    fail_until_delayed(client, name, allowed)
    # the right password waits too (from this address), and is told how long
    r = client.login(name, password, spawn=False)
    assert r.status_code == 429 and "Try again in" in r.text
    # an admin's password reset lifts the delays with a new password
    new = admin.api("POST", f"platform/users/{name}/password").json()["password"]
    client.login(name, new, spawn=False)
    assert client.logged_in_as() == name
