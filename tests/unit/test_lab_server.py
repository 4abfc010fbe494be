"""lab.lab_server: the lab adopts the socket systemd holds for its unit."""

import socket

from lab import lab_server


def test_inherited_fd_follows_the_sd_listen_fds_protocol():
    env = {"LISTEN_PID": "42", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "x", "HOME": "/h"}
    assert lab_server.inherited_fd(env, pid=42) == 3
    # consumed: kernels and terminals the lab starts must not claim the socket
    assert env == {"HOME": "/h"}


def test_no_socket_for_another_process_or_without_one():
    assert lab_server.inherited_fd({"LISTEN_PID": "41", "LISTEN_FDS": "1"}, pid=42) is None
    assert lab_server.inherited_fd({"LISTEN_PID": "42", "LISTEN_FDS": "0"}, pid=42) is None
    assert lab_server.inherited_fd({"LISTEN_PID": "42", "LISTEN_FDS": "x"}, pid=42) is None
    assert lab_server.inherited_fd({}, pid=42) is None


def test_adopted_socket_is_the_listening_one_and_not_inherited():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    fd = listener.detach()
    adopted = lab_server.adopt_socket(fd)
    try:
        assert adopted.fileno() == fd
        assert adopted.get_inheritable() is False
        with socket.create_connection(adopted.getsockname(), timeout=2):
            pass
    finally:
        adopted.close()
