"""Storage API handlers and StorageManager, on a temporary users_root.

The API runs in a real JupyterHub application (tests/unit/realhub.py:
JupyterHub's own MockHub, real API tokens, roles and scopes) on real
directories; a running server is the hub's database record of one, and the
restart's stop and spawn are recorded (RecordingRestart). Cookie sessions and
XSRF are attacked on the test host (tests/integration/test_security_matrix.py).
"""

import asyncio
import json
import os
from types import SimpleNamespace

import pytest
from jupyterhub import orm
from traitlets import TraitError
from traitlets.config import Config

from hub_ext.plugin import storage as storage_handlers
from hub_ext.storage import layout, names, sizes
from hub_ext.storage.handlers import (
    ManageVolumesHandler,
    RestartServerHandler,
    RestoreHandler,
    TrashHandler,
)
from hub_ext.storage.model import busy_reason
from hub_ext.storage.service import SETTINGS_KEY, StorageManager

from .fakes import T0, FakeUser
from .realhub import ADMIN, RealHub, hub_template_env, set_running


class RecordingRestart(RestartServerHandler):
    """The hub's own stop and spawn recorded instead of run (they would start a
    process and talk to the proxy); the order and the options are what is checked."""

    async def stop_single_user(self, user, server_name=""):
        self.settings["calls"].append(("stop", user.name, server_name))
        set_running(self.db, user.spawner, False)

        async def done():
            self.settings["calls"].append(("stopped", user.name))

        return asyncio.ensure_future(done())

    async def spawn_single_user(self, user, server_name="", display_name="", options=None):
        assert not user.spawner.ready, "started before the stop finished"
        self.settings["calls"].append(("spawn", user.name, server_name, options))
        set_running(self.db, user.spawner, True)


HANDLERS = [
    (path, RecordingRestart if handler is RestartServerHandler else handler)
    for path, handler in storage_handlers.default_handlers
]


def make_manager(users_root, **overrides):
    c = Config()
    c.StorageManager.users_root = str(users_root)
    c.StorageManager.volume_descriptions = {"workspace": "Project files"}
    for key, value in overrides.items():
        setattr(c.StorageManager, key, value)
    manager = StorageManager(config=c)
    manager.clock = lambda: T0
    manager.chown = lambda fd, uid, gid: None
    manager.account_ids = lambda unix: (4242, 4242)
    return manager


@pytest.fixture(scope="module")
def hub():
    """A real hub (JupyterHub's MockHub) serving the storage API; alice, bob, an admin."""
    hub = RealHub(HANDLERS)
    for name, admin in (("alice", False), ("bob", False), (ADMIN, True)):
        hub.add_user(name, admin=admin)
    yield hub
    hub.close()


@pytest.fixture
def users_root(tmp_path):
    for unix in ("jh-alice", "jh-bob"):
        layout.ensure_user_dirs(unix, tmp_path, 0, 0, chown=lambda *a: None)
    (tmp_path / "jh-alice/workspace/notebook.ipynb").write_text("{}")
    return tmp_path


@pytest.fixture
def manager(hub, users_root):
    """A fresh manager on a fresh users_root for each test, every server stopped."""
    manager = make_manager(users_root)
    hub.settings[SETTINGS_KEY] = manager
    hub.settings["calls"] = []
    for name in ("alice", "bob", ADMIN):
        hub.mark_stopped(name)
        hub.user(name).spawner._spawn_pending = hub.user(name).spawner._stop_pending = False
    return manager


def reset(hub, user, caller, body=None, raw=None):
    return hub.request("DELETE", f"api/users/{user}/manage-volumes", caller, body, raw)


def restore(hub, user, caller, body=None, raw=None):
    return hub.request("POST", f"api/users/{user}/trash/restore", caller, body, raw)


def workspace(users_root, unix="jh-alice"):
    return sorted(os.listdir(users_root / unix / "workspace"))


def trash(users_root, unix="jh-alice"):
    path = users_root / unix / ".trash"
    return sorted(os.listdir(path)) if path.exists() else []


# --- the original's contract ---


