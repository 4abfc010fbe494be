"""A browser-like HTTPS client for the platform, used by integration tests and benchmarks.

It speaks to nginx exactly as a user's browser does: cookies (per origin), the
hub's ``_xsrf`` cookie echoed in forms and in ``X-XSRFToken`` for
cookie-authenticated API calls, and the OAuth redirect dance when a lab page is
first opened. With one origin per user (the platform's default) every path
``user/<name>/...`` goes to that lab's own origin, ``https://<name>.<domain>``,
and the OAuth dance crosses from it to the hub's origin and back.

Like a browser, it resolves every ``*.localhost`` name to the loopback address
(RFC 6761) at connect time, keeping the name for the Host header and TLS SNI:
a test host serves the hub at ``hub.localhost`` and its labs below it with no
DNS set-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import re
import secrets
import socket
import time
from urllib.parse import quote, unquote, urlparse

import requests
import urllib3
from jupyterhub.utils import subdomain_hook_idna
from requests.adapters import HTTPAdapter
from tornado.httpclient import HTTPRequest
from tornado.netutil import OverrideResolver, Resolver
from tornado.websocket import websocket_connect
from urllib3.util import connection as urllib3_connection

# The test host's certificate is self-signed by design (the playbook's default).
urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

LOOPBACK = "127.0.0.1"


def is_loopback_name(host: str) -> bool:
    return host == "localhost" or host.endswith(".localhost")


_create_connection = urllib3_connection.create_connection


def _create_connection_to_loopback_names(address, *args, **kw):
    host, port = address
    return _create_connection((LOOPBACK if is_loopback_name(host) else host, port), *args, **kw)


# requests (urllib3) resolves *.localhost as browsers do, in this test process only
urllib3_connection.create_connection = _create_connection_to_loopback_names

# user/<name>/... : a path served by that user's lab
LAB_PATH = re.compile(r"user/([^/?#]+)(/|$)")


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _SourceAddressAdapter(HTTPAdapter):
    """Connections from a chosen local address (another loopback address is another client)."""

    def __init__(self, source_address: str, **kw):
        self.source_address = (source_address, 0)
        super().__init__(**kw)

    def init_poolmanager(self, *args, **kw):
        kw["source_address"] = self.source_address
        super().init_poolmanager(*args, **kw)


class _RoutedConnection(urllib3.connection.HTTPConnection):
    """A plain HTTP connection to a fixed place, whatever the URL names: a unix
    socket (a path) or a TCP address ((host, port))."""

    def __init__(self, *args, route: str | tuple[str, int], **kwargs):
        super().__init__(*args, **kwargs)
        self.route = route

    def _new_conn(self) -> socket.socket:
        timeout = self.timeout if isinstance(self.timeout, int | float) else None
        if isinstance(self.route, tuple):
            return socket.create_connection(self.route, timeout)
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(timeout)
        sock.connect(self.route)
        return sock


class RoutedAdapter(HTTPAdapter):
    """Sends every request of a session as plain HTTP to one place (see
    _RoutedConnection), with the URL's host name as Host and ``headers`` added."""

    def __init__(self, route: str | tuple[str, int], headers: dict[str, str] | None = None):
        self.route = route
        self.extra_headers = headers or {}
        super().__init__()

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        # the pool's host is the Host header urllib3 sends: the URL's, so the
        # proxy routes a lab's request on its own name
        pool = urllib3.HTTPConnectionPool(urlparse(request.url).hostname)
        pool.ConnectionCls = lambda *a, **kw: _RoutedConnection(*a, route=self.route, **kw)
        return pool

    def send(self, request, *args, **kwargs):
        request.headers.update(self.extra_headers)
        return super().send(request, *args, **kwargs)


# What a TLS terminator in front of an HTTP-only host (jupyterhub_ssl_enabled
# false) adds to each request it passes on (docs/configuration.md).
TERMINATOR_HEADERS = {"X-Forwarded-Proto": "https"}


