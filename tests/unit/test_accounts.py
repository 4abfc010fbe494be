import asyncio

import pytest

from hub_ext.accounts import unix_users as accounts
from hub_ext.accounts.unix_users import (
    ForeignAccountError,
    InvalidNameError,
    UnixAccountError,
    ensure_unix_user,
    is_valid_hub_name,
    unix_name,
)
from hub_ext.process import CommandResult

from .fakes import FakeSystem


@pytest.mark.parametrize(
    "name", ["a", "alice", "bob-2", "data_sci", "x" * 29, "a0", "z-_9"]
)
def test_valid_hub_names(name):
    assert is_valid_hub_name(name)
    assert accounts.check_hub_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Alice",  # upper case
        "1alice",  # starts with a digit
        "-alice",
        "_alice",
        "x" * 30,  # too long
        "al ice",
        "al/ice",
        "al.ice",
        "alice\n",  # "$" would accept a trailing newline; fullmatch does not
        "ålice",
        "a,b",
        None,
    ],
)
def test_invalid_hub_names(name):
    assert not is_valid_hub_name(name)
    with pytest.raises(InvalidNameError, match="must start with a lowercase letter"):
        accounts.check_hub_name(name)


def test_unix_name_default_template():
    assert unix_name("alice") == "jh-alice"
    assert unix_name("x" * 29) == "jh-" + "x" * 29  # 32 characters: the limit


def test_unix_name_never_a_system_account():
    for system in ["root", "nginx", "daemon", "www-data", "systemd-network", "nobody"]:
        assert unix_name(system) == f"jh-{system}"
    # distinct hub names give distinct unix names
    names = ["a", "ab", "a-b", "a_b", "b"]
    assert len({unix_name(n) for n in names}) == len(names)


def test_unix_name_custom_template():
    assert unix_name("alice", "lab_{USERNAME}") == "lab_alice"
    assert unix_name("alice", "{USERNAME}-jh") == "alice-jh"


def test_unix_name_too_long_for_template():
    with pytest.raises(InvalidNameError, match="at most 32"):
        unix_name("x" * 29, "jupyter-{USERNAME}")


@pytest.mark.parametrize(
    "template", ["jh-user", "{USER}", "jh-{USERNAME}-{OTHER}", "{0}{USERNAME}", ""]
)
def test_bad_templates(template):
    with pytest.raises(InvalidNameError, match="template"):
        unix_name("alice", template)


def test_template_producing_invalid_unix_name():
    with pytest.raises(InvalidNameError, match="Invalid unix name"):
        unix_name("alice", "Jh.{USERNAME}")


def test_invalid_hub_name_rejected_before_template():
    with pytest.raises(InvalidNameError, match="Invalid hub username"):
        unix_name("Root")


def run(coro):
    return asyncio.run(coro)


def test_ensure_unix_user_creates_group_and_user():
    system = FakeSystem()
    account = run(ensure_unix_user("jh-alice", runner=system))

    assert system.commands("groupadd") == [["groupadd", "jupyterhub-users"]]
    assert system.commands("useradd") == [
        [
            "useradd",
            "--no-create-home",
            "--home-dir",
            "/home/jh-alice",
            "--shell",
            "/bin/bash",
            "--user-group",
            "--groups",
            "jupyterhub-users",
            "jh-alice",
        ]
    ]
    # never a password: the account stays locked
    assert not any(c[0] in ("passwd", "chpasswd", "usermod") for c in system.calls)
    assert not any("-p" in c or "--password" in c for c in system.calls)
    assert account == accounts.UnixAccount("jh-alice", 1001, 1001, "/home/jh-alice", "/bin/bash")


def test_ensure_unix_user_is_idempotent():
    system = FakeSystem()
    first = run(ensure_unix_user("jh-alice", runner=system))
    second = run(ensure_unix_user("jh-alice", runner=system))
    assert first == second
    assert len(system.commands("useradd")) == 1
    assert len(system.commands("groupadd")) == 1


def test_ensure_unix_user_adopts_existing_member():
    system = FakeSystem(
        users={"jh-bob": (2000, 2000, "/home/jh-bob")},
        groups={"jupyterhub-users": {"jh-bob"}, "jh-bob": {"jh-bob"}},
    )
    account = run(ensure_unix_user("jh-bob", runner=system))
    assert account.uid == 2000
    assert system.commands("useradd") == [] and system.commands("groupadd") == []