def test_reset_answers_like_the_original(hub, manager, users_root):
    code, body = reset(hub, "alice", "alice", {"volumes": ["workspace", "cache"]})
    assert code == 200, body
    assert body["message"] == "Successfully reset 2 volume(s)"
    assert body["reset_volumes"] == ["workspace", "cache"]
    assert body["failed_volumes"] == []
    assert [i["volume"] for i in body["trash"]] == ["workspace", "cache"]
    assert body["trash"][0]["expires_at"] == "2023-11-21T22:13:20Z"
    assert workspace(users_root) == []
    assert trash(users_root) == ["20231114T221320.000000Z-cache", "20231114T221320.000000Z-workspace"]


def test_missing_volume_is_reported_as_failed(hub, manager, users_root):
    os.rmdir(users_root / "jh-alice" / "cache")
    code, body = reset(hub, "alice", "alice", {"volumes": ["cache", "home"]})
    assert code == 200
    assert body["reset_volumes"] == ["home"]
    assert body["failed_volumes"] == [{"volume": "cache", "reason": "not found"}]


# --- access ---


def test_another_user_is_forbidden_everywhere_and_nothing_moves(hub, manager, users_root):
    calls = [
        reset(hub, "bob", "alice", {"volumes": ["workspace"]}),
        hub.request("GET", "api/users/bob/manage-volumes", "alice"),
        hub.request("GET", "api/users/bob/trash", "alice"),
        restore(hub, "bob", "alice", {"item": "20231114T221320.000000Z-home"}),
        hub.request("POST", "api/users/bob/restart-server", "alice"),
        # forbidden comes before validation and before the user lookup
        reset(hub, "bob", "alice", {"volumes": ["../../etc"]}),
        reset(hub, "nobody", "alice", {"volumes": ["home"]}),
    ]
    for code, body in calls:
        assert code == 403, body
    assert trash(users_root, "jh-bob") == []
    assert hub.request("GET", "api/users/alice/trash", None)[0] == 403  # anonymous


def test_a_read_only_token_cannot_reset(hub, manager, users_root):
    """JupyterHub's own token scopes decide: reading is not resetting."""
    hub.tokens["alice-read-only"] = hub.user("alice").new_api_token(scopes=["read:servers!user=alice"])
    assert hub.request("GET", "api/users/alice/manage-volumes", "alice-read-only")[0] == 200
    assert reset(hub, "alice", "alice-read-only", {"volumes": ["workspace"]})[0] == 403
    assert workspace(users_root) == ["notebook.ipynb"]


def test_admin_manages_anyone_and_unknown_users_are_404(hub, manager):
    code, body = reset(hub, "bob", ADMIN, {"volumes": ["home"]})
    assert code == 200 and body["reset_volumes"] == ["home"]
    for code, _ in [
        reset(hub, "nobody", ADMIN, {"volumes": ["home"]}),
        hub.request("GET", "api/users/nobody/manage-volumes", ADMIN),
        hub.request("GET", "api/users/nobody/trash", ADMIN),
        restore(hub, "nobody", ADMIN, {"item": "20231114T221320.000000Z-home"}),
        hub.request("POST", "api/users/nobody/restart-server", ADMIN),
    ]:
        assert code == 404


# --- validation ---


def test_bad_volume_names_are_400_and_touch_nothing(hub, manager, users_root):
    bad = [
        {"volumes": [".."]}, {"volumes": ["/etc"]}, {"volumes": ["home/../../x"]},
        {"volumes": [""]}, {"volumes": ["x" * 5000]}, {"volumes": ["shared"]},
        {"volumes": [1]}, {"volumes": [None]}, {"volumes": "home"}, {"volumes": []},
        {"volumes": {"home": True}}, {}, [], "home", 5, None,
        {"volumes": ["home", "../jh-bob/workspace"]},
    ]
    for body in bad:
        code, answer = reset(hub, "alice", "alice", raw=json.dumps(body))
        assert code == 400, body
        assert answer["message"], body
    for raw in ("volumes=home", "{", " "):
        assert reset(hub, "alice", "alice", raw=raw)[0] == 400, raw
    assert workspace(users_root) == ["notebook.ipynb"] and trash(users_root) == []


