"""hub_ext.culling.culler: remaining time, extension allowance and cull passes over scripted timelines."""

import asyncio
import json

import pytest

from hub_ext.culling.culler import (
    HOUR,
    MAX_REQUEST_HOURS,
    REASON_IDLE,
    REASON_MAX_AGE,
    CullPolicy,
    ExtensionRequestError,
    ExtensionStore,
    Server,
    cull_once,
    grant_extension,
    parse_extension_request,
    read_extensions_file,
    server_key,
    session_status,
)

from .fakes import T0, FakeClock


class FakeHub:
    """One user's default server with a start time, activity and a stop() that records."""

    def __init__(self, policy, clock, store=None, fail_stop=False):
        self.policy = policy
        self.clock = clock
        self.store = store or ExtensionStore()
        self.servers = {}
        self.stopped = []
        self.fail_stop = fail_stop

    def start(self, user, name=""):
        self.servers[(user, name)] = {
            "started": self.clock(),
            "last_activity": self.clock(),
        }

    def activity(self, user, name=""):
        self.servers[(user, name)]["last_activity"] = self.clock()

    def extend(self, user, hours, name=""):
        server = self.servers[(user, name)]
        key = server_key(user, name)
        grant = grant_extension(
            hours,
            self.store.hours_used(key, server["started"]),
            self.policy.max_extension_hours,
        )
        if grant.granted:
            self.store.add(key, server["started"], grant.granted)
        return grant

    def remaining(self, user, name=""):
        server = self.servers[(user, name)]
        return session_status(
            self.policy,
            now=self.clock(),
            started=server["started"],
            last_activity=server["last_activity"],
            extension_hours=self.store.hours_used(
                server_key(user, name), server["started"]
            ),
        ).remaining

    async def stop(self, user, name):
        if self.fail_stop:
            raise RuntimeError("systemctl stop failed")
        self.stopped.append((user, name))
        del self.servers[(user, name)]

    def cull(self):
        servers = [
            Server(
                user=u, name=n, started=s["started"], last_activity=s["last_activity"]
            )
            for (u, n), s in self.servers.items()
        ]
        return asyncio.run(
            cull_once(
                self.policy,
                now=self.clock(),
                servers=servers,
                store=self.store,
                stop=self.stop,
            )
        )

    def running(self, user, name=""):
        return (user, name) in self.servers


def policy(**kw):
    base = {"enabled": True, "timeout": 600, "interval": 60, "max_age": 0}
    base.update(max_extension_hours=3, extension_unit=HOUR)
    base.update(kw)
    return CullPolicy(**base)


# --- the arithmetic -------------------------------------------------------


def test_idle_server_remaining_counts_down_from_last_activity():
    p = policy()
    status = session_status(p, now=T0 + 100, started=T0, last_activity=T0)
    assert status.remaining == 500
    assert status.deadline == T0 + 600
    assert status.reason == REASON_IDLE
    assert not status.expired
    assert session_status(p, now=T0 + 600, started=T0, last_activity=T0).expired
    # never negative
    assert session_status(p, now=T0 + 9999, started=T0, last_activity=T0).remaining == 0


def test_no_activity_counts_from_start_and_stale_activity_is_ignored():
    p = policy()
    assert session_status(p, now=T0, started=T0, last_activity=None).remaining == 600
    # activity from before this start (a previous server) does not shorten it
    assert (
        session_status(p, now=T0, started=T0, last_activity=T0 - 5000).remaining == 600
    )


def test_extension_moves_idle_deadline_by_whole_hours():
    p = policy()
    status = session_status(p, now=T0, started=T0, last_activity=T0, extension_hours=2)
    assert status.remaining == 600 + 2 * HOUR
    assert status.extensions_available_hours == 1


def test_extension_unit_sets_what_one_extension_hour_is_worth():
    p = policy(extension_unit=5)
    status = session_status(p, now=T0, started=T0, last_activity=T0, extension_hours=2)
    assert status.remaining == 600 + 2 * 5


