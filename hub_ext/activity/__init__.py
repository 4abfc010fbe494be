"""Activity monitor: per-user usage from each lab unit's cgroup accounting,
history in its own SQLite file, the exponential-decay activity score.

* :mod:`.accounting`: CPU, memory, tasks and IO of one unit from cgroup v2
  files, cgroup v1 controllers or psutil over the unit's processes; every
  figure says which source it came from.
* :mod:`.score`: the decay score kept as two running sums per user.
* :mod:`.store`: the SQLite file (samples, platform totals, score sums),
  written only by the hub process, through one worker thread.
* :mod:`.model`: what a sampled target is, how history and sizes are shaped.
* :mod:`.service`: :class:`~.service.ActivityMonitor`, the periodic sampling
  in the hub and the models the page, the API and the metrics read.
* :mod:`.metrics`: the Prometheus collector on the hub's ``/hub/metrics``.
* :mod:`.handlers`: the page and the API (the only module here that imports
  tornado or jupyterhub; docs/activity.md).
"""
