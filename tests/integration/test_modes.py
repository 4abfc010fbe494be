"""Modes the main test host is not deployed in (issue 17), on the suite's modes
host (tests/conftest.py ``modes_host``, deployed with testhost.MODES_HOST_VARS):

* HTTP only (``jupyterhub_ssl_enabled: false``): nginx serves plain HTTP and no
  TLS; users reach the platform through the TLS terminator in front of it
  (docs/configuration.md), which ``HubClient.behind_tls_terminator`` plays: the
  public URLs are ``https://hub.localhost/...`` and ``https://<user>.hub.localhost/...``
  (port 443), each request goes on to nginx's HTTP port as plain HTTP with
  ``X-Forwarded-Proto: https``. Login, the OAuth dance to a lab's own origin,
  and a kernel's websocket all run that way.
* signup off (``jupyterhub_signup_enabled: false``): only the admin creates users.
* the quick start (no ``jupyterhub_admin_password``): the admin signs up and is
  approved at once; until then the signup page is open for the admin's name only.

Two more modes are play runs against the same host, cheaper than hosts of their own:

* GPU mode 1 on a host without a GPU: the play stops in its checks, before any
  change; a hub started in that mode refuses with one clear line and is not
  restarted in a loop.
* CIFS shared storage: the build machine's kernel has no CIFS, so everything up
  to the mount is proven (the unit, the credentials file, what mount.cifs makes
  of both) and the play's failure must carry the mount's own reason; switching
  CIFS off again restores the local shared directory.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import time

import pytest
import requests

import testhost
from hubclient import HubClient, alert_text, batch_create, lab_cell

ADMIN_SIGNUP_DONE = "The signup was successful!"
SIGNUP_CLOSED = "Signup is closed. Only the administrator account can be created now."
# the login page's link to the signup page (NativeAuthenticator's template)
SIGNUP_LINK = 'href="/jupyterhub/hub/signup"'
SHARED = "/srv/jupyterhub/shared"
MOUNT_UNIT = "srv-jupyterhub-shared.mount"
CIFS_CREDENTIALS = "/etc/jupyterhub/cifs-credentials"
STORAGE_PLAYBOOK = testhost.REPO / "tests" / "integration" / "playbooks" / "storage.yml"


def public_base(host) -> str:
    """The hub's public URL, as the TLS terminator serves it (https, port 443)."""
    return f"https://{host.domain}{testhost.BASE_URL}"


def http_address(host) -> tuple[str, int]:
    return ("127.0.0.1", host.ports["nginx_http_port"])


def user_client(host, token: str | None = None) -> HubClient:
    return HubClient.behind_tls_terminator(public_base(host), http_address(host), token)


def admin_has_signed_up(host) -> bool:
    """With signup off, the signup page is open only until the admin has signed up."""
    status = user_client(host).get("hub/signup").status_code
    assert status in (200, 404), status
    return status == 404


@pytest.fixture(scope="module")
def modes(modes_host):
    """The modes host with its hub as the quick start finds it: no admin yet.
    A reused host (TESTHOST_REUSE=1) whose admin has signed up is set back to
    that state (a new hub database)."""
    user_client(modes_host).wait_hub()
    if admin_has_signed_up(modes_host):
        modes_host.sh("systemctl stop jupyterhub 'jupyter-*-singleuser.service' && "
                      "rm -f /var/lib/jupyterhub/jupyterhub.sqlite && systemctl start jupyterhub")
        user_client(modes_host).wait_hub()
    return modes_host


def sign_up_admin(host) -> requests.Response:
    return user_client(host).signup(host.admin_user, host.admin_password)


@pytest.fixture(scope="module")
def modes_admin(modes) -> HubClient:
    """The admin of the modes host (signed up as the quick start says, if the
    quick start's own test has not), with an API token."""
    if not admin_has_signed_up(modes):
        assert ADMIN_SIGNUP_DONE in sign_up_admin(modes).text
    browser = user_client(modes)
    browser.login(modes.admin_user, modes.admin_password, spawn=False)
    assert browser.logged_in_as() == modes.admin_user
    return user_client(modes, token=browser.new_token(modes.admin_user))