def test_extension_above_a_lowered_cap_is_clamped():
    p = policy(max_extension_hours=1)
    status = session_status(p, now=T0, started=T0, last_activity=T0, extension_hours=5)
    assert status.extension_hours == 1
    assert status.remaining == 600 + HOUR
    assert status.extensions_available_hours == 0


def test_max_age_deadline_ignores_activity_and_extensions():
    p = policy(max_age=1000)
    status = session_status(
        p, now=T0 + 900, started=T0, last_activity=T0 + 900, extension_hours=3
    )
    assert status.reason == REASON_MAX_AGE
    assert status.deadline == T0 + 1000
    assert status.remaining == 100
    assert session_status(p, now=T0 + 1000, started=T0, last_activity=T0 + 999).expired


def test_idle_deadline_before_max_age_is_the_deadline():
    p = policy(max_age=10_000)
    status = session_status(p, now=T0 + 100, started=T0, last_activity=T0)
    assert status.reason == REASON_IDLE
    assert status.deadline == T0 + 600


@pytest.mark.parametrize(
    "requested, used, cap, granted, truncated, available",
    [
        (1, 0, 3, 1, False, 2),
        (3, 0, 3, 3, False, 0),
        (5, 0, 3, 3, True, 0),
        (2, 2, 3, 1, True, 0),
        (1, 3, 3, 0, True, 0),
        (1, 0, 0, 0, True, 0),
    ],
)
def test_grant_truncates_to_allowance(
    requested, used, cap, granted, truncated, available
):
    grant = grant_extension(requested, used, cap)
    assert (grant.granted, grant.truncated, grant.available) == (
        granted,
        truncated,
        available,
    )
    assert grant.used == min(used, cap) + granted


def test_grant_messages_say_what_happened():
    assert grant_extension(2, 0, 3).message == "Session extended by 2 hours"
    assert grant_extension(1, 0, 3).message == "Session extended by 1 hour"
    text = grant_extension(5, 1, 3).message
    assert "requested 5" in text and "truncated" in text and "2 remaining" in text
    assert grant_extension(1, 3, 3).message.startswith("No extension left")


@pytest.mark.parametrize(
    "body", [{"hours": 1}, {"hours": 24}, {"hours": MAX_REQUEST_HOURS}]
)
def test_parse_accepts_whole_hours(body):
    assert parse_extension_request(body) == body["hours"]


@pytest.mark.parametrize(
    "body, words",
    [
        ({"hours": 0}, "at least 1"),
        ({"hours": -2}, "at least 1"),
        ({"hours": MAX_REQUEST_HOURS + 1}, "at most"),
        ({"hours": 10**30}, "at most"),
        ({"hours": "2"}, "whole number"),
        ({"hours": 1.5}, "whole number"),
        ({"hours": 1e308}, "whole number"),
        ({"hours": True}, "whole number"),
        ({"hours": None}, "whole number"),
        ({}, "Missing"),
        ({"hour": 1}, "Missing"),
        (None, "JSON object"),
        ([1], "JSON object"),
        ("hours", "JSON object"),
    ],
)
def test_parse_refuses_bad_requests_with_a_message(body, words):
    with pytest.raises(ExtensionRequestError, match=words):
        parse_extension_request(body)


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"timeout": 0}, "timeout"),
        ({"interval": 0}, "interval"),
        ({"max_age": -1}, "max_age"),
        ({"max_extension_hours": -1}, "max_extension_hours"),
        ({"max_extension_hours": MAX_REQUEST_HOURS + 1}, "max_extension_hours"),
        ({"timeout": "600"}, "timeout"),
        ({"enabled": "yes"}, "enabled"),
        ({"extension_unit_seconds": 0}, "extension_unit_seconds"),
        ({"extension_unit_seconds": HOUR + 1}, "extension_unit_seconds"),
    ],
)
def test_the_culler_refuses_bad_settings(kw, words):
    # the traits of SessionCuller are the only check of the policy's numbers
    from traitlets import TraitError

    from hub_ext.culling.service import SessionCuller

    with pytest.raises(TraitError, match=words):
        SessionCuller(**kw)


