"""Per-user storage on the real test host: real unix users, real permissions, through nginx.

alice and bob sign up and are approved (so both have cookie sessions as well
as tokens), get their directories from a first spawn, and alice plants files,
an empty directory, a private file and symlinks to bob's workspace and to
/etc in hers. The tests run in file order as one scenario: access rules,
validation, refusal while running/starting, restart, reset, the restore round
trip, the purge timer, sizes, the shared directory and the CIFS variables.
Files outside alice's tree (bob's, /etc) are compared byte for byte
before and after every step that changes alice's storage.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from urllib.parse import urlsplit

import pytest

from hubclient import HubClient

SUFFIX = secrets.token_hex(3)
ALICE, BOB = f"st-alice-{SUFFIX}", f"st-bob-{SUFFIX}"
PASSWORD = "storage-pass-" + secrets.token_hex(4)
USERS_ROOT = "/srv/jupyterhub/users"
SHARED = "/srv/jupyterhub/shared"

# lstat-only manifest of a tree, run inside the host as root: path -> entry
MANIFEST_PY = r"""
import hashlib, json, os, stat, sys
top = sys.argv[1]
out = {}
for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
    for name in sorted(dirnames + filenames):
        p = os.path.join(dirpath, name)
        st = os.lstat(p)
        rel = os.path.relpath(p, top)
        entry = [stat.filemode(st.st_mode), st.st_uid, st.st_gid]
        if stat.S_ISLNK(st.st_mode):
            entry.append(os.readlink(p))
        elif stat.S_ISREG(st.st_mode):
            entry.append(hashlib.sha256(open(p, "rb").read()).hexdigest())
        out[rel] = entry
print(json.dumps(out, sort_keys=True))
"""


def manifest(host, path: str) -> dict:
    return json.loads(host.exec("python3", "-c", MANIFEST_PY, path).stdout)


def outside(host) -> dict:
    """What alice must never change: bob's tree and a few files of /etc."""
    sums = host.exec("sha256sum", "/etc/passwd", "/etc/group", "/etc/hostname").stdout
    return {"bob": manifest(host, f"{USERS_ROOT}/jh-{BOB}"), "etc": sums}


def as_user(host, unix: str, script: str, check: bool = True):
    """Run a shell script as a platform unix user, umask 022 (a usual default)."""
    return host.exec("runuser", "-u", unix, "--", "sh", "-c", f"umask 022; {script}", check=check)


@pytest.fixture(scope="module")
def people(host, admin):
    """Signed-up, approved, logged-in alice and bob, each with cookie and token clients."""
    clients = {}
    approver = HubClient(host.https_url)
    login_home(approver, host.admin_user, host.admin_password)
    for name in (ALICE, BOB):
        browser = HubClient(host.https_url)
        assert browser.signup(name, PASSWORD).status_code == 200
        approve = approver.post_form(f"hub/authorize/{name}", {"action": "approve"})
        assert approve.status_code == 200
        login_home(browser, name, PASSWORD)
        token = HubClient(host.https_url, token=browser.new_token(name))
        # a first spawn creates the unix account and the directories
        token.start_server(name)
        token.stop_server(name)
        clients[name] = {"cookie": browser, "token": token}
    alice_ws = f"{USERS_ROOT}/jh-{ALICE}/workspace"
    as_user(host, f"jh-{BOB}", f"echo bob-secret > {USERS_ROOT}/jh-{BOB}/workspace/secret.txt")
    as_user(host, f"jh-{ALICE}", " && ".join([
        f"mkdir -p {alice_ws}/project/data {alice_ws}/empty",
        f"echo '{{\"cells\": []}}' > {alice_ws}/project/analysis.ipynb",
        f"head -c 300000 /dev/urandom > {alice_ws}/project/data/blob.bin",
        f"echo private > {alice_ws}/private.txt && chmod 600 {alice_ws}/private.txt",
        f"echo dot > {alice_ws}/.hidden",
        # planted links: at bob's files and at /etc, at the top and deep inside
        f"ln -s {USERS_ROOT}/jh-{BOB}/workspace {alice_ws}/to-bob",
        f"ln -s /etc {alice_ws}/project/data/to-etc",
        f"ln -s /etc/passwd {alice_ws}/passwd-link",
        f"echo 'export EDITOR=vi' > {USERS_ROOT}/jh-{ALICE}/home/.profile",
    ]))
    return clients


