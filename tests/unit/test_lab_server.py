"""lab.lab_server: the lab adopts the socket systemd holds for its unit."""

import socket
import sys

import pytest

from lab import lab_server


def test_inherited_fd_follows_the_sd_listen_fds_protocol():
    env = {"LISTEN_PID": "42", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "x", "HOME": "/h"}
    assert lab_server.inherited_fd(env, pid=42) == 3
    # consumed: kernels and terminals the lab starts must not claim the socket
    assert env == {"HOME": "/h"}


def test_no_socket_for_another_process_or_without_one():
    assert lab_server.inherited_fd({"LISTEN_PID": "41", "LISTEN_FDS": "1"}, pid=42) is None
    assert lab_server.inherited_fd({"LISTEN_PID": "42", "LISTEN_FDS": "0"}, pid=42) is None
    assert lab_server.inherited_fd({"LISTEN_PID": "42", "LISTEN_FDS": "x"}, pid=42) is None
    assert lab_server.inherited_fd({}, pid=42) is None


def test_adopted_socket_is_the_listening_one_and_not_inherited():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    fd = listener.detach()
    adopted = lab_server.adopt_socket(fd)
    try:
        assert adopted.fileno() == fd
        assert adopted.get_inheritable() is False
        with socket.create_connection(adopted.getsockname(), timeout=2):
            pass
    finally:
        adopted.close()


def test_without_a_port_file_the_lab_binds_as_usual():
    env = {"HOME": "/h"}
    assert lab_server.bind_and_report(env) is None
    assert env == {"HOME": "/h"}


# --- the faster start (skip_start_costs) ------------------------------------

def write_module(root, name: str, body: str) -> None:
    (root / f"{name}.py").write_text(body)


