"""Run the user's lab on the listening socket systemd holds for its unit.

Each lab unit comes with a socket unit (hub_ext.units.lab_unit.lab_socket_properties):
systemd, as PID 1, binds the lab's port before the lab starts and keeps it
until the hub stops the lab, so no other user's lab can take the port, even
while this lab restarts or after it crashed (docs/security.md). This script
runs ``jupyterhub-singleuser`` with a server that serves on that inherited
socket (the sd_listen_fds protocol: ``LISTEN_PID``, ``LISTEN_FDS``, fd 3)
instead of binding a port of its own.

Installed by the playbook as ``/usr/local/lib/jupyterhub/lab_server.py``
(root, 0644) and run by every lab unit, as the lab's user, under the lab
venv's Python (after lab/lab_start.py's startup scripts). Imports only the
standard library at module level, so its pure part is tested without a lab.

On a cluster's worker (docs/cluster.md) there is no systemd socket: the
worker's port keeper (lab/lab_ports.py) binds a port the kernel picks and
hands the lab the listening socket, holding the port until after the lab has
ended (so no other user's job can take it first, or while the hub still
routes to it); the lab reports the port to the hub through the file the hub
names in ``JUPYTERHUB_LAB_PORT_FILE``, in the user's own home directory where
no other user can write (``bind_and_report``).

It also starts the lab faster than a stock ``jupyterhub-singleuser`` of the
same versions (``skip_start_costs``; docs/benchmarks.md, "Lab start"), by
leaving out what a stock start imports or runs and no lab needs at start.
"""

from __future__ import annotations

import array
import importlib
import importlib.machinery
import importlib.util
import os
import socket
import sys
import types
from collections.abc import Callable, Mapping, MutableMapping, Sequence

SD_LISTEN_FDS_START = 3  # the first file descriptor systemd passes
LISTEN_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
# where a lab on a cluster's worker reports the port it listens on (set by the hub)
PORT_FILE_VARIABLE = "JUPYTERHUB_LAB_PORT_FILE"
# the worker's port keeper (lab/lab_ports.py; the slurm role's jupyterhub-lab-ports.socket)
KEEPER_SOCKET = "/run/jupyterhub-lab-ports.sock"


def inherited_fd(environ: MutableMapping[str, str], pid: int) -> int | None:
    """The listening socket's descriptor systemd passed to process ``pid``, or None.

    The variables are removed either way: kernels and terminals started by
    the lab must not believe they were given sockets.
    """
    owner = environ.get("LISTEN_PID", "")
    count = environ.get("LISTEN_FDS", "")
    for name in LISTEN_VARIABLES:
        environ.pop(name, None)
    if owner != str(pid) or not count.isdigit() or int(count) < 1:
        return None
    return SD_LISTEN_FDS_START


def adopt_socket(fd: int) -> socket.socket:
    """The inherited listening socket, closed in the lab's child processes."""
    return _for_the_lab(socket.socket(fileno=fd))


def _for_the_lab(sock: socket.socket) -> socket.socket:
    sock.set_inheritable(False)
    sock.setblocking(False)
    return sock


def bind_and_report(environ: MutableMapping[str, str], keeper: str = KEEPER_SOCKET) -> socket.socket | None:
    """On a cluster's worker: a listening socket from the worker's port keeper
    (``keeper_socket``), its port written (atomically) to the file
    ``JUPYTERHUB_LAB_PORT_FILE`` names; None without that variable. The
    variable is removed either way (the lab's kernels and terminals have
    nothing to report)."""
    path = environ.pop(PORT_FILE_VARIABLE, "")
    if not path:
        return None
    sock, port = keeper_socket(keeper)
    partial = f"{path}.{os.getpid()}"
    with open(partial, "w", encoding="ascii") as f:
        f.write(f"{port}\n")
    os.replace(partial, path)
    return _for_the_lab(sock)


