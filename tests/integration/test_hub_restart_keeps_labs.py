"""A hub restart keeps every running lab, however it was started (issue 16).

Labs are started every way the platform starts them: the spawn page (the form
POST a browser sends), the REST API, the Restart My Server button's endpoint, a
resource profile, one that already survived an earlier hub restart, and one
still starting when the hub goes down (held in an admin startup script, as a
slow start would be: the spawn page answers after one second, so a browser's
launch is often still pending). Then one ``systemctl restart jupyterhub``; each
lab must keep its process (same MainPID), its hub record must name where it
listens (127.0.0.1 and its socket unit's port), its route must answer for its
user through nginx, and the hub's journal since the restart must show no
failed check.

Before the fix the pending lab's record kept JupyterHub's defaults (ip '', a
random port): the new hub looked for it at http://<hostname>:<port>/, gave up
after http_timeout and stopped it.
"""

from __future__ import annotations

import json
import time

import pytest

from hubclient import HubClient, batch_create, login_client, unique_names

PROFILE_GROUP = "restart-profile"
PROFILE_MEM = 3 * 1024**3
PROFILE_DROPIN = (
    f'c.PlatformSpawner.resource_profiles = {{"{PROFILE_GROUP}": {{"mem_limit": "3G"}}}}\n'
)
# an admin startup script (lab/lab_start.py runs them before the lab) that holds
# one lab's start while its marker exists
HOLD_DIR = "/run/hub-restart-test"
HOLD_SCRIPT = "/etc/jupyterhub/start-platform.d/50-test-hold"
HOLD_SCRIPT_TEXT = f"""\
#!/bin/sh
# test only (tests/integration/test_hub_restart_keeps_labs.py)
n=0
while [ -e "{HOLD_DIR}/$JUPYTERHUB_USER" ] && [ $n -lt 1200 ]; do sleep 0.1; n=$((n+1)); done
"""
KINDS = ("spawn_page", "api", "restart_button", "profile", "survivor", "pending")
# what the hub logs when it fails to find a running lab (JupyterHub's user.py, app.py)
FAILED_CHECK = ("Traceback", "Giving up", "never showed up", "does not appear to be running",
                "appears to have stopped", "had invalid url", "Domain name not found")
RECORDS = """
import json, sqlite3
db = sqlite3.connect("file:/var/lib/jupyterhub/jupyterhub.sqlite?mode=ro", uri=True)
rows = db.execute(
    "SELECT users.name, servers.ip, servers.port FROM spawners"
    " JOIN users ON users.id = spawners.user_id"
    " JOIN servers ON servers.id = spawners.server_id WHERE spawners.name = ''")
print(json.dumps({name: [ip, port] for name, ip, port in rows}))
"""


def unit(user: str) -> str:
    return f"jupyter-{user}-singleuser"


def main_pid(host, user: str) -> str:
    props = host.unit_properties(unit(user), "MainPID", "ActiveState")
    return props["MainPID"] if props["ActiveState"] == "active" else "not active"


def socket_port(host, user: str) -> int:
    """The port the lab's socket unit listens on ("127.0.0.1:41234 (Stream)")."""
    listen = host.exec("systemctl", "show", "--property=Listen", "--value",
                       f"{unit(user)}.socket").stdout.split()[0]
    ip, port = listen.rsplit(":", 1)
    assert ip == "127.0.0.1", listen
    return int(port)


def hub_records(host) -> dict[str, list]:
    """user -> [ip, port] of the default server in the hub's database."""
    return json.loads(host.exec("/opt/jupyterhub/bin/python", "-c", RECORDS).stdout)


def server_model(admin: HubClient, user: str) -> dict:
    return admin.api("GET", f"users/{user}").json().get("servers", {}).get("", {})


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout}s"
        time.sleep(0.25)


def journal_cursor(host) -> str:
    out = host.exec("journalctl", "-u", "jupyterhub", "-n", "0", "--show-cursor").stdout
    return out.strip().rsplit("-- cursor: ", 1)[1]


