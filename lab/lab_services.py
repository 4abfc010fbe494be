"""The lab's services: MLflow, TensorBoard and Glances, each behind the lab.

Installed by the playbook as ``/usr/local/lib/jupyterhub/lab_services.py``
(root, 0644). Two uses (docs/lab-services.md):

- The lab venv's system-wide ``jupyter_server_config.py`` calls
  ``server_proxy_servers(os.environ)`` at lab start: jupyter-server-proxy gets
  one entry per service whose switch (``JUPYTERHUB_SERVICE_*``, set by the
  hub from the Ansible variables) is ``"1"``. A service that is off is not
  configured: it has no launcher entry and its URL is a 404.
- jupyter-server-proxy starts a service on its first request by running this
  file as ``python -I lab_services.py <service> <socket>``: the service serves
  HTTP on that unix socket, in a directory jupyter-server-proxy creates under
  the lab's private ``/tmp``, so no other user's lab can connect to it (labs
  share the host's network; a loopback port would be open to every user).
  None of the three offers a unix socket on its command line, so each is
  started here on its own server library's unix socket support.

Standard library only at module level: the lab's start imports it.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

ICONS_DIR = "/usr/local/lib/jupyterhub/lab_services_icons"
# seconds until a service answers on its socket: MLflow's first start creates its
# database and takes about a minute on two busy cores
START_TIMEOUT = 180


@dataclass(frozen=True)
class Service:
    name: str  # URL path under the user's server and launcher name
    switch: str  # environment variable of the lab: "1" = offered
    title: str


SERVICES = (
    Service("mlflow", "JUPYTERHUB_SERVICE_MLFLOW", "MLflow"),
    Service("tensorboard", "JUPYTERHUB_SERVICE_TENSORBOARD", "TensorBoard"),
    Service("glances", "JUPYTERHUB_SERVICE_RESOURCES_MONITOR", "Glances"),
)
SERVICES_BY_NAME = {service.name: service for service in SERVICES}


def workspace(environ: Mapping[str, str]) -> str:
    """The user's workspace volume inside the lab (docs/architecture.md, "In-lab paths")."""
    return os.path.join(environ.get("HOME", "/"), "workspace")


def mlflow_dir(environ: Mapping[str, str]) -> str:
    return os.path.join(workspace(environ), "mlflow")


def tensorboard_logdir(environ: Mapping[str, str]) -> str:
    return os.path.join(workspace(environ), "tensorboard")


def enabled_services(environ: Mapping[str, str]) -> list[Service]:
    """The services whose switch is "1" (anything else is off)."""
    return [service for service in SERVICES if environ.get(service.switch, "").strip() == "1"]


def server_proxy_servers(environ: Mapping[str, str], python: str = sys.executable,
                         script: str = os.path.abspath(__file__),
                         icons_dir: str = ICONS_DIR) -> dict:
    """``c.ServerProxy.servers`` for the services switched on in ``environ``."""
    return {
        service.name: {
            "command": [python, "-I", script, service.name, "{unix_socket}"],
            "unix_socket": True,
            "timeout": START_TIMEOUT,
            "launcher_entry": {
                "enabled": True,
                "title": service.title,
                "icon_path": os.path.join(icons_dir, f"{service.name}.svg"),
                # the launcher shows icon_path only for kernel-like tiles (Notebook,
                # Console); jupyter-server-proxy's own default
                "category": "Notebook",
            },
            "new_browser_tab": True,
        }
        for service in enabled_services(environ)
    }


# methods that change nothing, so a cross-origin one is harmless (RFC 9110's safe methods)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def refuse_cross_origin_writes(proxy_handler: type) -> None:
    """Make jupyter-server-proxy's handler refuse, with 403, a state-changing
    request whose Origin is not the lab's own, before anything is proxied.

    jupyter-server-proxy leaves such checks to the proxied app. MLflow makes one,
    but answers before it has read the request's body and closes the connection,
    so the proxy, still writing the body, fails with a broken pipe and answers
    500 (seen under load). Checked here, with Jupyter's own check_origin (the
    Origin's host must be the request's Host, or the origin allowed by the
    server's allow_origin settings; token-authenticated requests and requests
    without an Origin are not checked), the refusal is a clean 403 for every
    service, TensorBoard and Glances included."""
    from tornado.web import HTTPError

    prepare = proxy_handler.prepare

    async def prepare_same_origin_writes(self, *args, **kwargs):
        await prepare(self, *args, **kwargs)
        if self.request.method not in SAFE_METHODS and not self.check_origin():
            raise HTTPError(403, "a lab service takes writes from the lab's own origin only")

    proxy_handler.prepare = prepare_same_origin_writes


