"""Locust scenario of one platform user's session, run by tests/bench/load.py (`make load`).

Each simulated user runs the session once, as a person at a browser would:

1. ``login``: the hub's login form through nginx (POST with ``_xsrf``);
2. ``start lab``: the home page's start (POST ``/hub/api/users/<name>/server``
   with the session cookie and ``X-XSRFToken``) until the hub reports the lab
   ready (polled every 0.5 s), the lab page opened through the OAuth dance and
   its API answering;
3. ``open kernel``: a new Python kernel (``/api/kernels``) and its channels
   websocket on the lab's origin, with the lab's cookies;
4. ``run cell``: an ``execute_request`` until its ``execute_reply`` is ``ok``
   with the expected output;
5. idle ``LOAD_IDLE_SECONDS`` with the websocket open (a notebook left open);
6. ``stop``: the home page's stop (DELETE the server) until the hub reports it gone.

Each step is one entry in Locust's statistics (its time, or its failure), so
Locust's p50/p95 per name are the steps' percentiles. Credentials come from the
JSON file ``LOAD_USERS_FILE`` (``[{"name":..., "password":...}]``, one per
simulated user); when the last user is done the run quits, and the final
figures per step (count, failures, p50, p95, max in ms, Locust's own
percentiles) and the error messages are written to ``LOAD_RESULT_FILE``.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import ssl
import time
from pathlib import Path
from urllib.parse import urlparse

import gevent
import websocket
from locust import User, constant, events, task
from locust.exception import StopUser

from hubclient import LOOPBACK, HubClient, is_loopback_name

CREDENTIALS = json.loads(Path(os.environ["LOAD_USERS_FILE"]).read_text())
IDLE_SECONDS = float(os.environ.get("LOAD_IDLE_SECONDS", "30"))
START_TIMEOUT = float(os.environ.get("LOAD_START_TIMEOUT", "600"))
CELL = "import os\nprint(sum(range(10**6)), os.environ['JUPYTERHUB_USER'])"
_finished = []


@events.quitting.add_listener
def write_result(environment, **_kw):
    steps = {name: {"count": entry.num_requests, "failures": entry.num_failures,
                    "p50_ms": entry.get_response_time_percentile(0.5),
                    "p95_ms": entry.get_response_time_percentile(0.95),
                    "max_ms": entry.max_response_time}
             for (name, _method), entry in environment.stats.entries.items()}
    errors = [f"{e.name}: {e.error} (x{e.occurrences})" for e in environment.stats.errors.values()]
    Path(os.environ["LOAD_RESULT_FILE"]).write_text(json.dumps({"steps": steps, "errors": errors}))


class StepFailed(Exception):
    pass


def kernel_websocket(client: HubClient, user: str, kernel: str) -> websocket.WebSocket:
    """The kernel's channels websocket on the lab's origin with the session's
    cookies, as a browser opens it (*.localhost connects to the loopback address;
    the name stays in the TLS SNI and the Host header)."""
    url = client.url(f"user/{user}/api/kernels/{kernel}/channels")
    where = urlparse(url)
    raw = socket.create_connection(
        (LOOPBACK if is_loopback_name(where.hostname) else where.hostname, where.port), timeout=60)
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE  # the test host's certificate is self-signed
    sock = tls.wrap_socket(raw, server_hostname=where.hostname)
    cookies = "; ".join(f"{c.name}={c.value}" for c in client.s.cookies
                        if c.domain.lstrip(".") == where.hostname)
    return websocket.create_connection(url.replace("https://", "wss://", 1), socket=sock,
                                       cookie=cookies, origin=f"https://{where.netloc}", timeout=120)


def execute(ws: websocket.WebSocket, user: str, code: str) -> str:
    """Send code as an execute_request; its stdout once the reply is ok."""
    msg_id = secrets.token_hex(8)
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": user,
                   "session": secrets.token_hex(8), "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": True,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
    # the reply (shell channel) may overtake the output (iopub): the cell is
    # done once both its reply and the kernel's idle status for it arrived
    out, replied, idle = "", False, False
    while not (replied and idle):
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = msg["header"]["msg_type"]
        if kind == "stream":
            out += msg["content"]["text"]
        elif kind == "status":
            idle = msg["content"]["execution_state"] == "idle"
        elif kind == "error":
            raise StepFailed("\n".join(msg["content"]["traceback"])[-500:])
        elif kind == "execute_reply":
            if msg["content"]["status"] != "ok":
                raise StepFailed(f"execute_reply {msg['content']['status']}")
            replied = True
    return out


def start_lab(client: HubClient, user: str) -> None:
    """The home page's start; fails as soon as the hub gives the start up (its
    start_timeout or http_timeout passed: the server is gone from the user's model)."""
    r = client.api("POST", f"users/{user}/server")
    if r.status_code not in (201, 202):
        raise StepFailed(f"start {r.status_code} {r.text[:200]}")
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        server = client.api("GET", f"users/{user}").json().get("servers", {}).get("")
        if not server:
            raise StepFailed("the hub gave up starting the lab")
        if server.get("ready"):
            break
        if time.monotonic() > deadline:
            raise StepFailed(f"not ready in {START_TIMEOUT} s")
        gevent.sleep(0.5)
    client.wait_lab(user, timeout=START_TIMEOUT)  # the lab page (OAuth) and its API


class PlatformUser(User):
    wait_time = constant(0)

    def step(self, name: str, action):
        """Run one step, reported to Locust as request ``name`` (time or failure)."""
        started = time.perf_counter()
        error = None
        try:
            return action()
        except Exception as exc:  # any failure of a step is the step's error
            error = exc
            raise
        finally:
            self.environment.events.request.fire(
                request_type="STEP", name=name, response_time=(time.perf_counter() - started) * 1000,
                response_length=0, exception=error, context={})

    @task
    def session(self):
        creds = CREDENTIALS.pop()
        user = creds["name"]
        client = HubClient(self.host)
        ws = None
        try:
            def login():
                r = client.login(user, creds["password"], spawn=False)
                if r.status_code != 200 or client.logged_in_as() != user:
                    raise StepFailed(f"login {r.status_code}")
            self.step("1 login", login)
            self.step("2 start lab", lambda: start_lab(client, user))

            def open_kernel():
                r = client.s.post(client.url(f"user/{user}/api/kernels"), json={"name": "python3"},
                                  headers={"X-XSRFToken": client.lab_xsrf(user)}, timeout=120)
                if r.status_code != 201:
                    raise StepFailed(f"new kernel {r.status_code} {r.text[:200]}")
                return kernel_websocket(client, user, r.json()["id"])
            ws = self.step("3 open kernel", open_kernel)

            def run_cell():
                out = execute(ws, user, CELL)
                if out.split() != [str(sum(range(10**6))), user]:
                    raise StepFailed(f"cell printed {out!r}")
            self.step("4 run cell", run_cell)
            gevent.sleep(IDLE_SECONDS)
            ws.close()
            ws = None
            self.step("5 stop", lambda: client.stop_server(user, timeout=START_TIMEOUT))
        except Exception:  # already counted by step(); the user's session ends here
            pass
        finally:
            if ws is not None:
                ws.close()
            _finished.append(user)
            if len(_finished) == self.environment.runner.target_user_count:
                gevent.spawn(self.environment.runner.quit)
        raise StopUser()
