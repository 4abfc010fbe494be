"""Benchmarks of per-user storage on the test host (docs/benchmarks.md).

1. Reset cost does not depend on the directory's size: a workspace of 100,000
   files and one of 1 file are reset (``DELETE manage-volumes``) and restored
   alternately, ROUNDS times each; the reset is a rename, so the median
   latency ratio should be about 1 (a copy or delete would be ~1000x).
2. The hub stays responsive while the background sizing walks 200,000 files:
   hub API latency (sequential requests straight to the hub's port, so the
   hub's event loop is what is measured) with the sizing idle, then with a
   sizing pass every second (``c.StorageManager.sizes_interval = 1``).

Results are printed and written to ``artifacts/bench-storage.json``.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest

from hubclient import HubClient

ROUNDS = 10
BIG_FILES = 100_000
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
USERS_ROOT = "/srv/jupyterhub/users"
BIG, SMALL = "bench-big", "bench-small"
# the reset ratio bound a rename easily meets and any copy/delete misses by far
MAX_RESET_RATIO = 5.0
P99_TARGET_MS = 50.0

MAKE_FILES = """
import os, sys
top, count = sys.argv[1], int(sys.argv[2])
for i in range(count):
    d = os.path.join(top, f"d{i // 1000:03d}")
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:06d}.txt"), "w") as f:
        f.write("x" * (i % 200))
"""

RESULTS: dict = {}


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def write_results():
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "bench-storage.json").write_text(json.dumps(RESULTS, indent=2))


@pytest.fixture(scope="module")
def bench_users(host, admin):
    for name in (BIG, SMALL):
        r = admin.api("POST", f"users/{name}")
        assert r.status_code in (201, 409), r.text
        if host.exec("test", "-d", f"{USERS_ROOT}/jh-{name}/workspace", check=False).returncode != 0:
            admin.start_server(name)
            admin.stop_server(name)
    counts = {BIG: BIG_FILES, SMALL: 1}
    for name, count in counts.items():
        ws = f"{USERS_ROOT}/jh-{name}/workspace"
        host.exec("runuser", "-u", f"jh-{name}", "--", "python3", "-c", MAKE_FILES, ws, str(count),
                  timeout=900)
    return counts


def count_files(host, path):
    return int(host.sh(f"find {path} -type f | wc -l").stdout)


def test_reset_time_does_not_depend_on_the_number_of_files(host, admin, bench_users, capsys):
    timings = {BIG: [], SMALL: []}
    restores = {BIG: [], SMALL: []}
    for _ in range(ROUNDS):
        for name in (BIG, SMALL):
            t0 = time.perf_counter()
            r = admin.api("DELETE", f"users/{name}/manage-volumes", json={"volumes": ["workspace"]})
            timings[name].append(time.perf_counter() - t0)
            assert r.status_code == 200 and r.json()["reset_volumes"] == ["workspace"], r.text
            item = r.json()["trash"][0]["id"]
            t0 = time.perf_counter()
            r = admin.api("POST", f"users/{name}/trash/restore", json={"item": item})
            restores[name].append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
    assert count_files(host, f"{USERS_ROOT}/jh-{BIG}/workspace") == BIG_FILES
    med = {k: statistics.median(v) for k, v in timings.items()}
    med_restore = {k: statistics.median(v) for k, v in restores.items()}
    ratio = med[BIG] / med[SMALL]
    RESULTS["reset"] = {
        "files": bench_users,
        "rounds": ROUNDS,
        "reset_s": timings,
        "restore_s": restores,
        "median_reset_s": med,
        "median_restore_s": med_restore,
        "ratio_100k_to_1": ratio,
    }
    write_results()
    with capsys.disabled():
        print("\n== storage benchmark: reset through the API (nginx, TLS), same test host ==")
        for name in (BIG, SMALL):
            print(f"reset    {bench_users[name]:>7} file(s)  median {med[name] * 1000:7.1f} ms"
                  f"   restore median {med_restore[name] * 1000:7.1f} ms")
        print(f"reset    ratio 100k files / 1 file          {ratio:7.2f}")
    assert ratio < MAX_RESET_RATIO


def hub_latencies(host, token: str, user: str, seconds: float) -> list[float]:
    """Sequential hub API requests for ``seconds``, straight to the hub's own socket."""
    client = HubClient.over_socket(host.internal_socket("hub"), "/jupyterhub/", token)
    base = client.url("hub/api/")
    session = client.s
    paths = ["user", f"users/{user}/manage-volumes", f"users/{user}"]
    out = []
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        t0 = time.perf_counter()
        r = session.get(base + paths[i % len(paths)], timeout=30)
        out.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, r.text
        i += 1
    return out