class HubClient:
    @classmethod
    def over_socket(cls, socket_path: str, base_path: str, token: str | None,
                    domain: str = "localhost") -> HubClient:
        """A client straight to an internal unix socket (bypassing nginx), e.g.
        ``Host.internal_socket("proxy")``; ``domain`` is the Host it sends (the
        proxy routes labs on it with one origin per user)."""
        client = cls(f"http://{domain}{base_path}", token=token)
        client.s.mount("http://", RoutedAdapter(socket_path))
        client.socket_path = socket_path
        return client

    @classmethod
    def behind_tls_terminator(cls, public_base: str, http_address: tuple[str, int],
                              token: str | None = None) -> HubClient:
        """A user of an HTTP-only host (jupyterhub_ssl_enabled false) reaching it
        through the TLS terminator in front of it: the public URLs are https on
        port 443 (``public_base``, e.g. https://hub.localhost/jupyterhub/, and each
        lab's https://<name>.hub.localhost/...), and every request goes on as
        plain HTTP to nginx at ``http_address`` with the URL's Host and
        ``X-Forwarded-Proto: https``, as the terminator passes it on."""
        client = cls(public_base, token=token)
        client.s.mount("https://", RoutedAdapter(http_address, TERMINATOR_HEADERS))
        client.terminated_to = http_address
        return client

    def copy(self) -> HubClient:
        """A new session to the same place with the same token (for another thread)."""
        token = self.s.headers.get("Authorization", "").split()[-1] or None
        if self.socket_path:
            return HubClient.over_socket(self.socket_path, self.hub.path, token,
                                         domain=self.hub.netloc)
        if self.terminated_to:
            return HubClient.behind_tls_terminator(self.base, self.terminated_to, token)
        return HubClient(self.base, token=token, user_subdomains=self.user_subdomains)

    def __init__(self, base_url: str, token: str | None = None,
                 user_subdomains: bool | None = None, source_address: str | None = None):
        """base_url is the hub's public prefix, e.g. https://hub.localhost:23002/jupyterhub/.

        user_subdomains: whether each lab has its own origin <name>.<domain>
        (JupyterHub's subdomain_host). None: yes for a hub reached by name, no
        for one reached by IP address (which has no subdomains), as the test
        hosts are deployed (tests/testhost/testhost.py)."""
        self.base = base_url if base_url.endswith("/") else base_url + "/"
        self.socket_path: str | None = None
        # nginx's plain HTTP address behind a TLS terminator (behind_tls_terminator)
        self.terminated_to: tuple[str, int] | None = None
        self.hub = urlparse(self.base)
        if user_subdomains is None:
            user_subdomains = not _is_ip_address(self.hub.hostname)
        self.user_subdomains = user_subdomains
        self.s = requests.Session()
        if source_address:
            # connecting to 127.0.0.2 still comes from 127.0.0.1 (the kernel picks
            # the source): nginx sees another client only when the source differs
            self.s.mount("https://", _SourceAddressAdapter(source_address))
            self.s.mount("http://", _SourceAddressAdapter(source_address))
        self.s.verify = False
        # Else REQUESTS_CA_BUNDLE from the environment overrides verify=False.
        self.s.trust_env = False
        if token:
            self.s.headers["Authorization"] = f"token {token}"

    def lab_host(self, user: str) -> str:
        """The host name of user's lab (the hub's own with a single origin)."""
        if not self.user_subdomains:
            return self.hub.hostname
        return subdomain_hook_idna(user, self.hub.hostname, "user")

    def lab_url(self, user: str) -> str:
        """The public URL of user's lab, e.g. https://alice.hub.localhost:23002/jupyterhub/user/alice/."""
        port = f":{self.hub.port}" if self.hub.port else ""
        return f"{self.hub.scheme}://{self.lab_host(user)}{port}{self.hub.path}user/{user}/"

    def url(self, path: str) -> str:
        """The public URL of a path below the base URL: user/<name>/... on that lab's origin."""
        path = path.lstrip("/")
        lab = LAB_PATH.match(path)
        if lab:
            return self.lab_url(unquote(lab[1])) + path[lab.end():]
        return self.base + path

    # -- cookies ---------------------------------------------------------
    def _cookie(self, name: str, host: str, path_test) -> str | None:
        for cookie in self.s.cookies:
            if cookie.name == name and cookie.domain.lstrip(".") == host and path_test(cookie.path):
                return cookie.value
        return None

    def hub_xsrf(self) -> str:
        """The hub's _xsrf cookie, fetched from the login page when missing."""
        def on_hub(path):
            return "/user/" not in path
        token = self._cookie("_xsrf", self.hub.hostname, on_hub)
        if token is None:
            self.get("hub/login")
            token = self._cookie("_xsrf", self.hub.hostname, on_hub)
        assert token is not None, "the hub set no _xsrf cookie"
        return token

    def lab_xsrf(self, user: str) -> str:
        def on_lab(path):
            # its own origin: any path (JupyterHub's __Host- cookies sit on /)
            return self.user_subdomains or path.rstrip("/").endswith(f"/user/{user}")
        token = self._cookie("_xsrf", self.lab_host(user), on_lab)
        assert token is not None, f"the lab of {user} set no _xsrf cookie"
        return token

    # -- plain requests ----------------------------------------------------
    def get(self, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 60)
        return self.s.get(self.url(path), **kw)

    def post_form(self, path: str, data: dict, **kw) -> requests.Response:
        kw.setdefault("timeout", 60)
        return self.s.post(self.url(path), data={**data, "_xsrf": self.hub_xsrf()}, **kw)

    def api(self, method: str, path: str, **kw) -> requests.Response:
        """A hub REST call (path below hub/api/), token or cookie authenticated."""
        kw.setdefault("timeout", 60)
        headers = kw.pop("headers", {})
        if "Authorization" not in self.s.headers:
            headers["X-XSRFToken"] = self.hub_xsrf()
        return self.s.request(method, self.url("hub/api/" + path.lstrip("/")), headers=headers, **kw)

    # -- flows -------------------------------------------------------------
    def login(self, user: str, password: str, spawn: bool = True) -> requests.Response:
        """The login form; spawn=False lands on the hub's home page instead of
        following the redirect to /hub/spawn (which starts the user's lab)."""
        path = "hub/login"
        if not spawn:
            path += "?next=" + quote(urlparse(self.base).path + "hub/home")
        return self.post_form(path, {"username": user, "password": password})

    def logged_in_as(self) -> str | None:
        r = self.api("GET", "user")
        return r.json().get("name") if r.status_code == 200 else None

    def signup(self, user: str, password: str) -> requests.Response:
        return self.post_form("hub/signup", {
            "username": user, "signup_password": password,
            "signup_password_confirmation": password, "email": f"{user}@example.org"})

    def approve(self, user: str) -> None:
        """As an admin: approve a pending signup on the authorization page (POST + _xsrf)."""
        r = self.post_form(f"hub/authorize/{user}", {"action": "approve"})
        assert r.status_code == 200, f"approving {user}: {r.status_code}"

    def new_token(self, user: str) -> str:
        r = self.api("POST", f"users/{user}/tokens", json={"note": "tests", "expires_in": 3600})
        assert r.status_code in (200, 201), r.text
        return r.json()["token"]

    def start_server(self, user: str, timeout: float = 180, poll: float = 0.25) -> float:
        """Ask the hub for the user's server, return seconds until its lab API answers
        (asked every ``poll`` seconds)."""
        started = time.monotonic()
        r = self.api("POST", f"users/{user}/server")
        assert r.status_code in (201, 202), f"{r.status_code} {r.text}"
        self.wait_lab(user, timeout, poll)
        return time.monotonic() - started

    def ensure_server(self, user: str, timeout: float = 180) -> None:
        """Start the user's server unless it runs (logging in as a browser starts it too)."""
        if self.server_running(user):
            self.wait_lab(user, timeout)
        else:
            self.start_server(user, timeout)

    def wait_lab(self, user: str, timeout: float = 180, poll: float = 0.25) -> None:
        """Wait until the lab API answers: with a token directly; with a browser
        session once the hub reports the server ready and the lab page is opened
        (a lab answers cookie-less API calls with 403, not with a login redirect)."""
        deadline = time.monotonic() + timeout
        last = None
        if "Authorization" not in self.s.headers:
            while time.monotonic() < deadline:
                server = self.api("GET", f"users/{user}").json().get("servers", {}).get("", {})
                if server.get("ready"):
                    break
                time.sleep(poll)
            last = self.open_lab(user)
            assert last.status_code == 200, f"lab page of {user}: {last.status_code}"
        while time.monotonic() < deadline:
            try:
                last = self.get(f"user/{user}/api/status", allow_redirects=False, timeout=10)
                if last.status_code == 200:
                    return
            except requests.RequestException as exc:
                last = exc
            time.sleep(poll)
        raise AssertionError(f"lab of {user} did not answer in {timeout}s: {getattr(last, 'status_code', last)}")

    def stop_server(self, user: str, timeout: float = 120) -> None:
        r = self.api("DELETE", f"users/{user}/server")
        assert r.status_code in (202, 204), f"{r.status_code} {r.text}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.api("GET", f"users/{user}").json()
            if not model.get("servers"):
                return
            time.sleep(0.25)
        raise AssertionError(f"server of {user} did not stop in {timeout}s")

    def wait_hub(self, timeout: float = 90) -> None:
        """Wait until the hub's REST API answers through the proxy (after a restart)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.get("hub/api/", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise AssertionError(f"the hub did not answer within {timeout}s")

    def server_running(self, user: str) -> bool:
        return bool(self.api("GET", f"users/{user}").json().get("servers"))

    def open_lab(self, user: str) -> requests.Response:
        """Open the lab page as a browser does (OAuth redirects included)."""
        return self.get(f"user/{user}/lab")


def alert_text(html: str) -> str:
    """The text of the first bootstrap alert on a page, whitespace collapsed."""
    m = re.search(r'class="alert[^"]*"[^>]*>(.*?)</div>', html, re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", m.group(1)).split()) if m else ""


async def lab_websocket(admin: HubClient, url: str):
    """A websocket to a lab (wss:// URL from admin.url) with admin's token,
    resolving *.localhost as requests does here (and, behind a TLS terminator,
    sent on as that client's requests are)."""
    parts = urlparse(url)
    headers = {"Authorization": admin.s.headers["Authorization"]}
    if admin.terminated_to:
        address, port = admin.terminated_to
        headers.update(TERMINATOR_HEADERS, Host=parts.hostname)
        url = parts._replace(scheme="ws", netloc=f"{address}:{port}").geturl()
    host = urlparse(url).hostname
    resolver = (OverrideResolver(Resolver(), {host: LOOPBACK})
                if is_loopback_name(host) else None)
    request = HTTPRequest(url, headers=headers, validate_cert=False, request_timeout=30)
    return await websocket_connect(request, resolver=resolver)


TERMINAL_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def lab_shell(admin: HubClient, user: str, command: str, timeout: float = 60) -> tuple[str, int]:
    """Run command in a new terminal of user's lab (its /api/terminals + websocket),
    as the user would in JupyterLab's terminal; ``admin`` is a token client.

    Returns (output as text, exit status)."""
    r = admin.s.post(admin.url(f"user/{user}/api/terminals"), timeout=60)
    assert r.status_code == 200, r.text
    term = r.json()["name"]
    url = admin.url(f"user/{user}/terminals/websocket/{term}").replace("https://", "wss://", 1)
    # the typed line shows "$((6*7))"; only the shell's answer contains "42"
    line = f"{command}; echo \"@@DONE:$((6*7)):$?@@\"\r"
    done = re.compile(r"@@DONE:42:(\d+)@@")

    async def talk() -> str:
        ws = await lab_websocket(admin, url)
        await ws.write_message(json.dumps(["stdin", line]))
        out = ""
        while not done.search(out):
            msg = await asyncio.wait_for(ws.read_message(), timeout)
            assert msg is not None, f"terminal closed; output so far: {out!r}"
            kind, *data = json.loads(msg)
            if kind == "stdout":
                out += data[0]
        ws.close()
        return out

    try:
        out = asyncio.run(talk())
    finally:
        admin.s.delete(admin.url(f"user/{user}/api/terminals/{term}"), timeout=30)
    status = int(done.search(out).group(1))
    # what the command printed: between the echoed input line and the marker,
    # without the terminal's control sequences (bracketed paste mode)
    body = out.split(line.strip("\r"), 1)[-1]
    body = body[: done.search(body).start()] if done.search(body) else body
    return TERMINAL_CONTROL.sub("", body), status


KERNEL_DEATH = ("restarting", "dead")


def start_kernel(admin: HubClient, user: str) -> str:
    """A new Python kernel in user's lab (its /api/kernels), as JupyterLab opens
    one for a notebook; ``admin`` is a token client. Returns the kernel's id."""
    r = admin.s.post(admin.url(f"user/{user}/api/kernels"), json={"name": "python3"}, timeout=60)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def kernel_cell(admin: HubClient, user: str, kernel: str, code: str,
                timeout: float = 60) -> tuple[str, str]:
    """Run code as a notebook cell in a running kernel of user's lab (the kernel's
    channels websocket), as JupyterLab does. Returns (stdout + stderr of the
    cell, execute_reply status), or status "died" when the lab reports the
    kernel restarting or dead (what JupyterLab shows as "The kernel appears to
    have died")."""
    url = admin.url(f"user/{user}/api/kernels/{kernel}/channels").replace("https://", "wss://", 1)
    msg_id = secrets.token_hex(8)
    request = {
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": user,
                   "session": secrets.token_hex(8), "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }

    async def talk() -> tuple[str, str]:
        ws = await lab_websocket(admin, url)
        await ws.write_message(json.dumps(request))
        # the reply (shell channel) may overtake the output (iopub): the cell is
        # done once both its reply and the kernel's idle status for it arrived
        out, status, idle = "", None, False
        while not (status == "died" or (status is not None and idle)):
            raw = await asyncio.wait_for(ws.read_message(), timeout)
            assert raw is not None, f"kernel channel closed; output so far: {out!r}"
            msg = json.loads(raw)
            kind = msg["header"]["msg_type"]
            # the lab's own notice, with no parent: its restarter saw the kernel die
            if kind == "status" and msg["content"].get("execution_state") in KERNEL_DEATH:
                status = "died"
            elif msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            elif kind == "status":
                idle = msg["content"]["execution_state"] == "idle"
            elif kind == "stream":
                out += msg["content"]["text"]
            elif kind == "error":
                out += "\n".join(msg["content"]["traceback"])
            elif kind == "execute_reply":
                status = msg["content"]["status"]
        ws.close()
        return out, status

    return asyncio.run(talk())


def lab_cell(admin: HubClient, user: str, code: str, timeout: float = 60) -> tuple[str, str]:
    """Run code as a notebook cell in a new Python kernel of user's lab, shut
    down afterwards (kernel_cell gives what it returns)."""
    kernel = start_kernel(admin, user)
    try:
        return kernel_cell(admin, user, kernel, code, timeout)
    finally:
        admin.s.delete(admin.url(f"user/{user}/api/kernels/{kernel}"), timeout=30)


def activity_rows(admin: HubClient, user: str) -> list[tuple]:
    """user's activity samples from the hub's history API, one tuple per sample."""
    r = admin.api("GET", f"activity/history/{user}")
    assert r.status_code == 200, r.text
    series = r.json()["series"]
    return list(zip(*(series[name] for name in sorted(series)), strict=True))


def recorded_activity(host, admin: HubClient, users: list[str], timeout: float = 90) -> dict:
    """Each user's activity samples (user -> list of sample rows), once every user
    has at least one. The monitor samples when the hub starts serving and then
    every sample_interval (600 s): a hub restart gives the running labs their
    first sample now."""
    host.exec("systemctl", "restart", "jupyterhub")
    admin.wait_hub()
    deadline = time.monotonic() + timeout
    while True:
        history = {user: activity_rows(admin, user) for user in users}
        if all(history.values()):
            return history
        assert time.monotonic() < deadline, f"no activity sample within {timeout}s: {history}"
        time.sleep(2)


def assert_activity_kept(before: dict, admin: HubClient) -> None:
    """Every sample of ``before`` (recorded_activity's answer) is still in the
    history admin's hub serves (which may have added its own since: a hub
    samples when it starts)."""
    for user, rows in before.items():
        after = set(activity_rows(admin, user))
        missing = [row for row in rows if row not in after]
        assert not missing, f"activity samples of {user} lost: {missing}"


def unique_names(n: int, prefix: str = "t") -> list[str]:
    """n fresh hub names sharing a random tag (valid under the platform's name rule)."""
    tag = secrets.token_hex(3)
    return [f"{prefix}-{tag}-{i}" for i in range(n)]


def batch_create(admin: HubClient, usernames) -> dict[str, str]:
    """Create users with the platform's batch API; name -> generated password."""
    r = admin.api("POST", "platform/users", json={"usernames": list(usernames)})
    assert r.status_code == 201, r.text
    assert "no-store" in r.headers.get("Cache-Control", "")
    return {u["name"]: u["password"] for u in r.json()["users"]}


def login_client(base_url: str, name: str, password: str, spawn: bool = True) -> HubClient:
    """A browser-like session logged in through the real login form."""
    client = HubClient(base_url)
    client.login(name, password, spawn=spawn)
    return client


def admin_client(host) -> HubClient:
    """A test host's admin, logged in through nginx, with an API token for REST calls."""
    browser = HubClient(host.https_url)
    browser.wait_hub()
    browser.login(host.admin_user, host.admin_password)
    assert browser.logged_in_as() == host.admin_user
    return HubClient(host.https_url, token=browser.new_token(host.admin_user))


def client_from(host, address: str, token: str | None = None) -> HubClient:
    """A client whose requests come from ``address`` (a loopback address: nginx
    listens on 127.0.0.1, and sees ``address`` as the client's)."""
    return HubClient(host.https_url, token=token, source_address=address)


def fail_until_delayed(client: HubClient, name: str, free: int, min_delay: int = 8) -> None:
    """Wrong logins until the client's next try waits at least ``min_delay`` seconds.

    The first ``free`` failures are answered at once; after that each delay is
    waited out (the server's Retry-After) so the next failure counts: 1 + 2 + 4 s.
    """
    failures = 0
    for _ in range(free + 20):
        r = client.login(name, "not-the-password", spawn=False)
        if r.status_code == 429:
            wait = int(r.headers["Retry-After"])
            if failures >= free and wait >= min_delay:
                return
            time.sleep(wait)
        else:
            assert "Invalid username or password" in r.text, r.status_code
            failures += 1
    raise AssertionError(f"{failures} wrong logins for {name} and still no delay")


@contextlib.contextmanager
def hub_config_dropin(host, admin: HubClient, name: str, text: str):
    """Site-local hub config ``name`` in the host's jupyterhub_config.d (the
    escape hatch the platform offers admins) with a hub restart; removed, and
    the hub restarted, afterwards."""
    path = f"/etc/jupyterhub/jupyterhub_config.d/{name}"
    host.exec("tee", path, input=text)
    host.exec("systemctl", "restart", "jupyterhub")
    admin.wait_hub()
    try:
        yield
    finally:
        host.exec("rm", "-f", path)
        host.exec("systemctl", "restart", "jupyterhub")
        admin.wait_hub()
