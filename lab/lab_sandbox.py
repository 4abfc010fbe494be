"""The lab's sandbox on a cluster worker: a lab unit's mounts, made by the lab's own job.

On one host systemd builds each lab's sandbox (BindPaths=, TemporaryFileSystem=,
ProtectSystem=, ProtectHome=, ProtectProc=; hub_ext/units/lab_unit.py). A Slurm
job gets none of it: slurmstepd starts the batch script as the user, in the
worker's own mount namespace. This launcher, the job's first process (already
under NoNewPrivileges), makes the same view without any privilege on the
worker, in namespaces of its own (docs/cluster.md, "The lab sandbox"):

1. a user namespace that maps the user's uid and gid to themselves (and denies
   setgroups), owning a new mount namespace and a new PID namespace;
2. the mount steps the hub wrote (hub_ext/cluster/sandbox.py), in order:
   ``tmpfs`` (a fresh, capped tmpfs: /home, /tmp, /dev/shm), ``mkdir`` (a
   mount point on a tmpfs made here), ``bind`` (the user's directories at
   their in-lab paths), ``readonly`` (a path bound onto itself and remounted
   read-only with every mount below it, as systemd's ReadOnlyPaths= does,
   except the mounts this launcher made there: the user's own directories stay
   writable; each mount's own flags are kept, as the kernel requires in a user
   namespace),
   ``hide`` (an empty read-only tmpfs over what the lab must not see); a
   ``readonly`` or ``hide`` path the worker lacks is skipped;
3. a fork: the child is PID 1 of the new PID namespace, mounts a /proc of it
   (the lab sees its own processes only), drops every capability and reaps
   orphans; its child execs the lab command in the working directory.

Signals reach the lab through both waiting parents; each exits with the lab's
status. Every later process of the lab runs as the user with no capability,
in mounts it cannot undo (those a less privileged namespace inherits are
locked together). Standard library only: it runs under the lab venv's Python.

Usage: python -I lab_sandbox.py SPEC_JSON -- COMMAND [ARGS...]
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import sys
from collections.abc import Sequence

PREFIX = "lab-sandbox:"

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PR_SET_DUMPABLE = 4
# a mount's flags a read-only bind remount must repeat (locked in a user namespace)
LOCKED_FLAGS = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC))
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
                     signal.SIGQUIT, signal.SIGCONT)
OPS = {"tmpfs": ("path", "options"), "mkdir": ("path",), "bind": ("source", "path"), "readonly": ("path",),
       "hide": ("path",)}
# an empty tmpfs, read-only, that nobody may enter: nothing under it is seen
# or reached (a path through it fails with EACCES, as through a 0700 directory)
HIDING = "size=4k,mode=0000"


class SandboxError(RuntimeError):
    """The sandbox could not be made; the lab does not start without it."""


def check_spec(spec: object) -> dict:
    """The spec as the hub wrote it, or SandboxError naming what is wrong."""
    if not isinstance(spec, dict) or not isinstance(spec.get("steps"), list):
        raise SandboxError("the spec must be an object with a list of steps")
    workdir = spec.get("workdir")
    if not isinstance(workdir, str) or not workdir.startswith("/"):
        raise SandboxError(f"workdir must be an absolute path, got {workdir!r}")
    for step in spec["steps"]:
        fields = OPS.get(step.get("op")) if isinstance(step, dict) else None
        if fields is None or set(step) != {"op", *fields}:
            raise SandboxError(f"not a sandbox step: {step!r}")
        for field in fields:
            if field != "options" and not (isinstance(step[field], str) and step[field].startswith("/")):
                raise SandboxError(f"{step['op']} {field} must be an absolute path, got {step[field]!r}")
    return spec


def remount_flags(statvfs_flags: int) -> int:
    """mount(2) flags that make a bind mount read-only and keep its locked flags
    (``statvfs_flags``: the mount's own, as statvfs reads them)."""
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY
    for st_flag, ms_flag in LOCKED_FLAGS:
        if statvfs_flags & st_flag:
            flags |= ms_flag
    return flags


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_below(mountinfo: str, path: str, keep: set[str]) -> list[str]:
    """The mount points at ``path`` and below it, except those below it in
    ``keep``, each once, in mountinfo's order (parents first)."""
    found: list[str] = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = _unescape(fields[4])
        below = point.startswith(path.rstrip("/") + "/") and point not in keep
        if (point == path or below) and point not in found:
            found.append(point)
    return found


def made_here(steps: list[dict]) -> set[str]:
    """The mount points the launcher itself makes (they keep their own flags)."""
    return {step["path"] for step in steps if step["op"] in ("tmpfs", "bind", "hide")}


def exit_code(wait_status: int) -> int:
    """A child's wait status as a shell reports it (128 + signal)."""
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise SandboxError(f"{what}: {os.strerror(err)}")


def _bytes(text: str | None) -> bytes | None:
    return text.encode() if text is not None else None


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(_bytes(source), _bytes(target), _bytes(fstype), ctypes.c_ulong(flags), _bytes(data)),
           f"mount {fstype or 'bind'} {source or ''} on {target}")


