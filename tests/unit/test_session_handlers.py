"""session-info / extend-session handlers and SessionCuller, with a fake clock.

The API runs in a real JupyterHub application (tests/unit/realhub.py:
JupyterHub's own MockHub, real API tokens, roles and scopes); a running server
is the hub's database record of one. Cookie sessions and XSRF are attacked on
the test host (tests/integration/test_security_matrix.py).
"""

import asyncio
import json
from types import SimpleNamespace

import pytest
from traitlets.config import Config

from hub_ext.culling.culler import HOUR
from hub_ext.culling.handlers import ExtendSessionHandler, SessionInfoHandler
from hub_ext.culling.service import SETTINGS_KEY, SessionCuller
from hub_ext.plugin import session
from hub_ext.timeutil import to_epoch, to_iso

from .fakes import T0, FakeClock, FakeUser, naive_utc
from .realhub import ADMIN, RealHub, hub_template_env


def make_culler(tmp_path=None, **overrides):
    c = Config()
    c.SessionCuller.enabled = True
    c.SessionCuller.timeout = 600
    c.SessionCuller.max_extension_hours = 3
    if tmp_path is not None:
        c.SessionCuller.state_file = str(tmp_path / "session_extensions.json")
    for key, value in overrides.items():
        setattr(c.SessionCuller, key, value)
    culler = SessionCuller(config=c)
    culler.clock = FakeClock()
    return culler


def test_default_handlers_paths():
    paths = dict(session.default_handlers)
    assert paths[r"/api/users/([^/]+)/session-info"] is SessionInfoHandler
    assert paths[r"/api/users/([^/]+)/extend-session"] is ExtendSessionHandler


def test_time_conversion_is_utc():
    assert to_epoch(naive_utc(T0)) == T0
    assert to_iso(T0) == "2023-11-14T22:13:20Z"
    assert to_epoch(None) is None and to_iso(None) is None


def test_config_reaches_session_culler(hub_config, platform_config, tmp_path):
    platform_config["SessionCuller"].update(
        enabled=True, timeout=30, interval=5, max_age=120, max_extension_hours=2
    )
    c = hub_config(hub_state_dir=str(tmp_path))
    culler = SessionCuller(config=c)
    p = culler.policy
    assert (p.enabled, p.timeout, p.interval, p.max_age, p.max_extension_hours) == (
        True,
        30,
        5,
        120,
        2,
    )
    assert culler.state_file == str(tmp_path / "session_extensions.json")


def test_a_new_culler_runs_nothing_until_started():
    culler = make_culler()
    assert not culler.running and culler.app is None


def test_start_when_disabled_schedules_nothing():
    culler = make_culler(enabled=False)

    async def scenario():
        culler.start()
        assert not culler.running

    asyncio.run(scenario())


def test_start_culls_at_once_then_every_interval_until_stopped():
    culler = make_culler(interval=1)
    passes = []

    async def fake_cull():
        passes.append(culler.clock())
        return SimpleNamespace(culled=[])

    culler.cull = fake_cull

    async def scenario():
        culler.start()
        assert culler.period == 1
        await asyncio.sleep(0.05)
        assert len(passes) == 1  # first pass at once
        await asyncio.sleep(1.1)
        assert len(passes) == 2  # the next one an interval later
        culler.stop()
        await asyncio.sleep(1.1)
        assert len(passes) == 2 and not culler.running

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def hub():
    """A real hub (JupyterHub's MockHub) serving the session API; alice, bob, an admin."""
    hub = RealHub(session.default_handlers)
    for name, admin in (("alice", False), ("bob", False), (ADMIN, True)):
        hub.add_user(name, admin=admin)
    yield hub
    hub.close()


@pytest.fixture
def culler(hub):
    """A fresh culler for each test, every server stopped."""
    culler = make_culler()
    hub.settings[SETTINGS_KEY] = culler
    for name in ("alice", "bob", ADMIN):
        hub.mark_stopped(name)
    return culler


def info(hub, user, caller):
    return hub.request("GET", f"api/users/{user}/session-info", caller)


def extend(hub, user, caller, body=None, raw=None):
    return hub.request("POST", f"api/users/{user}/extend-session", caller, body, raw)


# --- session-info ---


