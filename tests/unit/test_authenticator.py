import asyncio
import threading

import bcrypt
import pytest
from jupyterhub import orm
from nativeauthenticator.orm import UserInfo
from traitlets.config import Config

from hub_ext.accounts import HUB_NAME_RULE
from hub_ext.authenticator import SIGNUP_CLOSED_MESSAGE, PlatformAuthenticator
from hub_ext.config import apply_platform_settings


@pytest.fixture
def make_authenticator(settings, tmp_path):
    db = orm.new_session_factory("sqlite://")()

    def make(password=None, **overrides):
        settings.update(overrides)
        if password is not None:
            path = tmp_path / "admin_password"
            path.write_text(password + "\n")
            settings["admin_password_file"] = str(path)
        c = Config()
        apply_platform_settings(c, settings)
        return PlatformAuthenticator(config=c, db=db)

    make.db = db
    return make


@pytest.mark.parametrize("name", ["alice", "bob-2", "x" * 29])
def test_valid_names(make_authenticator, name):
    assert make_authenticator().validate_username(name)


@pytest.mark.parametrize("name", ["Alice", "1x", "x" * 30, "a b", "a/b", "a.b", "-a"])
def test_invalid_names_with_clear_message(make_authenticator, name):
    authenticator = make_authenticator()
    assert not authenticator.validate_username(name)
    assert authenticator.name_problem(name) == HUB_NAME_RULE


def test_name_too_long_for_template(make_authenticator):
    authenticator = make_authenticator(unix_username_template="jupyterhub-user-{USERNAME}")
    assert not authenticator.validate_username("x" * 20)
    assert "too long" in authenticator.name_problem("x" * 20)


def test_signup_creates_unapproved_user_and_admin_is_approved(make_authenticator):
    authenticator = make_authenticator()
    alice = authenticator.create_user("alice", "long-enough-pw")
    assert alice is not None and not alice.is_authorized
    admin = authenticator.create_user("admin", "long-enough-pw")
    assert admin.is_authorized  # admins are pre-authorized by NativeAuthenticator
    assert authenticator.create_user("Bad.Name", "long-enough-pw") is None
    assert authenticator.create_user("bob", "short") is None  # minimum_password_length=8


def test_overlong_password_refused_not_crashing(make_authenticator):
    authenticator = make_authenticator()
    assert authenticator.create_user("alice", "x" * 73) is None


def test_admin_password_file_creates_and_resets_admin(make_authenticator):
    authenticator = make_authenticator(password="first-password")
    info = authenticator.get_user("admin")
    assert info.is_authorized and info.is_valid_password("first-password")
    assert info.password.startswith(b"$2")  # bcrypt, as NativeAuthenticator stores it

    # somebody unauthorizes the admin and changes its password in the UI
    info.is_authorized = False
    authenticator.change_password("admin", "changed-in-ui")
    make_authenticator.db.commit()

    # next hub start: the file wins again
    authenticator = make_authenticator(password="second-password")
    info = authenticator.get_user("admin")
    assert info.is_authorized
    assert info.is_valid_password("second-password")
    assert not info.is_valid_password("changed-in-ui")


def test_admin_password_unchanged_keeps_hash(make_authenticator):
    make_authenticator(password="same-password")
    stored = make_authenticator.db.query(UserInfo).one().password
    authenticator = make_authenticator(password="same-password")
    assert authenticator.get_user("admin").password == stored


def test_empty_admin_password_file_is_an_error(make_authenticator):
    with pytest.raises(ValueError, match="is empty"):
        make_authenticator(password="")


def test_admin_can_sign_up_while_signup_disabled(make_authenticator):
    authenticator = make_authenticator(signup_enabled=False)
    # open for the admin's first signup only
    assert authenticator.enable_signup is True
    assert authenticator.create_user("alice", "long-enough-pw") is None
    assert authenticator.signup_problem("alice") == SIGNUP_CLOSED_MESSAGE
    admin = authenticator.create_user("admin", "long-enough-pw")
    assert admin is not None and admin.is_authorized
    # closed once the admin exists
    assert authenticator.enable_signup is False
    assert authenticator.create_user("bob", "long-enough-pw") is None


def test_signup_disabled_with_password_file_stays_closed(make_authenticator):
    authenticator = make_authenticator(password="admin-password", signup_enabled=False)
    assert authenticator.enable_signup is False


def test_signup_handler_replaced(make_authenticator):
    from hub_ext.authenticator import PlatformSignUpHandler

    handlers = dict(make_authenticator().get_handlers(None))
    assert handlers["/signup"] is PlatformSignUpHandler
    assert "/login" in handlers and "/authorize" in handlers


# --- login: NativeAuthenticator's rules, bcrypt off the event loop ----------------------


def login(authenticator, username, password):
    return asyncio.run(authenticator.authenticate(None, {"username": username, "password": password}))


def test_login_rules(make_authenticator):
    authenticator = make_authenticator(password="admin-password-1")
    authenticator.create_user("alice", "alice-password")  # signed up, not approved yet
    assert login(authenticator, "admin", "admin-password-1") == "admin"
    assert login(authenticator, "admin", "wrong-password") is None
    assert login(authenticator, "alice", "alice-password") is None  # awaits approval
    assert login(authenticator, "nobody", "whatever-pass") is None
    assert login(authenticator, "admin", "x" * 100) is None  # over bcrypt's limit: refused, no error
    assert asyncio.run(authenticator.authenticate(None, {"username": "admin"})) is None


def test_failed_logins_still_block(make_authenticator):
    authenticator = make_authenticator(password="admin-password-1")
    authenticator.allowed_failed_logins = 2
    authenticator.seconds_before_next_try = 600
    for _ in range(2):
        assert login(authenticator, "admin", "wrong-password") is None
    assert login(authenticator, "admin", "admin-password-1") is None  # blocked for now


def test_password_checked_in_a_worker_thread(make_authenticator, monkeypatch):
    authenticator = make_authenticator(password="admin-password-1")
    threads = []
    real_checkpw = bcrypt.checkpw

    def recording_checkpw(password, hashed):
        threads.append(threading.current_thread())
        return real_checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", recording_checkpw)
    assert login(authenticator, "admin", "admin-password-1") == "admin"
    assert threads and threads[0] is not threading.main_thread()
