"""Activity monitor: incremental score vs the full formula, retention, the 3-state
rule, the SQLite store, a sampler tick with fakes, the metrics, the settings."""

from __future__ import annotations

import asyncio
import math
import random
import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from traitlets import TraitError

from hub_ext.activity import accounting, cgroups, metrics, score
from hub_ext.activity.cgroups import oom_kill_is_new
from hub_ext.activity.model import Target, downsample, sizes_entry, targets_from_users
from hub_ext.activity.service import ActivityMonitor
from hub_ext.activity.store import Sample, Store, Total
from hub_ext.process import CommandResult
from hub_ext.timeutil import to_iso

from .fakes import FakeClock

HOUR = 3600.0
DAY = 86400.0
V2 = Path(__file__).parent / "data" / "cgroup-v2"


# --- score ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_incremental_score_equals_the_full_formula_on_random_histories(seed):
    rng = random.Random(seed)
    half_life = rng.choice([1, 24, 72, 168])
    retention = rng.choice([1, 3, 7]) * DAY
    rate = score.decay_rate(half_life)
    s = score.DecayScore()
    kept: list[tuple[float, bool]] = []
    t = 1_700_000_000.0
    for _ in range(rng.randint(1, 600)):
        t += rng.choice([60, 600, 600, 3600, 5 * HOUR, 2 * DAY])  # gaps: hub down, etc.
        active = rng.random() < rng.random()
        s.add(t, active, rate)
        kept.append((t, active))
        # retention pruning, as the store does at every tick
        for old in [k for k in kept if k[0] < t - retention]:
            s.remove(old[0], old[1], rate)
            kept.remove(old)
        now = t + rng.uniform(0, 3 * HOUR)  # read at any time after the sample
        assert s.samples == len(kept)
        assert s.ratio == pytest.approx(score.full_score(kept, now, rate), abs=1e-9)


def test_score_edge_cases():
    rate = score.decay_rate(72)
    s = score.DecayScore()
    assert s.ratio is None and s.percent is None
    s.add(0.0, True, rate)
    assert s.ratio == 1.0 and s.percent == 100
    s.add(72 * HOUR, False, rate)  # the active one is one half life old: weight 1/2
    assert s.ratio == pytest.approx(0.5 / 1.5)
    s.remove(0.0, True, rate)
    assert s.ratio == 0.0
    s.remove(72 * HOUR, False, rate)
    assert s.ratio is None and s.samples == 0
    assert score.full_score([], 0, rate) is None
    with pytest.raises(ValueError, match="half life must be > 0"):
        score.decay_rate(0)
    # the decay is the original's: exp(-ln2 / half_life * age_hours)
    assert math.exp(-rate * 36 * HOUR) == pytest.approx(math.exp(-math.log(2) / 72 * 36))


def test_three_state_rule():
    now, window = 10_000.0, 3600.0
    assert score.status(False, now, now, window) == "offline"  # recent activity, but no server
    assert score.status(True, now - 10, now, window) == "active"
    assert score.status(True, now - window, now, window) == "active"
    assert score.status(True, now - window - 1, now, window) == "idle"
    assert score.status(True, None, now, window) == "idle"


# --- store --------------------------------------------------------------------------


def test_store_retention_prunes_samples_totals_and_scores(tmp_path):
    rate = score.decay_rate(72)
    store = Store(tmp_path / "activity.sqlite")
    scores: dict = {}
    for i in range(10):
        t = i * DAY
        store.write_tick(
            [Sample("alice", t, i % 2 == 0, True, 10.0, 100, None), Sample("bob", t, False, False)],
            Total(t, 1, int(i % 2 == 0), 10.0, 100, 0), cutoff=t - 7 * DAY, scores=scores, rate=rate)
    assert store.count() == 2 * 8  # days 2..9 kept
    assert [round(r[0] / DAY) for r in store.totals_history(0)] == list(range(2, 10))
    assert scores["alice"].samples == 8
    assert scores["alice"].ratio == pytest.approx(
        score.full_score(store.samples_of("alice", 0), 9 * DAY, rate))
    assert scores["bob"].ratio == 0.0
    # a user whose samples all expired leaves the scores
    store.write_tick([Sample("alice", 20 * DAY, True, True)], None, cutoff=19 * DAY,
                     scores=scores, rate=rate)
    assert "bob" not in scores and scores["alice"].samples == 1
    assert (tmp_path / "activity.sqlite").stat().st_mode & 0o777 == 0o600


