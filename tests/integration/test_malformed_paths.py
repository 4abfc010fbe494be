"""A path with malformed percent-encoding is the client's error: 4xx, never 5xx,
anywhere behind nginx (the hub, a running lab, a stopped lab's, outside the base URL).

nginx itself refuses a broken escape ("%", "%zz") with 400. "%ff" is a valid
escape of a byte that is not UTF-8: configurable-http-proxy's route lookup
(decodeURIComponent) threw on it and answered 500 for every path, hub and labs
alike (and, for a websocket upgrade, wrote that page to the socket with no
status line, which nginx turned into an error of its own);
ansible/roles/proxy/files/proxy-fixes.js answers 400 before the
lookup. The proxy is asked directly too, so the test shows
the fix is in the proxy and not in front of it.
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl

import pytest

from hubclient import HubClient, unique_names

MALFORMED = ["%ff", "%", "%zz", "%e9", "%c3%28", "a%ed%a0%80"]
# what a browser sends to open a kernel's or a terminal's websocket
WEBSOCKET_UPGRADE = {"Connection": "Upgrade", "Upgrade": "websocket",
                     "Sec-WebSocket-Version": "13",
                     "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


class _NamedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to 127.0.0.1 with the platform's name as SNI (as a browser that
    resolves *.localhost to the loopback address)."""

    def __init__(self, name: str, port: int, **kw):
        super().__init__("127.0.0.1", port, **kw)
        self.server_name = name

    def connect(self) -> None:
        raw = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.server_name)


def origin_name(host, raw_path: str) -> str:
    """The name a browser sends for raw_path: a lab's path on its own origin."""
    lab = re.match(r"/jupyterhub/user/([^/%]+)/", raw_path)
    client = HubClient(host.https_url, user_subdomains=host.user_subdomains)
    return client.lab_host(lab[1]) if lab else client.hub.hostname


def status_of(host, port: int | str, raw_path: str, tls: bool, headers: dict | None = None) -> int:
    """Status of GET raw_path, sent byte-for-byte (requests would re-encode it);
    ``port`` a TCP port on 127.0.0.1 (nginx, by the platform's names) or a unix
    socket's path (the proxy's)."""
    name = origin_name(host, raw_path)
    if isinstance(port, str):
        conn = _UnixHTTPConnection(port, timeout=30)
    elif tls:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        conn = _NamedHTTPSConnection(name, port, context=context, timeout=30)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    host_header = name if isinstance(port, str) else f"{name}:{port}"
    try:
        conn.request("GET", raw_path, headers={"Host": host_header, **(headers or {})})
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.fixture(scope="module")
def lab_users(admin):
    running, stopped = unique_names(2, "pct")
    for name in (running, stopped):
        assert admin.api("POST", f"users/{name}").status_code == 201
    admin.start_server(running)
    yield running, stopped
    admin.stop_server(running)


def malformed_paths(running: str, stopped: str) -> list[str]:
    prefixes = ["/", "/jupyterhub/", "/jupyterhub/hub/", "/jupyterhub/hub/login",
                "/jupyterhub/hub/api/users/", f"/jupyterhub/user/{running}/",
                f"/jupyterhub/user/{running}/api/contents/", f"/jupyterhub/user/{stopped}/"]
    return [prefix + bad for prefix in prefixes for bad in MALFORMED]


def test_malformed_percent_encoding_is_4xx_through_nginx(host, lab_users):
    answers = {path: status_of(host, host.ports["nginx_https_port"], path, tls=True)
               for path in malformed_paths(*lab_users)}
    wrong = {path: code for path, code in answers.items() if not 400 <= code < 500}
    assert not wrong, wrong


def test_malformed_websocket_paths_are_4xx_through_nginx(host, lab_users):
    running, _ = lab_users
    for path in (f"/jupyterhub/user/{running}/api/kernels/%ff/channels",
                 f"/jupyterhub/user/{running}/terminals/websocket/%e9", "/jupyterhub/hub/%ff"):
        code = status_of(host, host.ports["nginx_https_port"], path, tls=True,
                         headers=WEBSOCKET_UPGRADE)
        assert 400 <= code < 500, (path, code)


def test_the_proxy_itself_answers_400_for_undecodable_paths(host, lab_users):
    running, _ = lab_users
    for path in ("/%ff", "/jupyterhub/hub/%ff", f"/jupyterhub/user/{running}/%c3%28"):
        assert status_of(host, host.internal_socket("proxy"), path, tls=False) == 400, path
    # a well-formed non-ASCII path still reaches the hub (its 404, not ours)
    assert status_of(host, host.internal_socket("proxy"), "/jupyterhub/hub/%c3%a9",
                     tls=False) == 404