# --- starting a service (runs in the lab's unit, as the lab's user) ------------


def lab_origin(environ: Mapping[str, str]) -> str | None:
    """The origin browsers open this lab at (its own with per-user origins, else the hub's)."""
    for variable in ("JUPYTERHUB_PUBLIC_URL", "JUPYTERHUB_PUBLIC_HUB_URL"):
        parsed = urlsplit(environ.get(variable, ""))
        if parsed.scheme in ("http", "https") and parsed.netloc:
            return f"{parsed.scheme}://{parsed.netloc}"
    return None


def mlflow_store_uri(environ: Mapping[str, str]) -> str:
    return f"sqlite:///{os.path.join(mlflow_dir(environ), 'mlflow.db')}"


def lab_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """Variables the lab passes on to its kernels and terminals: with MLflow on,
    ``mlflow`` in a notebook logs to the store the UI shows (unless the user set
    their own ``MLFLOW_TRACKING_URI``; the server's socket is the lab's alone, and
    MLflow's client cannot use a unix socket)."""
    if SERVICES_BY_NAME["mlflow"] in enabled_services(environ) and "MLFLOW_TRACKING_URI" not in environ:
        return {"MLFLOW_TRACKING_URI": mlflow_store_uri(environ)}
    return {}


def mlflow_command(socket_path: str, environ: Mapping[str, str], python: str = sys.executable) -> list[str]:
    """``mlflow server`` with its tracking data in the workspace, on uvicorn's unix socket
    (uvicorn binds ``--uds`` instead of the host and port mlflow always passes).

    jupyter-server-proxy leaves XSRF checks to the proxied app, so MLflow's own
    cross-origin check stays on and accepts writes from the lab's origin only (another
    user's lab origin is same-site: its page could otherwise POST with this user's
    cookie). Its Host check is moot: only this lab reaches the socket, with the
    public Host header of whatever name the lab is opened at."""
    data = mlflow_dir(environ)
    origin = lab_origin(environ)
    return [
        python, "-m", "mlflow", "server",
        "--backend-store-uri", mlflow_store_uri(environ),
        # artifacts as plain files beside the store: the UI reads them, and so
        # does a notebook logging to the same store directly (lab_environment)
        "--default-artifact-root", os.path.join(data, "artifacts"),
        "--no-serve-artifacts",
        "--workers", "1",
        "--host", "127.0.0.1",
        "--allowed-hosts", "*",
        *(["--cors-allowed-origins", origin] if origin else []),
        "--uvicorn-opts", f"--uds {shlex.quote(socket_path)}",
    ]


# MLflow's job execution (GenAI jobs) starts eight more Python processes of
# about 230 MB each and doubles the start time; the tracking UI needs none
MLFLOW_ENVIRONMENT = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def run_mlflow(socket_path: str) -> None:
    os.makedirs(os.path.join(mlflow_dir(os.environ), "artifacts"), exist_ok=True)
    command = mlflow_command(socket_path, os.environ)
    os.execve(command[0], command, {**os.environ, **MLFLOW_ENVIRONMENT})


def run_tensorboard(socket_path: str) -> None:
    from tensorboard import program
    from werkzeug import serving

    class UnixSocketServer(program.TensorBoardServer):
        def __init__(self, wsgi_app, flags):
            self._server = serving.make_server(f"unix://{socket_path}", 0, wsgi_app, threaded=True)

        def serve_forever(self):
            self._server.serve_forever()

        def get_url(self):
            # TensorBoard records a port for `tensorboard --list`; a socket has none
            return "http://localhost:0/"

    logdir = tensorboard_logdir(os.environ)
    os.makedirs(logdir, exist_ok=True)
    board = program.TensorBoard(server_class=UnixSocketServer)
    # --load_fast=false: no Rust data server, which would listen on a loopback
    # TCP port that every other user's lab could query for this user's logs
    board.configure(argv=["tensorboard", "--logdir", logdir, "--load_fast=false"])
    sys.exit(board.main())


def run_glances(socket_path: str) -> None:
    import functools

    import uvicorn

    # Glances builds uvicorn.Config with a host and port only; uds takes precedence
    uvicorn.Config = functools.partial(uvicorn.Config, uds=socket_path)
    import glances

    sys.argv = ["glances", "-w", "--disable-autodiscover", "--disable-check-update"]
    glances.main()


RUNNERS = {"mlflow": run_mlflow, "tensorboard": run_tensorboard, "glances": run_glances}


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] not in RUNNERS:
        print(f"usage: lab_services.py {{{','.join(RUNNERS)}}} SOCKET", file=sys.stderr)
        sys.exit(2)
    RUNNERS[args[0]](args[1])


if __name__ == "__main__":
    main()