def login_home(client: HubClient, user: str, password: str) -> None:
    """Log in and stop at the home page: a plain login goes on to /hub/spawn and
    starts the user's server (the admin's would then disturb later tests)."""
    home = urlsplit(client.base).path + "hub/home"
    client.post_form(f"hub/login?next={home}", {"username": user, "password": password})
    assert client.logged_in_as() == user


def api(client: HubClient, method: str, user: str, path: str, **kw):
    return client.api(method, f"users/{user}/{path}", **kw)


# --- access --------------------------------------------------------------------------


def test_another_user_gets_403_everywhere_and_nothing_changes(host, people):
    before = manifest(host, f"{USERS_ROOT}/jh-{ALICE}")
    bob = people[BOB]["token"]
    calls = [
        ("DELETE", "manage-volumes", {"json": {"volumes": ["workspace"]}}),
        ("GET", "manage-volumes", {}),
        ("GET", "trash", {}),
        ("POST", "trash/restore", {"json": {"item": "20240101T000000.000000Z-home"}}),
        ("POST", "restart-server", {}),
    ]
    for method, path, kw in calls:
        r = api(bob, method, ALICE, path, **kw)
        assert r.status_code == 403, (method, path, r.text)
    assert api(bob, "GET", "nobody-" + SUFFIX, "trash").status_code == 403  # same as existing users
    assert api(HubClient(host.https_url), "GET", ALICE, "trash").status_code == 403  # anonymous
    assert manifest(host, f"{USERS_ROOT}/jh-{ALICE}") == before


def test_cookie_requests_need_xsrf_and_another_users_cookie_gets_403(host, people):
    before = manifest(host, f"{USERS_ROOT}/jh-{ALICE}")
    alice, bob = people[ALICE]["cookie"], people[BOB]["cookie"]
    body = {"volumes": ["cache"]}
    for client in (alice, bob):
        url = client.url(f"hub/api/users/{ALICE}/manage-volumes")
        without = client.s.delete(url, json=body, timeout=30)
        assert without.status_code == 403, without.text
        restore = client.s.post(client.url(f"hub/api/users/{ALICE}/trash/restore"),
                                json={"item": "20240101T000000.000000Z-home"}, timeout=30)
        assert restore.status_code == 403
        restart = client.s.post(client.url(f"hub/api/users/{ALICE}/restart-server"), timeout=30)
        assert restart.status_code == 403
    # with the header, alice's own requests pass the XSRF check (and meet the real rules)
    restart = alice.s.post(alice.url(f"hub/api/users/{ALICE}/restart-server"), timeout=30,
                           headers={"X-XSRFToken": alice.hub_xsrf()})
    assert restart.status_code == 400 and restart.json()["message"] == "Server is not running"
    with_xsrf = bob.s.delete(bob.url(f"hub/api/users/{ALICE}/manage-volumes"), json=body,
                             headers={"X-XSRFToken": bob.hub_xsrf()}, timeout=30)
    assert with_xsrf.status_code == 403, with_xsrf.text
    listing = bob.api("GET", f"users/{ALICE}/trash")
    assert listing.status_code == 403
    assert manifest(host, f"{USERS_ROOT}/jh-{ALICE}") == before


@pytest.mark.parametrize("body", [
    {"volumes": [".."]}, {"volumes": ["/etc"]}, {"volumes": ["home/../../x"]},
    {"volumes": [""]}, {"volumes": ["x" * 4096]}, {"volumes": ["shared"]}, {"volumes": [1]},
    {"volumes": [None]}, {"volumes": "home"}, {"volumes": []}, {}, [], "not json",
    {"volumes": ["home", f"../jh-{BOB}/workspace"]},
])
def test_names_outside_the_whitelist_get_400_and_touch_nothing(host, people, body):
    before = manifest(host, f"{USERS_ROOT}/jh-{ALICE}")
    kw = {"data": body} if isinstance(body, str) else {"json": body}
    r = api(people[ALICE]["token"], "DELETE", ALICE, "manage-volumes", **kw)
    assert r.status_code == 400, r.text
    assert r.json().get("message")
    assert manifest(host, f"{USERS_ROOT}/jh-{ALICE}") == before