def test_bad_trash_items_are_400_unknown_ones_404(hub, manager):
    for item in ["..", "../jh-bob/.trash/x", "", None, 5, "20231114T221320.000000Z-shared"]:
        code, _ = restore(hub, "alice", "alice", {"item": item})
        assert code == 400, item
    code, body = restore(hub, "alice", "alice", {"item": "20231114T221320.000000Z-home"})
    assert code == 404 and "No trash item" in body["message"]


# --- the server must be stopped ---


def test_reset_and_restore_refused_while_running_or_starting(hub, manager, users_root):
    code, body = reset(hub, "alice", "alice", {"volumes": ["cache"]})
    item = body["trash"][0]["id"]
    spawner = hub.user("alice").spawner
    for state in ("running", "spawn", "stop"):
        if state == "running":
            hub.mark_running("alice", T0)
        else:
            hub.mark_stopped("alice")
        spawner._spawn_pending, spawner._stop_pending = state == "spawn", state == "stop"
        code, body = reset(hub, "alice", "alice", {"volumes": ["workspace"]})
        assert code == 400, state
        expected = {"running": "running", "spawn": "starting", "stop": "pending"}[state]
        assert expected in body["message"], body
        code, body = restore(hub, "alice", "alice", {"item": item})
        assert code == 400, state
    assert workspace(users_root) == ["notebook.ipynb"]
    assert trash(users_root) == [item]


def test_a_running_named_server_counts(hub, manager):
    user = hub.user("alice")
    hub.app.db.add(orm.Spawner(name="gpu", user=user.orm_user))
    hub.app.db.commit()
    named = user.spawners["gpu"]  # the hub loads it
    set_running(hub.app.db, named, True)
    try:
        code, body = reset(hub, "alice", "alice", {"volumes": ["workspace"]})
        assert code == 400 and "'gpu'" in body["message"]
    finally:
        set_running(hub.app.db, named, False)


def test_a_running_server_the_hub_has_not_loaded_counts(hub, manager):
    user = hub.user("alice")
    record = orm.Spawner(name="other", user=user.orm_user, server=orm.Server(ip="127.0.0.1", port=1))
    hub.app.db.add(record)
    hub.app.db.commit()
    try:
        assert "other" in user.orm_spawners and "other" not in user.spawners
        assert reset(hub, "alice", "alice", {"volumes": ["workspace"]})[0] == 400
    finally:
        hub.app.db.delete(record)  # its server row goes with it
        hub.app.db.commit()


# --- trash and restore ---


def test_list_and_restore_round_trip(hub, manager, users_root):
    code, body = reset(hub, "alice", "alice", {"volumes": ["workspace"]})
    item = body["trash"][0]["id"]
    code, listed = hub.request("GET", "api/users/alice/trash", "alice")
    assert code == 200 and [i["id"] for i in listed["items"]] == [item]
    assert listed["retention_days"] == 7
    (users_root / "jh-alice/workspace/after.txt").write_text("")
    manager.clock = lambda: T0 + 5
    code, body = restore(hub, "alice", ADMIN, {"item": item})
    assert code == 200, body
    assert body["volume"] == "workspace" and body["restored"] == item
    assert body["trashed"]["id"] == "20231114T221325.000000Z-workspace"
    assert workspace(users_root) == ["notebook.ipynb"]
    assert trash(users_root) == ["20231114T221325.000000Z-workspace"]


def test_manage_volumes_model_has_descriptions_sizes_and_trash(hub, manager, users_root):
    manager.sizes = sizes.measure_all(users_root)
    manager.measured_at = dict.fromkeys(manager.sizes, T0)
    code, model = hub.request("GET", "api/users/alice/manage-volumes", "alice")
    assert code == 200
    assert model["user"] == "alice" and model["server_active"] is False
    assert [v["name"] for v in model["volumes"]] == ["home", "workspace", "cache"]
    assert model["volumes"][1]["description"] == "Project files"
    assert model["volumes"][0]["description"] == ""
    assert all(isinstance(v["size_bytes"], int) for v in model["volumes"])
    assert model["sizes_measured_at"] == "2023-11-14T22:13:20Z"
    assert model["trash"] == [] and model["sizes_interval_seconds"] == 3600


