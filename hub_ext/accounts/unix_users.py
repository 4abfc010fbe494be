"""Hub names, unix names and the unix accounts behind them.

A hub name is what a person signs up with; the unix name is derived from it
with a template (default ``jh-{USERNAME}``) so that no hub name can ever map
onto ``root`` or another system account. Every platform account belongs to the
platform group; an existing account outside that group is never adopted.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from traitlets import TraitError, Unicode

from hub_ext.process import CommandError, CommandRunner, run_command

HUB_NAME_MAX_LENGTH = 29
HUB_NAME_PATTERN = re.compile(rf"[a-z][a-z0-9_-]{{0,{HUB_NAME_MAX_LENGTH - 1}}}")
HUB_NAME_RULE = (
    "Usernames must start with a lowercase letter and contain only "
    f"a-z, 0-9, '-' or '_' (max {HUB_NAME_MAX_LENGTH} characters)."
)
UNIX_NAME_PATTERN = re.compile(r"[a-z_][a-z0-9_-]*")
UNIX_NAME_MAX_LENGTH = 32
DEFAULT_UNIX_USERNAME_TEMPLATE = "jh-{USERNAME}"
DEFAULT_PLATFORM_GROUP = "jupyterhub-users"
DEFAULT_SHELL = "/bin/bash"

# useradd/groupadd exit status when the name is already taken (shadow-utils)
_EXIT_NAME_IN_USE = 9


class InvalidNameError(ValueError):
    """A hub name, unix name or name template breaks the rules."""


class UnixAccountError(RuntimeError):
    """A unix account could not be created or checked."""


class ForeignAccountError(UnixAccountError):
    """The unix name belongs to an account outside the platform group."""


def is_valid_hub_name(name: str) -> bool:
    # fullmatch, not match with "$": "$" would accept a trailing newline
    return isinstance(name, str) and HUB_NAME_PATTERN.fullmatch(name) is not None


def is_valid_unix_name(name: str) -> bool:
    return (
        isinstance(name, str)
        and len(name) <= UNIX_NAME_MAX_LENGTH
        and UNIX_NAME_PATTERN.fullmatch(name) is not None
    )


def check_hub_name(name: str) -> str:
    """Return name if it is a valid hub name, else raise InvalidNameError."""
    if not is_valid_hub_name(name):
        raise InvalidNameError(f"Invalid hub username {name!r}. {HUB_NAME_RULE}")
    return name


def check_unix_name(name: str, what: str = "unix name") -> str:
    """Return name if it is a valid unix user/group name, else raise InvalidNameError."""
    if not is_valid_unix_name(name):
        raise InvalidNameError(
            f"Invalid {what} {name!r}: it must match {UNIX_NAME_PATTERN.pattern} "
            f"and be at most {UNIX_NAME_MAX_LENGTH} characters."
        )
    return name


def check_unix_username_template(template: str) -> str:
    """Return template if it maps hub names onto distinct unix names."""
    if not isinstance(template, str) or "{USERNAME}" not in template:
        # without {USERNAME} every hub user would share one unix account
        raise InvalidNameError(
            f"Unix username template {template!r} must contain {{USERNAME}}."
        )
    try:
        template.format(USERNAME="a")
    except (KeyError, IndexError, ValueError) as e:
        raise InvalidNameError(
            f"Unix username template {template!r} may only use {{USERNAME}}: {e!r}"
        ) from None
    return template


class UnixUsernameTemplate(Unicode):
    """The ``unix_username_template`` trait of every class that maps hub names
    to unix accounts (spawner, authenticator, storage): one check for all."""

    def validate(self, obj, value):
        try:
            return check_unix_username_template(super().validate(obj, value))
        except InvalidNameError as e:
            raise TraitError(f"unix_username_template is invalid: {e}") from None


def unix_name(hub_name: str, template: str = DEFAULT_UNIX_USERNAME_TEMPLATE) -> str:
    """The unix account name for a hub name.

    Raises InvalidNameError when the hub name breaks the name rule or the
    result is not a valid unix name (e.g. a long template pushes it past 32).
    """
    check_hub_name(hub_name)
    result = check_unix_username_template(template).format(USERNAME=hub_name)
    return check_unix_name(result, what=f"unix name for hub user {hub_name!r}")


def hub_name_for_unix(unix: str, template: str = DEFAULT_UNIX_USERNAME_TEMPLATE) -> str | None:
    """The hub name whose unix name is ``unix`` under ``template``, or None."""
    prefix, _, suffix = check_unix_username_template(template).partition("{USERNAME}")
    if not (unix.startswith(prefix) and unix.endswith(suffix)) or len(unix) <= len(prefix + suffix):
        return None
    candidate = unix[len(prefix): len(unix) - len(suffix)]
    try:
        return candidate if unix_name(candidate, template) == unix else None
    except InvalidNameError:
        return None


@dataclass(frozen=True)
class UnixAccount:
    """One line of ``getent passwd``."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str

    @classmethod
    def from_passwd_line(cls, line: str) -> UnixAccount:
        name, _pw, uid, gid, _gecos, home, shell = line.strip().split(":")
        return cls(name=name, uid=int(uid), gid=int(gid), home=home, shell=shell)


async def lookup_account(
    name: str, runner: CommandRunner = run_command
) -> UnixAccount | None:
    """The account called name, or None if there is none."""
    result = await runner(["getent", "passwd", name])
    if result.returncode == 2:  # getent: key not found
        return None
    if not result.ok:
        raise CommandError(result, f"looking up unix user {name}")
    return UnixAccount.from_passwd_line(result.stdout.splitlines()[0])


