"""The platform's core path on the real systemd test host, through nginx over HTTPS.

The tests run in file order as one scenario: alice signs up, is approved,
logs in, gets a lab in a transient unit, keeps her files across stop/start
and keeps her server across a hub restart.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import ssl

import pytest
import requests

from hubclient import HubClient, alert_text

# A fresh name per run, so a kept test host (TESTHOST_REUSE=1) can run it again.
USER = "alice-" + secrets.token_hex(3)
PASSWORD = "correct-horse-" + secrets.token_hex(4)
UNIX = f"jh-{USER}"
UNIT = f"jupyter-{USER}-singleuser"


@pytest.fixture(scope="module")
def alice(host) -> HubClient:
    return HubClient(host.https_url)


def test_admin_logs_in_through_nginx(host):
    client = HubClient(host.https_url)
    assert client.get("hub/login").status_code == 200
    client.login(host.admin_user, host.admin_password)
    assert client.logged_in_as() == host.admin_user
    home = client.get("hub/home")
    assert home.status_code == 200 and host.admin_user in home.text


def test_wrong_password_is_refused(host):
    client = HubClient(host.https_url)
    r = client.login(host.admin_user, "not-the-password")
    assert client.logged_in_as() is None
    assert "Invalid username or password" in r.text


def test_invalid_username_at_signup_gets_a_clear_message(host):
    client = HubClient(host.https_url)
    r = client.signup("Bad Name!", "a-long-enough-password")
    assert r.status_code == 400
    message = alert_text(r.text)
    assert "lowercase letter" in message, message


def test_signup_is_pending_until_admin_approves(host, alice, admin):
    r = alice.signup(USER, PASSWORD)
    assert r.status_code == 200
    assert "sent to the admin" in alert_text(r.text)

    alice.login(USER, PASSWORD)
    assert alice.logged_in_as() is None, "a pending signup must not log in"

    # The admin sees alice as pending on the authorization page and approves her.
    admin_browser = HubClient(host.https_url)
    admin_browser.login(host.admin_user, host.admin_password)
    area = admin_browser.get("hub/authorize")
    assert area.status_code == 200 and USER in area.text
    admin_browser.approve(USER)  # a POST with _xsrf: the upstream GET link changed state

    # to the home page: the default landing starts the lab, and the next test starts it itself
    alice.login(USER, PASSWORD, spawn=False)
    assert alice.logged_in_as() == USER


def test_server_starts_as_hardened_unit_of_the_unix_user(host, alice):
    alice.start_server(USER)
    props = host.unit_properties(UNIT, "ActiveState", "User", "MemoryMax", "CPUQuotaPerSecUSec",
                                 "TemporaryFileSystem", "NoNewPrivileges", "MainPID", "BindPaths",
                                 "WorkingDirectory")
    assert props["ActiveState"] == "active"
    # SystemdSpawner passes the uid (systemd-run --uid); it must be alice's unix account.
    assert props["User"] in (UNIX, host.exec("id", "-u", UNIX).stdout.strip())
    assert props["MemoryMax"] == str(2 * 1024**3)       # jupyterhub_spawner_mem_limit: 2G
    assert props["CPUQuotaPerSecUSec"] == "1s"          # jupyterhub_spawner_cpu_limit: 1.0
    # private, capped /tmp, /var/tmp and /dev/shm (test_lab_sandbox.py tries them)
    for path in ("/tmp:size=", "/var/tmp:size=", "/dev/shm:size="):
        assert path in props["TemporaryFileSystem"], props["TemporaryFileSystem"]
    assert props["NoNewPrivileges"] == "yes"
    assert props["WorkingDirectory"] == f"/home/{UNIX}/workspace"
    binds = props["BindPaths"]
    for src, dst in [("home", f"/home/{UNIX}"), ("workspace", f"/home/{UNIX}/workspace"),
                     ("cache", f"/home/{UNIX}/.cache")]:
        assert f"/srv/jupyterhub/users/{UNIX}/{src}:{dst}" in binds, binds
    assert "/srv/jupyterhub/shared:/mnt/shared" in binds

    # The lab process really runs as the unix user, which has no usable password.
    pid = props["MainPID"]
    uid = host.exec("stat", "-c", "%U", f"/proc/{pid}").stdout.strip()
    assert uid == UNIX
    shadow = host.exec("getent", "shadow", UNIX).stdout.split(":")
    assert shadow[1].startswith(("!", "*")), "the unix user must have no login password"
    modes = host.exec("stat", "-c", "%U %a %n", *[f"/srv/jupyterhub/users/{UNIX}/{d}"
                                                  for d in ("home", "workspace", "cache")]).stdout
    for line in modes.splitlines():
        assert line.startswith(f"{UNIX} 700 "), line


def test_lab_api_answers_through_nginx(host, alice):
    r = alice.get(f"user/{USER}/api/status")
    assert r.status_code == 200
    assert "started" in r.json()
    assert r.url.startswith(host.lab_url(USER))


def test_workspace_file_survives_stop_and_start(host, alice):
    alice.open_lab(USER)
    content = "kept across restarts " + secrets.token_hex(4)
    r = alice.s.put(alice.url(f"user/{USER}/api/contents/kept.txt"),
                    json={"type": "file", "format": "text", "content": content},
                    headers={"X-XSRFToken": alice.lab_xsrf(USER)}, timeout=30)
    assert r.status_code in (200, 201), r.text
    on_disk = host.exec("stat", "-c", "%U", f"/srv/jupyterhub/users/{UNIX}/workspace/kept.txt")
    assert on_disk.stdout.strip() == UNIX

    alice.stop_server(USER)
    assert host.unit_properties(UNIT, "ActiveState")["ActiveState"] in ("inactive", "failed", "")
    alice.start_server(USER)
    r = alice.get(f"user/{USER}/api/contents/kept.txt")
    assert r.status_code == 200 and r.json()["content"] == content


def test_hub_restart_leaves_the_server_running_and_reachable(host, alice):
    before = host.unit_properties(UNIT, "MainPID")["MainPID"]
    host.exec("systemctl", "restart", "jupyterhub")
    alice.wait_hub()
    assert host.unit_properties(UNIT, "MainPID")["MainPID"] == before
    # The route stayed in the proxy unit, so the lab answers through nginx.
    assert alice.get(f"user/{USER}/api/status").status_code == 200
    assert alice.api("GET", f"users/{USER}").json()["servers"][""]["ready"] is True


def test_hub_unit_exposure_is_at_most_4(host):
    score, out = host.exposure("jupyterhub.service")
    print(f"\njupyterhub.service exposure: {score}")
    assert score <= 4.0, out[-3000:]


def test_http_redirects_to_https_and_tls_is_modern(host):
    http = requests.get(f"http://127.0.0.1:{host.ports['nginx_http_port']}/jupyterhub/hub/login",
                        headers={"Host": host.domain}, allow_redirects=False, timeout=10)
    assert http.status_code in (301, 308)
    assert http.headers["Location"].startswith(f"https://{host.domain}:{host.ports['nginx_https_port']}/")

    https = requests.get(host.https_url + "hub/login", verify=False, timeout=10)
    assert "max-age=" in https.headers.get("Strict-Transport-Security", "")

    def handshake(version):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        ctx.minimum_version = ctx.maximum_version = version
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        with socket.create_connection(("127.0.0.1", host.ports["nginx_https_port"]), timeout=10) as sock:
            try:
                with ctx.wrap_socket(sock, server_hostname=host.domain) as tls:
                    return tls.version()
            except ssl.SSLError:
                return None

    assert handshake(ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert handshake(ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    assert handshake(ssl.TLSVersion.TLSv1_1) is None


def test_root_redirects_to_base_url(host):
    r = requests.get(f"https://{host.domain}:{host.ports['nginx_https_port']}/", verify=False,
                     allow_redirects=False, timeout=10)
    assert r.status_code in (301, 302) and r.headers["Location"].endswith("/jupyterhub/")


def test_second_playbook_run_changes_nothing(host):
    import testhost
    res = testhost.deploy(host.name, capture=True)
    recap = re.search(r"PLAY RECAP.*", res.stdout, re.S).group(0)
    assert re.search(r"changed=0\s", recap), recap
    assert re.search(r"failed=0\s", recap), recap


def test_check_diff_runs_clean_on_a_deployed_host(host):
    import testhost
    res = testhost.deploy(host.name, "--check", "--diff", capture=True, check=False)
    assert res.returncode == 0, res.stdout[-4000:]


@pytest.mark.parametrize("variable,value", [
    ("jupyterhub_spawner_mem_limit", "-1G"),
    ("jupyterhub_spawner_cpu_limit", "-2"),
    ("jupyterhub_spawner_tasks_max", "0"),
    ("jupyterhub_base_url", "no-slashes"),
    ("jupyterhub_spawner_ready_poll_interval", "10"),
    ("jupyterhub_signup_max_pending", "-1"),
    ("jupyterhub_signups_per_address_per_hour", "many"),
    ("jupyterhub_storage_deleted_user_retention_days", "0"),
    # a combination the traits' deploy check refuses (hub_ext.settings.check_combinations)
    ("jupyterhub_gpu_policy", "group"),
    # removed: jupyterhub_storage_sizes_interval is the original's variable
    ("jupyterhub_activitymon_volumes_update_interval", "600"),
    # gone: the hub listens on a unix socket (docs/security.md)
    ("jupyterhub_hub_port", "8081"),
    ("jupyterhub_spawner_tmp_size", "1.5G"),
    ("jupyterhub_spawner_shm_size", "64M,exec"),
    # checked by the hub's traits before platform_config.json is installed
    ("jupyterhub_password_words", "11"),
    ("jupyterhub_admin", "Admin"),
    # labs are <user>.<domain>: an address has no subdomains
    ("jupyterhub_domain", "10.0.0.5"),
    ("jupyterhub_domain", "Hub.example.org:443"),
])
def test_bad_variable_fails_the_play_naming_it(host, variable, value):
    import testhost
    res = testhost.deploy(host.name, "-e", json.dumps({variable: value}), capture=True, check=False)
    assert res.returncode != 0
    # a single assert says "FAILED!", one checking a list of variables "failed: [host] (item=...)"
    failure = re.search(r"FAILED!|failed: \[", res.stdout)
    assert failure and variable in res.stdout[failure.start():], res.stdout[-3000:] + res.stderr[-2000:]