@pytest.mark.parametrize("name", ["root", "nginx", "jh-mallory"])
def test_ensure_unix_user_refuses_foreign_account(name):
    system = FakeSystem(
        users={name: (0 if name == "root" else 33, 0, "/root")},
        groups={"jupyterhub-users": set(), "root": {"root"}},
    )
    with pytest.raises(ForeignAccountError, match="not a member of the platform group"):
        run(ensure_unix_user(name, runner=system))
    assert system.commands("useradd") == []


def test_ensure_unix_user_custom_group_and_home():
    system = FakeSystem(groups={"lab-users": set()})
    run(ensure_unix_user("jh-carol", group="lab-users", home="/home/carol", runner=system))
    useradd = system.commands("useradd")[0]
    assert useradd[useradd.index("--groups") + 1] == "lab-users"
    assert useradd[useradd.index("--home-dir") + 1] == "/home/carol"
    assert system.commands("groupadd") == []


def test_ensure_unix_user_reports_useradd_failure():
    async def failing(argv):
        if argv[0] == "useradd":
            return CommandResult(tuple(argv), 1, stderr="useradd: cannot lock /etc/passwd")
        if argv[:2] == ["getent", "group"]:
            return CommandResult(tuple(argv), 0)
        return CommandResult(tuple(argv), 2)

    with pytest.raises(UnixAccountError, match="cannot lock /etc/passwd"):
        run(ensure_unix_user("jh-dave", runner=failing))


def test_ensure_unix_user_rejects_invalid_unix_name():
    system = FakeSystem()
    with pytest.raises(InvalidNameError):
        run(ensure_unix_user("../etc", runner=system))
    assert system.calls == []


def test_concurrent_spawns_create_user_once():
    system = FakeSystem()

    async def both():
        return await asyncio.gather(
            ensure_unix_user("jh-erin", runner=system), ensure_unix_user("jh-erin", runner=system)
        )

    first, second = run(both())
    assert first == second
    assert len(system.commands("useradd")) == 1


# --- group reconciliation and disabling -------------------------------------------


def test_reconcile_adds_and_removes_only_the_named_groups():
    system = FakeSystem(
        users={"jh-alice": (1001, 1001, "/home/jh-alice")},
        groups={"jupyterhub-users": {"jh-alice"}, "docker": {"jh-alice"}, "other": {"jh-alice"}},
    )
    run(accounts.reconcile_unix_groups("jh-alice", add=["jupyterhub-sudo"], remove=["docker"],
                                       runner=system))
    assert "jh-alice" in system.groups["jupyterhub-sudo"]  # created, then joined
    assert "jh-alice" not in system.groups["docker"]
    assert "jh-alice" in system.groups["other"]  # not managed: untouched
    assert ["groupadd", "jupyterhub-sudo"] in system.calls


def test_reconcile_failure_is_an_account_error():
    system = FakeSystem(users={"jh-alice": (1001, 1001, "/h")}, groups={"docker": set()})
    with pytest.raises(UnixAccountError, match="removing jh-alice from docker"):
        run(accounts.reconcile_unix_groups("jh-alice", remove=["docker"], runner=system))


def test_disable_expires_account_drops_privileges_and_keeps_it():
    system = FakeSystem(
        users={"jh-alice": (1001, 1001, "/home/jh-alice")},
        groups={"jupyterhub-users": {"jh-alice"}, "docker": {"jh-alice"}, "jupyterhub-sudo": set()},
    )
    assert run(accounts.disable_unix_user("jh-alice", ["docker", "jupyterhub-sudo"], runner=system))
    assert "jh-alice" in system.expired
    assert "jh-alice" not in system.groups["docker"]
    assert "jh-alice" in system.users  # never userdel: the uid keeps owning the data
    assert not system.commands("userdel")


def test_disable_missing_account_is_a_no_op_and_foreign_is_refused():
    system = FakeSystem(users={"nginx": (33, 33, "/var/www")}, groups={"jupyterhub-users": set()})
    assert run(accounts.disable_unix_user("jh-bob", runner=system)) is False
    with pytest.raises(ForeignAccountError):
        run(accounts.disable_unix_user("nginx", runner=system))
    assert not system.commands("usermod")


def test_ensure_unix_user_re_enables_a_disabled_account():
    system = FakeSystem()
    run(ensure_unix_user("jh-alice", runner=system))
    run(accounts.disable_unix_user("jh-alice", runner=system))
    assert "jh-alice" in system.expired
    run(ensure_unix_user("jh-alice", runner=system))
    assert "jh-alice" not in system.expired
    assert ["usermod", "--expiredate", "", "jh-alice"] in system.calls