def test_info_of_running_server(hub, culler):
    hub.mark_running("alice", T0)
    culler.clock.now = T0 + 100
    code, answer = info(hub, "alice", "alice")
    assert code == 200
    assert answer == {
        "user": "alice",
        "server_name": "",
        "culler_enabled": True,
        "server_active": True,
        "timeout_seconds": 600,
        "max_age_seconds": 0,
        "max_extension_hours": 3,
        "started": to_iso(T0),
        "last_activity": to_iso(T0),
        "deadline": to_iso(T0 + 600),
        "cull_reason": "idle",
        "time_remaining_seconds": 500,
        "extensions_used_hours": 0,
        "extensions_available_hours": 3,
    }


def test_info_of_stopped_server(hub, culler):
    code, answer = info(hub, "alice", "alice")
    assert code == 200
    assert answer["server_active"] is False
    assert answer["time_remaining_seconds"] is None
    assert answer["extensions_available_hours"] == 3


def test_info_when_culler_disabled(hub, culler):
    culler.policy = make_culler(enabled=False).policy
    hub.mark_running("alice", T0)
    code, answer = info(hub, "alice", "alice")
    assert code == 200 and answer["culler_enabled"] is False
    assert answer["server_active"] is True and answer["time_remaining_seconds"] is None


def test_other_user_is_forbidden(hub, culler):
    hub.mark_running("bob", T0)
    code, body = info(hub, "bob", "alice")
    assert code == 403 and "bob" in body["message"]
    code, body = extend(hub, "bob", "alice", {"hours": 1})
    assert code == 403 and "bob" in body["message"]
    # unknown names answer the same (no probing for accounts)
    assert info(hub, "nobody", "alice")[0] == 403
    assert extend(hub, "bob", "alice", {"hours": 1})[0] == 403
    assert info(hub, "bob", "bob")[1]["extensions_used_hours"] == 0


def test_anonymous_is_forbidden(hub, culler):
    for code, body in (info(hub, "alice", None), extend(hub, "alice", None, {"hours": 1})):
        assert code == 403
        assert "credentials" in body["message"]


def test_a_token_without_the_scope_is_forbidden(hub, culler):
    """JupyterHub's own token scopes decide: a read-only token of alice's may
    read her session but not extend it."""
    hub.mark_running("alice", T0)
    token = hub.user("alice").new_api_token(scopes=["read:servers!user=alice"])
    hub.tokens["alice-read-only"] = token
    assert info(hub, "alice", "alice-read-only")[0] == 200
    code, body = extend(hub, "alice", "alice-read-only", {"hours": 1})
    assert code == 403, body
    assert info(hub, "alice", "alice")[1]["extensions_used_hours"] == 0


def test_admin_reads_and_extends_anyone(hub, culler):
    hub.mark_running("alice", T0)
    assert info(hub, "alice", ADMIN)[0] == 200
    code, body = extend(hub, "alice", ADMIN, {"hours": 2})
    assert code == 200 and body["granted_hours"] == 2
    assert info(hub, "alice", "alice")[1]["extensions_used_hours"] == 2
    assert info(hub, "nobody", ADMIN)[0] == 404


# --- extend-session ---


def test_extend_then_truncate_then_refuse(hub, culler):
    hub.mark_running("alice", T0)
    code, body = extend(hub, "alice", "alice", {"hours": 2})
    assert code == 200
    assert (body["granted_hours"], body["truncated"]) == (2, False)
    assert body["session_info"]["time_remaining_seconds"] == 600 + 2 * HOUR
    assert body["session_info"]["extensions_available_hours"] == 1

    code, body = extend(hub, "alice", "alice", {"hours": 5})
    assert code == 200
    assert (body["requested_hours"], body["granted_hours"], body["truncated"]) == (5, 1, True)
    assert "truncated" in body["message"]
    assert body["session_info"]["extensions_available_hours"] == 0

    code, body = extend(hub, "alice", "alice", {"hours": 1})
    assert code == 409
    assert "No extension left" in body["message"]