def sizing_state(admin):
    return admin.api("GET", "storage").json()


def wait_first_pass(admin, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = sizing_state(admin)
        if state["passes"] >= 1 and not state["measuring"]:
            return state
        time.sleep(0.5)
    raise AssertionError("no sizing pass finished")


def test_hub_api_latency_while_sizing_walks_200k_files(host, admin, bench_users, hub_dropin, capsys):
    # a second 100k-file tree, in the small user's cache: 200k files for the walk
    host.exec("runuser", "-u", f"jh-{SMALL}", "--", "python3", "-c", MAKE_FILES,
              f"{USERS_ROOT}/jh-{SMALL}/cache", str(BIG_FILES), timeout=900)
    total = count_files(host, USERS_ROOT)
    assert total >= 2 * BIG_FILES
    token = admin.s.headers["Authorization"].split()[1]
    seconds = 20

    # idle: the hub's first pass at start, then nothing for an hour
    hub_dropin("90-bench-storage.py", "c.StorageManager.sizes_interval = 3600\n")
    idle_state = wait_first_pass(admin)
    idle = hub_latencies(host, token, BIG, seconds)

    # busy: a pass every second over the same files
    hub_dropin("90-bench-storage.py", "c.StorageManager.sizes_interval = 1\n")
    wait_first_pass(admin)
    before = sizing_state(admin)
    busy = hub_latencies(host, token, BIG, seconds)
    after = sizing_state(admin)
    passes = after["passes"] - before["passes"]
    assert passes >= 1, "no sizing pass ran during the measurement"
    assert after["users"][SMALL]["cache"] > 0

    summary = {}
    for label, values in (("idle", idle), ("sizing", busy)):
        summary[label] = {
            "requests": len(values),
            "p50_ms": statistics.median(values),
            "p95_ms": percentile(values, 95),
            "p99_ms": percentile(values, 99),
            "max_ms": max(values),
        }
    RESULTS["api_latency"] = {
        "p99_target_ms": P99_TARGET_MS,
        "p99_target_met": summary["sizing"]["p99_ms"] < P99_TARGET_MS,
        "files_walked": total,
        "seconds_per_phase": seconds,
        "sizing_passes_during_busy_phase": passes,
        "sizing_pass_seconds": after["last_pass_seconds"],
        "first_pass_seconds_idle_phase": idle_state["last_pass_seconds"],
        **summary,
    }
    write_results()
    with capsys.disabled():
        print(f"\n== storage benchmark: hub API latency, sizing walking {total} files ==")
        print(f"sizing   pass over {total} files: {after['last_pass_seconds']:.2f} s; "
              f"{passes} pass(es) during the {seconds} s busy phase")
        for label in ("idle", "sizing"):
            s = summary[label]
            print(f"api      {label:7s} n={s['requests']:5d}  p50 {s['p50_ms']:6.2f} ms  "
                  f"p95 {s['p95_ms']:6.2f} ms  p99 {s['p99_ms']:6.2f} ms  max {s['max_ms']:7.2f} ms")
        met = "met" if summary["sizing"]["p99_ms"] < P99_TARGET_MS else "NOT met (noisy machine?)"
        print(f"api      p99 target while sizing: < {P99_TARGET_MS:.0f} ms: {met}")
    # The target is p99 < 50 ms. On a shared 2-core machine the idle p99 alone
    # can come near it, so the check allows twice the idle p99 when that is
    # higher: sizing inside the event loop would block for a whole pass
    # (seconds), far above either bound.
    assert summary["sizing"]["p99_ms"] < max(P99_TARGET_MS, 2 * summary["idle"]["p99_ms"])