# --- scripted timelines through cull_once ----------------------------------


def test_timeline_idle_server_is_culled_after_timeout():
    clock = FakeClock()
    hub = FakeHub(policy(), clock)
    hub.start("alice")
    clock.advance(599)
    assert hub.cull().culled == []
    clock.advance(1)
    report = hub.cull()
    assert [d.server.key for d in report.culled] == ["alice"]
    assert report.culled[0].status.reason == REASON_IDLE
    assert hub.stopped == [("alice", "")]


def test_timeline_active_server_is_never_culled_by_idle_rule():
    clock = FakeClock()
    hub = FakeHub(policy(), clock)
    hub.start("alice")
    for _ in range(100):  # 100 x 5 min of activity = far beyond the timeout
        clock.advance(300)
        hub.activity("alice")
        assert hub.cull().culled == []
    assert hub.running("alice")
    clock.advance(600)
    assert hub.cull().culled  # and culled once it goes idle


def test_timeline_extended_twice_then_culled_after_extended_deadline():
    clock = FakeClock()
    hub = FakeHub(policy(), clock)
    hub.start("alice")
    clock.advance(500)
    assert hub.extend("alice", 1).granted == 1
    assert hub.remaining("alice") == 100 + HOUR
    clock.advance(HOUR)
    assert hub.extend("alice", 1).granted == 1
    assert hub.remaining("alice") == 100 + HOUR
    # past the plain timeout and past the first extension: still running
    clock.advance(HOUR + 99)
    assert hub.cull().culled == []
    assert hub.running("alice")
    clock.advance(1)  # idle 600 s + 2 h
    assert [d.server.key for d in hub.cull().culled] == ["alice"]


def test_timeline_extension_beyond_cap_is_truncated_and_culling_honours_only_the_cap():
    clock = FakeClock()
    hub = FakeHub(policy(max_extension_hours=3), clock)
    hub.start("alice")
    assert hub.extend("alice", 2).granted == 2
    grant = hub.extend("alice", 5)
    assert (grant.granted, grant.truncated, grant.used, grant.available) == (
        1,
        True,
        3,
        0,
    )
    assert hub.extend("alice", 1).granted == 0
    assert hub.remaining("alice") == 600 + 3 * HOUR
    clock.advance(600 + 3 * HOUR - 1)
    assert hub.cull().culled == []
    clock.advance(1)
    assert hub.cull().culled


def test_timeline_restart_resets_allowance():
    clock = FakeClock()
    hub = FakeHub(policy(max_extension_hours=2), clock)
    hub.start("alice")
    assert hub.extend("alice", 2).granted == 2
    assert hub.extend("alice", 1).granted == 0
    clock.advance(600 + 2 * HOUR)
    assert hub.cull().culled  # culled at the extended deadline
    assert hub.store.keys() == []  # record of the stopped server pruned
    clock.advance(60)
    hub.start("alice")
    assert hub.remaining("alice") == 600  # a new start has no extension...
    assert hub.extend("alice", 2).granted == 2  # ...and the full allowance


def test_restart_resets_allowance_even_if_record_survived():
    # the hub was down while the server stopped and restarted: the record is for
    # the old start time and no longer counts
    store = ExtensionStore()
    store.add("alice", T0, 3)
    assert store.hours_used("alice", T0) == 3
    assert store.hours_used("alice", T0 + 7200) == 0
    assert grant_extension(3, store.hours_used("alice", T0 + 7200), 3).granted == 3


def test_timeline_max_age_culls_an_active_extended_server():
    clock = FakeClock()
    hub = FakeHub(policy(max_age=3000), clock)
    hub.start("alice")
    hub.extend("alice", 3)
    for _ in range(9):
        clock.advance(300)
        hub.activity("alice")
        assert hub.cull().culled == []
    clock.advance(300)  # 3000 s after start, active a moment ago
    hub.activity("alice")
    report = hub.cull()
    assert [d.status.reason for d in report.culled] == [REASON_MAX_AGE]


