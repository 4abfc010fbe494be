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


def test_on_a_worker_the_lab_binds_a_port_the_kernel_picks_and_reports_it(tmp_path):
    report = tmp_path / "home" / ".jupyterhub-lab-port"
    report.parent.mkdir()
    env = {lab_server.PORT_FILE_VARIABLE: str(report), "HOME": "/h"}
    sock = lab_server.bind_and_report(env, host="127.0.0.1")
    try:
        port = int(report.read_text())
        assert sock.getsockname() == ("127.0.0.1", port)
        assert sock.get_inheritable() is False
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        # consumed, and nothing else left in the directory
        assert env == {"HOME": "/h"}
        assert [p.name for p in report.parent.iterdir()] == [report.name]
    finally:
        sock.close()


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
