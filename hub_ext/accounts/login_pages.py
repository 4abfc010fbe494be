"""The login and signup pages: NativeAuthenticator's, fixed and with the platform's rules.

HTTP only: what a login or signup comes to is decided by PlatformAuthenticator
(``check_login``, ``sign_up``) and described by hub_ext.accounts.outcomes.
``PLATFORM_HANDLERS`` maps each upstream handler to its replacement;
PlatformAuthenticator.get_handlers applies it.
"""

from __future__ import annotations

import math

from jinja2 import ChoiceLoader, FileSystemLoader
from nativeauthenticator.handlers import TEMPLATE_DIR as NATIVE_TEMPLATE_DIR
from nativeauthenticator.handlers import (
    AuthorizationAreaHandler,
    DiscardHandler,
    LoginHandler,
    SignUpHandler,
    ToggleAuthorizationHandler,
)
from nativeauthenticator.orm import UserInfo
from tornado import web

from hub_ext.accounts.handlers import (
    AuthorizationPageHandler,
    AuthorizeActionHandler,
    DiscardActionHandler,
)
from hub_ext.accounts.outcomes import (
    LOGIN_FAILED_MESSAGE,
    LoginOutcome,
    LoginResult,
    SignupRefused,
    delay_message,
)
from hub_ext.web.base import request_client


class PlatformSignUpHandler(SignUpHandler):
    """NativeAuthenticator's signup page with the platform's checks.

    Every refusal answers 4xx with a sentence on the page (upstream: 200 and
    "Something went wrong"); the password is hashed in a worker thread
    (upstream hashed on the event loop: 30 signups at once stalled the hub for
    seconds). The rules are ``PlatformAuthenticator.sign_up``'s. Upstream's
    reCAPTCHA and e-mail self-approval are not offered (the platform sets neither).
    """

    async def post(self):
        auth = self.authenticator
        if not auth.enable_signup:
            raise web.HTTPError(404)
        form = {
            field: self.get_body_argument(field, "", strip=False)
            for field in ("username", "signup_password", "signup_password_confirmation",
                          "email", "2fa")
        }
        try:
            info = await auth.sign_up(
                form["username"],
                form["signup_password"],
                form["signup_password_confirmation"],
                email=form["email"],
                has_2fa=bool(form["2fa"]),
                client=request_client(self),
            )
        except SignupRefused as refused:
            self.set_status(refused.status)
            if refused.retry_after:
                self.set_header("Retry-After", str(math.ceil(refused.retry_after)))
            await self._finish_page("alert-danger", refused.message)
            return
        if info.is_authorized:  # the admin's own first signup
            alert = "alert-success"
            message = ("The signup was successful! You can now go to the home page "
                       "and log in to the system.")
        else:
            alert, message = "alert-info", "Your information has been sent to the admin."
        await self._finish_page(alert, message, info)

    async def _finish_page(self, alert: str, message: str, info: UserInfo | None = None):
        auth = self.authenticator
        html = await self.render_template(
            "signup.html",
            ask_email=auth.ask_email_on_signup,
            result_message=message,
            alert=alert,
            two_factor_auth=auth.allow_2fa,
            two_factor_auth_user=bool(info and info.has_2fa),
            two_factor_auth_value=info.otp_secret if info else "",
            recaptcha_key=None,
            tos=auth.tos,
        )
        self.finish(html)


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
        # what PlatformAuthenticator.authenticate found (one password check per attempt)
        outcome = getattr(self, "login_outcome", LoginOutcome(LoginResult.REFUSED))
        username = data.get("username", "")
        if outcome.result is LoginResult.DELAYED:
            self.set_status(429)
            self.set_header("Retry-After", str(math.ceil(outcome.wait_seconds)))
            error = delay_message(outcome.wait_seconds)
        elif outcome.result is LoginResult.NOT_AUTHORIZED:
            error = f"User {username} has not been authorized by an administrator yet."
        else:
            error = LOGIN_FAILED_MESSAGE
        self.finish(await self._render(login_error=error, username=username))


# upstream handler -> its platform replacement
PLATFORM_HANDLERS = {
    SignUpHandler: PlatformSignUpHandler,
    LoginHandler: PlatformLoginHandler,
    # state changes on GET upstream: replaced by POST + _xsrf handlers
    AuthorizationAreaHandler: AuthorizationPageHandler,
    ToggleAuthorizationHandler: AuthorizeActionHandler,
    DiscardHandler: DiscardActionHandler,
}
