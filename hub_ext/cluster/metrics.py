"""Prometheus metrics of the cluster, labelled by worker, on the hub's ``/hub/metrics``.

=====================================  =====  ==========================================
metric                                 type   labels
=====================================  =====  ==========================================
``jupyterhub_cluster_labs``            gauge  ``worker``: running labs on each worker
``jupyterhub_cluster_lab_worker``      gauge  ``user``, ``worker``: 1 for each running lab
=====================================  =====  ==========================================

The second joins any per-user metric with its worker in PromQL, e.g. the
activity monitor's memory per worker::

    sum by (worker) (jupyterhub_activity_memory_bytes * on (user) group_left (worker)
                     jupyterhub_cluster_lab_worker)

Read at scrape time from the hub's own spawners (the worker a lab runs on is
its server's address: no Slurm call, no I/O), so a scrape costs O(labs).
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily

LABS = "jupyterhub_cluster_labs"
LAB_WORKER = "jupyterhub_cluster_lab_worker"


def running_labs(spawners: Iterable) -> list[tuple[str, str]]:
    """(user, worker) of each lab that runs (its start finished, not stopping)."""
    return sorted((s.user.name, s.server.ip) for s in spawners
                  if s.job_id and s.server is not None and s.ready)


class ClusterCollector:
    def __init__(self) -> None:
        self.spawners: weakref.WeakSet = weakref.WeakSet()

    def describe(self):
        return []  # collected on demand

    def collect(self):
        labs = running_labs(list(self.spawners))
        per_worker = GaugeMetricFamily(LABS, "Running labs on each cluster worker", labels=["worker"])
        for worker, count in sorted(Counter(worker for _, worker in labs).items()):
            per_worker.add_metric([worker], count)
        lab_worker = GaugeMetricFamily(LAB_WORKER, "1 for each running lab, on the worker it runs on",
                                       labels=["user", "worker"])
        for user, worker in labs:
            lab_worker.add_metric([user, worker], 1)
        yield per_worker
        yield lab_worker


_collector: ClusterCollector | None = None


def tracked() -> list:
    """The cluster spawners of this hub process (the activity monitor's Slurm source reads them)."""
    return list(_collector.spawners) if _collector is not None else []


def track(spawner, registry=None) -> ClusterCollector:
    """Count ``spawner``'s lab in the metrics; the collector is registered in
    the hub's registry at the first spawner (once per process)."""
    global _collector
    if _collector is None:
        if registry is None:
            from prometheus_client import REGISTRY as registry
        _collector = ClusterCollector()
        registry.register(_collector)
    _collector.spawners.add(spawner)
    return _collector
