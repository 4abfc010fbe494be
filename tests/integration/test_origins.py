"""nginx answers for the platform's names only, and the hub and each lab keep
to their own origins (ansible/roles/nginx/templates/jupyterhub.conf.j2, docs/architecture.md).

* A Host that is neither the domain nor a subdomain of it is refused (421 over
  HTTP and over TLS; an unknown TLS SNI name gets no handshake at all) and is
  never reflected into a redirect: the HTTP -> HTTPS redirect names the
  configured domain (or the lab's own subdomain of it).
* With one origin per user: the hub's pages and API never answer on a lab's
  origin (302 to the hub's origin), and a lab path on the hub's origin leads to
  the lab's own origin.
"""

from __future__ import annotations

import socket
import ssl
from urllib.parse import urlparse

import pytest
import requests

from hubclient import batch_create, login_client, unique_names

EVIL = "evil.example"


def http_url(host, path: str = "") -> str:
    return f"http://127.0.0.1:{host.ports['nginx_http_port']}{urlparse(host.https_url).path}{path}"


@pytest.mark.parametrize("evil_host", [EVIL, f"{EVIL}:80", "hub.localhost.evil.example"])
def test_http_refuses_an_unknown_host_without_a_redirect(host, evil_host):
    r = requests.get(http_url(host, "hub/login"), headers={"Host": evil_host},
                     allow_redirects=False, timeout=10)
    assert r.status_code == 421, (r.status_code, r.headers)
    assert "Location" not in r.headers
    assert EVIL not in r.text


def test_http_redirects_to_the_configured_domain(host):
    r = requests.get(http_url(host, "hub/login"), headers={"Host": host.domain},
                     allow_redirects=False, timeout=10)
    assert r.status_code == 301
    assert r.headers["Location"] == host.https_url + "hub/login"


def test_http_for_a_lab_subdomain(host):
    """Its own origin with user subdomains (redirected to HTTPS on the same
    name); refused like any other name without."""
    r = requests.get(http_url(host, "user/someone/lab"), headers={"Host": f"someone.{host.domain}"},
                     allow_redirects=False, timeout=10)
    if host.user_subdomains:
        assert r.status_code == 301
        assert r.headers["Location"] == host.lab_url("someone") + "lab"
    else:
        assert (r.status_code, r.headers.get("Location")) == (421, None)


def test_https_refuses_an_unknown_host_header(host):
    # SNI is the platform's name, the Host header another one
    r = requests.get(host.https_url + "hub/login", headers={"Host": EVIL}, verify=False,
                     allow_redirects=False, timeout=10)
    assert r.status_code == 421
    assert "Location" not in r.headers


def test_https_refuses_an_unknown_name(host):
    if host.domain[0].isdigit():
        # a hub reached by IP address owns the handshakes without SNI, so the
        # request is what gets refused
        r = requests.get(f"https://127.0.0.1:{host.ports['nginx_https_port']}/",
                         headers={"Host": EVIL}, verify=False, timeout=10)
        assert r.status_code == 421
        return
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with (socket.create_connection(("127.0.0.1", host.ports["nginx_https_port"]), timeout=10) as sock,
          pytest.raises(ssl.SSLError)):
        ctx.wrap_socket(sock, server_hostname=EVIL).close()


@pytest.fixture(scope="module")
def lab_owner(host, admin):
    if not host.user_subdomains:
        pytest.skip("every lab is on the hub's origin on this host")
    name, = unique_names(1, "origin")
    password = batch_create(admin, [name])[name]
    admin.start_server(name)
    yield name, login_client(host.https_url, name, password, spawn=False)
    admin.stop_server(name)


@pytest.mark.parametrize("method, path", [
    ("GET", "hub/token"),
    ("GET", "hub/login"),
    ("GET", "hub/api/user"),
    ("POST", "hub/api/users/{admin}/tokens"),
])
def test_hub_pages_never_answer_on_a_lab_origin(host, admin, lab_owner, method, path):
    name, _ = lab_owner
    lab_origin = urlparse(admin.lab_url(name))
    path = urlparse(host.https_url).path + path.format(admin=host.admin_user)
    r = admin.s.request(method, f"https://{lab_origin.netloc}{path}", allow_redirects=False,
                        timeout=30)
    assert r.status_code == 302
    assert r.headers["Location"] == f"https://{urlparse(host.https_url).netloc}{path}"


def test_a_lab_path_on_the_hub_origin_leads_to_the_lab_origin(host, lab_owner):
    name, client = lab_owner
    r = client.s.get(host.https_url + f"user/{name}/lab", timeout=60)
    assert r.status_code == 200, r.status_code
    assert r.url.startswith(client.lab_url(name) + "lab"), r.url
    assert urlparse(r.history[0].url).hostname == host.domain


def test_the_lab_origin_is_the_users_subdomain(host, lab_owner):
    name, client = lab_owner
    assert client.lab_url(name) == host.lab_url(name)
    assert urlparse(host.lab_url(name)).hostname == f"{name}.{host.domain}"
    assert client.open_lab(name).status_code == 200
    r = client.get(f"user/{name}/api/status")
    assert r.status_code == 200 and urlparse(r.url).hostname == f"{name}.{host.domain}"
    # the hub's login cookie stays on the hub's host: host-only __Host- cookie
    hub_cookies = [c for c in client.s.cookies if c.name.endswith("jupyterhub-hub-login")]
    assert [(c.name, c.domain, c.path) for c in hub_cookies] == [
        ("__Host-jupyterhub-hub-login", host.domain, "/")]