def test_store_persists_the_sums_and_rebuilds_for_another_half_life(tmp_path):
    path = tmp_path / "activity.sqlite"
    rate = score.decay_rate(72)
    store = Store(path)
    scores = store.load_scores(72, rate)
    for i in range(50):
        store.write_tick([Sample("alice", i * HOUR, i % 3 == 0, True)], None, -1, scores, rate)
    store.close()
    again = Store(path).load_scores(72, rate)
    assert again["alice"].ratio == pytest.approx(scores["alice"].ratio)
    other = score.decay_rate(1)
    rebuilt = Store(path).load_scores(1, other)
    full = score.full_score(Store(path).samples_of("alice", -1), 49 * HOUR, other)
    assert rebuilt["alice"].ratio == pytest.approx(full)
    assert rebuilt["alice"].ratio != pytest.approx(scores["alice"].ratio)


def test_store_reset_and_history(tmp_path):
    store = Store(tmp_path / "a.sqlite")
    scores: dict = {}
    rate = score.decay_rate(72)
    store.write_tick([Sample("alice", 5.0, True, True, 12.5, 2048, 4096)],
                     Total(5.0, 1, 1, 12.5, 2048, 4096), -1, scores, rate)
    assert store.user_history("alice", 0) == [(5.0, 1, 1, 12.5, 2048, 4096)]
    assert store.reset() == 1
    assert store.count() == 0 and store.totals_history(0) == []
    assert store.load_scores(72, rate) == {}


def test_downsample_and_sizes_entry():
    rows = [(float(i), i % 2, None if i == 3 else float(i)) for i in range(10)]
    assert downsample(rows, 20) == rows
    out = downsample(rows, 5)
    assert len(out) == 5 and out[0] == (0.5, 0.5, 0.5) and out[1] == (2.5, 0.5, 2.0)
    assert sizes_entry(None) is None and sizes_entry({"unix_name": "jh-a", "home": None}) is None
    # the storage sizing's per-user model plugs in as it is (ints are directories);
    # the trash is its own figure, not part of the total
    assert sizes_entry({"unix_name": "jh-a", "home": 10, "workspace": 5, "cache": None,
                        "trash": 7, "sizes_measured_at": "2026-01-01T00:00:00Z"}) == {
        "total": 15, "dirs": {"home": 10, "workspace": 5}, "trash": 7}
    assert sizes_entry({"home": 10})["trash"] is None
    # a trash alone is no measurement of the directories
    assert sizes_entry({"home": None, "trash": 3}) is None


# --- the monitor ------------------------------------------------------------------


def make_tree(root: Path, units) -> cgroups.Hierarchies:
    for unit in units:
        d = root / "system.slice" / unit
        d.mkdir(parents=True)
        for f in V2.iterdir():
            shutil.copy(f, d / f.name)
        set_oom_kills(root, unit, 0)
    return cgroups.Hierarchies(unified=str(root))


def set_cpu(root: Path, unit: str, seconds: float) -> None:
    (root / "system.slice" / unit / "cpu.stat").write_text(f"usage_usec {int(seconds * 1e6)}\n")


def set_oom_kills(root: Path, unit: str, kills: int) -> None:
    (root / "system.slice" / unit / "memory.events").write_text(f"oom {kills}\noom_kill {kills}\n")


@pytest.fixture
def monitor_env(tmp_path):
    clock = FakeClock()
    units = ["jupyter-alice-singleuser.service", "jupyter-bob-singleuser.service"]
    tree = make_tree(tmp_path / "cg", units)
    lookups = []

    async def lookup(names):
        lookups.append(list(names))
        return {n: f"/system.slice/{n}" for n in names}

    targets = {
        "alice": Target("alice", units[0], True, clock.now - 60, 2 * 2**30, 1.0),
        "bob": Target("bob", units[1], True, clock.now - 7200, 2 * 2**30, 1.0),
        "carol": Target("carol"),
    }
    gpu_calls = []

    def gpu_usage(mapping):
        gpu_calls.append(dict(mapping))
        return {"enabled": True, "error": None,
                "users": {"alice": {"memory_used": 3 * 2**30, "gpus": [0], "processes": 1}}}

    m = ActivityMonitor(
        targets=lambda: list(targets.values()),
        accounting_reader=accounting.Accounting(tree, psutil_module=None),
        cgroup_lookup=lookup,
        gpu_usage=gpu_usage,
        db_file=str(tmp_path / "activity.sqlite"),
    )
    m.clock = clock
    return m, clock, tmp_path / "cg", targets, lookups, gpu_calls


def run(coro):
    return asyncio.run(coro)


