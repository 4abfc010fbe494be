"""The unit tests' fakes, one of each: the seams hub_ext takes (a clock, the
commands it runs, fchown, systemctl) and the parts of a hub User/Spawner the
features read. Handler tests use a real hub instead (realhub.py)."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from types import SimpleNamespace

from hub_ext.process import CommandResult

T0 = 1_700_000_000.0  # a fixed "now"


def naive_utc(epoch: float) -> datetime:
    """An epoch as JupyterHub's database stores times (naive UTC)."""
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


class FakeClock:
    """A clock that moves only when told (``now``, ``advance``) or when a waiter
    sleeps on it (``sleep``, recorded in ``sleeps``)."""

    def __init__(self, now: float = T0):
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeSystem:
    """A passwd/group database answering the commands ensure_unix_user runs."""

    def __init__(self, users=None, groups=None):
        # users: name -> (uid, gid, home); groups: name -> set of members
        self.users = dict(users or {})
        self.groups = {name: set(members) for name, members in (groups or {}).items()}
        self.calls = []
        self.next_uid = 1001
        self.expired = set()  # names with an expiry date in shadow

    async def __call__(self, argv):
        argv = list(argv)
        self.calls.append(argv)
        match argv:
            case ["getent", "passwd", name]:
                if name not in self.users:
                    return CommandResult(tuple(argv), 2)
                uid, gid, home = self.users[name]
                line = f"{name}:x:{uid}:{gid}::{home}:/bin/bash\n"
                return CommandResult(tuple(argv), 0, stdout=line)
            case ["getent", "group", name]:
                return CommandResult(tuple(argv), 0 if name in self.groups else 2)
            case ["groupadd", name]:
                if name in self.groups:
                    return CommandResult(tuple(argv), 9, stderr="group exists")
                self.groups[name] = set()
                return CommandResult(tuple(argv), 0)
            case ["getent", "shadow", name]:
                if name not in self.users:
                    return CommandResult(tuple(argv), 2)
                expire = "1" if name in self.expired else ""
                return CommandResult(tuple(argv), 0, stdout=f"{name}:!:19000:0:99999:7::{expire}:\n")
            case ["gpasswd", "--add", name, group]:
                self.groups[group].add(name)
                return CommandResult(tuple(argv), 0)
            case ["gpasswd", "--delete", name, group]:
                if name not in self.groups.get(group, ()):
                    return CommandResult(tuple(argv), 3, stderr="not a member")
                self.groups[group].discard(name)
                return CommandResult(tuple(argv), 0)
            case ["usermod", "--expiredate", date, name]:
                (self.expired.add if date else self.expired.discard)(name)
                return CommandResult(tuple(argv), 0)
            case ["id", "-Gn", name]:
                member_of = sorted(g for g, members in self.groups.items() if name in members)
                return CommandResult(tuple(argv), 0, stdout=" ".join(member_of) + "\n")
            case ["useradd", *options, name]:
                if name in self.users:
                    return CommandResult(tuple(argv), 9, stderr="user exists")
                uid = self.next_uid
                self.next_uid += 1
                self.users[name] = (uid, uid, options[options.index("--home-dir") + 1])
                self.groups[name] = {name}  # --user-group
                self.groups[options[options.index("--groups") + 1]].add(name)
                return CommandResult(tuple(argv), 0)
        raise AssertionError(f"unexpected command {argv}")

    def commands(self, verb):
        return [c for c in self.calls if c[0] == verb]


class RecordingChown:
    """Stands in for os.fchown: records which directory got which owner."""

    def __init__(self):
        self.calls = {}

    def __call__(self, fd, uid, gid):
        self.calls[os.readlink(f"/proc/self/fd/{fd}")] = (uid, gid)


class FakeSystemctl:
    """Replaces asyncio.create_subprocess_exec for systemdspawner.systemd."""

    def __init__(self):
        self.calls = []
        self.started = False

    async def __call__(self, *argv, **kwargs):
        self.calls.append(list(argv))
        if argv[0] == "systemd-run" or argv[:2] == ("systemctl", "start"):
            self.started = True
            code = 0
        elif argv[:2] == ("systemctl", "is-active"):
            code = 0 if self.started else 3
        else:  # is-failed, stop, reset-failed
            code = 1
        return SimpleNamespace(wait=lambda: asyncio.sleep(0, code))

    def systemd_run(self):
        return next(c for c in self.calls if c[0] == "systemd-run")


class FakeSpawner:
    """What the features read of a hub Spawner: pending, ready/active and the
    orm record's server and times."""

    def __init__(self, user, name=""):
        self.user = user
        self.name = name
        self.pending = None
        self.user_options = {"profile": "default"}
        self.orm_spawner = SimpleNamespace(server=None, started=None, last_activity=None)

    @property
    def running(self) -> bool:
        return self.orm_spawner.server is not None

    @running.setter
    def running(self, value: bool) -> None:
        self.orm_spawner.server = object() if value else None

    @property
    def ready(self):
        return self.running and not self.pending

    @property
    def active(self):
        return bool(self.pending or self.ready)

    def start(self, epoch):
        """Running since ``epoch`` (stored as the hub stores times: naive UTC)."""
        self.running = True
        self.orm_spawner.started = self.orm_spawner.last_activity = naive_utc(epoch)

    def stop(self):
        self.running = False
        self.orm_spawner.started = None


class FakeUser:
    def __init__(self, name, admin=False):
        self.name = name
        self.admin = admin
        self.spawner = FakeSpawner(self)
        self.spawners = {"": self.spawner}
        self.orm_spawners = {"": self.spawner.orm_spawner}
