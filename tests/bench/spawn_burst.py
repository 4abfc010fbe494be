"""A burst of concurrent spawns while the hub API is polled: the measurement the
spawn benchmarks share (test_spawn_latency.py, test_hub_priority.py), and their
one results file, artifacts/bench.json."""

from __future__ import annotations

import concurrent.futures
import json
import secrets
import statistics
import threading
import time
from pathlib import Path

from hubclient import HubClient

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


def write_result(key: str, value) -> None:
    """Merge one benchmark's result into artifacts/bench.json."""
    path = ARTIFACTS / "bench.json"
    ARTIFACTS.mkdir(exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = value
    path.write_text(json.dumps(data, indent=2))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_burst(client: HubClient, n: int) -> dict:
    """n new users' servers requested at once; the time until every lab answers
    through the proxy, and the latency of a hub API call every 0.1 s meanwhile.
    The users are deleted afterwards."""
    users = [f"burst{n}-{i}-{secrets.token_hex(2)}" for i in range(n)]
    for user in users:
        assert client.api("POST", f"users/{user}").status_code == 201
    latencies: list[float] = []
    errors: list[str] = []
    done = threading.Event()

    def poll_hub_api() -> None:
        poller = client.copy()
        while not done.is_set():
            started = time.monotonic()
            r = poller.api("GET", f"users/{users[0]}", timeout=30)
            latencies.append(time.monotonic() - started)
            if r.status_code != 200:
                errors.append(str(r.status_code))
            time.sleep(0.1)

    poller = threading.Thread(target=poll_hub_api)
    poller.start()
    started = time.monotonic()
    try:
        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            ready = list(pool.map(lambda u: client.start_server(u, timeout=600), users))
        all_ready = time.monotonic() - started
    finally:
        done.set()
        poller.join()
        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            list(pool.map(lambda u: client.api("DELETE", f"users/{u}"), users))
    return {"n": n, "all_ready_s": all_ready, "each_ready_s": ready,
            "hub_api_p50_s": percentile(latencies, 0.5), "hub_api_p95_s": percentile(latencies, 0.95),
            "hub_api_calls": len(latencies), "hub_api_errors": errors}


def describe_burst(result: dict) -> str:
    return (f"N={result['n']:<3d} all ready {result['all_ready_s']:6.1f} s  "
            f"(median one {statistics.median(result['each_ready_s']):.1f} s); "
            f"hub API p50 {result['hub_api_p50_s'] * 1000:.0f} ms, "
            f"p95 {result['hub_api_p95_s'] * 1000:.0f} ms over {result['hub_api_calls']} calls")
