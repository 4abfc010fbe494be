"""What the accounts feature accepts and how it names a signup's state: pure.

The rules for a hub name, a signup form, the admin's password file and a
batch of new users, each returning the message a user or an operator reads.
:class:`~hub_ext.authenticator.PlatformAuthenticator` and
:mod:`hub_ext.accounts.handlers` apply them with their settings and add what
needs the database (is the name taken) or NativeAuthenticator (is the password
a common one).
"""

from __future__ import annotations

from collections.abc import Callable

from nativeauthenticator.orm import UserInfo

from hub_ext.accounts import passwords
from hub_ext.accounts import unix_users as accounts

SIGNUP_CLOSED_MESSAGE = "Signup is closed. Only the administrator account can be created now."
# UserInfo.email is a String(128) column
MAX_EMAIL_LENGTH = 128
MAX_BATCH = 100  # users one batch creation may make


def is_email(address: str) -> bool:
    """UserInfo's own e-mail rule (its validator asserts)."""
    try:
        UserInfo.validate_email(None, "email", address)
    except AssertionError:
        return False
    return True


def name_problem(username: str, unix_username_template: str) -> str | None:
    """Why ``username`` cannot be a hub user, or None."""
    try:
        accounts.unix_name(username, unix_username_template)
    except accounts.InvalidNameError:
        if not accounts.is_valid_hub_name(username):
            return accounts.HUB_NAME_RULE
        return (
            f"Username {username!r} is too long for this site's unix account names."
        )
    return None


def form_problem(
    password: str, confirmation: str, email: str, minimum_password_length: int,
    is_common: Callable[[str], bool],
) -> str | None:
    """Why a signup form's e-mail address and password are refused (cheapest checks
    first; ``is_common``: whether a password is too common), or None."""
    if len(email) > MAX_EMAIL_LENGTH:
        return f"E-mail addresses can be at most {MAX_EMAIL_LENGTH} characters long."
    if email and not is_email(email):
        return "That e-mail address is not valid (name@domain.tld, or leave it empty)."
    if len(password.encode()) > passwords.MAX_PASSWORD_BYTES:
        return f"Passwords can be at most {passwords.MAX_PASSWORD_BYTES} bytes long."
    if len(password) < minimum_password_length:
        return f"Passwords must be at least {minimum_password_length} characters long."
    if is_common(password):
        return "That password is too common; choose another one."
    if password != confirmation:
        return "Your password did not match the confirmation. Please try again."
    return None


def admin_password_from_file_text(text: str, source: str) -> str:
    """The admin's password from its file's ``text`` (from ``source``, named in the
    errors); ValueError when it cannot be one."""
    # files written by Ansible/editors end in a newline; it is not part of the password
    password = text.rstrip("\r\n")
    if not password:
        raise ValueError(f"admin_password_file {source} is empty")
    if len(password.encode()) > passwords.MAX_PASSWORD_BYTES:
        raise ValueError(
            f"admin password in {source} is longer than "
            f"{passwords.MAX_PASSWORD_BYTES} bytes (bcrypt's limit)"
        )
    return password


def check_batch(
    raw_names, normalize, name_problem, exists
) -> tuple[list[str], list[dict]]:
    """Validate a batch of names: (normalized names, per-name errors).

    ``normalize``/``name_problem``/``exists`` are the authenticator's rules
    and a lookup, passed in so this stays testable without a hub.
    """
    if not isinstance(raw_names, list) or not raw_names:
        raise ValueError('"usernames" must be a non-empty list of names')
    if len(raw_names) > MAX_BATCH:
        raise ValueError(
            f"at most {MAX_BATCH} users can be created at once (got {len(raw_names)}); "
            "nothing was created"
        )
    names, errors, seen = [], [], set()
    for raw in raw_names:
        if not isinstance(raw, str):
            errors.append({"name": repr(raw), "error": "not a string"})
            continue
        name = normalize(raw.strip())
        problem = name_problem(name)
        if problem:
            errors.append({"name": raw, "error": problem})
        elif name in seen:
            errors.append({"name": raw, "error": "listed more than once"})
        elif exists(name):
            errors.append({"name": raw, "error": "a user of this name already exists"})
        else:
            names.append(name)
        seen.add(name)
    return names, errors


def signup_state(info: UserInfo, hub_user_exists: bool) -> str:
    """'pending' (discardable), 'authorized' or 'unauthorized' (an existing user)."""
    if info.is_authorized:
        return "authorized"
    return "unauthorized" if hub_user_exists else "pending"
