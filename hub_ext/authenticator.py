"""PlatformAuthenticator: NativeAuthenticator with the platform's name rule and admin bootstrap.

Admin account:

* ``admin_password_file`` set: at hub start the admin's UserInfo row is
  created or updated with that password (bcrypt, as NativeAuthenticator stores
  it) and authorized. The file is the source of truth: a password changed in
  the UI lasts until the next hub start, and the admin cannot be locked out
  for good.
* not set: the admin signs up like anybody else and NativeAuthenticator
  approves the signup at once (admins are in ``get_authed_users``). Until
  the admin has signed up, the signup page stays open for the admin name
  alone even when signup is disabled.

NativeAuthenticator's /authorize, /authorize/<name> and /discard/<name> change
state on GET (no _xsrf); PLATFORM_HANDLERS replaces them with the safe
authorization page of hub_ext.handlers.accounts (POST + _xsrf, only pending
signups can be discarded). Passwords the platform generates (batch creation,
reset) are stored exactly like the admin's: ``set_password``.

Deleting a hub user disables its unix account (docs/accounts.md).
"""

from __future__ import annotations

import asyncio

import bcrypt
from jinja2 import ChoiceLoader, FileSystemLoader
from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.handlers import TEMPLATE_DIR as NATIVE_TEMPLATE_DIR
from nativeauthenticator.handlers import (
    AuthorizationAreaHandler,
    DiscardHandler,
    LoginHandler,
    SignUpHandler,
    ToggleAuthorizationHandler,
)
from nativeauthenticator.orm import UserInfo
from traitlets import Integer, List, Unicode

from . import accounts, passwords, privileges
from .handlers import platform_handlers
from .handlers.accounts import (
    AuthorizationPageHandler,
    AuthorizeActionHandler,
    DiscardActionHandler,
)
from .process import CommandError, run_command

# bcrypt (>= 4.1/5.0) refuses longer passwords with ValueError
BCRYPT_MAX_PASSWORD_BYTES = 72

SIGNUP_CLOSED_MESSAGE = "Signup is closed. Only the administrator account can be created now."


class PlatformSignUpHandler(SignUpHandler):
    """NativeAuthenticator's signup page, saying why a username was refused.

    Upstream shows one generic "Something went wrong" for every refusal;
    only the message is replaced, the signup flow itself is upstream's.
    """

    def get_result_message(
        self,
        user,
        assume_user_is_human,
        username_already_taken,
        confirmation_matches,
        user_is_admin,
    ):
        alert, message = super().get_result_message(
            user,
            assume_user_is_human,
            username_already_taken,
            confirmation_matches,
            user_is_admin,
        )
        refused_for_other_reason = (
            not assume_user_is_human or username_already_taken or not confirmation_matches
        )
        if user is None and not refused_for_other_reason:
            username = self.get_body_argument("username", "", strip=False)
            problem = self.authenticator.signup_problem(username)
            if problem:
                message = problem
        return alert, message


def _add_native_templates(env) -> None:
    """NativeAuthenticator adds its template dir to the async jinja env only."""
    if getattr(env, "_native_templates_added", False):
        return
    env.loader = ChoiceLoader([env.loader, FileSystemLoader([NATIVE_TEMPLATE_DIR])])
    env._native_templates_added = True


class PlatformLoginHandler(LoginHandler):
    """NativeAuthenticator's login page, working on JupyterHub 6.

    Upstream 1.3.0's post() times the login with ``self.statsd``, which
    JupyterHub 6 removed (every login was a 500), and its ``_render`` rejects the
    keywords JupyterHub 6 passes when it renders a form error. The flow is
    upstream's: log in, or say whether the account still awaits approval.
    """

    _render_sync = False

    def _render(self, login_error=None, username=None, sync=False, **_ignored):
        # write_error renders the form synchronously (sync=True: a login POST
        # without a valid _xsrf); upstream's _render drops the flag, the page
        # became an un-awaited coroutine and the 403 went out without a body
        self._render_sync = sync
        try:
            return super()._render(login_error=login_error, username=username)
        finally:
            self._render_sync = False

    def render_template(self, name, sync=False, **ns):
        sync = sync or self._render_sync
        if sync:
            _add_native_templates(self.settings["jinja2_env_sync"])
        return super().render_template(name, sync=sync, **ns)

    async def post(self):
        data = {
            arg: self.get_body_argument(arg, strip=False)
            for arg in self.request.body_arguments
            if arg != "_xsrf"
        }
        user = await self.login_user(data)
        if user:
            self._jupyterhub_user = user
            self.redirect(self.get_next_url(user))
            return
        username = data.get("username", "")
        error = "Invalid username or password."
        info = self.authenticator.get_user(username)
        if (
            info is not None
            and not info.is_authorized
            and await password_matches(info, data.get("password", ""))
        ):
            error = f"User {username} has not been authorized by an administrator yet."
        self.finish(await self._render(login_error=error, username=username))


async def password_matches(info: UserInfo, password: str) -> bool:
    """NativeAuthenticator's bcrypt check, in a worker thread.

    Upstream checks on the hub's event loop: ~0.2 s of CPU per login during
    which no other request is served (50 logins at once queued for ~24 s).
    bcrypt releases the GIL, so checks also run side by side on several cores.
    """
    encoded = password.encode()
    if len(encoded) > BCRYPT_MAX_PASSWORD_BYTES:
        return False  # bcrypt >= 5 raises on these; no stored password is that long
    return await asyncio.to_thread(bcrypt.checkpw, encoded, info.password)


