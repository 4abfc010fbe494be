"""Start a lab: close the disk quota's escapes, run the admin's startup scripts,
then exec the lab command.

Installed by the playbook as ``/usr/local/lib/jupyterhub/lab_start.py`` (root,
0644) and run by every lab unit, as the lab's user, before JupyterLab::

    <lab venv>/bin/python -I /usr/local/lib/jupyterhub/lab_start.py \\
        <lab venv>/bin/jupyterhub-singleuser [args...]

Scripts: every executable regular file in ``$JUPYTERLAB_AUX_SCRIPTS_PATH``
(default /etc/jupyterhub/start-platform.d), in name order, one after the other,
each with its own timeout. Unlike the Docker original (whose directory was on
the user-writable shared volume) the directory, each of its parents and every
script must be owned by root and not writable by group or others; otherwise it
is refused with a message in the unit's journal. A script that fails (non-zero
exit, timeout, cannot start) is logged and the lab starts anyway.

Before anything else it installs a seccomp filter (:func:`install_quota_barrier`)
that every process of the lab inherits and none can remove: the calls that would
move data out of the user's disk quota fail with EPERM (docs/storage.md, "What
a user cannot do to escape the quota").

Standard library only: it runs under the lab venv's Python, not the hub's.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

ENV_PATH = "JUPYTERLAB_AUX_SCRIPTS_PATH"
SCRIPT_TIMEOUT = 300  # seconds per script; the spawner's start timeout still applies as a whole
PREFIX = "platform-start:"


def log(message: str) -> None:
    print(f"{PREFIX} {message}", file=sys.stderr, flush=True)


def unsafe_reason(st: os.stat_result, root_uid: int = 0) -> str | None:
    """Why a file or directory with this stat may not be trusted, or None."""
    if st.st_uid != root_uid:
        return f"owned by uid {st.st_uid}, not root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def directory_problem(path: str, root_uid: int = 0, stat_fn: Callable = os.stat) -> str | None:
    """None when ``path`` and every parent are root-owned and not group/world-writable."""
    current = os.path.abspath(path)
    while True:
        try:
            st = stat_fn(current)
        except OSError as e:
            return f"{current}: {e.strerror}"
        if not stat.S_ISDIR(st.st_mode):
            return f"{current} is not a directory"
        reason = unsafe_reason(st, root_uid)
        if reason:
            return f"{current} is {reason}"
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


# --- the disk quota barrier: a seccomp filter ---------------------------------------
#
# A user's quota counts what is written below their user root (a btrfs
# subvolume's qgroup, or an ext4/XFS project). Three calls would move data out
# of it, and none needs a privilege: creating a btrfs subvolume or snapshot (a
# new qgroup, outside the user's), and changing a file's or directory's project
# id or its project-inherit flag (chattr -p / -P: the files count for another
# project). systemd's SystemCallFilter= cannot look at an ioctl's request
# number, so this filter does: ioctl with one of QUOTA_ESCAPE_IOCTLS and
# file_setattr (Linux 6.17+, the same attributes without ioctl) fail with EPERM;
# everything else is allowed (systemd's own filter still applies). No lab needs
# these calls. The kernel lets an unprivileged process install a filter only
# under NoNewPrivileges, which every lab without sudo has; a lab with sudo is
# root on the host (docs/accounts.md) and is not held by it.

# request numbers (linux/btrfs.h, linux/fs.h); ioctl's request is an unsigned
# int, so the kernel reads, and the filter compares, its low 32 bits only
QUOTA_ESCAPE_IOCTLS = {
    "BTRFS_IOC_SNAP_CREATE": 0x50009401,
    "BTRFS_IOC_SUBVOL_CREATE": 0x5000940E,
    "BTRFS_IOC_SNAP_CREATE_V2": 0x50009417,
    "BTRFS_IOC_SUBVOL_CREATE_V2": 0x50009418,
    "FS_IOC_FSSETXATTR": 0x401C5820,  # project id, project-inherit flag
    "FS_IOC_SETFLAGS": 0x40086602,  # project-inherit flag (chattr -P)
    "FS_IOC32_SETFLAGS": 0x40046602,
}
X32_SYSCALL_BIT = 0x40000000
FILE_SETATTR = 469  # one number on every architecture (new syscalls share the table)
# audit arch -> (ioctl's syscall numbers, file_setattr's); the native one and the
# compat one each 64-bit kernel also runs (x32 shares x86_64's audit arch)
SYSCALLS = {
    0xC000003E: ((16, X32_SYSCALL_BIT | 16, X32_SYSCALL_BIT | 514),
                 (FILE_SETATTR, X32_SYSCALL_BIT | FILE_SETATTR)),  # x86_64, x32
    0x40000003: ((54,), (FILE_SETATTR,)),  # i386
    0xC00000B7: ((29,), (FILE_SETATTR,)),  # aarch64
    0x40000028: ((54,), (FILE_SETATTR,)),  # arm
}
NATIVE_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}  # platform.machine() -> audit arch

# classic BPF as seccomp runs it over struct seccomp_data {int nr; u32 arch;
# u64 ip; u64 args[6]} (little-endian: an argument's low half comes first)
BPF_LD_W_ABS, BPF_JEQ_K, BPF_RET_K = 0x20, 0x15, 0x06
DATA_NR, DATA_ARCH, DATA_ARG1_LOW = 0, 4, 24
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
SOCK_FILTER = struct.Struct("=HBBI")
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2


def quota_barrier_program() -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k) instructions: per known architecture its
    file_setattr denied and its ioctl sent to the request check; a call of an
    architecture not known here is denied (no way round the table)."""
    deny = ("ret", SECCOMP_RET_ERRNO | errno.EPERM)
    allow = ("ret", SECCOMP_RET_ALLOW)
    # symbolic: ("ld", offset), ("jeq", k, label_if_equal), ("ret", k), ("label", name)
    code: list[tuple] = [("ld", DATA_ARCH)]
    code += [("jeq", arch, f"arch-{arch}") for arch in SYSCALLS]
    code.append(deny)
    for arch, (ioctls, setattrs) in SYSCALLS.items():
        code += [("label", f"arch-{arch}"), ("ld", DATA_NR)]
        code += [("jeq", nr, "deny") for nr in setattrs]
        code += [("jeq", nr, "request") for nr in ioctls]
        code.append(allow)
    code += [("label", "request"), ("ld", DATA_ARG1_LOW)]
    code += [("jeq", request, "deny") for request in QUOTA_ESCAPE_IOCTLS.values()]
    code += [allow, ("label", "deny"), deny]
    # resolve the labels into relative jumps (forward only, as seccomp requires)
    labels, position = {}, 0
    for op in code:
        if op[0] == "label":
            labels[op[1]] = position
        else:
            position += 1
    program, position = [], 0
    for op in code:
        if op[0] == "label":
            continue
        if op[0] == "ld":
            program.append((BPF_LD_W_ABS, 0, 0, op[1]))
        elif op[0] == "ret":
            program.append((BPF_RET_K, 0, 0, op[1]))
        else:
            program.append((BPF_JEQ_K, labels[op[2]] - position - 1, 0, op[1]))
        position += 1
    return program