@pytest.fixture(scope="module")
def labs(host, admin, hub_dropin):
    """kind -> user, kind -> that user's token client, user -> password; every
    lab but the pending one running and ready."""
    users = dict(zip(KINDS, unique_names(len(KINDS), "hr"), strict=True))
    passwords = batch_create(admin, users.values())
    clients = {kind: HubClient(admin.base, token=admin.new_token(user))
               for kind, user in users.items()}
    host.exec("mkdir", "-p", "-m", "0755", HOLD_DIR)
    host.exec("install", "-m", "0755", "/dev/stdin", HOLD_SCRIPT, input=HOLD_SCRIPT_TEXT)
    try:
        # started before the first restart (the resource profile's drop-in)
        admin.start_server(users["survivor"])
        survivor_pid = main_pid(host, users["survivor"])
        if admin.api("POST", f"groups/{PROFILE_GROUP}").status_code not in (201, 409):
            pytest.fail(f"could not create the hub group {PROFILE_GROUP}")
        r = admin.api("POST", f"groups/{PROFILE_GROUP}/users", json={"users": [users["profile"]]})
        assert r.status_code == 200, r.text
        hub_dropin("90-test-restart-profile.py", PROFILE_DROPIN)
        admin.wait_lab(users["survivor"], timeout=60)
        assert main_pid(host, users["survivor"]) == survivor_pid

        # every other lab starts after that restart
        page = login_client(host.https_url, users["spawn_page"], passwords[users["spawn_page"]],
                            spawn=False)
        r = page.post_form(f"hub/spawn/{users['spawn_page']}", {})
        assert r.status_code == 200, r.status_code
        page.wait_lab(users["spawn_page"])

        admin.start_server(users["api"])

        admin.start_server(users["profile"])
        memory = host.unit_properties(unit(users["profile"]), "MemoryMax")["MemoryMax"]
        assert memory == str(PROFILE_MEM), "the resource profile was not applied"

        button_user = users["restart_button"]
        admin.start_server(button_user)
        first_pid = main_pid(host, button_user)
        button = login_client(host.https_url, button_user, passwords[button_user], spawn=False)
        r = button.api("POST", f"users/{button_user}/restart-server")
        assert r.status_code in (200, 202), r.text
        button.wait_lab(button_user)
        assert main_pid(host, button_user) != first_pid, "the button did not restart the lab"

        for kind in KINDS[:-1]:
            clients[kind].wait_lab(users[kind], timeout=60)
        yield users, clients, passwords
    finally:
        host.exec("rm", "-rf", HOLD_SCRIPT, HOLD_DIR)
        for user in users.values():
            admin.api("DELETE", f"users/{user}/server")
        for user in users.values():
            admin.api("DELETE", f"users/{user}")


@pytest.fixture(scope="module")
def restarted(host, admin, labs):
    """One hub restart, with a lab still starting; kind -> (MainPID before, after)."""
    users, _, passwords = labs
    pending = users["pending"]
    host.exec("touch", f"{HOLD_DIR}/{pending}")
    # as a browser's login does: the spawn page answers while the lab starts
    browser = login_client(host.https_url, pending, passwords[pending])
    assert server_model(admin, pending).get("pending") == "spawn"
    wait_until(lambda: main_pid(host, pending) != "not active", 30, "the pending lab's unit started")
    assert server_model(admin, pending).get("pending") == "spawn", "the lab was not held"
    before = {kind: main_pid(host, user) for kind, user in users.items()}

    cursor = journal_cursor(host)
    host.exec("systemctl", "restart", "jupyterhub")
    # the old hub is gone; the new one checks the labs it finds (the held one
    # answers once released)
    host.exec("rm", "-f", f"{HOLD_DIR}/{pending}")
    admin.wait_hub()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not all(
        server_model(admin, user).get("ready") for user in users.values()
    ):
        time.sleep(0.5)
    after = {kind: main_pid(host, user) for kind, user in users.items()}
    assert browser.logged_in_as() == pending
    return {kind: (before[kind], after[kind]) for kind in KINDS}, cursor


@pytest.mark.parametrize("kind", KINDS)
def test_lab_keeps_its_process_record_and_route_across_a_hub_restart(host, admin, labs, restarted,
                                                                    kind):
    users, clients, _ = labs
    user = users[kind]
    pids, _ = restarted
    before, after = pids[kind]
    assert before != "not active"
    assert after == before, f"the {kind} lab did not survive the hub restart"
    assert server_model(admin, user).get("ready") is True
    assert hub_records(host)[user] == ["127.0.0.1", socket_port(host, user)]
    # its route is in the proxy: its own user reaches it through nginx
    wait_until(lambda: clients[kind].get(f"user/{user}/api/status", timeout=10).status_code == 200,
               30, f"the {kind} lab answers through nginx")


def test_hub_journal_since_the_restart_shows_no_failed_check(host, restarted):
    _, cursor = restarted
    journal = host.exec("journalctl", "-u", "jupyterhub", "--no-pager", "-o", "cat",
                        f"--after-cursor={cursor}").stdout
    assert "still running" in journal, journal[-3000:]
    found = [line for line in journal.splitlines() if any(bad in line for bad in FAILED_CHECK)]
    assert found == [], "\n".join(found[-5:])
