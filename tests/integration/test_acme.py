"""Certificates from an ACME CA (nginx_acme_enabled; docs/tls.md), end to end
against a local ACME CA inside the test host (tests/acme_ca.py): the playbook
obtains one certificate for the hub and the labs' wildcard through DNS-01,
nginx serves it, and certbot.timer's service renews it and reloads nginx, with
the hub left running."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import ssl
import time
from pathlib import Path

import pytest

import acme_ca
import testhost
from hubclient import LOOPBACK, HubClient

LINEAGE = "/etc/letsencrypt/live/jupyterhub"


@pytest.fixture(scope="module")
def pebble_root(acme_host, tmp_path_factory) -> Path:
    """pebble's root as a CA file: what a browser trusting this CA would hold."""
    path = tmp_path_factory.mktemp("acme") / "pebble-root.pem"
    path.write_text(acme_ca.root_certificate(acme_host))
    return path


def served_certificate(host: testhost.Host, name: str, cafile: Path) -> bytes:
    """The certificate nginx presents for the TLS name ``name``, verified against
    ``cafile`` and for that name (ssl raises otherwise), DER."""
    context = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection((LOOPBACK, host.ports["nginx_https_port"]), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=name) as tls:
        return tls.getpeercert(binary_form=True)


def lineage_certificate(host: testhost.Host) -> bytes:
    """The certificate certbot's lineage holds now (the leaf of fullchain.pem), DER."""
    pem = host.exec("cat", f"{LINEAGE}/cert.pem").stdout
    return ssl.PEM_cert_to_DER_cert(pem)


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def test_nginx_serves_the_acme_certificate_for_the_hub_and_the_labs(acme_host, pebble_root):
    lab_name = f"alice.{acme_host.domain}"
    in_place = lineage_certificate(acme_host)
    for name in (acme_host.domain, lab_name):
        assert served_certificate(acme_host, name, pebble_root) == in_place, name
    issuer = acme_host.exec("openssl", "x509", "-noout", "-issuer", "-ext", "subjectAltName",
                            "-in", f"{LINEAGE}/cert.pem").stdout
    assert "Pebble Intermediate CA" in issuer, issuer
    assert f"DNS:{acme_host.domain}, DNS:*.{acme_host.domain}" in issuer, issuer
    # the hub answers through it, verified as a browser trusting the CA would
    hub = HubClient(acme_host.https_url)
    hub.s.verify = str(pebble_root)
    r = hub.s.get(hub.url("hub/api"), timeout=30)
    assert r.status_code == 200 and "version" in r.json(), r.text
    lab = hub.s.get(hub.lab_url("alice"), allow_redirects=False, timeout=30)
    assert lab.status_code < 500, lab.text[:300]


def test_the_renewal_timer_replaces_the_certificate_and_reloads_nginx(acme_host, pebble_root):
    assert acme_host.exec("systemctl", "is-enabled", "certbot.timer").stdout.strip() == "enabled"
    assert acme_host.exec("systemctl", "is-active", "certbot.timer").stdout.strip() == "active"
    before = served_certificate(acme_host, acme_host.domain, pebble_root)
    pids = {unit: acme_host.unit_properties(unit, "MainPID")["MainPID"]
            for unit in ("nginx.service", "jupyterhub.service", "configurable-http-proxy.service")}
    # The timer's own service (its environment: the CA bundle drop-in), forced:
    # the test CA's certificates are valid for years, so a plain run renews nothing.
    force = "/run/systemd/system/certbot.service.d/zz-test-force.conf"
    acme_host.exec("mkdir", "-p", str(Path(force).parent))
    acme_host.exec("tee", force, input="[Service]\nExecStart=\n"
                   "ExecStart=/usr/bin/certbot -q renew --no-random-sleep-on-renew --force-renewal\n")
    try:
        acme_host.exec("systemctl", "daemon-reload")
        res = acme_host.exec("systemctl", "start", "certbot.service", check=False, timeout=300)
        assert res.returncode == 0, acme_host.exec("journalctl", "-u", "certbot", "-n", "40").stdout
    finally:
        acme_host.exec("rm", "-f", force)
        acme_host.exec("systemctl", "daemon-reload")
    renewed = lineage_certificate(acme_host)
    assert fingerprint(renewed) != fingerprint(before)
    # the deploy hook reloaded nginx: new connections get the new certificate
    deadline = time.monotonic() + 30
    while served_certificate(acme_host, acme_host.domain, pebble_root) != renewed:
        assert time.monotonic() < deadline, "nginx still serves the old certificate"
        time.sleep(0.5)
    assert served_certificate(acme_host, f"bob.{acme_host.domain}", pebble_root) == renewed
    # a reload, not a restart, and the hub and the proxy never stopped
    for unit, pid in pids.items():
        assert acme_host.unit_properties(unit, "MainPID")["MainPID"] == pid, unit
    hub = HubClient(acme_host.https_url)
    hub.s.verify = str(pebble_root)
    assert hub.s.get(hub.url("hub/api"), timeout=30).status_code == 200


@pytest.mark.parametrize("bad, message", [
    ({"nginx_acme_email": ""}, r"nginx_acme_email must"),
    ({"jupyterhub_ssl_enabled": False}, r"nginx_acme_enabled needs"),
])
def test_bad_acme_settings_fail_the_play_naming_the_variable(acme_host, bad, message):
    res = testhost.deploy(acme_host.name, "-e", json.dumps(bad), capture=True, check=False)
    assert res.returncode != 0
    assert re.search(rf"msg: '?{message}", res.stdout), res.stdout[-3000:]
