"""Batch name checking, the authenticator's password and deletion hooks, handler wiring."""

import asyncio
import os
from types import SimpleNamespace

import pytest

from hub_ext.accounts.rules import MAX_BATCH, check_batch, signup_state

from .fakes import FakeSystem


def _check(raw, existing=()):
    auth_rule = lambda n: None if n.replace("-", "").isalnum() and n[:1].isalpha() else "bad name"  # noqa: E731
    return check_batch(raw, str.lower, auth_rule, lambda n: n in existing)


def test_batch_ok_and_normalized():
    assert _check(["Alice", "bob"]) == (["alice", "bob"], [])


def test_batch_per_name_errors():
    names, errors = _check(["alice", "ALICE", "b.c", 7, "carol"], existing={"carol"})
    assert names == ["alice"]
    assert errors == [
        {"name": "ALICE", "error": "listed more than once"},
        {"name": "b.c", "error": "bad name"},
        {"name": "7", "error": "not a string"},
        {"name": "carol", "error": "a user of this name already exists"},
    ]


@pytest.mark.parametrize("raw", [[], None, "alice", {"a": 1}])
def test_batch_must_be_a_non_empty_list(raw):
    with pytest.raises(ValueError, match="non-empty list"):
        _check(raw)


def test_batch_size_limit():
    with pytest.raises(ValueError, match=f"at most {MAX_BATCH}"):
        _check([f"u{i}" for i in range(MAX_BATCH + 1)])


def test_signup_states():
    assert signup_state(SimpleNamespace(is_authorized=False), False) == "pending"
    assert signup_state(SimpleNamespace(is_authorized=False), True) == "unauthorized"
    assert signup_state(SimpleNamespace(is_authorized=True), True) == "authorized"


def test_generated_password_is_stored_as_bcrypt_and_authorized(make_authenticator):
    auth = make_authenticator()
    password = auth.new_password()
    assert len(password.split("-")) == 3 and len(password) >= auth.minimum_password_length
    info, created = auth.set_password("alice", password)
    assert created and info.is_authorized and info.password.startswith(b"$2")
    assert password.encode() not in info.password
    assert info.is_valid_password(password)
    info, created = auth.set_password("alice", hashed=auth.hash_password("other-one"))
    assert not created and info.is_valid_password("other-one")


def test_delete_user_disables_the_unix_account(make_authenticator):
    auth = make_authenticator()
    auth.create_user("alice", "long-enough-pw")
    system = FakeSystem(
        users={"jh-alice": (1001, 1001, "/home/jh-alice")},
        groups={"jupyterhub-users": {"jh-alice"}, "docker": {"jh-alice"}, "jupyterhub-sudo": set()},
    )
    auth.command_runner = system
    asyncio.run(auth.delete_user(SimpleNamespace(name="alice")))
    assert auth.get_user("alice") is None
    assert "jh-alice" in system.expired and "jh-alice" not in system.groups["docker"]


def test_delete_user_survives_a_failing_disable(make_authenticator):
    auth = make_authenticator()
    auth.create_user("alice", "long-enough-pw")

    async def broken(argv):
        from hub_ext.process import CommandResult
        return CommandResult(tuple(argv), 1, stderr="boom")

    auth.command_runner = broken
    asyncio.run(auth.delete_user(SimpleNamespace(name="alice")))  # logs, does not raise
    assert auth.get_user("alice") is None


def _with_storage(auth, users_root):
    from traitlets.config import Config

    from hub_ext.storage.service import StorageManager

    c = Config()
    c.StorageManager.users_root = str(users_root)
    manager = StorageManager(config=c)
    auth._storage_manager = lambda: manager  # the hub hands it over (hub_ext.app)


def test_delete_user_archives_the_directories(make_authenticator, tmp_path):
    auth = make_authenticator()
    auth.create_user("alice", "long-enough-pw")
    auth.command_runner = FakeSystem(users={}, groups={})
    (tmp_path / "jh-alice" / "workspace").mkdir(parents=True)
    (tmp_path / "jh-alice" / "workspace" / "secret.txt").write_text("old alice")
    _with_storage(auth, tmp_path)
    asyncio.run(auth.delete_user(SimpleNamespace(name="alice")))
    assert not (tmp_path / "jh-alice").exists()
    (item,) = os.listdir(tmp_path / ".archive")
    assert (tmp_path / ".archive" / item / "workspace" / "secret.txt").read_text() == "old alice"


def test_delete_user_is_refused_when_the_directories_cannot_be_archived(make_authenticator, tmp_path):
    from tornado import web

    auth = make_authenticator()
    auth.create_user("alice", "long-enough-pw")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "jh-alice").symlink_to(tmp_path / "elsewhere")
    _with_storage(auth, tmp_path)
    with pytest.raises(web.HTTPError) as refused:
        asyncio.run(auth.delete_user(SimpleNamespace(name="alice")))
    assert "not deleted" in refused.value.log_message
    assert auth.get_user("alice") is not None and (tmp_path / "jh-alice").is_symlink()


def test_get_handlers_replace_the_get_based_state_changes(make_authenticator):
    from hub_ext.plugin import accounts as h
    from hub_ext.plugin import platform_handlers

    handlers = dict(make_authenticator().get_handlers(None) + platform_handlers())
    assert handlers["/authorize"] is h.AuthorizationPageHandler
    assert handlers["/authorize/([^/]*)"] is h.AuthorizeActionHandler
    assert handlers["/discard/([^/]*)"] is h.DiscardActionHandler
    assert h.AuthorizeActionHandler.get is h._AuthorizationAction.get  # GET only says 405
    assert handlers["/api/platform/users"] is h.BatchCreateUsersHandler
    assert handlers["/api/users/([^/]+)"] is h.PlatformUserAPIHandler


def test_deleting_a_user_whose_server_is_starting_is_a_409_not_a_half_deletion():
    """On a real hub (realhub.py): found by the security matrix, JupyterHub's
    delete ran the authenticator's delete_user (password and unix account gone)
    and then failed with a 500."""
    from hub_ext.accounts import handlers as h

    from .realhub import ADMIN, RealHub

    hub = RealHub([("/api/users/([^/]+)", h.PlatformUserAPIHandler)])
    try:
        hub.add_user(ADMIN, admin=True)
        hub.add_user("bob")
        alice = hub.add_user("alice")
        alice.spawner._spawn_pending = True
        code, body = hub.request("DELETE", "api/users/alice", ADMIN)
        assert code == 409 and "starting" in body["message"], body
        # without the scope the platform adds nothing: JupyterHub's own answer
        assert hub.request("DELETE", "api/users/alice", "bob")[0] == 403
        assert hub.request("DELETE", "api/users/alice", None)[0] == 403
        assert hub.request("GET", "api/users/alice", ADMIN)[0] == 200  # still there
        alice.spawner._spawn_pending = False
        assert hub.request("DELETE", "api/users/alice", ADMIN)[0] == 204
        assert hub.request("GET", "api/users/alice", ADMIN)[0] == 404
    finally:
        hub.close()
