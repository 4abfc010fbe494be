"""The hub's activity service: periodic sampling, live readings, the models.

:class:`ActivityMonitor` (``c.ActivityMonitor.*``, set from
platform_config.json) runs a periodic task in the hub's event loop. A tick

1. lists every hub user and its default server (``targets``: in memory, on
   the event loop),
2. looks up the ``ControlGroup`` of units it does not know yet (one
   ``systemctl show`` for all of them, :class:`.accounting.ControlGroupCache`),
3. in the monitor's single worker thread: reads each running unit's figures
   (:class:`.accounting.Accounting`), the GPU memory per user
   (:meth:`hub_ext.gpu.service.GpuSupport.usage`), and writes one sample per user, the
   platform total, the retention pruning and the score sums in one SQLite
   transaction (:mod:`.store`),
4. publishes the new figures (attribute swaps the event loop reads).

The page's API asks for a live reading (steps 1-3 without writing) when the
last one is older than ``live_interval`` seconds, so CPU % there is the use
since the previous reading. Everything that touches the SQLite file runs in
the one worker thread: the hub process is its only writer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from traitlets import Any as AnyTrait
from traitlets import Float, Integer, Unicode

from hub_ext.activity import accounting, score
from hub_ext.activity.cgroups import Reading, cpu_percent, oom_kill_is_new
from hub_ext.activity.model import (
    TOTAL_HISTORY_COLUMNS,
    USER_HISTORY_COLUMNS,
    Target,
    columns,
    downsample,
    sizes_entry,
    user_entry,
)
from hub_ext.activity.store import Sample, Store, Total
from hub_ext.periodic import PeriodicService, WorkerThread
from hub_ext.timeutil import to_iso

SETTINGS_KEY = "hub_ext_activity"  # tornado settings key the handlers read
DAY = 86400


class ActivityMonitor(PeriodicService):
    """Samples every user's lab unit and keeps history and score (docs/activity.md)."""

    service_name = "Activity monitor"

    # The settings (hub_ext/settings.py): each trait is the only declaration of
    # its type, bounds and default; the Ansible variable in its tag sets it.
    # Intervals go down to 1 s (the original refused < 60) so that tests and
    # benchmarks can sample every few seconds; a site keeps minutes.
    sample_interval = Integer(
        600, min=1, max=86400,
        help="Seconds between two samples of every user's lab (active flag, CPU, memory, "
        "GPU memory) (orig JUPYTERHUB_ACTIVITYMON_SAMPLE_INTERVAL).",
    ).tag(config=True, ansible="jupyterhub_activitymon_sample_interval")
    retention_days = Integer(
        7, min=1, max=365,
        help="Days samples are kept (orig JUPYTERHUB_ACTIVITYMON_RETENTION_DAYS).",
    ).tag(config=True, ansible="jupyterhub_activitymon_retention_days")
    half_life = Float(
        72.0, min=1, max=168,
        help="Half life in hours of a sample's weight in the activity score "
        "(orig JUPYTERHUB_ACTIVITYMON_HALF_LIFE).",
    ).tag(config=True, ansible="jupyterhub_activitymon_half_life")
    inactive_after = Float(
        60.0, min=1, max=1440,
        help="Minutes after the server's last activity a user counts as idle (yellow) "
        "(orig JUPYTERHUB_ACTIVITYMON_INACTIVE_AFTER).",
    ).tag(config=True, ansible="jupyterhub_activitymon_inactive_after")
    live_interval = Float(
        5.0, min=0, help="Seconds a live reading for the page is reused before a new one is taken."
    ).tag(config=True)
    history_points = Integer(
        720, min=10, help="Most points per history series (longer ones are averaged down)."
    ).tag(config=True)
    db_file = Unicode(
        ":memory:", help="SQLite file of the samples (the hub sets <state_dir>/activity.sqlite)."
    ).tag(config=True)
    sizes_provider = AnyTrait(
        None,
        allow_none=True,
        help="Callable(hub names) -> {name: {directory: bytes, 'trash': bytes}}: the directory "
        "sizes column. None: no sizes (the page says n/a, the API gives null).",
    )
    sizes_pending = AnyTrait(
        None,
        allow_none=True,
        help="Callable() -> bool: whether sizes not known yet are being measured (a sizing "
        "pass runs or the first one is still to come); the page then says 'measuring' for "
        "them instead of n/a. None: never.",
    )

    # seams for tests and the benchmark
    clock = staticmethod(time.time)

    def __init__(self, *, targets: Callable[[], list[Target]] | None = None,
                 accounting_reader: accounting.Accounting | None = None,
                 cgroup_lookup=None, gpu_usage: Callable[[Mapping[str, str]], Mapping] | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.rate = score.decay_rate(self.half_life)
        self.targets = targets or (list)
        self.accounting = accounting_reader
        if cgroup_lookup is None:
            from hub_ext.process import run_command

            cgroup_lookup = accounting.systemctl_lookup(run_command)
        self.cgroups = accounting.ControlGroupCache(cgroup_lookup)
        self.gpu_usage = gpu_usage
        self.store = Store(self.db_file)
        # the only thread that touches the SQLite file
        self.worker = WorkerThread("activity")
        self._lock = asyncio.Lock()
        # worker-thread state
        self.scores: dict[str, score.DecayScore] = {}
        self._tick_readings: dict[str, Reading] = {}
        self._last_readings: dict[str, Reading] = {}
        self._oom_seen_at: dict[str, float] = {}  # user -> reading that first showed a new OOM kill
        self._loaded = False
        # published state (replaced whole; the event loop reads it)
        self.seen: list[Target] = []
        self.current: dict[str, dict] = {}
        self.score_view: dict[str, tuple[float | None, int]] = {}
        self.measured_at: float | None = None
        self.last_tick: dict[str, Any] = {}
        self.gpu_error: str | None = None

    # --- running in the hub ---

    async def run_in_worker(self, fn, *args):
        return await self.worker.run(fn, *args)

    @property
    def period(self) -> float:
        return self.sample_interval

    def describe(self) -> str:
        return (f"sample every {self.sample_interval}s, retention {self.retention_days}d, "
                f"half life {self.half_life:g}h, inactive after {self.inactive_after:g}min, "
                f"database {self.db_file}")

    async def run_pass(self) -> None:
        await self.tick()

    def stop(self) -> None:
        super().stop()
        self.worker.shutdown()

    # --- measuring ---

    def _load(self) -> None:
        """Worker: the persisted score sums (once)."""
        if not self._loaded:
            self.scores = self.store.load_scores(self.half_life, self.rate)
            self.score_view = self._score_view()
            self._loaded = True

    def _score_view(self) -> dict[str, tuple[float | None, int]]:
        return {user: (s.ratio, s.samples) for user, s in self.scores.items()}

    def _read_units(self, targets: list[Target], cgroups: Mapping[str, str | None],
                    now: float, for_sample: bool) -> dict[str, dict]:
        """Worker: every running unit's figures, CPU % against the previous reading."""
        if self.accounting is None:
            self.accounting = accounting.Accounting()
        figures: dict[str, dict] = {}
        readings: dict[str, Reading] = {}
        units: dict[str, str] = {}
        for target in targets:
            if not (target.running and target.unit):
                continue
            units[target.unit] = target.user
            reading = self.accounting.read(target.unit, cgroups.get(target.unit), now)
            readings[target.unit] = reading
            if oom_kill_is_new(self._last_readings.get(target.unit), reading):
                self._oom_seen_at[target.user] = now
            figures[target.user] = {
                "unit": target.unit,
                "cpu_percent": cpu_percent(self._last_readings.get(target.unit), reading),
                "sample_cpu_percent": cpu_percent(
                    self._tick_readings.get(target.unit), reading
                ),
                **reading.as_dict(),
                "last_oom_kill_at": self._oom_seen_at.get(target.user),
                "gpu_memory_bytes": None,
            }
        self._last_readings = readings
        if for_sample:
            self._tick_readings = readings
        if self.gpu_usage is not None and units:
            snapshot = self.gpu_usage(units)
            self.gpu_error = snapshot.get("error")
            if snapshot.get("enabled"):
                used = snapshot.get("users") or {}
                for user, entry in figures.items():
                    entry["gpu_memory_bytes"] = (used.get(user) or {}).get("memory_used", 0)
        return figures

    def status(self, target: Target, now: float) -> str:
        """active / idle / offline (:func:`.score.status` with ``inactive_after``)."""
        return score.status(target.running, target.last_activity, now, self.inactive_after * 60)

    def counts(self, now: float) -> dict[str, int]:
        """Users per status, as of the last reading's user list."""
        counts = {"active": 0, "idle": 0, "offline": 0}
        for t in self.seen:
            counts[self.status(t, now)] += 1
        return counts

    def _sample(self, targets: list[Target], figures: Mapping[str, dict], now: float) -> dict:
        """Worker: write one sample per user, the total, prune, update the scores."""
        samples = []
        for t in targets:
            f = figures.get(t.user) or {}
            samples.append(Sample(
                user=t.user,
                t=now,
                active=self.status(t, now) == "active",
                online=t.running,
                cpu_percent=f.get("sample_cpu_percent"),
                memory_bytes=f.get("memory_bytes"),
                gpu_memory_bytes=f.get("gpu_memory_bytes"),
            ))
        total = Total(
            t=now,
            online=sum(s.online for s in samples),
            active=sum(s.active for s in samples),
            cpu_percent=sum(s.cpu_percent or 0.0 for s in samples),
            memory_bytes=sum(s.memory_bytes or 0 for s in samples),
            gpu_memory_bytes=sum(s.gpu_memory_bytes or 0 for s in samples),
        )
        cutoff = now - self.retention_days * DAY
        try:
            pruned = self.store.write_tick(samples, total, cutoff, self.scores, self.rate)
        except Exception:
            # the sums were changed in memory by a transaction that did not land
            self.scores = self.store.load_scores(self.half_life, self.rate)
            raise
        return {"samples": len(samples), "pruned": pruned}

    def _measure_job(self, targets, cgroups, now, for_sample):
        started = time.perf_counter()
        self._load()
        figures = self._read_units(targets, cgroups, now, for_sample)
        written = self._sample(targets, figures, now) if for_sample else {}
        view = self._score_view() if for_sample else None
        return figures, written, view, time.perf_counter() - started

    def _stale(self) -> bool:
        return self.measured_at is None or self.clock() - self.measured_at >= self.live_interval

    async def measure(self, for_sample: bool) -> dict[str, Any] | None:
        """One pass: targets, cgroups, the worker's reading (and sample), publish.

        A live pass (not ``for_sample``) that finds a fresh enough reading once
        it has the lock (another request just took one) does nothing."""
        async with self._lock:
            if not for_sample and not self._stale():
                return None
            t0 = time.perf_counter()
            now = self.clock()
            targets = self.targets()
            units = [t.unit for t in targets if t.running and t.unit]
            loop_seconds = time.perf_counter() - t0
            cgroups = await self.cgroups.resolve(units)
            figures, written, view, worker_seconds = await self.run_in_worker(
                self._measure_job, targets, cgroups, now, for_sample
            )
            t1 = time.perf_counter()
            self.seen = targets
            self.current = figures
            self.measured_at = now
            if view is not None:
                self.score_view = view
            loop_seconds += time.perf_counter() - t1
            return {
                "units": len(units),
                "loop_seconds": loop_seconds,
                "worker_seconds": worker_seconds,
                "total_seconds": time.perf_counter() - t0,
                "systemctl_lookups": self.cgroups.lookups,
                **written,
            }

    async def tick(self) -> dict[str, Any]:
        """One sampling tick (what the periodic task runs)."""
        result = await self.measure(for_sample=True)
        self.last_tick = {**result, "at": to_iso(self.measured_at)}
        self.log.debug("Activity tick: %s", self.last_tick)
        return result

    async def refresh(self) -> None:
        """A live reading for the page, unless the last one is recent enough."""
        if self._stale():
            await self.measure(for_sample=False)

    async def reset(self) -> int:
        """Delete the history and the scores; returns the number of samples deleted."""
        async with self._lock:

            def job():
                self._load()
                deleted = self.store.reset()
                self.scores = {}
                return deleted

            deleted = await self.run_in_worker(job)
            self.score_view = {}
            self.log.info("Activity history reset: %d samples deleted", deleted)
            return deleted

    # --- sizes ---

    def sizes(self, names: list[str]) -> dict[str, dict | None]:
        """Directory sizes per user, as the provider last measured them (the storage
        feature's cache, refreshed every StorageManager.sizes_interval: one setting,
        jupyterhub_storage_sizes_interval, says how fresh the column is)."""
        if self.sizes_provider is None:
            return {}
        try:
            raw = self.sizes_provider(names) or {}
        except Exception:
            self.log.exception("Activity monitor: the sizes provider failed")
            raw = {}
        return {name: sizes_entry(raw.get(name)) for name in raw}

    # --- models ---

    def model(self) -> dict[str, Any]:
        """What ``GET /hub/api/activity`` returns (O(users): nothing is scanned)."""
        now = self.clock()
        sizes = self.sizes([t.user for t in self.seen])
        users = []
        for t in self.seen:
            users.append(user_entry(
                t, self.status(t, now), self.current.get(t.user) or {},
                self.score_view.get(t.user, (None, 0)), sizes.get(t.user),
            ))
        return {
            "measured_at": to_iso(self.measured_at),
            "settings": {
                "sample_interval": self.sample_interval,
                "retention_days": self.retention_days,
                "half_life_hours": self.half_life,
                "inactive_after_minutes": self.inactive_after,
            },
            "sizes_available": self.sizes_provider is not None,
            "sizes_pending": bool(self.sizes_pending and self.sizes_pending()),
            "gpu_error": self.gpu_error,
            "last_tick": self.last_tick,
            "counts": self.counts(now),
            "users": users,
        }

    async def history(self, user: str | None) -> dict[str, Any]:
        """CPU/memory/GPU over the retention window: one user's samples or the platform totals."""
        since = self.clock() - self.retention_days * DAY

        def job():
            if user is None:
                rows, names = self.store.totals_history(since), TOTAL_HISTORY_COLUMNS
            else:
                rows, names = self.store.user_history(user, since), USER_HISTORY_COLUMNS
            return columns(downsample(rows, self.history_points), names)

        series = await self.run_in_worker(job)
        return {"user": user, "since": to_iso(since), "series": series}