def test_bad_trash_items_get_400(people):
    alice = people[ALICE]["token"]
    for item in ["..", f"../../jh-{BOB}/workspace", "", 7, None, "20240101T000000.000000Z-shared"]:
        r = api(alice, "POST", ALICE, "trash/restore", json={"item": item})
        assert r.status_code == 400, (item, r.text)


def test_unknown_user_is_404_for_the_admin(admin):
    name = "nobody-" + SUFFIX
    assert api(admin, "DELETE", name, "manage-volumes", json={"volumes": ["home"]}).status_code == 404
    assert api(admin, "GET", name, "trash").status_code == 404
    assert api(admin, "POST", name, "restart-server").status_code == 404


# --- running, starting, restart --------------------------------------------------------


def test_reset_is_refused_while_starting_and_while_running_and_restart_works(host, people, admin):
    alice = people[ALICE]["token"]
    # the running lab writes into home itself: compare the workspace and the trash
    def state():
        return (manifest(host, f"{USERS_ROOT}/jh-{ALICE}/workspace"),
                host.exec("ls", "-a", f"{USERS_ROOT}/jh-{ALICE}").stdout)

    before = state()
    started = threading.Thread(target=alice.api, args=("POST", f"users/{ALICE}/server"))
    started.start()
    # while the hub reports the spawn as pending
    deadline, refused_starting = time.monotonic() + 60, None
    while time.monotonic() < deadline and refused_starting is None:
        server = admin.api("GET", f"users/{ALICE}").json().get("servers", {}).get("", {})
        if server.get("pending") == "spawn":
            refused_starting = api(alice, "DELETE", ALICE, "manage-volumes",
                                   json={"volumes": ["workspace"]})
        time.sleep(0.05)
    started.join()
    assert refused_starting is not None, "never saw the spawn pending"
    assert refused_starting.status_code == 400 and "starting" in refused_starting.json()["message"]

    alice.wait_lab(ALICE)
    r = api(alice, "DELETE", ALICE, "manage-volumes", json={"volumes": ["workspace"]})
    assert r.status_code == 400 and "running" in r.json()["message"]
    r = api(alice, "POST", ALICE, "trash/restore", json={"item": "20240101T000000.000000Z-home"})
    assert r.status_code == 400
    assert state() == before

    # restart through the hub: a new unit process, and the hub agrees it is ready
    unit = f"jupyter-{ALICE}-singleuser"
    pid_before = host.unit_properties(unit, "MainPID")["MainPID"]
    r = api(alice, "POST", ALICE, "restart-server")
    assert r.status_code in (200, 202), r.text
    alice.wait_lab(ALICE)
    props = host.unit_properties(unit, "MainPID", "ActiveState")
    assert props["ActiveState"] == "active" and props["MainPID"] != pid_before
    assert admin.api("GET", f"users/{ALICE}").json()["servers"][""]["ready"] is True
    alice.stop_server(ALICE)
    assert host.unit_properties(unit, "ActiveState")["ActiveState"] in ("inactive", "failed", "")
    r = api(alice, "POST", ALICE, "restart-server")
    assert r.status_code == 400 and r.json()["message"] == "Server is not running"


# --- reset, restore, purge ---------------------------------------------------------------


@pytest.fixture(scope="module")
def original(host, people):
    """alice's workspace and home as planted, and what lies outside her tree."""
    return {
        "workspace": manifest(host, f"{USERS_ROOT}/jh-{ALICE}/workspace"),
        "home": manifest(host, f"{USERS_ROOT}/jh-{ALICE}/home"),
        "outside": outside(host),
    }


