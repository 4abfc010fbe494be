"""Where a lab's kernels listen: unix sockets only the lab's user can reach.

Installed by the playbook as ``/usr/local/lib/jupyterhub/lab_kernels.py``
(root, 0644) and called by the lab venv's system-wide
``jupyter_server_config.py`` at lab start (docs/security.md, "Kernels").

Jupyter's default puts a kernel's five ZeroMQ channels on loopback TCP ports,
and every lab shares the host's network: any other user's lab could connect,
and the iopub channel publishes every output of every cell to any subscriber
(the connection file's key signs messages, it does not hide them). Here the
kernels use ZeroMQ's ``ipc`` transport instead: unix sockets next to their
connection files, in the lab unit's runtime directory, which systemd creates
for the unit (``RuntimeDirectory=``, in ``RUNTIME_DIRECTORY``) owned by the
lab's user with mode 0700 and removes when the lab stops. Connecting to a unix
socket needs search permission on its directory, so no other user reaches it.

Standard library only: the lab's start imports it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# sockaddr_un's sun_path holds 108 bytes with the terminating NUL
UNIX_SOCKET_PATH_MAX = 107
# jupyter_server names a kernel's connection file kernel-<uuid4>.json and
# jupyter_client puts its ipc sockets at kernel-<uuid4>-ipc-<n> (n from 1 up)
LONGEST_KERNEL_SOCKET_NAME = len("kernel-") + 36 + len("-ipc-") + 2


def private_runtime_dir(environ: Mapping[str, str]) -> str | None:
    """The lab unit's own runtime directory (the first of ``RUNTIME_DIRECTORY``),
    or None outside a lab unit or when a kernel's socket path would not fit
    in a unix socket address there."""
    directory = environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if not os.path.isabs(directory):
        return None
    if len(os.fsencode(directory)) + 1 + LONGEST_KERNEL_SOCKET_NAME > UNIX_SOCKET_PATH_MAX:
        return None
    return directory


def too_long_warning(environ: Mapping[str, str]) -> str | None:
    """What the lab logs when it runs in a unit whose runtime directory is too
    long for its kernels' sockets (a unit name of more than 51
    characters): its kernels then listen on loopback TCP ports, as Jupyter's."""
    directory = environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if os.path.isabs(directory) and private_runtime_dir(environ) is None:
        return (f"lab_kernels: {directory} is too long for the kernels' unix sockets "
                f"({UNIX_SOCKET_PATH_MAX} bytes); kernels listen on loopback TCP ports, "
                "reachable from other labs: shorten jupyterhub_spawner_unit_name_template")
    return None


def kernel_settings(environ: Mapping[str, str]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """(traitlets settings, environment variables) that put the lab's kernels
    on unix sockets in its private runtime directory; nothing to change
    outside a lab unit. The server takes its runtime directory (where it
    writes the kernels' connection files) from the variable, read after its
    configuration files; so do ``jupyter console --existing`` and ``jupyter
    kernel`` in the lab's terminals."""
    directory = private_runtime_dir(environ)
    if directory is None:
        return {}, {}
    return {"KernelManager": {"transport": "ipc"}}, {"JUPYTER_RUNTIME_DIR": directory}