async def group_exists(group: str, runner: CommandRunner = run_command) -> bool:
    result = await runner(["getent", "group", group])
    if result.returncode == 2:
        return False
    if not result.ok:
        raise CommandError(result, f"looking up group {group}")
    return True


async def account_groups(name: str, runner: CommandRunner = run_command) -> set[str]:
    """Every group of the account, primary and supplementary."""
    result = await runner(["id", "-Gn", name])
    if not result.ok:
        raise CommandError(result, f"listing groups of {name}")
    return set(result.stdout.split())


async def ensure_group(group: str, runner: CommandRunner = run_command) -> None:
    """Create group unless it exists (Ansible normally has created it)."""
    check_unix_name(group, what="group name")
    if await group_exists(group, runner):
        return
    result = await runner(["groupadd", group])
    # another hub task may have created it in between: that is fine
    if not result.ok and result.returncode != _EXIT_NAME_IN_USE:
        raise CommandError(result, f"creating group {group}")


# One account change at a time in this process: concurrent spawns would race
# between "does it exist?" and useradd.
_account_lock = asyncio.Lock()


async def ensure_unix_user(
    unix_name: str,
    group: str = DEFAULT_PLATFORM_GROUP,
    home: str | None = None,
    shell: str = DEFAULT_SHELL,
    runner: CommandRunner = run_command,
) -> UnixAccount:
    """Make sure the platform account unix_name exists; return it.

    Creates it (own user group, member of ``group``, home path
    ``/home/<unix_name>`` not created here: the spawner bind-mounts it, no
    password so the login stays locked). Idempotent. Raises
    ForeignAccountError for an existing account outside ``group``, so a
    system account such as ``root`` or ``nginx`` is never handed to a hub user.
    """
    check_unix_name(unix_name)
    home = home or f"/home/{unix_name}"
    async with _account_lock:
        await ensure_group(group, runner)
        account = await lookup_account(unix_name, runner)
        if account is None:
            result = await runner(
                [
                    "useradd",
                    "--no-create-home",
                    "--home-dir",
                    home,
                    "--shell",
                    shell,
                    "--user-group",
                    "--groups",
                    group,
                    unix_name,
                ]
            )
            if not result.ok:
                raise UnixAccountError(str(CommandError(result, f"creating {unix_name}")))
            account = await lookup_account(unix_name, runner)
            if account is None:
                raise UnixAccountError(f"useradd succeeded but {unix_name} is not found")
        if group not in await account_groups(unix_name, runner):
            raise ForeignAccountError(
                f"Refusing to use existing unix account {unix_name!r}: it is not a "
                f"member of the platform group {group!r}. If it really is a platform "
                f"account, add it with: usermod -aG {group} {unix_name}"
            )
        if await account_expired(unix_name, runner):
            # disabled when its hub user was deleted; the hub user exists again
            await _run_checked(
                runner, ["usermod", "--expiredate", "", unix_name], f"re-enabling {unix_name}"
            )
        return account


async def _run_checked(runner: CommandRunner, argv: list[str], what: str) -> None:
    result = await runner(argv)
    if not result.ok:
        raise UnixAccountError(str(CommandError(result, what)))


async def account_expired(name: str, runner: CommandRunner = run_command) -> bool:
    """True when the account has an expiry date set (disable_unix_user sets one)."""
    result = await runner(["getent", "shadow", name])
    if result.returncode == 2 or not result.ok:
        return False
    fields = result.stdout.splitlines()[0].split(":")
    return len(fields) > 7 and fields[7].strip() != ""


async def reconcile_unix_groups(
    unix_name: str,
    add: tuple[str, ...] | list[str] = (),
    remove: tuple[str, ...] | list[str] = (),
    runner: CommandRunner = run_command,
) -> None:
    """Put the account into ``add`` and out of ``remove`` (gpasswd, no shell).

    The groups of ``add`` are created if missing (Ansible normally has).
    """
    check_unix_name(unix_name)
    async with _account_lock:
        for group in add:
            await ensure_group(group, runner)
            await _run_checked(
                runner, ["gpasswd", "--add", unix_name, group], f"adding {unix_name} to {group}"
            )
        for group in remove:
            await _run_checked(
                runner,
                ["gpasswd", "--delete", unix_name, group],
                f"removing {unix_name} from {group}",
            )


async def disable_unix_user(
    unix_name: str,
    managed_groups: tuple[str, ...] | list[str] = (),
    group: str = DEFAULT_PLATFORM_GROUP,
    runner: CommandRunner = run_command,
) -> bool:
    """Disable a platform account whose hub user was deleted; False if there is none.

    The account expires (``usermod --expiredate 1``: no login, no cron, no su)
    and leaves the privilege groups in ``managed_groups``. It is not removed:
    its uid keeps owning the user's directories until an admin purges them,
    and a hub user of the same name created later gets it back (re-enabled on
    spawn). Accounts outside the platform group are never touched.
    """
    check_unix_name(unix_name)
    if await lookup_account(unix_name, runner) is None:
        return False
    current = await account_groups(unix_name, runner)
    if group not in current:
        raise ForeignAccountError(
            f"Refusing to disable unix account {unix_name!r}: it is not in {group!r}"
        )
    await reconcile_unix_groups(
        unix_name, remove=[g for g in managed_groups if g in current], runner=runner
    )
    async with _account_lock:
        await _run_checked(
            runner, ["usermod", "--expiredate", "1", unix_name], f"disabling {unix_name}"
        )
    return True
