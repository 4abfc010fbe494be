"""What a lab's sandbox on a worker is made of: the steps lab/lab_sandbox.py takes.

The same view as a lab unit on one host (hub_ext/units/lab_unit.py,
docs/cluster.md "The lab sandbox"), for a job the lab builds itself in user,
mount and PID namespaces of its own:

* the per-user directories at their in-lab paths (``layout.bind_paths``:
  ``/home/<unix>`` with ``workspace`` and ``.cache`` inside, ``/mnt/shared``),
  on a fresh ``/home`` that shows no other home (ProtectHome=tmpfs);
* the system read-only (ProtectSystem=strict, ReadOnlyPaths=/run);
* fresh capped ``/tmp``, ``/var/tmp`` and ``/dev/shm`` (isolate_tmp);
* the other users' directories on the shared storage hidden, and the worker's
  munge socket: a lab could otherwise submit Slurm jobs of its own, outside
  the hub's limits and this sandbox.

Pure: the spawner passes the result to the launcher as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from hub_ext.storage import layout
from hub_ext.units.lab_unit import private_temporary_filesystems

# what systemd's ProtectSystem=strict and ReadOnlyPaths=/run make read-only
# for a lab unit, as far as the worker has them (/dev, /proc, /sys: the kernel's)
READ_ONLY_PATHS = ("/usr", "/etc", "/opt", "/var", "/boot", "/root", "/run", "/srv", "/mnt", "/media")
# munge's socket: the key to slurmctld for any local process
MUNGE_DIR = "/run/munge"
# a fresh /home: only the user's own mount point in it
HOME_TMPFS = "size=64k,mode=0755"
LAUNCHER = "/usr/local/lib/jupyterhub/lab_sandbox.py"


def _tmpfs(path: str, options: str) -> dict:
    return {"op": "tmpfs", "path": path, "options": options}


def _readonly(path: str) -> dict:
    return {"op": "readonly", "path": path}


def sandbox_steps(unix: str, users_root: str, shared_dir: str | None, *,
                  isolate_tmp: bool, tmp_size: str, shm_size: str) -> list[dict]:
    """The launcher's mount steps, in order: binds before anything above
    their sources is hidden or made read-only."""
    home = layout.home_in_lab(unix)
    steps = [_tmpfs("/home", HOME_TMPFS), {"op": "mkdir", "path": home}]
    for entry in layout.bind_paths(unix, users_root, shared_dir):
        source, path = entry.split(":", 1)
        steps.append({"op": "bind", "source": source, "path": path})
    steps += [_readonly(path) for path in (*READ_ONLY_PATHS, "/home")]
    # other users' directories (names and all), and munge's socket
    steps += [{"op": "hide", "path": users_root}, {"op": "hide", "path": MUNGE_DIR}]
    if isolate_tmp:
        for entry in private_temporary_filesystems(tmp_size, shm_size):
            path, options = entry.split(":", 1)
            # nosuid,nodev: the launcher's mount flags
            steps.append(_tmpfs(path, ",".join(o for o in options.split(",") if o not in ("nosuid", "nodev"))))
    return steps


def sandbox_spec(unix: str, users_root: str, shared_dir: str | None, workdir: str, *,
                 isolate_tmp: bool, tmp_size: str, shm_size: str) -> str:
    """The launcher's first argument: the steps and the lab's working directory."""
    steps = sandbox_steps(unix, users_root, shared_dir, isolate_tmp=isolate_tmp,
                          tmp_size=tmp_size, shm_size=shm_size)
    return json.dumps({"steps": steps, "workdir": workdir}, separators=(",", ":"))


def launcher_argv(python: str, spec: str, command: Sequence[str]) -> list[str]:
    """The lab command inside the sandbox."""
    return [python, "-I", LAUNCHER, spec, "--", *command]
