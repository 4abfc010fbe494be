"""PlatformAuthenticator: NativeAuthenticator with the platform's name rule and admin bootstrap.

Admin account:

* ``admin_password_file`` set: at hub start the admin's UserInfo row is
  created or updated with that password (bcrypt, as NativeAuthenticator stores
  it) and authorized. The file is the source of truth: a password changed in
  the UI lasts until the next hub start.
* not set: the admin signs up like anybody else and NativeAuthenticator
  approves the signup at once (admins are in ``get_authed_users``). Until
  the admin has signed up, the signup page stays open for the admin name
  alone even when signup is disabled.

NativeAuthenticator's /authorize, /authorize/<name> and /discard/<name> change
state on GET (no _xsrf); accounts.login_pages.PLATFORM_HANDLERS replaces them with the safe
authorization page of hub_ext.accounts.handlers (POST + _xsrf, only pending
signups can be discarded). Passwords the platform generates (batch creation,
reset) are stored exactly like the admin's: ``set_password``.

Deleting a hub user archives its directories and disables its unix account
(docs/accounts.md). Logins are delayed per account and client address
(hub_ext.accounts.throttle) instead of NativeAuthenticator's lockout; signups are
bounded (fields, pending cap, per-address quota) and hashed off the event loop.
The rules for names, signup forms and the admin's password file are
hub_ext.accounts.rules (pure); this class applies them with its settings.
"""

from __future__ import annotations

import asyncio

from jupyterhub import orm
from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.orm import UserInfo
from tornado import web
from traitlets import Bool, Integer, List, TraitError, Unicode, default, validate

from hub_ext.accounts import passwords, privileges, rules
from hub_ext.accounts import unix_users as accounts
from hub_ext.accounts.login_pages import PLATFORM_HANDLERS
from hub_ext.accounts.outcomes import LoginOutcome, LoginResult, SignupRefused
from hub_ext.accounts.throttle import LoginThrottle, WindowQuota, format_wait
from hub_ext.process import CommandError, run_command
from hub_ext.storage.service import SETTINGS_KEY as STORAGE_SETTINGS_KEY
from hub_ext.web.base import request_client

SIGNUP_WINDOW_SECONDS = 3600


