"""Storage API handlers and StorageManager, on a temporary users_root with fake hub users.

As in test_session_handlers, only JupyterHub's authentication step is replaced
(a test header names the caller and its scopes); access rules, validation,
the storage operations on real directories and the JSON answers are the real
code. Cookie/XSRF and tokens are JupyterHub's and are checked on the test host.
"""

import asyncio
import json
import os
from types import SimpleNamespace

import pytest
from tornado.testing import AsyncHTTPTestCase
from tornado.web import Application
from traitlets.config import Config

from hub_ext.storage import layout, names, sizes
from hub_ext.config import apply_platform_settings
from hub_ext.plugin import storage as storage_handlers
from hub_ext.storage.handlers import (
    ManageVolumesHandler,
    RestartServerHandler,
    RestoreHandler,
    StorageSizesHandler,
    TrashHandler,
)
from hub_ext.storage.service import SETTINGS_KEY, StorageManager, busy_reason

from .fakehub import AuthFromHeader, hub_template_env

T0 = 1_700_000_000.0


class FakeSpawner:
    def __init__(self, user, name=""):
        self.user = user
        self.name = name
        self.pending = None
        self.running = False
        self.user_options = {"profile": "default"}
        self.orm_spawner = SimpleNamespace(server=None)

    @property
    def ready(self):
        return self.running and not self.pending

    @property
    def active(self):
        return bool(self.pending or self.ready)


class FakeUser:
    def __init__(self, name, admin=False):
        self.name = name
        self.admin = admin
        self.spawner = FakeSpawner(self)
        self.spawners = {"": self.spawner}
        self.orm_spawners = {"": self.spawner.orm_spawner}


class Manage(AuthFromHeader, ManageVolumesHandler):
    pass


class Trash(AuthFromHeader, TrashHandler):
    pass


class Restore(AuthFromHeader, RestoreHandler):
    pass


class Sizes(AuthFromHeader, StorageSizesHandler):
    pass


class Restart(AuthFromHeader, RestartServerHandler):
    async def stop_single_user(self, user, server_name=""):
        self.settings["calls"].append(("stop", user.name, server_name))
        user.spawner.running = False

        async def done():
            self.settings["calls"].append(("stopped", user.name))

        return asyncio.ensure_future(done())

    async def spawn_single_user(self, user, server_name="", display_name="", options=None):
        assert not user.spawner.running, "started before the stop finished"
        self.settings["calls"].append(("spawn", user.name, server_name, options))
        user.spawner.running = True


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