def test_reset_moves_to_trash_and_recreates_empty_dirs(host, people, original):
    alice = people[ALICE]["cookie"]  # the home page's way: cookie + X-XSRFToken
    r = api(alice, "DELETE", ALICE, "manage-volumes", json={"volumes": ["workspace", "home"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["reset_volumes"] == ["workspace", "home"] and body["failed_volumes"] == []
    assert body["message"] == "Successfully reset 2 volume(s)"
    root = f"{USERS_ROOT}/jh-{ALICE}"
    modes = host.exec("stat", "-c", "%U %G %a %n", f"{root}/workspace", f"{root}/home",
                      f"{root}/.trash").stdout.splitlines()
    assert modes[0] == f"jh-{ALICE} jh-{ALICE} 700 {root}/workspace"
    assert modes[1] == f"jh-{ALICE} jh-{ALICE} 700 {root}/home"
    assert modes[2] == f"root root 700 {root}/.trash"
    assert manifest(host, f"{root}/workspace") == {}
    assert sorted(manifest(host, f"{root}/home")) == [".cache", "workspace"]
    items = {i["volume"]: i["id"] for i in body["trash"]}
    # moved whole: every file, mode, owner and link target, never followed
    assert manifest(host, f"{root}/.trash/{items['workspace']}") == original["workspace"]
    assert manifest(host, f"{root}/.trash/{items['home']}") == original["home"]
    assert outside(host) == original["outside"]
    # the user cannot reach the trash
    assert as_user(host, f"jh-{ALICE}", f"ls {root}/.trash", check=False).returncode != 0


def test_restore_round_trip_returns_every_file_and_never_overwrites(host, people, original):
    alice = people[ALICE]["token"]
    root = f"{USERS_ROOT}/jh-{ALICE}"
    as_user(host, f"jh-{ALICE}", f"echo after-reset > {root}/workspace/new.txt")
    listing = api(alice, "GET", ALICE, "trash").json()
    assert listing["retention_days"] == 7
    items = {i["volume"]: i["id"] for i in listing["items"]}
    for volume in ("workspace", "home"):
        r = api(alice, "POST", ALICE, "trash/restore", json={"item": items[volume]})
        assert r.status_code == 200, r.text
        assert r.json()["volume"] == volume
        assert manifest(host, f"{root}/{volume}") == original[volume]
    # the directories that were in place went to the trash, with what was written since
    trash = {i["volume"]: i["id"] for i in api(alice, "GET", ALICE, "trash").json()["items"]}
    assert set(trash) == {"workspace", "home"}
    displaced = manifest(host, f"{root}/.trash/{trash['workspace']}")
    assert displaced["new.txt"][0] == "-rw-r--r--"
    assert outside(host) == original["outside"]
    r = api(alice, "POST", ALICE, "trash/restore", json={"item": items["workspace"]})
    assert r.status_code == 404  # restored once, gone from the trash


def test_purge_timer_deletes_expired_items_without_following_links(host, people, original):
    root = f"{USERS_ROOT}/jh-{ALICE}"
    trash = [i["id"] for i in api(people[ALICE]["token"], "GET", ALICE, "trash").json()["items"]]
    expired = "20000101T000000.000000Z-workspace"
    host.exec("mv", f"{root}/.trash/{trash[0]}", f"{root}/.trash/{expired}")
    # links planted in the expired item, at bob's files and at /etc
    host.sh(f"ln -s {USERS_ROOT}/jh-{BOB}/workspace {root}/.trash/{expired}/to-bob-2 && "
            f"ln -s /etc {root}/.trash/{expired}/etc && mkdir {root}/.trash/{expired}/ro && "
            f"chmod 500 {root}/.trash/{expired}/ro")
    assert host.unit_properties("jupyterhub-storage-purge.timer", "ActiveState")["ActiveState"] == "active"
    host.exec("systemctl", "start", "jupyterhub-storage-purge.service")
    result = host.unit_properties("jupyterhub-storage-purge.service", "Result")["Result"]
    assert result == "success"
    left = host.exec("ls", f"{root}/.trash").stdout.split()
    assert expired not in left and trash[1] in left
    assert outside(host) == original["outside"]
    log = host.exec("journalctl", "-u", "jupyterhub-storage-purge.service", "--no-pager").stdout
    assert f"purged jh-{ALICE}/.trash/{expired}" in log
    score, out = host.exposure("jupyterhub-storage-purge.service")
    print(f"\njupyterhub-storage-purge.service exposure: {score}")
    assert score <= 2.0, out[-2000:]


# --- sizes ---------------------------------------------------------------------------------


def test_sizes_are_shown_to_the_user_and_to_admins(host, people, admin):
    alice = people[ALICE]["token"]
    # a reset or restore measures that user again in the background
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        model = api(alice, "GET", ALICE, "manage-volumes").json()
        sizes = {v["name"]: v["size_bytes"] for v in model["volumes"]}
        if sizes["workspace"] and sizes["workspace"] > 300_000:
            break
        time.sleep(0.5)
    assert sizes["workspace"] > 300_000, model  # the 300 kB blob, nothing behind the links
    assert sizes["workspace"] < 10_000_000
    assert model["volumes"][0]["description"] == "User home directory files, configurations"
    assert model["sizes_measured_at"]
    every = admin.api("GET", "storage").json()
    assert every["users"][ALICE]["workspace"] == sizes["workspace"]
    assert people[BOB]["token"].api("GET", "storage").status_code == 403
    page = people[ALICE]["cookie"].get("hub/storage")
    assert page.status_code == 403
    admin_browser = HubClient(host.https_url)
    login_home(admin_browser, host.admin_user, host.admin_password)
    page = admin_browser.get("hub/storage")
    assert page.status_code == 200 and f'data-storage-user="{ALICE}"' in page.text


# --- shared storage --------------------------------------------------------------------------


def test_shared_dir_is_group_writable_for_every_platform_user(host, people):
    d = f"{SHARED}/team-{SUFFIX}"
    # alice creates with the usual umask 022; bob can still write in and to it
    as_user(host, f"jh-{ALICE}", f"mkdir {d} && echo from-alice > {d}/notes.txt")
    as_user(host, f"jh-{BOB}", f"echo from-bob >> {d}/notes.txt && echo new > {d}/bob.txt "
                               f"&& mkdir {d}/sub && echo deep > {d}/sub/f")
    as_user(host, f"jh-{ALICE}", f"echo again > {d}/sub/alice.txt")
    assert host.exec("cat", f"{d}/notes.txt").stdout == "from-alice\nfrom-bob\n"
    for line in host.exec("stat", "-c", "%G %A %n", d, f"{d}/notes.txt", f"{d}/sub",
                          f"{d}/sub/alice.txt").stdout.splitlines():
        group, mode, _ = line.split(" ", 2)
        assert group == "jupyterhub-users", line
        assert mode[5] == "w", line  # group-writable
    assert host.exec("stat", "-c", "%A", d).stdout.strip()[6] == "s"  # setgid kept on subdirs
    # bound at /mnt/shared in the labs; no reset touches it (not in the whitelist)
    r = api(people[ALICE]["token"], "DELETE", ALICE, "manage-volumes", json={"volumes": ["shared"]})
    assert r.status_code == 400
    assert host.exec("test", "-f", f"{d}/bob.txt", check=False).returncode == 0
    host.exec("rm", "-rf", d)


# --- CIFS: the host cannot mount a share; the play's checks and rendering are tested ------


def test_bad_cifs_share_fails_the_play_naming_it(host):
    import testhost
    extra = {"jupyterhub_shared_cifs_enabled": True, "jupyterhub_shared_cifs_share": "nas/data",
             "jupyterhub_shared_cifs_username": "svc"}
    res = testhost.deploy(host.name, "-e", json.dumps(extra), capture=True, check=False)
    assert res.returncode != 0
    failed = res.stdout[res.stdout.find("FAILED!"):]
    assert "jupyterhub_shared_cifs_share" in failed, res.stdout[-3000:]


def test_cifs_check_mode_renders_the_mount_and_hides_the_password(host):
    import testhost
    secret = "cifs-" + secrets.token_hex(6)
    extra = {"jupyterhub_shared_cifs_enabled": True,
             "jupyterhub_shared_cifs_share": "//nas.example.org/data",
             "jupyterhub_shared_cifs_username": "svc", "jupyterhub_shared_cifs_password": secret,
             "jupyterhub_shared_cifs_options": ["vers=3.1.1"]}
    res = testhost.deploy(host.name, "--check", "--diff", "-e", json.dumps(extra),
                          capture=True, check=False)
    assert res.returncode == 0, res.stdout[-4000:]
    assert "What=//nas.example.org/data" in res.stdout
    assert ("Options=credentials=/etc/jupyterhub/cifs-credentials,uid=root,"
            "gid=jupyterhub-users,file_mode=0664,dir_mode=0775,vers=3.1.1") in res.stdout
    assert secret not in res.stdout + res.stderr
    # check mode changed nothing: still the local directory, no unit, no credentials
    assert host.exec("test", "-e", "/etc/systemd/system/srv-jupyterhub-shared.mount",
                     check=False).returncode != 0
    assert host.exec("test", "-e", "/etc/jupyterhub/cifs-credentials", check=False).returncode != 0