def test_tick_samples_every_user_and_the_model_shows_status_usage_and_score(monitor_env):
    m, clock, cg, targets, lookups, gpu_calls = monitor_env

    async def scenario():
        set_cpu(cg, "jupyter-alice-singleuser.service", 100.0)
        set_cpu(cg, "jupyter-bob-singleuser.service", 50.0)
        first = await m.tick()
        clock.now += 10
        set_cpu(cg, "jupyter-alice-singleuser.service", 109.0)  # 90 % of a core
        set_cpu(cg, "jupyter-bob-singleuser.service", 50.1)  # 1 %
        await m.tick()
        return first

    first = run(scenario())
    assert first["units"] == 2 and first["samples"] == 3
    assert len(lookups) == 1  # ControlGroup looked up once for both units, then cached
    assert gpu_calls[0] == {"jupyter-alice-singleuser.service": "alice",
                            "jupyter-bob-singleuser.service": "bob"}
    model = m.model()
    users = {u["name"]: u for u in model["users"]}
    assert users["alice"]["status"] == "active" and users["alice"]["cpu_percent"] == 90.0
    assert users["bob"]["status"] == "idle" and users["bob"]["cpu_percent"] == 1.0
    assert users["carol"]["status"] == "offline" and users["carol"]["cpu_percent"] is None
    assert users["alice"]["sources"] == {"cpu": "cgroup-v2", "memory": "cgroup-v2",
                                         "tasks": "cgroup-v2", "io": "cgroup-v2",
                                         "oom_kills": "cgroup-v2"}
    assert users["alice"]["oom_kills"] == 0 and users["alice"]["last_oom_kill_at"] is None
    assert users["carol"]["oom_kills"] is None
    assert users["alice"]["memory_bytes"] == 734003200 - 209715200
    assert users["alice"]["memory_limit"] == 2 * 2**30
    assert users["alice"]["gpu_memory_bytes"] == 3 * 2**30 and users["bob"]["gpu_memory_bytes"] == 0
    assert users["alice"]["score"] == 100 and users["bob"]["score"] == 0
    assert users["carol"]["score"] == 0 and users["carol"]["samples"] == 2
    assert users["alice"]["sizes"] is None and model["sizes_available"] is False
    assert model["sizes_pending"] is False  # no sizes_pending wired: never
    assert model["counts"] == {"active": 1, "idle": 1, "offline": 1}
    assert model["last_tick"]["loop_seconds"] < model["last_tick"]["total_seconds"]

    # the stored samples: the second tick has CPU % (the first had nothing to compare with)
    hist = run(m.history("alice"))["series"]
    assert hist["cpu_percent"] == [None, 90.0] and hist["active"] == [1, 1]
    platform = run(m.history(None))["series"]
    assert platform["online"] == [2, 2] and platform["cpu_percent"][-1] == pytest.approx(91.0)
    assert platform["gpu_memory_bytes"][-1] == 3 * 2**30


def test_live_refresh_between_ticks_does_not_write(monitor_env):
    m, clock, cg, targets, lookups, _ = monitor_env
    run(m.tick())
    count = m.store.count()
    clock.now += 2
    run(m.refresh())  # within live_interval: nothing new
    assert m.measured_at == clock.now - 2
    clock.now += 5
    set_cpu(cg, "jupyter-alice-singleuser.service", 7.843 + 3.5)
    run(m.refresh())
    assert m.measured_at == clock.now and m.store.count() == count
    assert m.current["alice"]["cpu_percent"] == pytest.approx(50.0)


def test_an_oom_kill_shows_with_the_reading_that_first_saw_it(monitor_env):
    m, clock, cg, targets, lookups, _ = monitor_env
    run(m.tick())
    clock.now += 10
    set_oom_kills(cg, "jupyter-alice-singleuser.service", 1)
    run(m.refresh())
    killed_seen = clock.now
    clock.now += 10
    run(m.tick())  # the same kill again: not new
    users = {u["name"]: u for u in m.model()["users"]}
    assert users["alice"]["oom_kills"] == 1
    assert users["alice"]["last_oom_kill_at"] == to_iso(killed_seen)
    assert users["bob"]["oom_kills"] == 0 and users["bob"]["last_oom_kill_at"] is None
    clock.now += 10
    set_oom_kills(cg, "jupyter-alice-singleuser.service", 3)
    run(m.tick())
    assert m.model()["users"][0]["last_oom_kill_at"] == to_iso(clock.now)
    # the metric follows the count
    registry = CollectorRegistry()
    metrics.register(m, registry)
    assert 'jupyterhub_activity_oom_kills_total{user="alice"} 3.0' in generate_latest(registry).decode()