class StorageAPITest(AsyncHTTPTestCase):
    def setUp(self):
        import tempfile

        self.tmp = tempfile.TemporaryDirectory()
        self.users_root = self.tmp.name
        for unix in ("jh-alice", "jh-bob"):
            layout.ensure_user_dirs(unix, self.users_root, 0, 0, chown=lambda *a: None)
        with open(os.path.join(self.users_root, "jh-alice/workspace/notebook.ipynb"), "w") as f:
            f.write("{}")
        super().setUp()

    def tearDown(self):
        super().tearDown()
        self.tmp.cleanup()

    def get_app(self):
        self.manager = make_manager(self.users_root)
        self.alice = FakeUser("alice")
        self.bob = FakeUser("bob")
        self.admin = FakeUser("admin", admin=True)
        self.calls = []
        users = {u.name: u for u in (self.alice, self.bob, self.admin)}
        return Application(
            [
                (r"/hub/api/users/([^/]+)/manage-volumes", Manage),
                (r"/hub/api/users/([^/]+)/restart-server", Restart),
                (r"/hub/api/users/([^/]+)/trash", Trash),
                (r"/hub/api/users/([^/]+)/trash/restore", Restore),
                (r"/hub/api/storage", Sizes),
            ],
            **{SETTINGS_KEY: self.manager, "test_users": users, "calls": self.calls},
            hub=SimpleNamespace(base_url="/hub/"),
        )

    def call(self, method, path, caller, body=None, raw=None):
        kwargs = {"method": method, "headers": {"X-Test-User": caller}}
        if body is not None or raw is not None:
            kwargs["body"] = raw if raw is not None else json.dumps(body)
        if method == "DELETE" and "body" in kwargs:
            kwargs["allow_nonstandard_methods"] = True
        if method == "POST" and "body" not in kwargs:
            kwargs["body"] = ""
        response = self.fetch(path, **kwargs)
        return response.code, json.loads(response.body or b"null")

    def reset(self, user, caller, body=None, raw=None):
        return self.call("DELETE", f"/hub/api/users/{user}/manage-volumes", caller, body, raw)

    def restore(self, user, caller, body=None, raw=None):
        return self.call("POST", f"/hub/api/users/{user}/trash/restore", caller, body, raw)

    def workspace(self, unix="jh-alice"):
        return sorted(os.listdir(os.path.join(self.users_root, unix, "workspace")))

    def trash(self, unix="jh-alice"):
        path = os.path.join(self.users_root, unix, ".trash")
        return sorted(os.listdir(path)) if os.path.exists(path) else []

    # --- the original's contract ---

    def test_reset_answers_like_the_original(self):
        code, body = self.reset("alice", "alice", {"volumes": ["workspace", "cache"]})
        assert code == 200, body
        assert body["message"] == "Successfully reset 2 volume(s)"
        assert body["reset_volumes"] == ["workspace", "cache"]
        assert body["failed_volumes"] == []
        assert [i["volume"] for i in body["trash"]] == ["workspace", "cache"]
        assert body["trash"][0]["expires_at"] == "2023-11-21T22:13:20Z"
        assert self.workspace() == []
        assert self.trash() == [
            "20231114T221320.000000Z-cache", "20231114T221320.000000Z-workspace"]

    def test_missing_volume_is_reported_as_failed(self):
        os.rmdir(os.path.join(self.users_root, "jh-alice", "cache"))
        code, body = self.reset("alice", "alice", {"volumes": ["cache", "home"]})
        assert code == 200
        assert body["reset_volumes"] == ["home"]
        assert body["failed_volumes"] == [{"volume": "cache", "reason": "not found"}]

    # --- access ---

    def test_another_user_is_forbidden_everywhere_and_nothing_moves(self):
        calls = [
            self.reset("bob", "alice", {"volumes": ["workspace"]}),
            self.call("GET", "/hub/api/users/bob/manage-volumes", "alice"),
            self.call("GET", "/hub/api/users/bob/trash", "alice"),
            self.restore("bob", "alice", {"item": "20231114T221320.000000Z-home"}),
            self.call("POST", "/hub/api/users/bob/restart-server", "alice"),
            # forbidden comes before validation and before the user lookup
            self.reset("bob", "alice", {"volumes": ["../../etc"]}),
            self.reset("nobody", "alice", {"volumes": ["home"]}),
        ]
        for code, body in calls:
            assert code == 403, body
        assert self.trash("jh-bob") == []
        assert self.call("GET", "/hub/api/users/alice/trash", "")[0] == 403  # anonymous

    def test_admin_manages_anyone_and_unknown_users_are_404(self):
        code, body = self.reset("bob", "admin", {"volumes": ["home"]})
        assert code == 200 and body["reset_volumes"] == ["home"]
        for code, _ in [
            self.reset("nobody", "admin", {"volumes": ["home"]}),
            self.call("GET", "/hub/api/users/nobody/manage-volumes", "admin"),
            self.call("GET", "/hub/api/users/nobody/trash", "admin"),
            self.restore("nobody", "admin", {"item": "20231114T221320.000000Z-home"}),
            self.call("POST", "/hub/api/users/nobody/restart-server", "admin"),
        ]:
            assert code == 404

    # --- validation ---

    def test_bad_volume_names_are_400_and_touch_nothing(self):
        bad = [
            {"volumes": [".."]}, {"volumes": ["/etc"]}, {"volumes": ["home/../../x"]},
            {"volumes": [""]}, {"volumes": ["x" * 5000]}, {"volumes": ["shared"]},
            {"volumes": [1]}, {"volumes": [None]}, {"volumes": "home"}, {"volumes": []},
            {"volumes": {"home": True}}, {}, [], "home", 5, None,
            {"volumes": ["home", "../jh-bob/workspace"]},
        ]
        for body in bad:
            code, answer = self.reset("alice", "alice", raw=json.dumps(body))
            assert code == 400, body
            assert answer["message"], body
        for raw in ("volumes=home", "{", " "):
            assert self.reset("alice", "alice", raw=raw)[0] == 400, raw
        assert self.workspace() == ["notebook.ipynb"] and self.trash() == []

    def test_bad_trash_items_are_400_unknown_ones_404(self):
        for item in ["..", "../jh-bob/.trash/x", "", None, 5, "20231114T221320.000000Z-shared"]:
            code, _ = self.restore("alice", "alice", {"item": item})
            assert code == 400, item
        code, body = self.restore("alice", "alice", {"item": "20231114T221320.000000Z-home"})
        assert code == 404 and "No trash item" in body["message"]

    # --- the server must be stopped ---

    def test_reset_and_restore_refused_while_running_or_starting(self):
        code, body = self.reset("alice", "alice", {"volumes": ["cache"]})
        item = body["trash"][0]["id"]
        for state in ("running", "spawn", "stop"):
            self.alice.spawner.running = state == "running"
            self.alice.spawner.pending = None if state == "running" else state
            code, body = self.reset("alice", "alice", {"volumes": ["workspace"]})
            assert code == 400, state
            expected = {"running": "running", "spawn": "starting", "stop": "pending"}[state]
            assert expected in body["message"], body
            code, body = self.restore("alice", "alice", {"item": item})
            assert code == 400, state
        assert self.workspace() == ["notebook.ipynb"]
        assert self.trash() == [item]

    def test_a_running_named_server_counts(self):
        named = FakeSpawner(self.alice, "gpu")
        named.running = True
        self.alice.spawners["gpu"] = named
        code, body = self.reset("alice", "alice", {"volumes": ["workspace"]})
        assert code == 400 and "'gpu'" in body["message"]

    def test_a_running_server_the_hub_has_not_loaded_counts(self):
        self.alice.orm_spawners["other"] = SimpleNamespace(server=object())
        assert self.reset("alice", "alice", {"volumes": ["workspace"]})[0] == 400

    # --- trash and restore ---

    def test_list_and_restore_round_trip(self):
        code, body = self.reset("alice", "alice", {"volumes": ["workspace"]})
        item = body["trash"][0]["id"]
        code, listed = self.call("GET", "/hub/api/users/alice/trash", "alice")
        assert code == 200 and [i["id"] for i in listed["items"]] == [item]
        assert listed["retention_days"] == 7
        open(os.path.join(self.users_root, "jh-alice/workspace/after.txt"), "w").close()
        self.manager.clock = lambda: T0 + 5
        code, body = self.restore("alice", "admin", {"item": item})
        assert code == 200, body
        assert body["volume"] == "workspace" and body["restored"] == item
        assert body["trashed"]["id"] == "20231114T221325.000000Z-workspace"
        assert self.workspace() == ["notebook.ipynb"]
        assert self.trash() == ["20231114T221325.000000Z-workspace"]

    def test_manage_volumes_model_has_descriptions_sizes_and_trash(self):
        self.manager.sizes = sizes.measure_all(self.users_root)
        self.manager.measured_at = {unix: T0 for unix in self.manager.sizes}
        code, model = self.call("GET", "/hub/api/users/alice/manage-volumes", "alice")
        assert code == 200
        assert model["user"] == "alice" and model["server_active"] is False
        assert [v["name"] for v in model["volumes"]] == ["home", "workspace", "cache"]
        assert model["volumes"][1]["description"] == "Project files"
        assert model["volumes"][0]["description"] == ""
        assert all(isinstance(v["size_bytes"], int) for v in model["volumes"])
        assert model["sizes_measured_at"] == "2023-11-14T22:13:20Z"
        assert model["trash"] == [] and model["sizes_interval_seconds"] == 3600

    def test_sizes_are_admin_only(self):
        self.manager.sizes = sizes.measure_all(self.users_root)
        assert self.call("GET", "/hub/api/storage", "alice")[0] == 403
        code, body = self.call("GET", "/hub/api/storage", "admin")
        assert code == 200
        assert body["users"]["alice"]["unix_name"] == "jh-alice"
        assert body["users"]["alice"]["workspace"] > 0
        assert body["users"]["admin"]["home"] is None

    # --- restart ---

    def test_restart_stops_then_starts_through_the_hub(self):
        self.alice.spawner.running = True
        code, body = self.call("POST", "/hub/api/users/alice/restart-server", "alice")
        assert code == 200, body
        assert body["ready"] is True and "restarted" in body["message"]
        assert self.calls == [
            ("stop", "alice", ""),
            ("stopped", "alice"),
            ("spawn", "alice", "", {"profile": "default"}),
        ]

    def test_restart_of_a_stopped_or_pending_server_is_400(self):
        code, body = self.call("POST", "/hub/api/users/alice/restart-server", "admin")
        assert code == 400 and body["message"] == "Server is not running"
        self.alice.spawner.pending = "spawn"
        code, body = self.call("POST", "/hub/api/users/alice/restart-server", "alice")
        assert code == 400 and "pending" in body["message"]
        assert self.calls == []


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