# upstream handler -> its platform replacement
PLATFORM_HANDLERS = {
    SignUpHandler: PlatformSignUpHandler,
    LoginHandler: PlatformLoginHandler,
    # state changes on GET upstream: replaced by POST + _xsrf handlers
    AuthorizationAreaHandler: AuthorizationPageHandler,
    ToggleAuthorizationHandler: AuthorizeActionHandler,
    DiscardHandler: DiscardActionHandler,
}


class PlatformAuthenticator(NativeAuthenticator):
    admin_password_file = Unicode(
        None,
        allow_none=True,
        help="""File holding the admin's password (root-only, 0600).

        When set, the admin account (the single name in admin_users) is created
        or reset to this password and authorized at every hub start.
        """,
    ).tag(config=True)

    unix_username_template = Unicode(
        accounts.DEFAULT_UNIX_USERNAME_TEMPLATE,
        help="""Unix account template, as PlatformSpawner.unix_username_template.

        Hub names whose unix name would be invalid (too long) are refused at signup.
        """,
    ).tag(config=True)

    password_words = Integer(
        passwords.DEFAULT_WORDS,
        help="Words in a generated password (batch creation, reset), 3-10.",
    ).tag(config=True)

    password_delimiter = Unicode(
        passwords.DEFAULT_DELIMITER,
        help="What joins the words of a generated password (1-3 characters, e.g. '-').",
    ).tag(config=True)

    platform_group = Unicode(
        accounts.DEFAULT_PLATFORM_GROUP,
        help="Unix group of platform accounts; only those are disabled on hub user deletion.",
    ).tag(config=True)

    managed_unix_groups = List(
        Unicode(),
        [privileges.DEFAULT_DOCKER_UNIX_GROUP, privileges.DEFAULT_SUDO_UNIX_GROUP],
        help="Privilege unix groups a disabled account is removed from.",
    ).tag(config=True)

    # seam for unit tests
    command_runner = staticmethod(run_command)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        passwords.check_words(self.password_words)
        passwords.check_delimiter(self.password_delimiter)
        # what the operator configured; enable_signup itself may be opened
        # temporarily for the admin's own first signup
        self.signup_configured = self.enable_signup
        if self.admin_password_file:
            self.sync_admin_from_password_file()
        self._refresh_signup()

    # --- names ---

    def name_problem(self, username: str) -> str | None:
        """Why username cannot be a hub user, or None."""
        try:
            accounts.unix_name(username, self.unix_username_template)
        except accounts.InvalidNameError:
            if not accounts.is_valid_hub_name(username):
                return accounts.HUB_NAME_RULE
            return (
                f"Username {username!r} is too long for this site's unix account names."
            )
        return None

    def validate_username(self, username):
        return self.name_problem(username) is None and super().validate_username(username)

    def signup_problem(self, raw_username: str) -> str | None:
        """The message for a signup refused although its form was consistent."""
        username = self.normalize_username(raw_username)
        problem = self.name_problem(username)
        if problem:
            return problem
        if not self.signup_configured and username != self.admin_name:
            return SIGNUP_CLOSED_MESSAGE
        return None

    # --- passwords ---

    async def authenticate(self, handler, data):
        """NativeAuthenticator.authenticate with the bcrypt check off the event loop
        (upstream's flow otherwise: unknown, blocked, unauthorized or wrong
        password -> None, a failed attempt counted)."""
        username = self.normalize_username(data.get("username", ""))
        info = self.get_user(username)
        if not info:
            return None
        if self.allowed_failed_logins and self.is_blocked(username):
            return None
        validations = [info.is_authorized, await password_matches(info, data.get("password", ""))]
        if info.has_2fa:
            validations.append(info.is_valid_token(data.get("2fa")))
        if all(validations):
            self.successful_login(username)
            return username
        self.add_login_attempt(username)
        return None

    def is_password_strong(self, password):
        # longer passwords make bcrypt raise, i.e. a 500 page
        if len(password.encode()) > BCRYPT_MAX_PASSWORD_BYTES:
            return False
        return super().is_password_strong(password)

    # --- admin account ---

    @property
    def admin_name(self) -> str | None:
        """The platform's single admin (admin_users holds one name)."""
        return next(iter(sorted(self.admin_users)), None)

    def read_admin_password(self) -> str:
        with open(self.admin_password_file, encoding="utf-8") as f:
            # files written by Ansible/editors end in a newline; it is not part of the password
            password = f.read().rstrip("\r\n")
        if not password:
            raise ValueError(f"admin_password_file {self.admin_password_file} is empty")
        if len(password.encode()) > BCRYPT_MAX_PASSWORD_BYTES:
            raise ValueError(
                f"admin password in {self.admin_password_file} is longer than "
                f"{BCRYPT_MAX_PASSWORD_BYTES} bytes (bcrypt's limit)"
            )
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

    @staticmethod
    def hash_password(password: str) -> bytes:
        """bcrypt, as NativeAuthenticator stores it (slow: ~0.2 s)."""
        return bcrypt.hashpw(password.encode(), bcrypt.gensalt())

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

    async def delete_user(self, user):
        """Forget the hub user's password and disable its unix account.

        JupyterHub stops the server first and awaits this. The unix account
        and the user's directories are kept (docs/accounts.md): purging data
        is an explicit admin action.
        """
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
        handlers = [
            (path, PLATFORM_HANDLERS.get(handler, handler))
            for path, handler in super().get_handlers(app)
        ]
        # the platform's own pages and APIs (app None, in tests: nothing started)
        return handlers + platform_handlers(app, parent=self)