def test_sizes_are_admin_only(hub, manager, users_root):
    manager.sizes = sizes.measure_all(users_root)
    assert hub.request("GET", "api/storage", "alice")[0] == 403
    code, body = hub.request("GET", "api/storage", ADMIN)
    assert code == 200
    assert body["users"]["alice"]["unix_name"] == "jh-alice"
    assert body["users"]["alice"]["workspace"] > 0
    assert body["users"][ADMIN]["home"] is None


# --- restart ---


def test_restart_stops_then_starts_through_the_hub(hub, manager):
    hub.mark_running("alice", T0)
    hub.user("alice").spawner.user_options = {"profile": "default"}
    code, body = hub.request("POST", "api/users/alice/restart-server", "alice")
    assert code == 200, body
    assert body["ready"] is True and "restarted" in body["message"]
    assert hub.settings["calls"] == [
        ("stop", "alice", ""),
        ("stopped", "alice"),
        ("spawn", "alice", "", {"profile": "default"}),
    ]


def test_restart_of_a_stopped_or_pending_server_is_400(hub, manager):
    code, body = hub.request("POST", "api/users/alice/restart-server", ADMIN)
    assert code == 400 and body["message"] == "Server is not running"
    hub.user("alice").spawner._spawn_pending = True
    code, body = hub.request("POST", "api/users/alice/restart-server", "alice")
    assert code == 400 and "pending" in body["message"]
    assert hub.settings["calls"] == []


def test_busy_reason():
    alice = FakeUser("alice")
    assert busy_reason(alice) is None
    alice.spawner.running = True
    assert "running" in busy_reason(alice)


def test_default_handlers_paths():
    paths = dict(storage_handlers.default_handlers)
    assert paths[r"/api/users/([^/]+)/manage-volumes"] is ManageVolumesHandler
    assert paths[r"/api/users/([^/]+)/restart-server"] is RestartServerHandler
    assert paths[r"/api/users/([^/]+)/trash"] is TrashHandler
    assert paths[r"/api/users/([^/]+)/trash/restore"] is RestoreHandler
    assert r"/storage" in paths


def test_sizes_are_measured_in_a_worker_thread_periodically(tmp_path):
    layout.ensure_user_dirs("jh-alice", tmp_path, 0, 0, chown=lambda *a: None)
    manager = make_manager(tmp_path, sizes_interval=1)
    threads = []
    real = sizes.measure_all

    def measure(root):
        import threading

        threads.append(threading.current_thread().name)
        return real(root)

    async def scenario(monkeypatch_target):
        monkeypatch_target.measure_all = measure
        assert manager.passes == 0 and manager.period == 1
        manager.start()
        for _ in range(100):
            await asyncio.sleep(0.05)
            if manager.passes >= 2:
                break
        manager.stop()

    original = sizes.measure_all
    try:
        asyncio.run(scenario(sizes))
    finally:
        sizes.measure_all = original
    assert manager.passes >= 2
    assert threads and all(t.startswith("storage-sizes") for t in threads)
    assert "jh-alice" in manager.sizes and manager.sizes["jh-alice"]["home"] > 0


def test_a_new_manager_measures_nothing_until_started(tmp_path):
    manager = make_manager(tmp_path)
    assert not manager.running and manager.passes == 0


def test_sizes_are_pending_until_the_first_pass_ends_and_while_one_runs(tmp_path):
    layout.ensure_user_dirs("jh-alice", tmp_path, 0, 0, chown=lambda *a: None)
    manager = make_manager(tmp_path)
    seen_during_pass = []
    real = sizes.measure_all

    def measure(root):
        seen_during_pass.append(manager.sizes_pending)
        return real(root)

    assert manager.sizes_pending  # the first pass is still to come
    original, sizes.measure_all = sizes.measure_all, measure
    try:
        asyncio.run(manager.run_once())
        assert seen_during_pass == [True] and not manager.sizes_pending
        asyncio.run(manager.run_once())
        assert seen_during_pass == [True, True] and not manager.sizes_pending
    finally:
        sizes.measure_all = original