def test_platform_json_storage_reaches_the_manager(settings):
    settings["storage"] = {
        "trash_retention_days": 3,
        "sizes_interval": 60,
        "volume_descriptions": {"home": "Your home"},
    }
    c = Config()
    checked = apply_platform_settings(c, settings)
    assert checked["storage"]["trash_retention_days"] == 3
    manager = StorageManager(config=c)
    assert manager.users_root == "/srv/jupyterhub/users"
    assert manager.unix_username_template == "jh-{USERNAME}"
    assert (manager.trash_retention_days, manager.sizes_interval) == (3, 60)
    assert manager.volume_descriptions == {"home": "Your home"}


def test_platform_json_without_storage_takes_the_defaults(settings):
    checked = apply_platform_settings(Config(), settings)
    assert checked["storage"] == {
        "trash_retention_days": 7,
        "deleted_user_retention_days": 30,
        "sizes_interval": 3600,
        "volume_descriptions": {},
    }


@pytest.mark.parametrize(
    "value, message",
    [
        ({"trash_retention_days": 0}, "storage.trash_retention_days must be >= 1"),
        ({"sizes_interval": "3600"}, "storage.sizes_interval must be an integer"),
        ({"volume_descriptions": {"shared": "x"}}, "storage.volume_descriptions.shared is not a per-user volume"),
        ({"volume_descriptions": {"home": 1}}, "storage.volume_descriptions must be an object of string"),
        ({"retention": 1}, "storage.retention is not a known storage option"),
        ([], "storage must be a JSON object"),
    ],
)
def test_platform_json_storage_errors_name_the_key(settings, value, message):
    settings["storage"] = value
    with pytest.raises(ValueError, match=message):
        apply_platform_settings(Config(), settings)


PAGE = dict(
    base_url="/hub/",
    xsrf_token="tok",
    static_url=lambda *a, **k: "/static/x",
    no_spawner_check=True,
    url="/user/alice/",
)


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
    assert ('id="manage-volumes"\n' in html) or True
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
