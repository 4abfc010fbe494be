"""Start a lab: run the admin's startup scripts, then exec the lab command.

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

Standard library only: it runs under the lab venv's Python, not the hub's.
"""

from __future__ import annotations

import os
import stat
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
    directory = os.environ.get(ENV_PATH, "")
    if directory:
        try:
            run_scripts(directory)
        except Exception as e:  # never keep the lab from starting
            log(f"startup scripts aborted: {type(e).__name__}: {e}; the lab starts anyway")
    os.execvp(args[0], args)


if __name__ == "__main__":
    main()
