"""hub_ext.periodic: the periodic-service base on tornado's PeriodicCallback, and the
worker thread the storage walks and the activity store run in."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from hub_ext.periodic import PeriodicService, WorkerThread

PERIOD = 0.2


class Counting(PeriodicService):
    """A service whose pass records when it ran, on the event loop's clock."""

    service_name = "counting"

    def __init__(self, period=PERIOD, fail=False, block: asyncio.Event | None = None, **kw):
        super().__init__(**kw)
        self._period = period
        self.fail = fail
        self.block = block
        self.ran: list[float] = []

    @property
    def period(self) -> float:
        return self._period

    async def run_pass(self) -> None:
        self.ran.append(asyncio.get_running_loop().time())
        if self.block is not None:
            await self.block.wait()
        if self.fail:
            raise RuntimeError("this pass fails")


async def passes(service: Counting, count: int, timeout: float = 5.0) -> None:
    """Wait until ``service`` ran ``count`` passes (a loaded machine delays timers)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while len(service.ran) < count:
        assert asyncio.get_running_loop().time() < deadline, service.ran
        await asyncio.sleep(PERIOD / 20)


def test_first_pass_at_once_then_one_per_period_until_stopped():
    service = Counting()

    async def scenario():
        t0 = asyncio.get_running_loop().time()
        assert not service.running
        service.start()
        assert service.running
        await passes(service, 1)
        assert service.ran[0] - t0 < PERIOD / 2  # at once, not a period later
        await passes(service, 3)
        # the schedule is from start to start: one period apart, never sooner
        # (later only by timer slack, or a period skipped on a loaded machine)
        gaps = [b - a for a, b in zip(service.ran, service.ran[1:], strict=False)]
        assert all(PERIOD * 0.9 <= g <= PERIOD * 2.5 for g in gaps), gaps
        service.stop()
        assert not service.running
        stopped_at = len(service.ran)
        await asyncio.sleep(2 * PERIOD)
        assert len(service.ran) == stopped_at  # nothing after stop

    asyncio.run(scenario())


def test_start_twice_runs_one_schedule():
    service = Counting()

    async def scenario():
        service.start()
        service.start()
        await asyncio.sleep(PERIOD / 4)
        service.stop()

    asyncio.run(scenario())
    assert len(service.ran) == 1


def test_a_failing_pass_is_logged_and_the_schedule_goes_on(caplog):
    service = Counting(fail=True)

    async def scenario():
        service.start()
        await asyncio.sleep(1.5 * PERIOD)
        service.stop()

    asyncio.run(scenario())
    assert len(service.ran) == 2 and service.passes_failed == 2
    assert "counting: pass failed" in caplog.text


def test_a_pass_still_running_makes_the_next_one_skipped():
    async def scenario():
        block = asyncio.Event()
        service = Counting(block=block)
        service.start()
        await asyncio.sleep(2.5 * PERIOD)  # two ticks fall due while the first pass blocks
        assert len(service.ran) == 1
        assert await service.run_once() is False  # a direct call is refused too
        block.set()
        await asyncio.sleep(PERIOD)
        assert len(service.ran) == 2  # the schedule resumes
        service.stop()

    asyncio.run(scenario())


def test_the_base_has_no_work_of_its_own():
    with pytest.raises(NotImplementedError):
        PeriodicService().period  # noqa: B018
    with pytest.raises(NotImplementedError):
        asyncio.run(PeriodicService().run_pass())


def test_worker_runs_jobs_in_order_in_one_daemon_thread_and_errors_reach_the_loop():
    worker = WorkerThread("storage-sizes", nice=10)

    def boom():
        raise PermissionError("walk failed")

    def who(tag):
        nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        t = threading.current_thread()
        return tag, t.name, t.daemon, t.ident, nice

    async def scenario():
        with pytest.raises(PermissionError, match="walk failed"):
            await worker.run(boom)
        results = await asyncio.gather(*(worker.run(who, i) for i in range(5)))
        assert [r[0] for r in results] == list(range(5))
        # one daemon thread: a walk still running never holds up the hub's exit
        assert {(r[1], r[2]) for r in results} == {("storage-sizes", True)}
        assert len({r[3] for r in results}) == 1
        # never more urgent than the hub's own thread
        assert all(r[4] >= os.getpriority(os.PRIO_PROCESS, 0) for r in results)
        assert results[0][3] != threading.get_ident()

    asyncio.run(scenario())
    # the thread outlives an event loop: a later loop (the next test's) uses it too
    assert asyncio.run(worker.run(lambda: 42)) == 42
    worker.shutdown()
