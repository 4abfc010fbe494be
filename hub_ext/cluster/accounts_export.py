"""The platform's unix accounts, exported for the workers.

The hub creates each account on its own host (useradd, hub_ext.accounts). The
workers resolve the same names, uids and gids through libnss-extrausers,
which reads ``passwd`` and ``group`` in a directory the slurm role points at
this export on the shared storage: an account exists on every worker as soon
as the hub has written the file, before the user's job is submitted. Only the
platform group's accounts and that group are exported (no password hashes:
nothing logs in on a worker with a password).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def platform_entries(passwd: str, group: str, group_name: str,
                     privilege_groups: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """(passwd lines, group lines) of the members of ``group_name`` (the
    platform's accounts), of their own groups (useradd --user-group), of
    ``group_name`` itself and of each of ``privilege_groups`` that exists (its
    members limited to the platform's accounts: a worker's process gets it as
    a supplementary group exactly when the hub made the account a member); the
    password fields read "x"."""
    groups = [fields for fields in (line.split(":") for line in group.splitlines()) if len(fields) == 4]
    platform = next((g for g in groups if g[0] == group_name), None)
    if platform is None:
        return [], []
    members = {m for m in platform[3].split(",") if m}
    accounts = [f for f in (line.split(":") for line in passwd.splitlines())
                if len(f) == 7 and f[0] in members]
    own_gids = {f[3] for f in accounts}
    passwd_lines = [":".join([f[0], "x", *f[2:]]) for f in accounts]
    group_lines = [":".join([g[0], "x", g[2], g[3]]) for g in groups
                   if g is platform or g[2] in own_gids]
    wanted = set(privilege_groups) - {group_name}
    group_lines += [":".join([g[0], "x", g[2], ",".join(m for m in g[3].split(",") if m in members)])
                    for g in groups if g[0] in wanted]
    return passwd_lines, group_lines


def _write_atomically(path: Path, lines: list[str]) -> None:
    # a worker resolving a name meanwhile reads the old file or the new one, never half
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write("".join(f"{line}\n" for line in lines))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def export_accounts(export_dir: str, group_name: str, privilege_groups: Iterable[str] = (),
                    etc: str = "/etc") -> int:
    """Write ``passwd`` and ``group`` of the platform's accounts (platform_entries)
    into export_dir; the number of accounts exported."""
    passwd_lines, group_lines = platform_entries(
        Path(etc, "passwd").read_text(), Path(etc, "group").read_text(), group_name, privilege_groups
    )
    target = Path(export_dir)
    _write_atomically(target / "passwd", passwd_lines)
    _write_atomically(target / "group", group_lines)
    return len(passwd_lines)