def test_restart_resets_allowance(hub, culler):
    hub.mark_running("alice", T0)
    assert extend(hub, "alice", "alice", {"hours": 3})[0] == 200
    hub.mark_stopped("alice")
    hub.mark_running("alice", T0 + 5000)
    culler.clock.now = T0 + 5000
    answer = info(hub, "alice", "alice")[1]
    assert answer["extensions_used_hours"] == 0
    assert answer["time_remaining_seconds"] == 600
    assert extend(hub, "alice", "alice", {"hours": 3})[1]["granted_hours"] == 3


def test_extend_stopped_server_or_disabled_culler_is_409(hub, culler):
    code, body = extend(hub, "alice", "alice", {"hours": 1})
    assert code == 409 and "not running" in body["message"]
    hub.mark_running("alice", T0)
    culler.policy = make_culler(enabled=False).policy
    code, body = extend(hub, "alice", "alice", {"hours": 1})
    assert code == 409 and "disabled" in body["message"]
    culler.policy = make_culler(max_extension_hours=0).policy
    code, body = extend(hub, "alice", "alice", {"hours": 1})
    assert code == 409 and "disabled" in body["message"]


@pytest.mark.parametrize("body, words", [
    ({"hours": 0}, "at least 1"),
    ({"hours": -3}, "at least 1"),
    ({"hours": 10**9}, "at most"),
    ({"hours": "2"}, "whole number"),
    ({"hours": 1.5}, "whole number"),
    ({}, "Missing"),
    ([], "JSON object"),
])
def test_bad_input_is_400_with_message(hub, culler, body, words):
    hub.mark_running("alice", T0)
    code, answer = extend(hub, "alice", "alice", body)
    assert code == 400, body
    assert words in answer["message"], (body, answer)
    assert info(hub, "alice", "alice")[1]["extensions_used_hours"] == 0  # nothing granted


@pytest.mark.parametrize("raw", ["hours=2", " "])
def test_a_body_that_is_not_json_is_400(hub, culler, raw):
    hub.mark_running("alice", T0)
    code, answer = extend(hub, "alice", "alice", raw=raw)
    assert code == 400 and "JSON" in answer["message"]


def test_forbidden_comes_before_input_validation(hub, culler):
    hub.mark_running("bob", T0)
    assert extend(hub, "bob", "alice", {"hours": "x"})[0] == 403


def fake_hub(*users):
    """The parts of the hub the culler reads: started spawners, users, the database."""
    for u in users:
        u.spawner.orm_spawner.user = u
        u.spawner.orm_spawner.name = ""
        u.spawner.get_state = lambda s=u.spawner: (
            {"session_extension": s.session_extension} if s.session_extension else {})

    class Query:
        def filter(self, *_):
            return [u.spawner.orm_spawner for u in users if u.spawner.orm_spawner.started]

    commits = []
    by_name = {u.name: u for u in users}
    return SimpleNamespace(
        db=SimpleNamespace(query=lambda _: Query(), commit=lambda: commits.append(1)),
        users={**{u: u for u in users}, **by_name}, commits=commits,
    )


def test_extension_lives_in_the_spawner_state_and_survives_a_hub_restart():
    alice = FakeUser("alice")
    alice.spawner.session_extension = None
    alice.spawner.start(T0)
    first = make_culler()
    first.app = fake_hub(alice)
    assert first.extend(alice, 2)["granted_hours"] == 2
    # persisted where JupyterHub keeps the spawner's state (its database)
    assert alice.spawner.orm_spawner.state == {"session_extension": {"started": T0, "hours": 2}}
    assert first.app.commits

    # a new hub process: JupyterHub's load_state hands the spawner its record back
    again = FakeUser("alice")
    again.spawner.start(T0)
    again.spawner.session_extension = alice.spawner.orm_spawner.state["session_extension"]
    second = make_culler()
    second.app = fake_hub(again)
    assert second.session_info(again)["extensions_used_hours"] == 0  # not yet restored
    second.restore_extensions()
    info = second.session_info(again)
    assert info["extensions_used_hours"] == 2
    assert info["time_remaining_seconds"] == 600 + 2 * HOUR
    # a record of an earlier start of the server does not count
    third = FakeUser("alice")
    third.spawner.start(T0 + 5000)
    third.spawner.session_extension = {"started": T0, "hours": 2}
    culler = make_culler()
    culler.app = fake_hub(third)
    culler.restore_extensions()
    assert culler.session_info(third)["extensions_used_hours"] == 0


