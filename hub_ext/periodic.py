"""The hub's background machinery: periodic services and their worker thread.

* :class:`PeriodicService`: one pass of a feature's work every ``period``
  seconds on tornado's ``PeriodicCallback``, with ``start``/``stop`` (modelled on
  JupyterHub's ``PeriodicMetricsCollector``). The culler, the storage sizing
  and the activity sampler are its subclasses; each pass is a plain async
  method with an injectable clock, so tests drive it directly.
* :class:`WorkerThread`: one daemon thread that runs blocking jobs one at a
  time, awaited from the event loop (the storage walks, the activity store).

Nothing here waits for the hub: :class:`hub_ext.app.PlatformHub` starts every
service once JupyterHub's own ``start`` has returned (the hub serves, the
proxy's routes are checked), and stops them when the hub cleans up.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

from tornado.ioloop import PeriodicCallback
from traitlets.config import LoggingConfigurable


class PeriodicService(LoggingConfigurable):
    """A pass of work every :attr:`period` seconds once started.

    The first pass runs at once; then one every ``period`` seconds, counted
    from the start of one pass to the start of the next. A pass still running
    when the next is due makes that one skipped (never two at once); a pass
    that raises is logged and the schedule goes on.
    """

    # what the log lines call the service
    service_name = "periodic service"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._callback: PeriodicCallback | None = None
        self._first: asyncio.Task | None = None
        self._busy = False
        self.passes_failed = 0

    @property
    def period(self) -> float:
        """Seconds between two passes (the feature's own interval setting)."""
        raise NotImplementedError

    async def run_pass(self) -> None:
        """One pass of the work."""
        raise NotImplementedError

    def describe(self) -> str:
        """The settings line logged at start."""
        return f"every {self.period:g}s"

    @property
    def running(self) -> bool:
        return self._callback is not None

    async def run_once(self) -> bool:
        """One guarded pass: False when skipped (the previous one still runs)."""
        if self._busy:
            self.log.warning("%s: previous pass still running, this one skipped", self.service_name)
            return False
        self._busy = True
        try:
            await self.run_pass()
        except Exception:
            self.passes_failed += 1
            self.log.exception("%s: pass failed", self.service_name)
        finally:
            self._busy = False
        return True

    def start(self) -> None:
        """Start the passes in the running event loop (the hub's)."""
        if self.running:
            return
        self.log.info("%s: %s", self.service_name, self.describe())
        self._callback = PeriodicCallback(self.run_once, self.period * 1000)
        self._callback.start()
        self._first = asyncio.ensure_future(self.run_once())

    def stop(self) -> None:
        """No further pass starts (one in progress ends on its own; the hub's
        shutdown cancels every task)."""
        if self._callback is not None:
            self._callback.stop()
            self._callback = None
        if self._first is not None and not self._first.done():
            self._first.cancel()
        self._first = None


class WorkerThread:
    """One daemon thread running blocking jobs in order; ``await worker.run(fn, *args)``.

    Daemon, unlike a ThreadPoolExecutor's threads (joined when the interpreter
    exits): a walk of millions of files must not hold up a hub stop or
    restart. ``nice`` lowers this thread's priority only (Linux nice is per
    thread), so the hub's event loop keeps the CPU when both want it.
    """

    def __init__(self, name: str, nice: int | None = None):
        self.name = name
        self.nice = nice
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        if self.nice is not None:
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except OSError:
                pass
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job()

    async def run(self, fn: Callable[..., Any], *args) -> Any:
        """``fn(*args)`` in the thread, awaited from the calling event loop."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def settle(setter, value):
            if not future.done():
                setter(value)

        def job():
            try:
                result = fn(*args)
            except BaseException as e:
                outcome = (future.set_exception, e)
            else:
                outcome = (future.set_result, result)
            try:
                loop.call_soon_threadsafe(settle, *outcome)
            except RuntimeError:  # that loop is closed: the hub is stopping
                pass

        self._ensure_thread()
        self._jobs.put(job)
        return await future

    def shutdown(self) -> None:
        """Let the thread end after the jobs already queued."""
        with self._lock:
            if self._thread is not None:
                self._jobs.put(None)
                self._thread = None
