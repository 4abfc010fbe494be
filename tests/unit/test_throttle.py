"""hub_ext.accounts.throttle: login delays and the signup quota, with a fake clock."""

import pytest

from hub_ext.accounts.throttle import (
    ADDRESS_FREE_FACTOR,
    LoginThrottle,
    WindowQuota,
    delay_after,
    format_wait,
)

from .fakes import FakeClock


@pytest.fixture
def clock():
    return FakeClock()


def throttle(clock, free=3, max_delay=600, **kw):
    return LoginThrottle(free, max_delay, clock=clock, **kw)


@pytest.mark.parametrize(("failures", "expected"), [
    (0, 0), (2, 0), (3, 1), (4, 2), (5, 4), (12, 512), (13, 600), (10_000, 600),
])
def test_delay_is_free_then_doubles_up_to_the_cap(failures, expected):
    assert delay_after(failures, 3, 600) == expected


def test_zero_free_failures_or_zero_cap_disables(clock):
    for t in (throttle(clock, free=0), throttle(clock, max_delay=0)):
        for _ in range(50):
            t.failed("admin", "10.0.0.1")
        assert not t.enabled and t.wait("admin", "10.0.0.1") == 0


def test_failures_from_one_address_delay_that_address(clock):
    t = throttle(clock)
    for _ in range(3):
        assert t.wait("admin", "10.0.0.1") == 0
        t.failed("admin", "10.0.0.1")
    assert t.wait("admin", "10.0.0.1") == 1
    clock.now += 1
    assert t.wait("admin", "10.0.0.1") == 0
    t.failed("admin", "10.0.0.1")
    assert t.wait("admin", "10.0.0.1") == 2


def test_the_real_user_from_another_address_is_not_delayed(clock):
    t = throttle(clock)
    for _ in range(20):  # an attacker renewing the delay as fast as allowed
        clock.now += t.wait("admin", "10.0.0.66")
        t.failed("admin", "10.0.0.66")
    assert t.wait("admin", "10.0.0.66") > 0
    assert t.wait("admin", "10.0.0.7") == 0


def test_an_address_that_failed_the_account_also_waits_for_the_accounts_count(clock):
    t = throttle(clock)
    for n in range(10):  # a distributed guesser: one failure per address
        t.failed("admin", f"10.0.1.{n}")
    assert t.wait("admin", "10.0.1.0") == pytest.approx(2**(10 - 3))
    assert t.wait("admin", "10.0.2.1") == 0  # a fresh address still gets its try


def test_spraying_names_from_one_address_delays_the_address(clock):
    t = throttle(clock)
    free = 3 * ADDRESS_FREE_FACTOR
    for n in range(free):
        t.failed(f"user{n}", "10.0.0.9")
    assert t.wait("someone-new", "10.0.0.9") == 1
    assert t.wait("someone-new", "10.0.0.10") == 0


def test_success_clears_pair_and_account_but_not_the_address(clock):
    t = throttle(clock)
    for _ in range(3 * ADDRESS_FREE_FACTOR):
        t.failed("admin", "10.0.0.1")
    t.succeeded("admin", "10.0.0.1")
    assert t.wait("other", "10.0.0.1") > 0  # the address count stays
    t2 = throttle(clock)
    for _ in range(3):
        t2.failed("admin", "10.0.0.1")
    t2.succeeded("admin", "10.0.0.1")
    assert t2.wait("admin", "10.0.0.1") == 0


def test_admin_clear_forgets_the_account_everywhere(clock):
    t = throttle(clock)
    for _ in range(5):
        t.failed("admin", "10.0.0.1")
        t.failed("admin", "10.0.0.2")
        t.failed("bob", "10.0.0.3")
    assert t.clear_account("admin") == 3  # two pairs and the account
    assert t.wait("admin", "10.0.0.1") == 0 and t.wait("admin", "10.0.0.2") == 0
    assert t.wait("bob", "10.0.0.3") > 0


def test_counts_are_forgotten_after_a_quiet_period(clock):
    t = throttle(clock, forget_after=3600)
    for _ in range(10):
        t.failed("admin", "10.0.0.1")
    clock.now += 3601
    t.failed("admin", "10.0.0.1")
    assert t.wait("admin", "10.0.0.1") == 0  # one failure again: still free


def test_memory_stays_bounded(clock):
    t = throttle(clock, max_keys=100)
    for n in range(1000):
        clock.now += 1
        t.failed(f"user{n}", "10.0.0.1")
    assert len(t._failures) <= 100


@pytest.mark.parametrize(("seconds", "text"), [
    (0.2, "1 second"), (1, "1 second"), (36.1, "37 seconds"), (119, "119 seconds"),
    (600, "10 minutes"), (541, "10 minutes"),
])
def test_format_wait(seconds, text):
    assert format_wait(seconds) == text


def test_window_quota_allows_the_limit_then_says_when(clock):
    q = WindowQuota(3, 3600, clock=clock)
    for _ in range(3):
        assert q.wait("10.0.0.1") == 0
        q.record("10.0.0.1")
        clock.now += 10
    assert q.wait("10.0.0.1") == pytest.approx(3600 - 30)
    assert q.wait("10.0.0.2") == 0
    clock.now += 3600 - 30
    assert q.wait("10.0.0.1") == 0


def test_window_quota_zero_is_unlimited_and_memory_is_bounded(clock):
    unlimited = WindowQuota(0, 60, clock=clock)
    for _ in range(100):
        unlimited.record("a")
    assert unlimited.wait("a") == 0
    q = WindowQuota(1, 60, clock=clock, max_keys=50)
    for n in range(500):
        q.record(f"10.0.{n // 256}.{n % 256}")
    assert len(q._events) <= 50
