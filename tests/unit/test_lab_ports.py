"""lab.lab_ports, the port keeper of a cluster's worker, and the lab's side of
it (lab_server.bind_and_report / keeper_socket): a lab's port stays out of
other users' reach until after the lab has ended (the attack from another
user's job: tests/cluster/test_cluster_port_keeper.py)."""

import errno
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lab import lab_ports, lab_server

REPO = Path(__file__).resolve().parents[2]
HOLD = 1.0
# a lab process: asks the keeper for its socket, prints the port, exits
LAB = "import sys; from lab import lab_server; print(lab_server.keeper_socket(sys.argv[1])[1])"


@pytest.fixture
def keeper(tmp_path):
    """A keeper serving on a unix socket of its own (path, Keeper), holding ports HOLD s after exit."""
    path = str(tmp_path / "ports.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()
    k = lab_ports.Keeper(hold_after_exit=HOLD)
    threading.Thread(target=k.run, args=(server,), daemon=True).start()
    yield path, k
    for held in list(k.held):
        held.listening.close()


def can_bind(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return _bind(s, port)


def _bind(s: socket.socket, port: int) -> bool:
    try:
        s.bind(("0.0.0.0", port))
    except OSError as e:
        if e.errno != errno.EADDRINUSE:
            raise
        return False
    return True


def test_the_lab_gets_a_listening_socket_on_the_port_the_keeper_reports(keeper):
    path, k = keeper
    sock, port = lab_server.keeper_socket(path)
    with sock:
        assert sock.getsockname()[1] == port
        # reachable on IPv4 (dual-stack), accepted by the lab's copy
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            conn, _ = sock.accept()
            conn.close()
    # the keeper's copy still listens after the lab closed its own
    assert [h.port for h in k.held] == [port]
    assert not can_bind(port)


def test_the_port_stays_held_after_the_lab_ended_then_is_released(keeper):
    path, k = keeper
    lab = subprocess.run([sys.executable, "-c", LAB, path], cwd=REPO, capture_output=True, text=True, check=True)
    port = int(lab.stdout)
    ended = time.monotonic()
    # another process cannot take the dead lab's port while the hub may still route to it...
    while time.monotonic() - ended < HOLD * 0.5:
        assert not can_bind(port)
        time.sleep(0.05)
    # ...and can once the keeper let it go
    deadline = ended + HOLD + 5
    while not can_bind(port):
        assert time.monotonic() < deadline, k.held
        time.sleep(0.1)
    assert k.held == []


def test_a_uid_holds_at_most_max_per_uid_ports(keeper):
    path, k = keeper
    socks = [lab_server.keeper_socket(path)[0] for _ in range(lab_ports.MAX_PER_UID)]
    try:
        with pytest.raises(SystemExit, match=rf"refused: uid .* holds {lab_ports.MAX_PER_UID}"):
            lab_server.keeper_socket(path)
    finally:
        for s in socks:
            s.close()


def test_a_lab_without_a_keeper_fails_with_a_clear_message(tmp_path):
    with pytest.raises(SystemExit, match=r"port keeper .* did not answer"):
        lab_server.keeper_socket(str(tmp_path / "none.sock"))


def test_on_a_worker_the_lab_reports_the_keepers_port(keeper, tmp_path):
    path, _ = keeper
    report = tmp_path / "home" / ".jupyterhub-lab-port"
    report.parent.mkdir()
    env = {lab_server.PORT_FILE_VARIABLE: str(report), "HOME": "/h"}
    sock = lab_server.bind_and_report(env, keeper=path)
    try:
        assert sock.getsockname()[1] == int(report.read_text())
        assert sock.get_inheritable() is False
        # consumed, and nothing else left in the directory
        assert env == {"HOME": "/h"}
        assert [p.name for p in report.parent.iterdir()] == [report.name]
    finally:
        sock.close()


def test_the_hold_outlasts_the_hubs_poll_of_a_lab():
    from hub_ext.cluster.spawner import SlurmLabSpawner

    assert 2 * SlurmLabSpawner.poll_interval.default_value <= lab_ports.HOLD_AFTER_EXIT


def test_the_keeper_refuses_to_run_outside_systemd(monkeypatch):
    monkeypatch.delenv("LISTEN_PID", raising=False)
    assert lab_ports.main() == 2


def test_the_slurm_role_serves_the_keeper_where_the_lab_asks():
    templates = REPO / "ansible" / "roles" / "slurm" / "templates"
    socket_unit = (templates / "jupyterhub-lab-ports.socket.j2").read_text()
    assert f"ListenStream={lab_server.KEEPER_SOCKET}\n" in socket_unit
    service = (templates / "jupyterhub-lab-ports.service.j2").read_text()
    installed = (REPO / "ansible" / "roles" / "slurm" / "tasks" / "worker.yml").read_text()
    assert 'dest: "/usr/local/lib/jupyterhub-cluster/{{ item }}"' in installed
    assert "loop: [lab_ports.py]" in installed
    assert "ExecStart=/usr/bin/python3 /usr/local/lib/jupyterhub-cluster/lab_ports.py\n" in service
