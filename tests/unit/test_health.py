"""Health endpoint rules (hub_ext.admin.health): client address behind nginx, rate limit, report."""

import pytest

from hub_ext.admin import health


@pytest.mark.parametrize("peer, headers, via_front_end, expected", [
    # nginx sets X-Real-IP (replacing the client's own) and the proxy passes it on
    ("uid:998", {"X-Real-IP": "203.0.113.7", "X-Forwarded-For": "1.2.3.4"}, True, "203.0.113.7"),
    ("uid:998", {}, True, "uid:998"),
    # a lab on the hub's socket (or any other peer) cannot claim an address
    ("uid:1001", {"X-Real-IP": "203.0.113.7"}, False, "uid:1001"),
    ("127.0.0.1", {"X-Real-IP": "203.0.113.7", "X-Forwarded-For": "203.0.113.7"}, False, "127.0.0.1"),
])
def test_client_address(peer, headers, via_front_end, expected):
    assert health.client_address(peer, headers, via_front_end=via_front_end) == expected


def test_rate_limit_is_per_client_and_recovers():
    now = [100.0]
    limiter = health.RateLimiter(1.0, clock=lambda: now[0])
    assert limiter.check("a") == 0
    assert limiter.check("b") == 0
    assert limiter.check("a") == pytest.approx(1.0)
    now[0] += 0.4
    assert limiter.check("a") == pytest.approx(0.6)
    now[0] += 0.6
    assert limiter.check("a") == 0


def test_rate_limit_memory_is_bounded():
    now = [0.0]
    limiter = health.RateLimiter(1.0, clock=lambda: now[0], max_keys=10)
    for i in range(100):
        now[0] += 0.01
        limiter.check(f"10.0.0.{i}")
    assert len(limiter._last) <= 10
    with pytest.raises(ValueError, match="interval must be > 0"):
        health.RateLimiter(0)


def test_report_has_the_originals_shape_and_nothing_secret():
    r = health.health_report(started=1000.0, now=1000.0 + 90061, versions={"jupyterhub": "6.1.1"},
                             users=3, active_servers=1)
    assert r == {"status": "ok", "uptime_seconds": 90061, "uptime": "1d 1h 1m",
                 "version": {"jupyterhub": "6.1.1"}, "users": {"total": 3, "active_servers": 1}}
