"""The lab services (lab/lab_services.py, lab/jupyter_server_config.py): which
services a lab's environment switches on, and how each is started.

The services themselves run on the test host (tests/integration/test_lab_services.py).
"""

import asyncio
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
from traitlets.config import Config

from lab import lab_services

LAB = Path(lab_services.__file__).parent
ALL_ON = {service.switch: "1" for service in lab_services.SERVICES}


def test_every_service_is_offered_when_every_switch_is_on():
    servers = lab_services.server_proxy_servers(ALL_ON, python="/venv/bin/python", script="/lib/ls.py")
    assert list(servers) == ["mlflow", "tensorboard", "glances"]
    mlflow = servers["mlflow"]
    assert mlflow["command"] == ["/venv/bin/python", "-I", "/lib/ls.py", "mlflow", "{unix_socket}"]
    # a unix socket in the lab's private /tmp, never a loopback port other labs could reach
    assert mlflow["unix_socket"] is True and "port" not in mlflow
    assert mlflow["launcher_entry"]["title"] == "MLflow"
    assert mlflow["launcher_entry"]["enabled"] is True


@pytest.mark.parametrize("service", lab_services.SERVICES, ids=lambda s: s.name)
@pytest.mark.parametrize("value", ["0", "", "yes", "true", None])
def test_a_switch_that_is_not_1_leaves_its_service_out(service, value):
    environ = dict(ALL_ON)
    if value is None:
        del environ[service.switch]
    else:
        environ[service.switch] = value
    servers = lab_services.server_proxy_servers(environ)
    assert service.name not in servers
    assert set(servers) == {s.name for s in lab_services.SERVICES} - {service.name}


def test_the_switches_are_the_hubs_variables():
    names = {s.name: s.switch for s in lab_services.SERVICES}
    assert names == {"mlflow": "JUPYTERHUB_SERVICE_MLFLOW",
                     "tensorboard": "JUPYTERHUB_SERVICE_TENSORBOARD",
                     "glances": "JUPYTERHUB_SERVICE_RESOURCES_MONITOR"}
    # what the hub puts in every lab's environment (hub_ext.units.environment)
    from hub_ext.units.environment import LabEnvironmentSettings

    assert set(names.values()) <= set(LabEnvironmentSettings().platform_variables())


def test_every_launcher_icon_is_shipped():
    for service in lab_services.SERVICES:
        entry = lab_services.server_proxy_servers(ALL_ON, icons_dir=str(LAB / "icons"))[service.name]
        icon = Path(entry["launcher_entry"]["icon_path"])
        assert icon.is_file() and icon.read_text().lstrip().startswith("<svg"), icon


def test_mlflow_keeps_its_data_in_the_workspace_and_serves_on_the_socket():
    environ = {"HOME": "/home/jh-ann", "JUPYTERHUB_PUBLIC_URL": "https://ann.hub.example:8443/jupyterhub/user/ann/"}
    command = lab_services.mlflow_command("/tmp/jsp-x/socket", environ, python="/venv/bin/python")
    assert command[:4] == ["/venv/bin/python", "-m", "mlflow", "server"]
    option = dict(zip(command[:-1], command[1:], strict=True))  # each option and the word after it
    assert option["--backend-store-uri"] == "sqlite:////home/jh-ann/workspace/mlflow/mlflow.db"
    assert option["--default-artifact-root"] == "/home/jh-ann/workspace/mlflow/artifacts"
    assert "--no-serve-artifacts" in command
    assert option["--uvicorn-opts"] == "--uds /tmp/jsp-x/socket"
    assert option["--workers"] == "1"
    # writes from the browser only from the lab's own origin
    assert option["--cors-allowed-origins"] == "https://ann.hub.example:8443"


@pytest.mark.parametrize("environ, origin", [
    ({"JUPYTERHUB_PUBLIC_URL": "https://ann.hub.example/user/ann/",
      "JUPYTERHUB_PUBLIC_HUB_URL": "https://hub.example/hub/"}, "https://ann.hub.example"),
    ({"JUPYTERHUB_PUBLIC_URL": "", "JUPYTERHUB_PUBLIC_HUB_URL": "https://hub.example/jh/hub/"},
     "https://hub.example"),
    ({"JUPYTERHUB_PUBLIC_URL": "/user/ann/"}, None),
    ({}, None),
])
def test_the_labs_origin_comes_from_its_public_urls(environ, origin):
    assert lab_services.lab_origin(environ) == origin
    command = lab_services.mlflow_command("/s", environ)
    assert ("--cors-allowed-origins" in command) == (origin is not None)


def test_notebooks_log_to_the_uis_store_unless_the_user_chose_another():
    home = {"HOME": "/home/jh-ann"}
    store = "sqlite:////home/jh-ann/workspace/mlflow/mlflow.db"
    assert lab_services.lab_environment({**ALL_ON, **home}) == {"MLFLOW_TRACKING_URI": store}
    assert lab_services.lab_environment({**ALL_ON, **home, "MLFLOW_TRACKING_URI": "http://x"}) == {}
    assert lab_services.lab_environment({**home, "JUPYTERHUB_SERVICE_MLFLOW": "0"}) == {}