def enter_namespaces(uid: int, gid: int) -> None:
    """Own user, mount and PID namespaces (the PID one for the children), the
    user's ids mapped to themselves, every mount private to this namespace."""
    _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID),
           "unshare (the worker must allow unprivileged user namespaces)")
    for name, text in (("uid_map", f"{uid} {uid} 1"), ("setgroups", "deny"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    _mount(None, "/", None, MS_REC | MS_PRIVATE)


def apply_step(step: dict, keep: set[str] = frozenset()) -> None:
    """One step; ``keep``: mount points a ``readonly`` leaves writable."""
    op, path = step["op"], step["path"]
    if op == "tmpfs":
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, step["options"])
    elif op == "mkdir":
        os.mkdir(path, 0o755)
    elif op == "bind":
        _mount(step["source"], path, None, MS_BIND | MS_REC)
    elif op == "readonly" and os.path.isdir(path):
        _mount(path, path, None, MS_BIND | MS_REC)
        with open("/proc/self/mountinfo") as f:
            below = mounts_below(f.read(), path, keep)
        for point in below:
            # the flags of the mount the path reaches (a mount point may hold a
            # stack of mounts; mountinfo lists the hidden ones too)
            try:
                flags = os.statvfs(point).f_flag
            except OSError:
                # a mount point the user cannot reach (below a 0700 directory)
                # is no path into the system for them either
                continue
            if not flags & os.ST_RDONLY:
                _mount(None, point, None, remount_flags(flags))
    elif op == "hide" and os.path.isdir(path):
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, HIDING)


def drop_capabilities() -> None:
    """No capability left in the lab's user namespace (capset, version 3)."""
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)()
    _check(_libc.capset(header, data), "capset")


def forward_signals(to_pid: int) -> None:
    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, lambda signum, _frame: os.kill(to_pid, signum))


def run_init(command: Sequence[str], workdir: str) -> int:
    """PID 1 of the lab's PID namespace: its /proc, no capability, then the lab
    as its child; reaps every orphan until the lab ends."""
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    drop_capabilities()
    lab = os.fork()
    if lab == 0:
        for sig in FORWARDED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        os.chdir(workdir)
        os.execvp(command[0], list(command))
    forward_signals(lab)
    while True:
        pid, status = os.wait()
        if pid == lab:
            return exit_code(status)


def main(argv: Sequence[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(f"usage: {__doc__.splitlines()[-1].removeprefix('Usage: ')}", file=sys.stderr)
        return 2
    try:
        spec = check_spec(json.loads(argv[0]))
        enter_namespaces(os.getuid(), os.getgid())
        keep = made_here(spec["steps"])
        for step in spec["steps"]:
            apply_step(step, keep)
    except (SandboxError, OSError, ValueError) as e:
        print(f"{PREFIX} the lab's sandbox could not be made: {e}", file=sys.stderr, flush=True)
        return 1
    init = os.fork()
    if init == 0:
        try:
            os._exit(run_init(argv[2:], spec["workdir"]))
        except BaseException as e:  # never return into the parent's code
            print(f"{PREFIX} {e}", file=sys.stderr, flush=True)
            os._exit(1)
    drop_capabilities()
    forward_signals(init)
    _, status = os.waitpid(init, 0)
    return exit_code(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
