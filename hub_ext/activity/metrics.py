"""Prometheus metrics of the activity monitor, on JupyterHub's own ``/hub/metrics``.

JupyterHub serves ``prometheus_client``'s default registry there, so a
collector registered in it appears next to the hub's own metrics (scraping
needs the ``read:metrics`` scope, as for the hub's metrics). Values are the
monitor's latest reading, collected at scrape time in O(users):

=========================================  =======  ===========================================
metric                                     type     labels
=========================================  =======  ===========================================
``jupyterhub_activity_cpu_seconds_total``  counter  ``user``, ``source``: CPU time of the lab unit
``jupyterhub_activity_memory_bytes``       gauge    ``user``, ``source``: memory in use
``jupyterhub_activity_gpu_memory_bytes``   gauge    ``user``: GPU memory of the lab's processes
``jupyterhub_activity_oom_kills_total``    counter  ``user``: processes of the lab the OOM killer ended
``jupyterhub_activity_score_ratio``        gauge    ``user``: decay score, 0..1
``jupyterhub_activity_users``              gauge    ``status``: active / idle / offline
``jupyterhub_activity_tick_seconds``       gauge    ``part``: last tick, event loop / worker
=========================================  =======  ===========================================

The CPU and OOM counters restart from 0 when a lab restarts (a new unit); ``rate()``
handles that as any counter reset.
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class ActivityCollector:
    def __init__(self, monitor):
        self.monitor = monitor

    def describe(self):
        return []  # collected on demand; nothing to check at registration

    def collect(self):
        m = self.monitor
        known = {t.user for t in m.seen}  # deleted users' leftover samples are not exported
        cpu = CounterMetricFamily(
            "jupyterhub_activity_cpu_seconds",
            "CPU seconds used by the user's lab unit since it started",
            labels=["user", "source"],
        )
        memory = GaugeMetricFamily(
            "jupyterhub_activity_memory_bytes",
            "Memory in use by the user's lab unit (without inactive page cache)",
            labels=["user", "source"],
        )
        gpu = GaugeMetricFamily(
            "jupyterhub_activity_gpu_memory_bytes",
            "GPU memory used by the processes of the user's lab unit",
            labels=["user"],
        )
        oom = CounterMetricFamily(
            "jupyterhub_activity_oom_kills",
            "Processes of the user's lab unit killed by the kernel's OOM killer since it started",
            labels=["user"],
        )
        ratio = GaugeMetricFamily(
            "jupyterhub_activity_score_ratio",
            "Activity score: decay-weighted share of active samples (0..1)",
            labels=["user"],
        )
        users = GaugeMetricFamily(
            "jupyterhub_activity_users", "Users by activity status", labels=["status"]
        )
        tick = GaugeMetricFamily(
            "jupyterhub_activity_tick_seconds",
            "Duration of the last sampling tick: in the hub's event loop and in the worker",
            labels=["part"],
        )
        for user, f in sorted(m.current.items()):
            sources = f.get("sources") or {}
            if f.get("cpu_seconds") is not None:
                cpu.add_metric([user, sources.get("cpu", "")], f["cpu_seconds"])
            if f.get("memory_bytes") is not None:
                memory.add_metric([user, sources.get("memory", "")], f["memory_bytes"])
            if f.get("gpu_memory_bytes") is not None:
                gpu.add_metric([user], f["gpu_memory_bytes"])
            if f.get("oom_kills") is not None:
                oom.add_metric([user], f["oom_kills"])
        for user, (value, _samples) in sorted(m.score_view.items()):
            if value is not None and user in known:
                ratio.add_metric([user], value)
        for state, n in m.counts(m.clock()).items():
            users.add_metric([state], n)
        for part in ("loop_seconds", "worker_seconds"):
            if part in m.last_tick:
                tick.add_metric([part.removesuffix("_seconds")], m.last_tick[part])
        yield from (cpu, memory, gpu, oom, ratio, users, tick)


_registered: ActivityCollector | None = None


def register(monitor, registry=None) -> ActivityCollector:
    """Register the monitor's collector (once per process: a second monitor replaces the first)."""
    global _registered
    if registry is None:
        from prometheus_client import REGISTRY as registry
    if _registered is not None:
        try:
            registry.unregister(_registered)
        except KeyError:
            pass
    _registered = ActivityCollector(monitor)
    registry.register(_registered)
    return _registered