# --- HTTP only -----------------------------------------------------------------------------


def test_http_only_nginx_serves_plain_http_and_no_tls(modes):
    port = modes.ports["nginx_http_port"]
    plain = requests.Session()
    plain.trust_env = False
    # the hub answers on plain HTTP (no redirect to HTTPS: TLS is the terminator's)
    r = plain.get(f"http://127.0.0.1:{port}/jupyterhub/hub/login", headers={"Host": modes.domain},
                  allow_redirects=False, timeout=30)
    assert r.status_code == 200 and 'name="username"' in r.text, r.status_code
    assert "Strict-Transport-Security" not in r.headers
    # any other name is refused, as with TLS
    r = plain.get(f"http://127.0.0.1:{port}/jupyterhub/hub/login", headers={"Host": "evil.example"},
                  allow_redirects=False, timeout=30)
    assert r.status_code == 421
    # nothing listens on the HTTPS port, nginx has no TLS at all
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", modes.ports["nginx_https_port"]))
    site = modes.exec("nginx", "-T").stdout
    assert "ssl_certificate" not in site and " ssl " not in site
    assert modes.exec("test", "-e", "/etc/nginx/tls/selfsigned.crt", check=False).returncode != 0


# --- the quick start and signup off ----------------------------------------------------------


def test_quick_start_the_admin_signs_up_and_is_approved_at_once(modes):
    visitor = user_client(modes)
    # before the admin exists, the signup page is open (signup is off: for the admin only)
    page = visitor.get("hub/signup")
    assert page.status_code == 200 and 'name="signup_password"' in page.text
    assert SIGNUP_LINK in visitor.get("hub/login").text
    stranger = "qs-" + secrets.token_hex(3)
    r = visitor.signup(stranger, "long-enough-password-1")
    assert r.status_code == 400 and alert_text(r.text) == SIGNUP_CLOSED, (r.status_code, r.text[-500:])

    r = sign_up_admin(modes)
    assert r.status_code == 200 and ADMIN_SIGNUP_DONE in alert_text(r.text), alert_text(r.text)
    # approved at once: the admin logs in with the password just chosen, and is an admin
    admin = user_client(modes)
    admin.login(modes.admin_user, modes.admin_password, spawn=False)
    me = admin.api("GET", "user").json()
    assert me["name"] == modes.admin_user and me["admin"] is True
    # the stranger's refused signup left nothing behind
    assert admin.api("GET", f"users/{stranger}").status_code == 404
    # the admin's name is taken now: nobody signs up as the admin a second time
    assert admin_has_signed_up(modes)


def test_signup_off_only_the_admin_creates_users(modes, modes_admin):
    visitor = user_client(modes)
    assert visitor.get("hub/signup").status_code == 404
    name = "so-" + secrets.token_hex(3)
    assert visitor.signup(name, "long-enough-password-1").status_code == 404
    login_page = visitor.get("hub/login").text
    assert 'name="username"' in login_page and SIGNUP_LINK not in login_page
    assert modes_admin.api("GET", f"users/{name}").status_code == 404

    # the admin creates the user (the batch form's API): its password logs it in
    password = batch_create(modes_admin, [name])[name]
    user = user_client(modes)
    user.login(name, password, spawn=False)
    assert user.logged_in_as() == name


def test_http_only_a_lab_starts_behind_the_terminator_and_its_kernel_runs(modes, modes_admin):
    name = "ho-" + secrets.token_hex(3)
    password = batch_create(modes_admin, [name])[name]
    user = user_client(modes)
    # the login form starts the lab; its page is opened on the lab's own origin
    # (https://<name>.hub.localhost/, the OAuth dance through the terminator)
    user.login(name, password)
    user.wait_lab(name)
    assert user.open_lab(name).url.startswith(f"https://{name}.{modes.domain}/jupyterhub/user/{name}/")
    token = user.new_token(name)
    try:
        # a notebook cell over the kernel's websocket (Upgrade through nginx's plain HTTP)
        out, status = lab_cell(user_client(modes, token), name, "print(6 * 7)")
        assert (status, out.strip()) == ("ok", "42")
    finally:
        modes_admin.stop_server(name)


