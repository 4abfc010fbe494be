"""The suite's secondary test hosts, provisioned in the background while the main host's tests run.

Some tests need a host deployed differently from the main one (the enforcing
host, the ACME host, the modes host, a fresh host to restore a backup onto, the
previous release to upgrade from). Booted one after another when their first
test asks, they cost a deploy each on the suite's critical path. Instead, once
the main host is up, one background thread provisions every kind the collected
tests need, one at a time, in the order the tests need them; conftest runs the
tests that need a secondary host after those that need only the main one, so by
the time they run their host is usually ready. A fixture asks with
``POOL.get(kind)``: it waits for the background job, or provisions the host
itself when none was started (a run of one module).

Each kind is registered once, with the fixture whose tests need it, a
function that provisions it (given the main host, when the kind needs it) and
one that takes it down (a host, or a cluster of hosts and their network).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import testhost

ARTIFACTS = testhost.REPO / "artifacts"


@dataclass(frozen=True)
class Kind:
    name: str
    # the fixture through which tests ask for it: conftest finds the kinds a run
    # needs from the collected tests' fixture names
    fixture: str
    provision: Callable[[testhost.Host | None], testhost.Host]
    host_name: str
    teardown: Callable[[], None]


class HostPool:
    def __init__(self) -> None:
        self.kinds: dict[str, Kind] = {}
        self._jobs: dict[str, Future] = {}
        self._handed_out: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def register(self, name: str, fixture: str, host_name: str,
                 provision: Callable[[testhost.Host | None], testhost.Host],
                 teardown: Callable[[], None] | None = None) -> None:
        """``teardown`` defaults to taking down the one host ``host_name``."""
        self.kinds[name] = Kind(name, fixture, provision, host_name,
                                teardown or (lambda: testhost.down(host_name)))

    def kinds_needed(self, fixture_names_in_order: list[list[str]]) -> list[str]:
        """The registered kinds that these tests (each by its fixture names, in
        run order) need, in the order they are first needed."""
        by_fixture = {k.fixture: k.name for k in self.kinds.values()}
        needed: list[str] = []
        for names in fixture_names_in_order:
            for name in names:
                kind = by_fixture.get(name)
                if kind and kind not in needed:
                    needed.append(kind)
        return needed

    def prefetch(self, kinds: list[str], main: testhost.Host | None) -> None:
        """Provision ``kinds`` one after another in a background thread."""
        with self._lock:
            if self._thread:
                return
            todo = [(kind, self._jobs.setdefault(kind, Future())) for kind in kinds
                    if kind not in self._jobs]
        if not todo:
            return

        def work() -> None:
            for kind, job in todo:
                if not job.set_running_or_notify_cancel():
                    continue
                try:
                    job.set_result(self.kinds[kind].provision(main))
                except BaseException as e:  # handed to the fixture that waits for it
                    job.set_exception(e)

        self._thread = threading.Thread(target=work, name="hostpool", daemon=True)
        self._thread.start()

    def get(self, kind: str, main: testhost.Host | None = None) -> testhost.Host:
        """The kind's host: the background job's, or provisioned now."""
        with self._lock:
            job = self._jobs.get(kind)
            if job is None:
                job = self._jobs[kind] = Future()
                job.set_running_or_notify_cancel()
                mine = True
            else:
                mine = False
            self._handed_out.add(kind)
        if mine:
            try:
                job.set_result(self.kinds[kind].provision(main))
            except BaseException as e:
                job.set_exception(e)
        return job.result()

    def close(self) -> None:
        """Stop starting new hosts, wait for the one being provisioned, and take
        down every host provisioned that no fixture took (a run stopped early);
        the fixtures take down the hosts they were given."""
        with self._lock:
            for job in self._jobs.values():
                job.cancel()  # only the ones not yet started
        if self._thread:
            self._thread.join()
        if os.environ.get("TESTHOST_KEEP") == "1":
            return
        for kind, job in self._jobs.items():
            if kind not in self._handed_out and job.done() and not job.cancelled():
                self.kinds[kind].teardown()


POOL = HostPool()


def secondary_name(kind: str, suffix: str = "") -> str:
    """``$TESTHOST_NAME-<suffix or kind>``, or TESTHOST_<KIND>_NAME."""
    main = os.environ.get("TESTHOST_NAME", "pytest")
    return os.environ.get(f"TESTHOST_{kind.upper()}_NAME", f"{main}-{suffix or kind}")


def secondary_port_base(kind: str, offset: int) -> int:
    """``$TESTHOST_PORT_BASE + offset``, or TESTHOST_<KIND>_PORT_BASE."""
    main = int(os.environ.get("TESTHOST_PORT_BASE", "23000"))
    return int(os.environ.get(f"TESTHOST_{kind.upper()}_PORT_BASE", main + offset))


def register_deployed(kind: str, fixture: str, port_offset: int, extra_vars,
                      **provision_options) -> None:
    """A kind that is a fresh host with this checkout deployed with ``extra_vars``
    (a dict, or a function of the host's name and port base that returns one) on
    port base ``$TESTHOST_PORT_BASE + port_offset``; reused when kept
    (TESTHOST_REUSE=1); ``provision_options`` go to testhost.provision."""
    name, port_base = secondary_name(kind), secondary_port_base(kind, port_offset)

    def provision(_main: testhost.Host | None) -> testhost.Host:
        variables = extra_vars(name, port_base) if callable(extra_vars) else extra_vars
        ARTIFACTS.mkdir(exist_ok=True)
        return testhost.provision(name, port_base, variables,
                                  reuse=os.environ.get("TESTHOST_REUSE") == "1",
                                  log_to=ARTIFACTS / f"deploy-{kind}.log", **provision_options)

    POOL.register(kind, fixture, name, provision)


def take(kind: str, main: testhost.Host | None = None):
    """A fixture's body: the kind's host, taken down afterwards unless TESTHOST_KEEP=1
    (also when its provisioning failed half-way: a host may be up without a platform)."""
    try:
        yield POOL.get(kind, main)
    finally:
        release(kind)


def release(kind: str) -> None:
    """Take the kind's host down (a fixture's teardown) unless TESTHOST_KEEP=1."""
    if os.environ.get("TESTHOST_KEEP") != "1":
        POOL.kinds[kind].teardown()
