import asyncio
import threading

import bcrypt
import pytest
from nativeauthenticator.orm import UserInfo

from hub_ext.accounts.outcomes import LoginResult, SignupRefused, delay_message
from hub_ext.accounts.rules import SIGNUP_CLOSED_MESSAGE
from hub_ext.accounts.unix_users import HUB_NAME_RULE

from .fakes import FakeClock


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
    authenticator = make_authenticator(enable_signup=False)
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
    authenticator = make_authenticator(password="admin-password", enable_signup=False)
    assert authenticator.enable_signup is False


def test_signup_handler_replaced(make_authenticator):
    from hub_ext.accounts.login_pages import PlatformSignUpHandler

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


def attempt(authenticator, username, password, client):
    return asyncio.run(authenticator.check_login(username, password, None, client))


def test_failed_logins_delay_that_client_not_the_real_user(make_authenticator):
    authenticator = make_authenticator(
        password="admin-password-1", allowed_failed_logins=2, seconds_before_next_try=600
    )
    authenticator.login_throttle.clock = clock = FakeClock()
    for _ in range(2):
        assert attempt(authenticator, "admin", "wrong", "10.0.0.66").result is LoginResult.REFUSED
    delayed = attempt(authenticator, "admin", "admin-password-1", "10.0.0.66")
    assert delayed.result is LoginResult.DELAYED and delayed.wait_seconds == 1
    assert "Try again in 1 second" in delay_message(delayed.wait_seconds)
    # the admin from elsewhere gets in at once
    assert attempt(authenticator, "admin", "admin-password-1", "10.0.0.7").result is LoginResult.OK
    # the delay grows, and an admin clears it
    clock.now += 1
    assert attempt(authenticator, "admin", "wrong", "10.0.0.66").result is LoginResult.REFUSED
    assert attempt(authenticator, "admin", "x", "10.0.0.66").wait_seconds == 2
    assert authenticator.clear_login_delays("ADMIN") > 0
    assert attempt(authenticator, "admin", "admin-password-1", "10.0.0.66").result is LoginResult.OK


def test_unknown_names_are_delayed_like_known_ones(make_authenticator):
    authenticator = make_authenticator(allowed_failed_logins=1, seconds_before_next_try=60)
    assert attempt(authenticator, "nobody", "pw", "10.0.0.1").result is LoginResult.REFUSED
    assert attempt(authenticator, "nobody", "pw", "10.0.0.1").result is LoginResult.DELAYED


def test_unknown_names_cost_one_bcrypt_check_like_known_ones(make_authenticator, monkeypatch):
    authenticator = make_authenticator(password="admin-password-1")
    checks = []
    real_checkpw = bcrypt.checkpw

    def recording_checkpw(password, hashed):
        checks.append(hashed)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", recording_checkpw)
    for name in ("admin", "nobody", "Bad Name!"):
        checks.clear()
        assert attempt(authenticator, name, "wrong-password", "10.0.0.1").result is LoginResult.REFUSED
        assert len(checks) == 1, name
    # the dummy hash has the stored hashes' cost
    assert checks[0][:7] == authenticator.get_user("admin").password[:7]


def test_pending_signup_with_the_right_password_is_told_so(make_authenticator):
    authenticator = make_authenticator()
    authenticator.create_user("alice", "alice-password")
    outcome = attempt(authenticator, "alice", "alice-password", "10.0.0.1")
    assert outcome.result is LoginResult.NOT_AUTHORIZED


def threads_calling(monkeypatch, name: str) -> list:
    """The threads of every later call of ``bcrypt.<name>``."""
    threads = []
    real = getattr(bcrypt, name)

    def recording(*args):
        threads.append(threading.current_thread())
        return real(*args)

    monkeypatch.setattr(bcrypt, name, recording)
    return threads


def test_password_checked_in_a_worker_thread(make_authenticator, monkeypatch):
    authenticator = make_authenticator(password="admin-password-1")
    threads = threads_calling(monkeypatch, "checkpw")
    assert login(authenticator, "admin", "admin-password-1") == "admin"
    assert threads and threads[0] is not threading.main_thread()


# --- signup: bounded fields, a pending cap, a per-address quota, bcrypt in a thread ----


def sign_up(authenticator, name, password="long-enough-pw", client="10.0.0.1", **kw):
    return asyncio.run(authenticator.sign_up(name, password, password, client=client, **kw))


def refusal(authenticator, name, password="long-enough-pw", client="10.0.0.1", **kw):
    with pytest.raises(SignupRefused) as refused:
        sign_up(authenticator, name, password, client, **kw)
    return refused.value


@pytest.mark.parametrize(("field", "value", "words"), [
    ("name", "x" * 200_000, "max 29 characters"),
    ("email", "a@" + "b" * 200_000 + ".org", "at most 128 characters"),
    ("email", "not an address", "not valid"),
    ("password", "p" * 73, "at most 72 bytes"),
    ("password", "short", "at least 8 characters"),
])
def test_every_field_is_bounded_with_a_clear_message(make_authenticator, field, value, words):
    authenticator = make_authenticator()
    args = {"name": "alice", "password": "long-enough-pw", "email": ""}
    args[field] = value
    refused = refusal(authenticator, args["name"], args["password"], email=args["email"])
    assert refused.status == 400 and words in refused.message
    assert authenticator.get_user("alice") is None


def test_taken_name_and_mismatched_confirmation_are_400(make_authenticator):
    authenticator = make_authenticator()
    sign_up(authenticator, "alice")
    assert "already taken" in refusal(authenticator, "alice").message
    with pytest.raises(SignupRefused, match="did not match"):
        asyncio.run(authenticator.sign_up("bob", "long-enough-pw", "other-password"))


def test_pending_signups_are_capped(make_authenticator):
    authenticator = make_authenticator()
    authenticator.signup_max_pending = 2
    sign_up(authenticator, "alice", client="10.0.0.1")
    sign_up(authenticator, "bob", client="10.0.0.2")
    refused = refusal(authenticator, "carol", client="10.0.0.3")
    assert refused.status == 429 and "waiting for approval" in refused.message
    # approving one makes room; the admin's own signup is never capped
    authenticator.get_user("alice").is_authorized = True
    authenticator.db.commit()
    sign_up(authenticator, "carol", client="10.0.0.3")
    assert sign_up(authenticator, "admin", client="10.0.0.4").is_authorized


def test_signups_per_address_are_limited(make_authenticator):
    authenticator = make_authenticator()
    authenticator.signup_quota.limit = 2
    sign_up(authenticator, "alice")
    sign_up(authenticator, "bob")
    refused = refusal(authenticator, "carol")
    assert refused.status == 429 and refused.retry_after > 0
    assert "Too many signups from your address" in refused.message
    sign_up(authenticator, "carol", client="10.0.0.2")


def test_signup_hashes_in_a_worker_thread(make_authenticator, monkeypatch):
    authenticator = make_authenticator()
    threads = threads_calling(monkeypatch, "hashpw")
    info = sign_up(authenticator, "alice", email="alice@example.org")
    assert not info.is_authorized and info.email == "alice@example.org"
    assert threads == [t for t in threads if t is not threading.main_thread()] and threads