# --- GPU mode 1 on a host without a GPU ------------------------------------------------------


def failure_of(res) -> str:
    """The failed task's message in a play's output, its lines joined (YAML wraps them)."""
    return " ".join(res.stdout[res.stdout.find("FAILED!"):].split())


def recap(res, host) -> dict[str, int]:
    line = re.search(rf"th-{re.escape(host.name)}\s*:(.*)", res.stdout[res.stdout.rfind("PLAY RECAP"):])
    assert line, res.stdout[-2000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line.group(1))}


def hub_state(host) -> dict[str, str]:
    return host.unit_properties("jupyterhub", "ActiveState", "Result", "ExecMainStatus",
                                "NRestarts", "ExecMainStartTimestampMonotonic")


def test_gpu_mode_1_without_a_gpu_stops_the_play_before_any_change(modes, modes_admin):
    hub_files = ["/etc/jupyterhub/platform_config.json", "/etc/jupyterhub/jupyterhub_config.py"]
    files_before = modes.exec("sha256sum", *hub_files).stdout
    hub_before = hub_state(modes)
    res = testhost.deploy(modes.name, "-e", json.dumps({"jupyterhub_gpu_enabled": 1}),
                          capture=True, check=False)
    assert res.returncode != 0
    assert ("jupyterhub_gpu_enabled=1 (GPUs required) but this host has no NVIDIA GPU device node"
            in failure_of(res)), res.stdout[-3000:]
    assert "set jupyterhub_gpu_enabled to 2 (auto-detect" in failure_of(res)
    # stopped in site.yml's checks: nothing changed, the hub was not touched
    assert recap(res, modes)["changed"] == 0 and recap(res, modes)["failed"] == 1
    assert modes.exec("sha256sum", *hub_files).stdout == files_before
    assert hub_state(modes) == hub_before
    assert modes_admin.logged_in_as() == modes.admin_user


GPU_DROPIN = "/etc/jupyterhub/jupyterhub_config.d/90-test-gpu-mode-1.py"


def test_gpu_mode_1_without_a_gpu_stops_the_hub_with_one_clear_line(modes, modes_admin):
    since = modes.exec("date", "+%Y-%m-%d %H:%M:%S").stdout.strip()
    # what a host gets when its GPU vanishes (or its driver breaks) after the deploy
    modes.exec("tee", GPU_DROPIN, input="c.GpuSupport.mode = 1\n")
    try:
        modes.exec("systemctl", "restart", "jupyterhub")
        deadline = time.monotonic() + 120
        while (state := hub_state(modes))["ActiveState"] != "failed":
            assert time.monotonic() < deadline, state
            time.sleep(0.5)
        assert (state["Result"], state["ExecMainStatus"]) == ("exit-code", "78"), state
        # no restart loop: still failed after more than RestartSec
        time.sleep(7)
        assert hub_state(modes) == state
        status = modes.exec("systemctl", "status", "--no-pager", "jupyterhub", check=False).stdout
        assert "status=78/CONFIG" in status, status
        journal = modes.exec("journalctl", "-u", "jupyterhub", "--since", since, "--no-pager",
                             "--output", "cat").stdout
        assert ("The hub refuses to start: GPU support is forced on (jupyterhub_gpu_enabled = 1) "
                "but no NVIDIA GPU was found: ") in journal, journal[-3000:]
        assert "set jupyterhub_gpu_enabled to 2 (auto-detect) or 0 (off)" in journal
        assert "Traceback" not in journal, journal[-3000:]
    finally:
        modes.exec("rm", "-f", GPU_DROPIN)
        modes.exec("systemctl", "restart", "jupyterhub")
    modes_admin.wait_hub()
    assert modes_admin.logged_in_as() == modes.admin_user


# --- CIFS shared storage ---------------------------------------------------------------------


def storage_play(host, extra: dict):
    return testhost.deploy(host.name, "-e", json.dumps(extra), capture=True, check=False,
                           playbook=STORAGE_PLAYBOOK)