def keeper_socket(keeper: str) -> tuple[socket.socket, int]:
    """A listening socket and its port from the worker's port keeper
    (lab/lab_ports.py), which holds the port until after this lab has ended,
    so no other user's job can take it while the hub still routes to it."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(30)
            conn.connect(keeper)
            reply, ancillary, _flags, _addr = conn.recvmsg(64, socket.CMSG_SPACE(array.array("i", [0]).itemsize))
    except OSError as e:
        raise SystemExit(f"lab_server: the worker's port keeper at {keeper} did not answer ({e}): "
                         "is jupyterhub-lab-ports.socket running on this worker?") from None
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    text = reply.decode("ascii", errors="replace").strip()
    if len(fds) != 1 or not text.isdigit():
        for fd in fds:
            os.close(fd)
        raise SystemExit(f"lab_server: the worker's port keeper gave no socket: {text or 'no answer'}")
    return socket.socket(fileno=fds[0]), int(text)


class DeferredModule(types.ModuleType):
    """Stand-in for a module that is slow to import, until it is used: the
    listed functions import the real module when first called; any other
    attribute but a special name imports it at once. A package with deferred
    functions gets its real ``__path__`` (``from package import function``
    looks for it first); one without asks for it when a submodule is imported,
    so the real package is imported before any of its submodules."""

    def __init__(self, spec: importlib.machinery.ModuleSpec, functions: Sequence[str],
                 modules: MutableMapping) -> None:
        super().__init__(spec.name)
        self.__spec__ = spec
        if spec.submodule_search_locations is not None and functions:
            self.__path__ = list(spec.submodule_search_locations)
        self._modules = modules
        for function in functions:
            setattr(self, function, self._deferred(function))

    def _real(self) -> types.ModuleType:
        if self._modules.get(self.__name__) is self:
            del self._modules[self.__name__]
        return importlib.import_module(self.__name__)

    def _deferred(self, function: str) -> Callable:
        def call(*args, **kwargs):
            return getattr(self._real(), function)(*args, **kwargs)
        call.__name__ = call.__qualname__ = function
        return call

    def __getattr__(self, attribute: str):
        # probes of special names (copy, inspect, pickle) do not pay the import
        if attribute.startswith("__") and attribute not in ("__file__", "__all__", "__path__"):
            raise AttributeError(attribute)
        return getattr(self._real(), attribute)


def defer_import(name: str, functions: Sequence[str], modules: MutableMapping | None = None) -> bool:
    """Put a DeferredModule for the installed module ``name`` into ``modules``
    (sys.modules); False when it is not installed or already imported (an
    importer must still see a missing module as missing)."""
    modules = sys.modules if modules is None else modules
    if name in modules:
        return False
    spec = importlib.util.find_spec(name)
    if spec is None:
        return False
    modules[name] = DeferredModule(spec, functions, modules)
    return True


def no_yarn_config(logger) -> dict:
    """jupyterlab.commands._yarn_config's answer when node is not installed."""
    return {"yarn config": {}, "npm config": {}}


def import_labapp_without_yarn(modules: MutableMapping | None = None) -> bool:
    """Import jupyterlab.labapp without the ``node yarn.js config`` it runs at
    import: labapp computes its version through an AppOptions whose default
    registry comes from the user's yarn configuration, a node process (0.3 s
    to seconds on two cores) for a value the version does not use. Builds and
    extension installs later in the lab read the yarn configuration as usual.
    False when there was nothing to leave out."""
    modules = sys.modules if modules is None else modules
    if "jupyterlab.labapp" in modules or importlib.util.find_spec("jupyterlab") is None:
        return False
    commands = importlib.import_module("jupyterlab.commands")
    read_yarn_config = getattr(commands, "_yarn_config", None)
    if read_yarn_config is None:  # a JupyterLab that no longer reads it
        return False
    commands._yarn_config = no_yarn_config
    try:
        importlib.import_module("jupyterlab.labapp")
    finally:
        commands._yarn_config = read_yarn_config
    return True


# The hub's database layer: jupyterhub.scopes and jupyterhub.metrics import
# its models (jupyterhub.orm, with SQLAlchemy's ORM and alembic) and SQLAlchemy
# at module level for functions only the hub calls (the lab calls scopes' set
# logic without a database); imported on first use
HUB_DATABASE_MODULES = ("sqlalchemy", "jupyterhub.orm", "jupyterhub.roles")


class HubHandlers(types.ModuleType):
    """``jupyterhub.handlers.pages`` as jupyterhub.log sees it in a lab: its one
    import from there is HealthCheckHandler, for an isinstance check of the
    requests it logs, and no lab serves the hub's health check."""

    class HealthCheckHandler:
        """The hub's /hub/health handler, which no lab has."""


class HubDatabaseErrors(types.ModuleType):
    """``sqlalchemy.exc`` as jupyterhub.utils sees it in a lab: it catches
    SQLAlchemyError around the hub's database calls, and a lab makes none."""

    class SQLAlchemyError(Exception):
        """SQLAlchemy's error base class, which nothing in a lab raises."""


