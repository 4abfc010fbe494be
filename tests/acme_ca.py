"""A local ACME CA inside a test host: Debian's ``pebble`` (RFC 8555 test
server) and ``pebble-challtestsrv`` (its DNS server, whose TXT records a
management API sets), so the playbook's ACME mode runs end to end with no
network: certbot answers the DNS-01 challenge through hooks that call the
management API, and pebble looks the records up on that DNS server.

Pebble serves its directory over HTTPS with a certificate of a throw-away CA
made here, which the playbook trusts through ``nginx_acme_ca_bundle`` (as a
private ACME CA's would be); the certificates it issues chain to a root pebble
generates at each start (``root_certificate()``).

Every port comes from the host's port base (the host shares this machine's
network): see ``acme_ports()``.
"""

from __future__ import annotations

import time
from pathlib import Path

import testhost

# Inside the host: pebble's configuration, its HTTPS key and the throw-away CA.
CA_DIR = "/etc/acme-test"
EMAIL = "admin@example.org"


def acme_ports(port_base: int) -> dict[str, int]:
    """After the host's own ports (testhost.ports(): base .. base+2)."""
    return {"directory": port_base + 3, "management": port_base + 4,
            "dns": port_base + 5, "dns_management": port_base + 6}


def files_dir(name: str) -> Path:
    """Where the controller's copies live (the playbook copies them to the host)."""
    return testhost.HOSTS / name / "acme"


def host_vars(name: str, port_base: int) -> dict:
    """The playbook's ACME settings pointing at the CA inside host ``name``."""
    files = files_dir(name)
    return {
        "nginx_acme_enabled": True,
        "nginx_acme_directory": f"https://127.0.0.1:{acme_ports(port_base)['directory']}/dir",
        "nginx_acme_email": EMAIL,
        "nginx_acme_ca_bundle": str(files / "ca.pem"),
        "nginx_acme_dns_auth_hook": str(files / "dns-auth-hook"),
        "nginx_acme_dns_cleanup_hook": str(files / "dns-cleanup-hook"),
    }


# certbot's manual hooks (CERTBOT_DOMAIN, CERTBOT_VALIDATION): what an admin's
# hooks do at a DNS provider's API, here at pebble-challtestsrv's.
AUTH_HOOK = """#!/bin/sh
set -eu
curl -fsS -X POST -d "{{\\"host\\":\\"_acme-challenge.$CERTBOT_DOMAIN.\\",\\"value\\":\\"$CERTBOT_VALIDATION\\"}}" \\
    http://127.0.0.1:{port}/set-txt
"""
CLEANUP_HOOK = """#!/bin/sh
set -eu
curl -fsS -X POST -d "{{\\"host\\":\\"_acme-challenge.$CERTBOT_DOMAIN.\\"}}" http://127.0.0.1:{port}/clear-txt
"""

START_SCRIPT = """
set -eu
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pebble >/dev/null
mkdir -p {ca_dir} && cd {ca_dir}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \\
    -subj "/CN=test ACME directory CA" -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=127.0.0.1" \\
    -keyout server.key -out server.csr 2>/dev/null
echo "subjectAltName=IP:127.0.0.1" > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \\
    -extfile server.ext -out server.pem 2>/dev/null
cat > config.json <<EOF
{{"pebble": {{"listenAddress": "127.0.0.1:{directory}", "managementListenAddress": "127.0.0.1:{management}",
  "certificate": "{ca_dir}/server.pem", "privateKey": "{ca_dir}/server.key",
  "httpPort": {http}, "tlsPort": {https}, "ocspResponderURL": "", "externalAccountBindingRequired": false}}}}
EOF
systemd-run --unit=acme-test-dns -- pebble-challtestsrv -dns01 127.0.0.1:{dns} \\
    -management 127.0.0.1:{dns_management} -http01 "" -https01 "" -tlsalpn01 ""
# no random waits, no refused nonces, and every order validated again (no
# reuse of an earlier authorization: a renewal runs the hooks again)
systemd-run --unit=acme-test-ca -E PEBBLE_VA_NOSLEEP=1 -E PEBBLE_WFE_NONCEREJECT=0 \\
    -E PEBBLE_AUTHZREUSE=0 -- pebble -config {ca_dir}/config.json -dnsserver 127.0.0.1:{dns}
"""


def start(host: testhost.Host) -> None:
    """Install pebble in ``host``, start it and its DNS server, and write the
    hooks and the directory's CA bundle where host_vars() names them."""
    ports = acme_ports(host.port_base)
    taken = testhost.ports_in_use(ports.values())
    assert not taken, f"ACME test CA of {host.name}: ports {taken} on 127.0.0.1 are in use"
    host.sh(START_SCRIPT.format(ca_dir=CA_DIR, http=host.ports["nginx_http_port"],
                                https=host.ports["nginx_https_port"], **ports))
    files = files_dir(host.name)
    files.mkdir(exist_ok=True)
    (files / "ca.pem").write_text((Path(host.root) / CA_DIR.lstrip("/") / "ca.pem").read_text())
    for hook, text in (("dns-auth-hook", AUTH_HOOK), ("dns-cleanup-hook", CLEANUP_HOOK)):
        (files / hook).write_text(text.format(port=ports["dns_management"]))
        (files / hook).chmod(0o700)
    root_certificate(host)  # waits until pebble answers


def root_certificate(host: testhost.Host, timeout: float = 60) -> str:
    """The PEM root that pebble's certificates chain to (new at each pebble start)."""
    url = f"https://127.0.0.1:{acme_ports(host.port_base)['management']}/roots/0"
    deadline = time.monotonic() + timeout
    while True:
        res = host.exec("curl", "-fsS", "--cacert", f"{CA_DIR}/ca.pem", url, check=False)
        if res.returncode == 0 and "BEGIN CERTIFICATE" in res.stdout:
            return res.stdout
        if time.monotonic() > deadline:
            raise RuntimeError(f"pebble in {host.name} does not answer at {url}: {res.stderr.strip()}")
        time.sleep(0.5)