def test_cifs_share_is_set_up_to_the_mount_and_fails_with_the_mounts_reason(modes):
    secret = "cifs-" + secrets.token_hex(8)
    # an address, not a name: mount.cifs resolves a name itself before the kernel
    # is asked, and this test wants to get as far as the kernel
    cifs = {"jupyterhub_shared_cifs_enabled": True, "jupyterhub_shared_cifs_share": "//127.0.0.1/data",
            "jupyterhub_shared_cifs_username": "svc-lab", "jupyterhub_shared_cifs_password": secret,
            "jupyterhub_shared_cifs_domain": "WORKGROUP", "jupyterhub_shared_cifs_options": ["vers=3.1.1"]}
    try:
        res = storage_play(modes, cifs)
        assert res.returncode != 0
        failure = failure_of(res)
        # the play's own message, with mount.cifs's reason (this kernel has no CIFS)
        assert (f"The CIFS share //127.0.0.1/data (jupyterhub_shared_cifs_share) did not mount at "
                f"{SHARED} ({MOUNT_UNIT}): ") in failure, res.stdout[-3000:]
        assert "cifs filesystem not supported by the system" in failure, failure
        assert secret not in res.stdout + res.stderr

        # the unit systemd tried: the share, the mount point, the options, no secret
        unit = modes.exec("systemctl", "cat", MOUNT_UNIT).stdout
        assert "What=//127.0.0.1/data" in unit and f"Where={SHARED}" in unit and "Type=cifs" in unit
        options = modes.unit_properties(MOUNT_UNIT, "Options")["Options"]
        assert options == (f"credentials={CIFS_CREDENTIALS},uid=root,gid=jupyterhub-users,"
                           "file_mode=0664,dir_mode=0775,vers=3.1.1"), options
        assert secret not in unit
        assert modes.exec("systemd-analyze", "verify", MOUNT_UNIT, check=False).returncode == 0
        assert modes.exec("systemctl", "is-enabled", MOUNT_UNIT, check=False).stdout.strip() == "enabled"
        state = modes.unit_properties(MOUNT_UNIT, "ActiveState", "Result")
        assert state == {"ActiveState": "failed", "Result": "exit-code"}, state

        # the credentials: root's alone, one setting a line
        assert modes.exec("stat", "-c", "%U %G %a", CIFS_CREDENTIALS).stdout.split() == ["root", "root", "600"]
        assert modes.exec("cat", CIFS_CREDENTIALS).stdout.splitlines() == [
            "username=svc-lab", f"password={secret}", "domain=WORKGROUP"]
        denied = modes.exec("runuser", "-u", "nobody", "--", "cat", CIFS_CREDENTIALS, check=False)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr

        # what mount.cifs makes of the unit's options and the credentials file: the
        # kernel's mount options, all but the mount(2) call itself (-f: fake)
        fake = modes.exec("mount.cifs", "//127.0.0.1/data", SHARED, "-o", options, "-f", "-v",
                          check=False)
        said = fake.stdout + fake.stderr
        assert fake.returncode == 0, said
        for option in ("ip=127.0.0.1", "user=svc-lab", "domain=WORKGROUP", "uid=0", "file_mode=0664",
                       "dir_mode=0775", "vers=3.1.1"):
            assert option in said, (option, said)
        gid = modes.exec("getent", "group", "jupyterhub-users").stdout.split(":")[2]
        assert f"gid={gid}" in said, said
        assert secret not in said
    finally:
        # CIFS off again: the unit and the credentials go, the local directory is back
        res = storage_play(modes, {"jupyterhub_shared_cifs_enabled": False})
        assert res.returncode == 0, res.stdout[-3000:]
    for path in (f"/etc/systemd/system/{MOUNT_UNIT}", CIFS_CREDENTIALS):
        assert modes.exec("test", "-e", path, check=False).returncode != 0, path
    assert modes.exec("stat", "-c", "%U %G %a", SHARED).stdout.split() == ["root", "jupyterhub-users", "2775"]
    assert "default:group::rwx" in modes.exec("getfacl", "--omit-header", SHARED).stdout