def test_sizes_are_not_pending_after_a_first_pass_that_failed(tmp_path):
    manager = make_manager(tmp_path / "missing")  # no users root: the walk raises
    asyncio.run(manager.run_once())
    assert manager.passes == 0 and manager.passes_failed == 1
    assert not manager.sizes_pending


def test_the_deployed_files_reach_the_manager(hub_config, platform_config):
    platform_config["StorageManager"].update(
        trash_retention_days=3, sizes_interval=60, volume_descriptions={"home": "Your home"}
    )
    c = hub_config()
    manager = StorageManager(config=c)
    assert manager.users_root == "/srv/jupyterhub/users"
    assert manager.unix_username_template == "jh-{USERNAME}"
    assert (manager.trash_retention_days, manager.sizes_interval) == (3, 60)
    assert manager.volume_descriptions == {"home": "Your home"}


@pytest.mark.parametrize(
    "trait, value, message",
    [
        ("trash_retention_days", 0, "trash_retention_days"),
        ("sizes_interval", "3600", "sizes_interval"),
        ("volume_descriptions", {"shared": "x"}, "'shared' is not a per-user volume"),
        ("volume_descriptions", {"home": 1}, "volume_descriptions"),
        ("unix_username_template", "jh-user", "unix_username_template is invalid"),
    ],
)
def test_bad_storage_settings_name_the_trait(tmp_path, trait, value, message):
    with pytest.raises(TraitError, match=message):
        StorageManager(**{trait: value})


PAGE = {
    "base_url": "/hub/",
    "xsrf_token": "tok",
    "static_url": lambda *a, **k: "/static/x",
    "no_spawner_check": True,
    "url": "/user/alice/",
}


@pytest.mark.parametrize("active", [True, False])
def test_home_has_restart_manage_volumes_and_the_session_card(active):
    user = SimpleNamespace(
        name="alice<x>", json_escaped_name="alice", all_spawners=lambda **_: [], spawner=None
    )
    html = hub_template_env().get_template("home.html").render(
        user=user, default_server=SimpleNamespace(active=active),
        parsed_scopes={"read:servers"}, **PAGE,
    )
    assert "Stop My Server" in html or not active  # JupyterHub's own page is still there
    assert 'id="session-status"' in html  # the culling feature's card is kept
    assert 'id="restart"' in html and 'data-restart-user="alice&lt;x&gt;"' in html
    assert 'id="manage-volumes"' in html and 'data-storage-user="alice&lt;x&gt;"' in html
    manage = html[html.index('id="manage-volumes"'):].split(">", 1)[0]
    assert ("disabled" in manage) == active  # reset only while stopped
    assert 'id="storage-dialog"' in html and "manage-volumes" in html and "trash/restore" in html
    assert "X-XSRFToken" in html
    assert "storage-admin-link" not in html  # not an admin


def test_home_links_admins_to_the_storage_page():
    user = SimpleNamespace(name="admin", json_escaped_name="admin", all_spawners=lambda **_: [], spawner=None)
    html = hub_template_env().get_template("home.html").render(
        user=user, default_server=SimpleNamespace(active=False),
        parsed_scopes={"admin:users": None}, **PAGE,
    )
    assert 'href="/hub/storage"' in html


def test_admin_page_lists_users_with_sizes():
    html = hub_template_env().get_template("storage_admin.html").render(
        user=SimpleNamespace(name="admin"), parsed_scopes={"admin:users": None},
        rows=[{"name": "alice", "admin": False, "server": "running",
               "sizes": {"home": 2048, "workspace": 3 * 1024**3, "cache": None, "trash": 0,
                         "sizes_measured_at": "2023-11-14T22:13:20Z"}}],
        sizes={"sizes_interval_seconds": 3600, "last_pass_at": None, "last_pass_seconds": None,
               "retention_days": 7},
        volumes=names.VOLUMES, selected="alice", **PAGE,
    )
    assert 'data-storage-user="alice"' in html and 'data-restart-user="alice"' in html
    assert "3.0 GiB" in html and 'data-bytes="2048"' in html
    assert 'id="storage-dialog"' in html and 'data-selected="alice"' in html
