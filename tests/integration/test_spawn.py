"""Spawn edge cases on the real test host: a lab that exits before it listens."""

import time

from hubclient import unique_names

EXITING_LAB = 'c.PlatformSpawner.cmd = ["/bin/false"]\n'
HTTP_TIMEOUT = 60  # jupyterhub_spawner_http_timeout's default, what the hub would wait


def test_lab_that_exits_before_listening_fails_the_spawn_at_once(host, admin, hub_dropin):
    hub_dropin("90-test-exiting-lab.py", EXITING_LAB)
    name, = unique_names(1, "exits")
    unit = f"jupyter-{name}-singleuser"
    assert admin.api("POST", f"users/{name}").status_code == 201
    try:
        started = time.monotonic()
        r = admin.api("POST", f"users/{name}/server", timeout=2 * HTTP_TIMEOUT)
        elapsed = time.monotonic() - started
        # the unit check once a second notices the exit; not after http_timeout
        assert elapsed < HTTP_TIMEOUT / 2, elapsed
        assert r.status_code == 500
        message = r.json()["message"]
        assert "exited before listening" in message and f"journalctl -u {unit}" in message
        assert not admin.server_running(name)
        # the hint leads somewhere: the unit's journal has the failed start
        journal = host.exec("journalctl", "--no-pager", "-u", unit).stdout
        assert "/bin/false" in journal or "status=1" in journal, journal[-2000:]
    finally:
        admin.api("DELETE", f"users/{name}")