def test_tensorboard_reads_the_workspace():
    assert lab_services.tensorboard_logdir({"HOME": "/home/jh-ann"}) == "/home/jh-ann/workspace/tensorboard"


class FakeProxyHandler:
    """jupyter-server-proxy's handler as refuse_cross_origin_writes sees it."""

    def __init__(self, method: str, same_origin: bool):
        self.request = types.SimpleNamespace(method=method)
        self.same_origin = same_origin
        self.prepared = False

    async def prepare(self):
        self.prepared = True  # authentication happens here, first

    def check_origin(self):
        return self.same_origin


def fake_server_proxy(monkeypatch) -> type:
    """A jupyter_server_proxy.handlers (the lab venv's, not this one's) with a
    fresh FakeProxyHandler class."""
    handler = type("ProxyHandler", (FakeProxyHandler,), {})
    package, handlers = types.ModuleType("jupyter_server_proxy"), types.ModuleType("jupyter_server_proxy.handlers")
    handlers.ProxyHandler = handler
    monkeypatch.setitem(sys.modules, "jupyter_server_proxy", package)
    monkeypatch.setitem(sys.modules, "jupyter_server_proxy.handlers", handlers)
    return handler


@pytest.mark.parametrize("method,same_origin,refused", [
    ("POST", False, True), ("DELETE", False, True), ("PUT", False, True), ("PATCH", False, True),
    ("POST", True, False), ("GET", False, False), ("HEAD", False, False), ("OPTIONS", False, False),
])
def test_a_service_refuses_writes_from_another_origin_before_proxying(monkeypatch, method, same_origin, refused):
    from tornado.web import HTTPError

    handler_class = fake_server_proxy(monkeypatch)
    lab_services.refuse_cross_origin_writes(handler_class)
    handler = handler_class(method, same_origin)
    if refused:
        with pytest.raises(HTTPError) as raised:
            asyncio.run(handler.prepare())
        assert raised.value.status_code == 403
    else:
        asyncio.run(handler.prepare())
    assert handler.prepared  # the proxy's own preparation (authentication) ran first


def test_the_labs_server_config_offers_what_the_environment_switches_on(monkeypatch):
    """lab/jupyter_server_config.py as the lab loads it (traitlets' ``c``)."""
    code = installed_server_config()
    handler_class = fake_server_proxy(monkeypatch)
    unguarded = handler_class.prepare
    for environ, expected in [(ALL_ON, {"mlflow", "tensorboard", "glances"}),
                              ({**ALL_ON, "JUPYTERHUB_SERVICE_TENSORBOARD": "0"}, {"mlflow", "glances"}),
                              ({}, set())]:
        # the config reads and updates os.environ: a plain dict stands in for it
        lab_env = {"HOME": "/home/jh-ann", **environ}
        monkeypatch.setattr(os, "environ", lab_env)
        c = Config()
        exec(code, {"c": c})
        assert set(c.ServerProxy.servers) == expected
        assert ("MLFLOW_TRACKING_URI" in lab_env) == ("mlflow" in expected)
        # with a service on, the proxy refuses cross-origin writes
        assert (handler_class.prepare is not unguarded) == bool(expected)
        handler_class.prepare = unguarded


def installed_server_config():
    """lab/jupyter_server_config.py compiled as installed, loading the modules
    it loads from /usr/local/lib/jupyterhub from this checkout instead."""
    text = (LAB / "jupyter_server_config.py").read_text()
    installed = "/usr/local/lib/jupyterhub/"
    assert installed in text
    return compile(text.replace(installed, f"{LAB}/"), "jupyter_server_config.py", "exec")


def test_the_labs_server_config_puts_kernels_on_unix_sockets_in_the_units_runtime_directory(monkeypatch, tmp_path):
    code = installed_server_config()
    # jupyter_core (the lab venv's, not this one's): Jupyter's own runtime directory
    paths = types.ModuleType("jupyter_core.paths")
    paths.jupyter_runtime_dir = lambda: str(tmp_path / "jh-ann/.local/share/jupyter/runtime")
    monkeypatch.setitem(sys.modules, "jupyter_core", types.ModuleType("jupyter_core"))
    monkeypatch.setitem(sys.modules, "jupyter_core.paths", paths)
    lab_env = {"HOME": "/home/jh-ann", "RUNTIME_DIRECTORY": "/run/jupyter-ann-singleuser"}
    monkeypatch.setattr(os, "environ", lab_env)
    c = Config()
    exec(code, {"c": c})
    assert c.KernelManager.transport == "ipc"
    # the server's connection files, and terminals' jupyter console --existing
    assert lab_env["JUPYTER_RUNTIME_DIR"] == "/run/jupyter-ann-singleuser"
    # the cookie secret where Jupyter keeps it by default (it outlives the lab)
    secret = tmp_path / "jh-ann/.local/share/jupyter/runtime/jupyter_cookie_secret"
    assert c.ServerApp.cookie_secret_file == str(secret)
    assert secret.parent.is_dir() and secret.parent.stat().st_mode & 0o777 == 0o700


def test_an_unknown_service_is_a_usage_error():
    result = subprocess.run([sys.executable, "-I", str(LAB / "lab_services.py"), "jupyter", "/tmp/s"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "usage: lab_services.py {mlflow,tensorboard,glances} SOCKET" in result.stderr
