"""What a login or signup attempt came to.

PlatformAuthenticator decides (hub_ext.authenticator); the login and signup
pages (hub_ext.accounts.login_pages) say it. Pure: no tornado, no database.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hub_ext.accounts.throttle import format_wait

LOGIN_FAILED_MESSAGE = "Invalid username or password."


class LoginResult(enum.Enum):
    OK = "ok"
    REFUSED = "refused"  # unknown name, wrong password (or 2fa code)
    NOT_AUTHORIZED = "not authorized"  # right password, signup not approved yet
    DELAYED = "delayed"  # too many failures: no password was checked


@dataclass(frozen=True)
class LoginOutcome:
    result: LoginResult
    wait_seconds: float = 0.0


def delay_message(wait_seconds: float) -> str:
    return (
        "Too many failed logins for this account from your address. "
        f"Try again in {format_wait(wait_seconds)}, or ask an administrator to clear the delay."
    )


class SignupRefused(Exception):
    """A signup the form or the site's limits refuse; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 400, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after