def install_quota_barrier(machine: str | None = None) -> str:
    """Install the filter on this process (inherited by every child, for good);
    returns what was done. OSError when the kernel refused it."""
    machine = machine or platform.machine()
    if machine not in NATIVE_ARCH:
        return f"disk quota barrier not installed: no system call table for {machine}"
    raw = b"".join(SOCK_FILTER.pack(*op) for op in quota_barrier_program())
    buffer = ctypes.create_string_buffer(raw, len(raw))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(raw) // SOCK_FILTER.size, ctypes.cast(buffer, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return "disk quota barrier installed (btrfs subvolumes and snapshots, project ids)"


def no_new_privileges(status_path: str = "/proc/self/status") -> bool:
    """Whether this process runs under NoNewPrivileges (so may install a filter)."""
    try:
        with open(status_path, encoding="ascii") as f:
            return any(line.split() == ["NoNewPrivs:", "1"] for line in f)
    except OSError:
        return False


def close_quota_escapes() -> None:
    """Install the barrier, or say why not; a lab under NoNewPrivileges whose
    filter the kernel refuses does not start (it could write past its quota)."""
    if not no_new_privileges():
        log("disk quota barrier not installed: this lab may gain privileges (sudo), "
            "which are root on the host")
        return
    try:
        log(install_quota_barrier())
    except OSError as e:
        log(f"disk quota barrier refused by the kernel: {e.strerror}; the lab does not start")
        sys.exit(1)


@dataclass(frozen=True)
class Script:
    path: str
    refused: str | None = None  # why it is not run


def collect_scripts(directory: str, root_uid: int = 0, stat_fn: Callable = os.stat,
                    listdir: Callable = os.listdir) -> list[Script]:
    """The directory's scripts in name order; non-executable files are left out silently."""
    scripts = []
    for name in sorted(listdir(directory)):
        if name.startswith(".") or name.endswith("~"):
            continue
        path = os.path.join(directory, name)
        try:
            st = stat_fn(path)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or not st.st_mode & stat.S_IXUSR:
            continue
        scripts.append(Script(path, unsafe_reason(st, root_uid)))
    return scripts


def run_scripts(directory: str, *, root_uid: int = 0, timeout: float = SCRIPT_TIMEOUT,
                run: Callable = subprocess.run, stat_fn: Callable = os.stat,
                listdir: Callable = os.listdir) -> list[tuple[str, str]]:
    """Run the startup scripts; return (script, outcome) pairs ("ok", "refused: ...", "failed: ...")."""
    if not os.path.isdir(directory):
        return []
    problem = directory_problem(directory, root_uid, stat_fn)
    if problem:
        log(f"REFUSED startup scripts directory {directory}: {problem}; no script is run")
        return [(directory, f"refused: {problem}")]
    outcomes = []
    for script in collect_scripts(directory, root_uid, stat_fn, listdir):
        if script.refused:
            log(f"REFUSED startup script {script.path}: {script.refused}")
            outcomes.append((script.path, f"refused: {script.refused}"))
            continue
        log(f"running startup script {script.path}")
        try:
            result = run([script.path], stdin=subprocess.DEVNULL, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            outcome = f"failed: timed out after {timeout:g}s"
        except OSError as e:
            outcome = f"failed: {e.strerror or e}"
        else:
            outcome = "ok" if result.returncode == 0 else f"failed: exit status {result.returncode}"
        if outcome != "ok":
            log(f"startup script {script.path} {outcome}; the lab starts anyway")
        outcomes.append((script.path, outcome))
    return outcomes


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        log("usage: lab_start.py [--] COMMAND [ARGS...]")
        sys.exit(2)
    # first: the startup scripts and the lab run under it
    close_quota_escapes()
    directory = os.environ.get(ENV_PATH, "")
    if directory:
        try:
            run_scripts(directory)
        except Exception as e:  # never keep the lab from starting
            log(f"startup scripts aborted: {type(e).__name__}: {e}; the lab starts anyway")
    os.execvp(args[0], args)


if __name__ == "__main__":
    main()