@pytest.fixture
def slow_module(tmp_path, monkeypatch):
    """An installed package whose import leaves a mark, like rfc3987_syntax's grammar."""
    (tmp_path / "slowgrammar").mkdir()
    write_module(tmp_path / "slowgrammar", "__init__", "import builtins\n"
                 "builtins.slowgrammar_imports = getattr(builtins, 'slowgrammar_imports', 0) + 1\n"
                 "def is_valid_syntax(term, value):\n    return (term, value) == ('iri', 'ok')\n"
                 "OTHER = 'other'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import builtins
    monkeypatch.setattr(builtins, "slowgrammar_imports", 0, raising=False)
    yield builtins
    sys.modules.pop("slowgrammar", None)


def test_deferred_module_is_imported_on_the_first_call_only(slow_module):
    assert lab_server.defer_import("slowgrammar", ["is_valid_syntax"]) is True
    from slowgrammar import is_valid_syntax  # what jsonschema does at its import

    assert slow_module.slowgrammar_imports == 0
    assert is_valid_syntax("iri", "ok") is True
    assert is_valid_syntax("iri", "bad") is False
    assert slow_module.slowgrammar_imports == 1
    # the real module replaces the stand-in for every later importer
    assert sys.modules["slowgrammar"].OTHER == "other"
    assert not isinstance(sys.modules["slowgrammar"], lab_server.DeferredModule)


def test_other_attributes_import_the_real_module_special_probes_do_not(slow_module):
    lab_server.defer_import("slowgrammar", ["is_valid_syntax"])
    stand_in = sys.modules["slowgrammar"]
    assert not hasattr(stand_in, "__wrapped__")
    assert slow_module.slowgrammar_imports == 0
    assert stand_in.OTHER == "other"
    assert slow_module.slowgrammar_imports == 1


def test_a_missing_or_imported_module_is_left_alone(slow_module):
    modules: dict = {}
    assert lab_server.defer_import("no_such_module_here", ["f"], modules) is False
    assert modules == {}  # an importer still finds it missing and falls back
    modules["slowgrammar"] = real = object()
    assert lab_server.defer_import("slowgrammar", ["is_valid_syntax"], modules) is False
    assert modules["slowgrammar"] is real


def test_labapp_is_imported_without_reading_the_yarn_configuration(tmp_path, monkeypatch):
    package = tmp_path / "jupyterlab"
    package.mkdir()
    write_module(package, "__init__", "")
    write_module(package, "commands", "calls = []\n"
                 "def _yarn_config(logger):\n    calls.append(logger)\n"
                 "    return {'yarn config': {'registry': 'user'}, 'npm config': {}}\n")
    write_module(package, "labapp", "from jupyterlab import commands\n"
                 "registry = commands._yarn_config(None)['yarn config'].get('registry', 'default')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("jupyterlab", "jupyterlab.commands", "jupyterlab.labapp"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    try:
        assert lab_server.import_labapp_without_yarn() is True
        commands = sys.modules["jupyterlab.commands"]
        assert sys.modules["jupyterlab.labapp"].registry == "default"
        assert commands.calls == []
        # restored: a build later in the lab reads the user's registry
        assert commands._yarn_config("log")["yarn config"]["registry"] == "user"
        assert lab_server.import_labapp_without_yarn() is False
    finally:
        for name in ("jupyterlab", "jupyterlab.commands", "jupyterlab.labapp"):
            sys.modules.pop(name, None)


@pytest.fixture
def hub_like_packages(tmp_path, monkeypatch):
    """A logger module importing a heavy package's handlers and errors, as
    jupyterhub.log imports jupyterhub.handlers.pages and, through
    jupyterhub.utils, sqlalchemy.exc."""
    for package in ("heavyhub", "heavyhub/handlers", "heavydb"):
        (tmp_path / package).mkdir()
        write_module(tmp_path / package, "__init__", "import builtins\n"
                     f"builtins.heavy_imports.append({package.replace('/', '.')!r})\n")
    write_module(tmp_path / "heavyhub/handlers", "pages", "class HealthCheckHandler:\n    real = True\n")
    write_module(tmp_path / "heavydb", "exc", "class SQLAlchemyError(Exception):\n    real = True\n")
    write_module(tmp_path / "heavyhub", "log", "from .handlers.pages import HealthCheckHandler\n"
                 "from heavydb.exc import SQLAlchemyError\n"
                 "def is_health_check(handler):\n    return isinstance(handler, HealthCheckHandler)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import builtins
    monkeypatch.setattr(builtins, "heavy_imports", [], raising=False)
    yield builtins
    for name in [n for n in sys.modules if n.split(".")[0] in ("heavyhub", "heavydb")]:
        del sys.modules[name]


def test_a_module_is_imported_with_stand_ins_that_are_gone_afterwards(hub_like_packages):
    handlers = lab_server.HubHandlers("heavyhub.handlers.pages")
    errors = lab_server.HubDatabaseErrors("heavydb.exc")
    stand_ins = {"heavyhub.handlers": handlers, "heavyhub.handlers.pages": handlers, "heavydb.exc": errors}
    assert lab_server.import_with_stand_ins("heavyhub.log", stand_ins) is True

    log = sys.modules["heavyhub.log"]
    assert hub_like_packages.heavy_imports == ["heavyhub"]
    assert log.HealthCheckHandler is lab_server.HubHandlers.HealthCheckHandler
    assert issubclass(log.SQLAlchemyError, Exception)
    assert log.is_health_check(object()) is False
    # later importers get the real modules
    assert not any(name in sys.modules for name in stand_ins)
    from heavyhub.handlers.pages import HealthCheckHandler
    assert HealthCheckHandler.real is True
    # nothing to do a second time, nor for a module that is not installed
    assert lab_server.import_with_stand_ins("heavyhub.log", stand_ins) is False
    assert lab_server.import_with_stand_ins("no_such_package_here.log", {}) is False


def test_a_deferred_package_without_functions_is_imported_before_its_submodules(hub_like_packages):
    assert lab_server.defer_import("heavydb", []) is True
    stand_in = sys.modules["heavydb"]
    import heavydb  # what `import sqlalchemy as sa` gets

    assert heavydb is stand_in and hub_like_packages.heavy_imports == []
    from heavydb.exc import SQLAlchemyError
    # the real package ran first, as Python imports a package before its submodules
    assert hub_like_packages.heavy_imports == ["heavydb"]
    assert SQLAlchemyError.real is True
    assert not isinstance(sys.modules["heavydb"], lab_server.DeferredModule)
    assert stand_in.exc is sys.modules["heavydb.exc"]


def test_a_module_is_imported_with_an_empty_default_ca_file_for_the_time_of_its_import(tmp_path, monkeypatch):
    # what aiohttp.connector does at import: build SSL contexts, which read the CA file
    write_module(tmp_path, "tlsclient", "import os\nSEEN = os.environ.get('SSL_CERT_FILE')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tlsclient", raising=False)
    environ = {"HOME": "/h"}
    try:
        monkeypatch.setattr(lab_server.os, "environ", environ)
        assert lab_server.import_without_default_ca_file("tlsclient") is True
        assert sys.modules["tlsclient"].SEEN == "/dev/null"
        assert environ == {"HOME": "/h"}  # kernels and terminals never see it
        assert lab_server.import_without_default_ca_file("tlsclient") is False
    finally:
        sys.modules.pop("tlsclient", None)


def test_an_admins_own_ca_file_is_left_alone(tmp_path, monkeypatch):
    write_module(tmp_path, "tlsclient", "")
    monkeypatch.syspath_prepend(str(tmp_path))
    environ = {"SSL_CERT_FILE": "/etc/custom-ca.pem"}
    assert lab_server.import_without_default_ca_file("tlsclient", environ) is False
    assert "tlsclient" not in sys.modules
    assert environ == {"SSL_CERT_FILE": "/etc/custom-ca.pem"}