def test_the_extension_file_of_earlier_versions_is_migrated_once_then_removed(tmp_path):
    legacy = tmp_path / "session_extensions.json"
    legacy.write_text(json.dumps({
        "alice": {"started": T0, "hours": 2},
        "bob": {"started": T0 - 100, "hours": 1},  # bob restarted since: void
        "carol": {"started": T0, "hours": 1},  # not running: dropped
    }))
    alice, bob = FakeUser("alice"), FakeUser("bob")
    for u in (alice, bob):
        u.spawner.session_extension = None
        u.spawner.start(T0)
    culler = make_culler(tmp_path)
    culler.app = fake_hub(alice, bob)
    culler.restore_extensions()
    assert not legacy.exists()
    assert culler.session_info(alice)["extensions_used_hours"] == 2
    assert alice.spawner.orm_spawner.state == {"session_extension": {"started": T0, "hours": 2}}
    assert culler.session_info(bob)["extensions_used_hours"] == 0
    assert bob.spawner.session_extension is None
    culler.restore_extensions()  # nothing left to migrate; the state still counts
    assert culler.session_info(alice)["extensions_used_hours"] == 2


def test_cull_uses_hub_servers_and_stops_through_the_user_then_the_route():
    """SessionCuller.cull over a fake app: lists started spawners, stops the expired one
    with JupyterHub's public User.stop (which marks the server stop-pending before its
    first await), then removes its route, also when the stop failed."""
    alice, bob = FakeUser("alice"), FakeUser("bob")
    alice.spawner.start(T0)
    bob.spawner.start(T0 + 500)
    culler = make_culler()
    culler.clock.now = T0 + 700
    calls = []

    class Query:
        def filter(self, *_):
            return [u.spawner.orm_spawner for u in (alice, bob)]

    for u in (alice, bob):
        u.spawner.orm_spawner.user = u
        u.spawner.orm_spawner.name = ""

    class Proxy:
        async def delete_user(self, user, server_name):
            calls.append(("proxy", user.name, server_name))

    failing = []

    async def user_stop(server_name, user=alice):
        calls.append(("stop", user.name, server_name))
        if failing:
            raise RuntimeError("systemctl stop failed")
        user.spawner.stop()

    alice.stop = user_stop
    app = SimpleNamespace(
        db=SimpleNamespace(query=lambda _: Query()),
        # UserDict answers for orm users and names alike
        users={alice: alice, bob: bob, "alice": alice, "bob": bob},
        proxy=Proxy(),
    )
    culler.app = app
    report = asyncio.run(culler.cull())
    assert [d.server.key for d in report.culled] == ["alice"]
    assert calls == [("stop", "alice", ""), ("proxy", "alice", "")]

    alice.spawner.start(T0)
    calls.clear()
    failing.append(True)
    report = asyncio.run(culler.cull())
    assert [d.server.key for d in report.failed] == ["alice"]
    assert calls == [("stop", "alice", ""), ("proxy", "alice", "")]


def test_the_deployed_defaults_keep_the_culler_disabled(hub_config):
    c = hub_config()
    culler = SessionCuller(config=c)
    assert culler.enabled is False and culler.timeout == 86400
    assert c.SessionCuller.state_file == "/var/lib/jupyterhub/session_extensions.json"
    assert c.JupyterHub.template_paths[0].endswith("hub_ext/templates")


def test_home_template_extends_jupyterhubs_and_adds_the_card():
    """Render hub_ext's home.html the way JupyterHub loads templates (template_paths first)."""
    env = hub_template_env()
    user = SimpleNamespace(
        name="alice<x>",
        json_escaped_name="alice",
        all_spawners=lambda **_: [],
        spawner=None,
    )
    html = env.get_template("home.html").render(
        user=user,
        default_server=SimpleNamespace(active=True),
        url="/user/alice/",
        base_url="/hub/",
        xsrf_token="tok",
        static_url=lambda *a, **k: "/static/x",
        no_spawner_check=True,
    )
    assert "Stop My Server" in html  # JupyterHub's own page is still there
    assert 'id="session-status"' in html and "Session Status" in html
    assert 'data-user="alice&lt;x&gt;"' in html  # escaped
    assert "X-XSRFToken" in html and "extend-session" in html