def test_oom_kill_is_new_only_when_the_count_grows():
    def reading(kills):
        return cgroups.Reading("u.service", "/u", 0.0, oom_kills=kills)

    assert oom_kill_is_new(None, reading(2))  # kills before the hub started: seen now
    assert not oom_kill_is_new(None, reading(0))
    assert not oom_kill_is_new(reading(1), reading(1))
    assert oom_kill_is_new(reading(1), reading(2))
    assert oom_kill_is_new(reading(None), reading(1))
    assert not oom_kill_is_new(reading(3), reading(None))  # memory controller gone


def test_stopped_server_restart_and_reset(monitor_env):
    m, clock, cg, targets, lookups, _ = monitor_env
    run(m.tick())
    targets["alice"] = Target("alice")  # server stopped
    clock.now += 600
    run(m.tick())
    assert "alice" not in m.current
    users = {u["name"]: u for u in m.model()["users"]}
    assert users["alice"]["status"] == "offline" and users["alice"]["score"] == 50
    assert run(m.reset()) == 6
    users = {u["name"]: u for u in m.model()["users"]}
    assert users["alice"]["score"] is None and users["alice"]["samples"] == 0
    assert run(m.history(None))["series"]["t"] == []


def test_scores_survive_a_hub_restart(monitor_env, tmp_path):
    m, clock, cg, targets, lookups, gpu = monitor_env
    for _ in range(3):
        run(m.tick())
        clock.now += 600
    before = dict(m.score_view)
    again = ActivityMonitor(targets=m.targets, accounting_reader=m.accounting,
                            cgroup_lookup=m.cgroups.lookup, db_file=m.db_file)
    again.clock = clock
    run(again.tick())
    assert again.score_view["bob"] == (0.0, 4) and before["bob"] == (0.0, 3)
    assert again.score_view["alice"] == (1.0, 4)


def test_sizes_show_the_providers_latest_measurement(monitor_env):
    # no second cache in the activity monitor: the storage sizing's interval
    # (jupyterhub_storage_sizes_interval) alone says how fresh the column is
    m, clock, *_ = monitor_env
    measured = {"alice": {"home": 2**20, "workspace": 3 * 2**20, "cache": None, "trash": 2**20}}
    calls = []

    def provider(names):
        calls.append(sorted(names))
        return measured

    m.sizes_provider = provider
    run(m.tick())
    users = {u["name"]: u for u in m.model()["users"]}
    assert users["alice"]["sizes"] == {"total": 4 * 2**20, "trash": 2**20,
                                       "dirs": {"home": 2**20, "workspace": 3 * 2**20}}
    assert users["bob"]["sizes"] is None
    assert calls == [["alice", "bob", "carol"]]
    measured["alice"] = {"home": 2**20, "workspace": None, "cache": None}  # a new pass
    users = {u["name"]: u for u in m.model()["users"]}
    assert users["alice"]["sizes"] == {"total": 2**20, "dirs": {"home": 2**20}, "trash": None}
    assert len(calls) == 2


def test_a_user_not_yet_measured_shows_as_soon_as_the_sizing_has_him(monitor_env):
    """The page opened before the first sizing pass: nothing is kept of the misses,
    and meanwhile the model says the sizes are pending."""
    m, clock, *_ = monitor_env
    measured: dict = {}
    pass_running = [True]
    m.sizes_provider = lambda names: {n: measured[n] for n in names if n in measured}
    m.sizes_pending = lambda: pass_running[0]
    run(m.tick())
    model = m.model()
    assert {u["name"]: u["sizes"] for u in model["users"]} == {
        "alice": None, "bob": None, "carol": None}
    assert model["sizes_pending"] is True
    # the first pass is done one second later
    measured["alice"] = {"unix_name": "jh-alice", "home": 4096, "workspace": 0, "cache": 0,
                         "trash": 0}
    pass_running[0] = False
    clock.now += 1
    model = m.model()
    users = {u["name"]: u for u in model["users"]}
    assert users["alice"]["sizes"] == {"total": 4096, "trash": 0,
                                       "dirs": {"home": 4096, "workspace": 0, "cache": 0}}
    assert users["bob"]["sizes"] is None and model["sizes_pending"] is False