def import_with_stand_ins(name: str, stand_ins: Mapping[str, types.ModuleType],
                          modules: MutableMapping | None = None) -> bool:
    """Import module ``name`` while ``stand_ins`` (module name -> stand-in) are
    in ``modules`` (sys.modules), then take them out: whoever imports those
    modules later gets the real ones. False (nothing imported) when ``name``
    or one of the stand-ins' modules was already imported, or ``name`` is not
    installed."""
    modules = sys.modules if modules is None else modules
    if name in modules or any(module in modules for module in stand_ins) \
            or importlib.util.find_spec(name.partition(".")[0]) is None:
        return False
    modules.update(stand_ins)
    try:
        importlib.import_module(name)
    finally:
        for module, stand_in in stand_ins.items():
            if modules.get(module) is stand_in:
                del modules[module]
    return True


def import_without_default_ca_file(name: str, environ: MutableMapping[str, str] | None = None) -> bool:
    """Import module ``name`` (aiohttp.connector) with OpenSSL's default CA
    file set to an empty one (``SSL_CERT_FILE``) for the time of the import.

    aiohttp builds its two default SSL contexts when imported, and each reads
    the system's CA bundle, about 140 certificates parsed one by one (OpenSSL
    3.0: 40 ms each on an idle two-core host); the lab talks to the hub over a
    unix socket and makes no TLS connection with them. OpenSSL's default CA
    directory (/etc/ssl/certs, the same certificates as hash links) stays in
    those contexts: it is read certificate by certificate when a peer's chain
    is checked, so a TLS connection made with them verifies as before. False
    (nothing done) when the module was imported already or SSL_CERT_FILE is
    set by someone else."""
    environ = os.environ if environ is None else environ
    if name in sys.modules or "SSL_CERT_FILE" in environ or importlib.util.find_spec(name.partition(".")[0]) is None:
        return False
    environ["SSL_CERT_FILE"] = os.devnull
    try:
        importlib.import_module(name)
    finally:
        del environ["SSL_CERT_FILE"]
    return True


def skip_start_costs() -> None:
    """Leave out what a stock lab start spends most of its time on and never uses then.

    - jsonschema's format checkers (imported by jupyter_events, so by every
      Jupyter server) import rfc3987_syntax when it is installed, and its import
      builds about 40 Earley parsers of the IRI grammar (0.7 s on two cores) for
      the "iri" formats, which no schema the lab validates uses: the parsers are
      built when such a value is first checked.
    - jupyterlab.labapp's import-time yarn configuration (import_labapp_without_yarn).
    - the hub's request handlers and database layer (SQLAlchemy, alembic,
      jupyterhub.orm: about 200 modules), which JupyterHub's single-user
      extension imports through jupyterhub.log, jupyterhub.utils and
      jupyterhub.scopes and never uses (HubHandlers, HubDatabaseErrors,
      HUB_DATABASE_MODULES).
    - the system's CA bundle, read twice by aiohttp's import for TLS
      connections the lab does not make (import_without_default_ca_file).
    """
    defer_import("rfc3987_syntax", ["is_valid_syntax"])
    import_labapp_without_yarn()
    import_without_default_ca_file("aiohttp.connector")  # before jupyterhub.utils imports it
    for name in HUB_DATABASE_MODULES:  # before jupyterhub.log's import of jupyterhub.metrics
        defer_import(name, [])
    handlers = HubHandlers("jupyterhub.handlers.pages")
    import_with_stand_ins("jupyterhub.log", {
        "jupyterhub.handlers": handlers, "jupyterhub.handlers.pages": handlers,
        "sqlalchemy.exc": HubDatabaseErrors("sqlalchemy.exc"),
    })


def main() -> None:
    skip_start_costs()
    from jupyter_server.serverapp import ServerApp
    from jupyterhub.singleuser.extension import JupyterHubSingleUser

    fd = inherited_fd(os.environ, os.getpid())
    listening = adopt_socket(fd) if fd is not None else bind_and_report(os.environ)
    if listening is None:
        print("lab_server: no socket from systemd; the lab binds its own port",
              file=sys.stderr, flush=True)

    class SocketActivatedServerApp(ServerApp):
        # jupyter_server 2.x binds in these two steps: a trial bind to find a
        # free port (it would fail: systemd holds it), then the real bind
        def _find_http_port(self) -> None:
            if listening is None:
                super()._find_http_port()

        def _bind_http_server_tcp(self) -> bool:
            if listening is None:
                return super()._bind_http_server_tcp()
            self.http_server.add_sockets([listening])
            return True

    # set on JupyterHub's own extension app (a subclass would be looked up as an
    # extension package of its own, "__main__"); this process only
    JupyterHubSingleUser.serverapp_class = SocketActivatedServerApp
    JupyterHubSingleUser.launch_instance()


if __name__ == "__main__":
    main()