class PlatformAuthenticator(NativeAuthenticator):
    admin_password_file = Unicode(
        None,
        allow_none=True,
        help="""File holding the admin's password (root-only, 0600).

        When set, the admin account (the single name in admin_users) is created
        or reset to this password and authorized at every hub start.
        """,
    ).tag(config=True)

    admin_user = Unicode(
        "admin",
        help="""Hub name of the platform's admin (a valid hub name whose unix name is
        valid too); admin_users is {admin_user} unless configured otherwise.""",
    ).tag(config=True, ansible="jupyterhub_admin")

    unix_username_template = accounts.UnixUsernameTemplate(
        accounts.DEFAULT_UNIX_USERNAME_TEMPLATE,
        help="""Unix account of a hub user; {USERNAME} is the hub name. Must contain
        {USERNAME}, only [a-z0-9_-] otherwise, and give at most 32 characters for a
        29-character hub name. Hub names whose unix name would be invalid are refused
        at signup.""",
    ).tag(config=True, ansible="jupyterhub_unix_username_template")

    password_words = Integer(
        passwords.DEFAULT_WORDS,
        min=passwords.MIN_WORDS,
        max=passwords.MAX_WORDS,
        help="Words in a generated password (batch creation, reset).",
    ).tag(config=True, ansible="jupyterhub_password_words")

    password_delimiter = Unicode(
        passwords.DEFAULT_DELIMITER,
        help="What joins the words of a generated password: 1-3 characters of -_.,:;+=~!@#%^*/| or digits.",
    ).tag(config=True, ansible="jupyterhub_password_delimiter")

    # NativeAuthenticator's own options, declared again with the platform's
    # defaults (upstream's are 0: no delays, empty passwords) and bounds
    enable_signup = Bool(
        True, help="Self-registration with admin approval; False: only the admin creates users."
    ).tag(config=True, ansible="jupyterhub_signup_enabled")

    allowed_failed_logins = Integer(
        5,
        min=0,
        help="""Failed logins one client address may make for one account before
        its next try waits 1 s, then 2 s, 4 s ... (login delays, not a lockout;
        the address as a whole gets 20 times as many). 0 turns the delays off.""",
    ).tag(config=True, ansible="jupyterhub_allowed_failed_logins")

    seconds_before_next_try = Integer(
        600, min=0, help="The longest login delay in seconds (0 turns the delays off)."
    ).tag(config=True, ansible="jupyterhub_seconds_before_next_try")

    minimum_password_length = Integer(
        8, min=1, help="Minimum password length at signup and password change."
    ).tag(config=True, ansible="jupyterhub_minimum_password_length")

    @default("admin_users")
    def _default_admin_users(self):
        return {self.admin_user}

    @validate("admin_user")
    def _valid_admin_user(self, proposal):
        try:
            name = accounts.check_hub_name(proposal["value"])
            accounts.unix_name(name, self.unix_username_template)
        except accounts.InvalidNameError as e:
            raise TraitError(f"admin_user {proposal['value']!r} is invalid: {e}") from None
        return name

    @validate("password_delimiter")
    def _valid_password_delimiter(self, proposal):
        try:
            return passwords.check_delimiter(proposal["value"])
        except passwords.PasswordPolicyError as e:
            raise TraitError(str(e)) from None

    platform_group = Unicode(
        accounts.DEFAULT_PLATFORM_GROUP,
        help="Unix group of platform accounts; only those are disabled on hub user deletion.",
    ).tag(config=True)

    managed_unix_groups = List(
        Unicode(),
        [privileges.DEFAULT_DOCKER_UNIX_GROUP, privileges.DEFAULT_SUDO_UNIX_GROUP],
        help="Privilege unix groups a disabled account is removed from.",
    ).tag(config=True)

    signup_max_pending = Integer(
        100,
        min=0,
        help="""Signups waiting for approval at most; further signups are refused
        (429) until an admin approves or discards some. 0: no limit.""",
    ).tag(config=True, ansible="jupyterhub_signup_max_pending")

    signups_per_address_per_hour = Integer(
        30,
        min=0,
        help="""Signups one client address may submit per hour (the form passed its
        checks, so a password was hashed); more are refused (429). 0: no limit.""",
    ).tag(config=True, ansible="jupyterhub_signups_per_address_per_hour")

    # seam for unit tests
    command_runner = staticmethod(run_command)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # what the operator configured; enable_signup itself may be opened
        # temporarily for the admin's own first signup
        self.signup_configured = self.enable_signup
        # NativeAuthenticator's own lockout is replaced; its two traits keep
        # their names with the delays' meaning (docs/accounts.md)
        self.login_throttle = LoginThrottle(self.allowed_failed_logins, self.seconds_before_next_try)
        self.signup_quota = WindowQuota(self.signups_per_address_per_hour, SIGNUP_WINDOW_SECONDS)
        if self.admin_password_file:
            self.sync_admin_from_password_file()
        self._refresh_signup()

    # --- names ---

    def name_problem(self, username: str) -> str | None:
        """Why username cannot be a hub user, or None."""
        return rules.name_problem(username, self.unix_username_template)

    def validate_username(self, username):
        return self.name_problem(username) is None and super().validate_username(username)

    def signup_problem(self, raw_username: str) -> str | None:
        """The message for a signup refused although its form was consistent."""
        username = self.normalize_username(raw_username)
        problem = self.name_problem(username)
        if problem:
            return problem
        if not self.signup_configured and username != self.admin_name:
            return rules.SIGNUP_CLOSED_MESSAGE
        return None

    def signup_form_problem(
        self, raw_username: str, password: str, confirmation: str, email: str
    ) -> str | None:
        """Why this signup form is refused (cheapest checks first), or None."""
        problem = self.signup_problem(raw_username) or rules.form_problem(
            password, confirmation, email, self.minimum_password_length,
            is_common=lambda p: self.check_common_password and self.is_password_common(p),
        )
        if problem:
            return problem
        if self.user_exists(self.normalize_username(raw_username)):
            return "This username is already taken. Please choose another one."
        return None

    def pending_signups(self) -> int:
        """Signups never approved that have no hub user yet (what discard may remove)."""
        waiting = {
            name for (name,) in
            self.db.query(UserInfo.username).filter(UserInfo.is_authorized.isnot(True))
        }
        if not waiting:
            return 0
        users = self.db.query(orm.User.name).filter(orm.User.name.in_(waiting)).count()
        return len(waiting) - users

    async def sign_up(
        self, raw_username: str, password: str, confirmation: str, *,
        email: str = "", has_2fa: bool = False, client: str = "local",
    ) -> UserInfo:
        """Store a signup (pending, or approved for the admin); raise SignupRefused.

        Order: the form (400), the client's hourly quota and the pending cap
        (429), then bcrypt in a worker thread.
        """
        problem = self.signup_form_problem(raw_username, password, confirmation, email)
        if problem:
            raise SignupRefused(problem)
        username = self.normalize_username(raw_username)
        is_admin = username == self.admin_name
        wait = self.signup_quota.wait(client)
        if wait > 0:
            raise SignupRefused(
                f"Too many signups from your address. Try again in {format_wait(wait)}.",
                429, wait,
            )
        if (not is_admin and self.signup_max_pending
                and self.pending_signups() >= self.signup_max_pending):
            raise SignupRefused(
                "Too many signups are waiting for approval by an administrator; "
                "please try again later.",
                429,
            )
        self.signup_quota.record(client)
        hashed = await asyncio.to_thread(self.hash_password, password)
        if self.user_exists(username):  # signed up by somebody else meanwhile
            raise SignupRefused("This username is already taken. Please choose another one.")
        info = UserInfo(
            username=username, password=hashed, email=email or None, has_2fa=has_2fa,
            # admins are pre-authorized, as upstream does
            is_authorized=username in self.admin_users,
        )
        self.db.add(info)
        self.db.commit()
        self._refresh_signup()
        return info

    # --- passwords ---

    async def authenticate(self, handler, data):
        """Check a login; the outcome also goes to ``handler.login_outcome`` for its message."""
        username = self.normalize_username(data.get("username", ""))
        client = request_client(handler) if handler is not None else "local"
        outcome = await self.check_login(
            username, data.get("password", ""), data.get("2fa"), client
        )
        if handler is not None:
            handler.login_outcome = outcome
        return username if outcome.result is LoginResult.OK else None

    async def check_login(self, username: str, password: str, token, client: str) -> LoginOutcome:
        """One login attempt of ``client`` for ``username`` (normalized).

        Delayed clients get no password check. Every other attempt costs one
        bcrypt check, also for unknown names (a dummy hash), so names cannot be
        enumerated by time. Wrong passwords count towards the delays.
        """
        # unknown invalid names share one key: their length is the client's choice
        account = username if accounts.is_valid_hub_name(username) else "(invalid name)"
        wait = self.login_throttle.wait(account, client)
        if wait > 0:
            return LoginOutcome(LoginResult.DELAYED, wait)
        info = self.get_user(username) if account == username else None
        matches = await passwords.password_matches(info.password if info else None, password)
        if info is not None and matches and info.has_2fa:
            matches = info.is_valid_token(token)
        if not matches:
            self.login_throttle.failed(account, client)
            return LoginOutcome(LoginResult.REFUSED)
        if not info.is_authorized:
            return LoginOutcome(LoginResult.NOT_AUTHORIZED)
        self.login_throttle.succeeded(account, client)
        return LoginOutcome(LoginResult.OK)

    def clear_login_delays(self, username: str) -> int:
        """Forget every failed login counted against ``username`` (an admin's action)."""
        return self.login_throttle.clear_account(self.normalize_username(username))

    def is_password_strong(self, password):
        # longer passwords make bcrypt raise, i.e. a 500 page
        if len(password.encode()) > passwords.MAX_PASSWORD_BYTES:
            return False
        return super().is_password_strong(password)

    # --- admin account ---

    @property
    def admin_name(self) -> str | None:
        """The platform's single admin (admin_users holds one name)."""
        return next(iter(sorted(self.admin_users)), None)

    def read_admin_password(self) -> str:
        with open(self.admin_password_file, encoding="utf-8") as f:
            password = rules.admin_password_from_file_text(f.read(), self.admin_password_file)
        if len(password) < self.minimum_password_length:
            self.log.warning(
                "Admin password from %s is shorter than minimum_password_length=%d",
                self.admin_password_file,
                self.minimum_password_length,
            )
        return password

    def new_password(self) -> str:
        """A fresh mnemonic password that passes this site's password rules."""
        return passwords.generate_password(
            self.password_words, self.password_delimiter, self.minimum_password_length
        )

    hash_password = staticmethod(passwords.hash_password)

    def set_password(
        self, username: str, password: str | None = None, hashed: bytes | None = None,
        commit: bool = True,
    ) -> tuple[UserInfo, bool]:
        """Create or update ``username``'s UserInfo row, authorized, with this password.

        Give ``password`` or its ``hashed`` form (hashing can then happen off
        the event loop). Returns (row, created). Only the hash is stored.
        """
        info = self.get_user(username)
        created = info is None
        if hashed is None:
            hashed = self.hash_password(password)
        if created:
            info = UserInfo(username=username, password=hashed, is_authorized=True)
            self.db.add(info)
        else:
            info.password = hashed
            info.is_authorized = True
        if commit:
            self.db.commit()
        return info, created

    def sync_admin_from_password_file(self):
        """Create or update the admin's UserInfo row from admin_password_file."""
        if self.admin_name is None:
            raise ValueError("admin_password_file is set but admin_users is empty")
        password = self.read_admin_password()
        info = self.get_user(self.admin_name)
        if info is None:
            self.set_password(self.admin_name, password)
            self.log.info(
                "Created admin account %s from %s", self.admin_name, self.admin_password_file
            )
        elif not info.is_valid_password(password):
            # rehash only on change: the hash is salted, so it would always differ
            self.set_password(self.admin_name, password)
            self.log.info(
                "Reset password of admin %s from %s", self.admin_name, self.admin_password_file
            )
        else:
            info.is_authorized = True
            self.db.commit()

    def admin_signup_pending(self) -> bool:
        """True while the admin must still sign up (no password file, no account yet)."""
        return (
            not self.admin_password_file
            and self.admin_name is not None
            and self.get_user(self.admin_name) is None
        )

    def _refresh_signup(self):
        # NativeAuthenticator's handlers and login page read enable_signup directly
        self.enable_signup = self.signup_configured or self.admin_signup_pending()

    def create_user(self, username, password, **kwargs):
        if not self.signup_configured and self.normalize_username(username) != self.admin_name:
            return None
        user_info = super().create_user(username, password, **kwargs)
        self._refresh_signup()
        return user_info

    def _storage_manager(self):
        # handed to the handlers by hub_ext.app.PlatformHub; absent in unit tests
        return getattr(self.parent, "tornado_settings", {}).get(STORAGE_SETTINGS_KEY)

    async def delete_user(self, user):
        """Archive the user's directories, forget the password, disable the unix account.

        JupyterHub stops the server first and awaits this. The directories go
        to the admin-only archive (docs/accounts.md), so a later user of the
        same name starts empty; if they cannot be moved, the user is not deleted.
        """
        manager = self._storage_manager()
        if manager is not None and accounts.is_valid_hub_name(user.name):
            try:
                await manager.release_quota(user.name)
                manager.archive_user(user.name)
            except (OSError, ValueError, RuntimeError) as e:  # UnsafePathError is a ValueError
                self.log.error("Could not archive the directories of %s: %s", user.name, e)
                raise web.HTTPError(
                    500,
                    f"The directories of {user.name} could not be moved to the archive; "
                    "the user was not deleted (see the hub log).",
                ) from None
        super().delete_user(user)
        self._refresh_signup()
        try:
            unix = accounts.unix_name(user.name, self.unix_username_template)
            if await accounts.disable_unix_user(
                unix, self.managed_unix_groups, self.platform_group, runner=self.command_runner
            ):
                self.log.info("Disabled unix account %s of deleted hub user %s", unix, user.name)
        except (accounts.InvalidNameError, accounts.UnixAccountError, CommandError) as e:
            # the hub user is gone either way; say loudly what is left behind
            self.log.error("Could not disable the unix account of %s: %s", user.name, e)

    def get_handlers(self, app):
        """NativeAuthenticator's pages, with the platform's replacements.

        The platform's own pages and services are wired by hub_ext.app.PlatformHub;
        a plain ``jupyterhub`` would run without them, so it is refused here.
        """
        if app is not None and not getattr(app, "wires_platform_features", False):
            raise RuntimeError(
                "PlatformAuthenticator needs the platform's hub: run `platform-hub` "
                "(hub_ext.app.PlatformHub) instead of `jupyterhub`, or the platform's "
                "pages, culling, storage sizes, activity sampling and GPU detection are missing"
            )
        return [
            (path, PLATFORM_HANDLERS.get(handler, handler))
            for path, handler in super().get_handlers(app)
        ]
