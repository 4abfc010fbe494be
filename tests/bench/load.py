#!/usr/bin/env python3
"""Load test with Locust: N simulated users each log in, start their lab, open a
kernel over the websocket, run a cell, idle and stop (`make load`; scenario in
tests/bench/locustfile.py, results in docs/benchmarks.md).

For each N (default 20, then 50): create N users with the platform's batch API,
run Locust headless (N users spawned at ``--spawn-rate`` per second, each
running the session once, the whole run bounded by ``--run-time``), sample the
build machine's load average and available memory meanwhile, delete the users.
Prints p50/p95 per step and the error count, writes artifacts/load.json (and
Locust's output, artifacts/load-N.log), and exits 1 on any error (0 is the bar).

The platform runs on a test host of the suite's default kind with
LOAD_HOST_VARS, ``$TESTHOST_NAME-load`` on port base ``$TESTHOST_PORT_BASE + 8000``
(or TESTHOST_LOAD_NAME / TESTHOST_LOAD_PORT_BASE), built and deployed here, or
the kept one with TESTHOST_REUSE=1; torn down afterwards unless TESTHOST_KEEP=1.
Everything stays on the loopback address.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS), str(TESTS / "testhost")]

import testhost  # noqa: E402
from hubclient import admin_client, batch_create, unique_names  # noqa: E402

ARTIFACTS = TESTS.parent / "artifacts"
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
# 50 labs starting within 25 s on two cores shared with other jobs: a start
# takes minutes, not the default 120 s (start) / 60 s (http) the platform allows
LOAD_HOST_VARS = {"jupyterhub_spawner_start_timeout": 300, "jupyterhub_spawner_http_timeout": 300}
STEPS = ("1 login", "2 start lab", "3 open kernel", "4 run cell", "5 stop")


def machine_sample() -> tuple[float, int]:
    """(1-minute load average, MemAvailable in MiB) of the build machine."""
    load = float(Path("/proc/loadavg").read_text().split()[0])
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return load, int(meminfo["MemAvailable"].split()[0]) // 1024


def run_load(host, n: int, spawn_rate: float, idle: float, run_time: int) -> dict:
    admin = admin_client(host)
    passwords = batch_create(admin, unique_names(n, "load"))
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(2):
            samples.append(machine_sample())

    sampler = threading.Thread(target=sample)
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            creds = Path(tmp) / "users.json"
            creds.write_text(json.dumps([{"name": k, "password": v} for k, v in passwords.items()]))
            result_file = Path(tmp) / "result.json"
            env = dict(os.environ, LOAD_USERS_FILE=str(creds), LOAD_IDLE_SECONDS=str(idle),
                       LOAD_RESULT_FILE=str(result_file),
                       PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
            sampler.start()
            res = subprocess.run(
                [str(Path(sys.executable).parent / "locust"), "-f", str(LOCUSTFILE), "--headless",
                 "--users", str(n), "--spawn-rate", str(spawn_rate), "--run-time", f"{run_time}s",
                 "--stop-timeout", "30", "--host", host.https_url,
                 "--only-summary", "--loglevel", "WARNING"],
                env=env, text=True, capture_output=True, timeout=run_time + 120)
            (ARTIFACTS / f"load-{n}.log").write_text(res.stdout + res.stderr)
            locust = json.loads(result_file.read_text())
    finally:
        done.set()
        if sampler.is_alive():
            sampler.join()
        for user in passwords:
            admin.api("DELETE", f"users/{user}", timeout=120)
    wall = time.monotonic() - started
    empty = {"count": 0, "failures": 0, "p50_ms": None, "p95_ms": None, "max_ms": None}
    steps = {name: locust["steps"].get(name, empty) for name in STEPS}
    # a session stops at its first failed step: every session that did not
    # complete its last step is one error (a failure, or cut off by --run-time)
    completed = steps[STEPS[-1]]["count"] - steps[STEPS[-1]]["failures"]
    errors = n - completed
    return {"users": n, "spawn_rate_per_s": spawn_rate, "idle_s": idle, "wall_s": round(wall, 1),
            "locust_exit": res.returncode, "errors": errors, "steps": steps,
            "error_messages": locust["errors"],
            "max_load_avg_1m": max((s[0] for s in samples), default=None),
            "min_mem_available_mib": min((s[1] for s in samples), default=None)}


def seconds(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.2f} s"


def table(results: list[dict]) -> str:
    lines = ["| N | step | p50 | p95 | max | done | failed |", "|---|---|---|---|---|---|---|"]
    for result in results:
        for name, s in result["steps"].items():
            lines.append(f"| {result['users']} | {name[2:]} | {seconds(s['p50_ms'])} | {seconds(s['p95_ms'])} "
                         f"| {seconds(s['max_ms'])} | {s['count'] - s['failures']} | {s['failures']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, nargs="+", default=[20, 50], help="N of each run (default 20 50)")
    ap.add_argument("--spawn-rate", type=float, default=2, help="simulated users started per second")
    ap.add_argument("--idle", type=float, default=30, help="seconds each user idles with the kernel open")
    ap.add_argument("--run-time", type=int, default=900, help="upper bound of each run in seconds")
    args = ap.parse_args(argv)
    name = os.environ.get("TESTHOST_LOAD_NAME", os.environ.get("TESTHOST_NAME", "pytest") + "-load")
    port_base = int(os.environ.get("TESTHOST_LOAD_PORT_BASE",
                                   int(os.environ.get("TESTHOST_PORT_BASE", "23000")) + 8000))
    ARTIFACTS.mkdir(exist_ok=True)
    host = testhost.provision(name, port_base, LOAD_HOST_VARS, reuse=os.environ.get("TESTHOST_REUSE") == "1",
                              log_to=ARTIFACTS / "deploy-load.log")
    results = []
    try:
        for n in args.users:
            results.append(run_load(host, n, args.spawn_rate, args.idle, args.run_time))
            r = results[-1]
            print(f"N={n}: {r['errors']} errors in {r['wall_s']} s, load average up to "
                  f"{r['max_load_avg_1m']}, memory available down to {r['min_mem_available_mib']} MiB",
                  flush=True)
    finally:
        (ARTIFACTS / "load.json").write_text(json.dumps(results, indent=2))
        if os.environ.get("TESTHOST_KEEP") != "1":
            testhost.down(name)
    print(table(results))
    return 1 if any(r["errors"] or r["locust_exit"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