def test_disabled_policy_culls_nothing():
    clock = FakeClock()
    hub = FakeHub(policy(enabled=False, max_age=10), clock)
    hub.start("alice")
    clock.advance(10**6)
    assert hub.cull().checked == []
    assert hub.running("alice")


def test_cull_once_skips_pending_and_stopped_servers_and_survives_failures():
    clock = FakeClock(T0 + 10_000)
    store = ExtensionStore()
    stopped = []

    async def stop(user, name):
        if user == "bob":
            raise RuntimeError("boom")
        stopped.append((user, name))

    servers = [
        Server("alice", "", started=T0, last_activity=T0),
        Server("bob", "", started=T0, last_activity=T0),  # stop fails
        Server("carol", "", started=T0, last_activity=T0, ready=False),  # pending
        Server("dave", "", started=None, last_activity=T0),  # not running
        Server("erin", "gpu", started=T0, last_activity=T0),  # named server
    ]
    report = asyncio.run(
        cull_once(policy(), now=clock(), servers=servers, store=store, stop=stop)
    )
    assert stopped == [("alice", ""), ("erin", "gpu")]
    assert [d.server.key for d in report.failed] == ["bob"]
    assert "boom" in report.failed[0].error
    assert {d.server.key for d in report.checked} == {"alice", "bob", "erin/gpu"}


def test_cull_once_prunes_only_records_of_gone_or_restarted_servers():
    store = ExtensionStore()
    store.add("alice", T0, 1)  # running, same start: kept
    store.add("bob", T0, 1)  # not running any more: dropped
    store.add("carol", T0 - 50, 1)  # restarted since: dropped
    store.add("dave", T0, 1)  # start pending (not ready): kept

    async def stop(user, name):
        raise AssertionError("nothing is due")

    servers = [
        Server("alice", "", started=T0, last_activity=T0),
        Server("carol", "", started=T0, last_activity=T0),
        Server("dave", "", started=T0, last_activity=None, ready=False),
    ]
    asyncio.run(
        cull_once(policy(), now=T0 + 1, servers=servers, store=store, stop=stop)
    )
    assert store.keys() == ["alice", "dave"]


# --- the store ----------------------------------------------------------------


def test_store_counts_a_record_for_its_start_only_and_hands_out_copies():
    store = ExtensionStore()
    assert store.add("alice", T0, 2) == 2
    assert store.add("alice", T0, 1) == 3
    store.add(server_key("bob", "gpu"), T0 + 0.123456, 1)
    assert store.hours_used("alice", T0) == 3
    assert store.hours_used("bob/gpu", T0 + 0.123456) == 1
    assert store.hours_used("alice", T0 + 1) == 0
    record = store.record("alice")
    assert record == {"started": T0, "hours": 3}
    record["hours"] = 99  # what the spawner state gets is a copy
    assert store.hours_used("alice", T0) == 3 and store.record("carol") is None


def test_extension_file_of_earlier_versions_is_read_for_migration(tmp_path):
    path = tmp_path / "session_extensions.json"
    path.write_text(json.dumps({
        "alice": {"started": T0, "hours": 2},
        "bob/gpu": {"started": int(T0), "hours": 1},
        "carol": {"started": T0, "hours": True},  # malformed: left out
    }))
    assert read_extensions_file(path) == {
        "alice": {"started": T0, "hours": 2}, "bob/gpu": {"started": T0, "hours": 1},
    }
    assert read_extensions_file(tmp_path / "missing.json") == {}


@pytest.mark.parametrize(
    "content",
    ["not json", "[1, 2]", json.dumps({"alice": {"started": "x", "hours": 1}})],
)
def test_a_corrupt_extension_file_reads_as_empty(tmp_path, content):
    path = tmp_path / "session_extensions.json"
    path.write_text(content)
    assert read_extensions_file(path) == {}


def test_server_key():
    assert server_key("alice") == "alice"
    assert server_key("alice", "gpu") == "alice/gpu"