def test_targets_from_hub_users():
    from datetime import datetime
    from types import SimpleNamespace as NS

    running = NS(active=True, unit_name="jupyter-alice-singleuser", mem_limit=2**30, cpu_limit=2.0,
                 orm_spawner=NS(last_activity=datetime(2026, 1, 1, 12, 0, 0)))
    stopped = NS(active=False, unit_name="jupyter-bob-singleuser", mem_limit=None, cpu_limit=None,
                 orm_spawner=NS(last_activity=datetime(2026, 1, 1)))
    users = [NS(name="alice", spawners={"": running}), NS(name="bob", spawners={"": stopped}),
             NS(name="carol", spawners={})]
    assert targets_from_users(users) == [
        Target("alice", "jupyter-alice-singleuser.service", True, 1767268800.0, 2**30, 2.0),
        Target("bob", None, False, None, None, None),
        Target("carol"),
    ]


def test_metrics_collector(monitor_env):
    m, clock, cg, *_ = monitor_env
    run(m.tick())
    registry = CollectorRegistry()
    metrics.register(m, registry)
    text = generate_latest(registry).decode()
    assert 'jupyterhub_activity_cpu_seconds_total{source="cgroup-v2",user="alice"} 7.843' in text
    assert 'jupyterhub_activity_memory_bytes{source="cgroup-v2",user="alice"} 5.24288e+08' in text
    assert 'jupyterhub_activity_gpu_memory_bytes{user="alice"} 3.221225472e+09' in text
    assert 'jupyterhub_activity_score_ratio{user="bob"} 0.0' in text
    assert 'jupyterhub_activity_users{status="offline"} 1.0' in text
    assert 'jupyterhub_activity_tick_seconds{part="loop"}' in text
    # registering a second monitor replaces the first (one collector per process)
    metrics.register(m, registry)
    assert generate_latest(registry).decode().count("# TYPE jupyterhub_activity_score_ratio") == 1


@pytest.mark.parametrize("trait, value", [
    ("half_life", 0), ("inactive_after", 0), ("live_interval", -1), ("sample_interval", 0),
])
def test_monitor_rejects_nonsense(trait, value):
    # the traits' bounds (the Ansible variables' values are checked by the same
    # traits at deploy: test_settings.py)
    with pytest.raises(TraitError, match=trait):
        ActivityMonitor(**{trait: value}, cgroup_lookup=lambda u: {})


def test_systemctl_lookup_failure_leaves_units_unresolved():
    async def failing(argv):
        return CommandResult(tuple(argv), 1, stderr="Failed to connect to bus")

    cache = accounting.ControlGroupCache(accounting.systemctl_lookup(failing))
    assert run(cache.resolve(["a.service"])) == {"a.service": None}


# --- settings -------------------------------------------------------------------------


def test_activity_settings_from_the_deployed_files(hub_config, platform_config):
    platform_config["ActivityMonitor"].update(sample_interval=120, inactive_after=5)
    c = hub_config()
    assert c.ActivityMonitor.db_file == "/var/lib/jupyterhub/activity.sqlite"
    c.ActivityMonitor.db_file = ":memory:"
    m = ActivityMonitor(config=c, cgroup_lookup=lambda u: {})
    assert (m.sample_interval, m.inactive_after, m.retention_days) == (120, 5.0, 7)


def test_concurrent_live_requests_take_one_reading(monitor_env):
    m, clock, *_ = monitor_env
    run(m.tick())
    clock.now += m.live_interval
    reads = []
    original = m._read_units

    def counting(*args):
        reads.append(1)
        return original(*args)

    m._read_units = counting

    async def many():
        await asyncio.gather(*(m.refresh() for _ in range(5)))

    run(many())
    assert len(reads) == 1


def test_handlers_module_routes():
    from hub_ext.plugin import activity as h

    routes = dict(h.default_handlers)
    assert routes["/activity"] is h.ActivityPageHandler
    assert routes["/api/activity"] is h.ActivityAPIHandler
    assert routes["/api/activity/reset"] is h.ActivityResetHandler
    assert routes["/api/activity/history/([^/]+)"] is h.ActivityHistoryHandler
    assert Path(h.STATIC_DIR, "uplot", "uPlot.iife.min.js").is_file()
    assert Path(h.STATIC_DIR, "uplot", "LICENSE").read_text().startswith("The MIT License")


def test_running_units_uses_full_unit_names():
    from types import SimpleNamespace as NS

    from hub_ext.gpu.service import running_units

    users = [NS(name="alice", spawners={"": NS(unit_name="jupyter-alice-singleuser", active=True)}),
             NS(name="bob", spawners={"": NS(unit_name="jupyter-bob-singleuser", active=False)})]
    assert running_units(users) == {"jupyter-alice-singleuser.service": "alice"}
