"""hub_ext.units.readiness: the spawner's wait for a starting lab to listen."""

import asyncio
import contextlib
import socket

import pytest

from hub_ext.units.readiness import Readiness, http_answers, wait_until_listening

from .fakes import T0, FakeClock


def answers(*values):
    """An async check returning the given values in turn, then the last one forever."""
    calls = []

    async def check():
        calls.append(None)
        return values[min(len(calls), len(values)) - 1]

    check.calls = calls
    return check


def run_wait(probe, alive, clock, **kw):
    return asyncio.run(wait_until_listening(probe, alive, clock=clock, sleep=clock.sleep, **kw))


def test_listening_on_the_first_probe_needs_no_sleep():
    clock = FakeClock()
    alive = answers(True)
    assert run_wait(answers(True), alive, clock, timeout=60) is Readiness.LISTENING
    assert clock.sleeps == [] and alive.calls == []


def test_probes_at_the_interval_until_listening():
    clock = FakeClock()
    probe = answers(False, False, False, True)
    assert run_wait(probe, answers(True), clock, timeout=60, interval=0.05) is Readiness.LISTENING
    assert clock.sleeps == [0.05, 0.05, 0.05]
    assert len(probe.calls) == 4


def test_unit_checked_once_per_alive_every_and_exit_ends_the_wait():
    clock = FakeClock()
    alive = answers(True, False)
    state = run_wait(answers(False), alive, clock, timeout=60, interval=0.25, alive_every=1.0)
    assert state is Readiness.EXITED
    # first check after 1 s, the second (False) 1 s later: not one per probe
    assert len(alive.calls) == 2
    assert clock.now - T0 == pytest.approx(2.0)


def test_times_out_while_the_unit_runs_but_never_listens():
    clock = FakeClock()
    state = run_wait(answers(False), answers(True), clock, timeout=3, interval=0.5)
    assert state is Readiness.TIMED_OUT
    assert clock.now - T0 == pytest.approx(3.0)


def test_http_answers_only_once_a_server_answers():
    """A bound and even a listening socket is not enough: systemd holds the lab's
    socket before the lab runs; only an HTTP answer counts."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        assert asyncio.run(http_answers("127.0.0.1", port, "/api", timeout=0.3)) is False
        listener.listen()
        # accepted by the kernel, nobody serving: times out
        assert asyncio.run(http_answers("127.0.0.1", port, "/api", timeout=0.3)) is False

        def serve():
            conn, _ = listener.accept()
            request = conn.recv(1024)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            conn.close()
            return request

        async def ask():
            loop = asyncio.get_running_loop()
            served = loop.run_in_executor(None, serve)
            answered = await http_answers("127.0.0.1", port, "/user/a/api", timeout=5)
            return answered, await served

        # the timed-out connections above are still queued: drain them first
        listener.settimeout(0.2)
        with contextlib.suppress(OSError):
            while True:
                listener.accept()[0].close()
        listener.settimeout(None)
        answered, request = asyncio.run(ask())
        assert answered is True
        assert request.startswith(b"GET /user/a/api HTTP/1.0\r\n")
    finally:
        listener.close()
