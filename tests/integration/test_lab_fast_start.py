"""The lab's faster start (lab/lab_server.py, skip_start_costs) against the
lab environment the playbook installs: what it leaves out of a start is really
left out with these versions, and what it defers still works when used.

A JupyterLab or jsonschema upgrade that moves what skip_start_costs relies on
fails here instead of silently giving back the second (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import textwrap

from hubclient import batch_create, lab_cell, lab_shell, unique_names

LAB_PYTHON = "/opt/jupyterlab/bin/python"
LAB_LIBRARY = "/usr/local/lib/jupyterhub"

# run as nobody (a lab's user owns nothing of the lab environment either)
PROBE = textwrap.dedent(f"""
    import json, subprocess, sys
    sys.path.insert(0, {LAB_LIBRARY!r})
    import lab_server
    commands = []
    run = subprocess.Popen.__init__
    def spy(self, args, *rest, **kwargs):
        commands.append([str(a) for a in args] if isinstance(args, (list, tuple)) else [str(args)])
        return run(self, args, *rest, **kwargs)
    subprocess.Popen.__init__ = spy
    lab_server.skip_start_costs()
    import jupyter_server.serverapp, jupyterlab.labapp, jupyterhub.singleuser.extension
    def hub_database():
        return sorted(name for name, module in sys.modules.items()
                      if name.split(".")[0] in ("sqlalchemy", "alembic") or name.startswith("jupyterhub.handlers")
                      or name == "jupyterhub.orm" if not isinstance(module, lab_server.DeferredModule))
    result = {{"grammar_at_start": "rfc3987_syntax.syntax_helpers" in sys.modules,
               "commands_at_start": commands[:], "hub_database_at_start": hub_database()}}
    # what a lab does with the hub's scopes: token scopes against the lab's own
    from jupyterhub.services.auth import check_scopes
    result["scope_checks"] = [bool(check_scopes("access:servers!server=u/", {{"access:servers!user=u"}})),
                              bool(check_scopes("access:servers!server=u/", {{"access:servers!user=v"}}))]
    result["hub_database_after_scope_checks"] = hub_database()
    from jupyterhub import orm, log
    import jupyterhub.handlers.pages
    result["orm_on_use"] = orm.Server.__module__
    result["real_handlers_on_import"] = jupyterhub.handlers.pages.HealthCheckHandler.__module__
    import jsonschema
    checker = jsonschema.Draft7Validator.FORMAT_CHECKER
    result["iri_known"] = "iri" in checker.checkers
    result["iri_good"] = checker.conforms("https://example.org/caf\\u00e9?q=1", "iri")
    result["iri_bad"] = checker.conforms("https://exa mple.org/", "iri")
    result["grammar_after_use"] = "rfc3987_syntax.syntax_helpers" in sys.modules
    from jupyterlab import commands as lab_commands
    result["yarn_config_restored"] = lab_commands._yarn_config.__name__ == "_yarn_config"
    print(json.dumps(result))
""")


def test_lab_start_skips_the_grammar_and_node_and_iri_checks_still_work(host):
    out = host.exec("runuser", "-u", "nobody", "--", "/usr/bin/env", "-i",
                    "PATH=/opt/jupyterlab/bin:/usr/local/bin:/usr/bin:/bin", "HOME=/tmp",
                    LAB_PYTHON, "-c", PROBE, timeout=300)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # node is on the lab's PATH (JupyterLab builds, users' JavaScript), yet no
    # process is started while the lab imports its server
    assert host.exec("test", "-x", "/usr/bin/node", check=False).returncode == 0
    assert result["commands_at_start"] == []
    assert result["grammar_at_start"] is False
    # jsonschema still checks IRIs, with the real grammar, built on first use
    assert result["iri_known"] is True
    assert result["iri_good"] is True
    assert result["iri_bad"] is False
    assert result["grammar_after_use"] is True
    assert result["yarn_config_restored"] is True
    # the hub's handlers and database layer: not imported, even once the lab
    # checked a token's scopes; the real ones for whoever imports them
    assert result["hub_database_at_start"] == []
    assert result["scope_checks"] == [True, False]
    assert result["hub_database_after_scope_checks"] == []
    assert result["orm_on_use"] == "jupyterhub.orm"
    assert result["real_handlers_on_import"] == "jupyterhub.handlers.pages"


def test_a_serving_lab_never_loads_the_hub_database(host, admin):
    """In a real lab, after it served the API, a kernel, a terminal and its
    page: SQLAlchemy's compiled modules are not mapped in the lab's process."""
    user, = unique_names(1, "fast")
    batch_create(admin, [user])
    admin.start_server(user)
    try:
        out, status = lab_cell(admin, user, "print(6 * 7)")
        assert status == "ok" and "42" in out, out
        out, status = lab_shell(admin, user, "echo term-ok")
        assert status == 0 and "term-ok" in out, out
        assert admin.s.get(admin.url(f"user/{user}/lab"), timeout=60).status_code == 200
        pid = host.unit_properties(f"jupyter-{user}-singleuser.service", "MainPID")["MainPID"]
        maps = host.exec("cat", f"/proc/{pid}/maps").stdout
        assert "/site-packages/zmq/" in maps  # the map of a lab, with its compiled modules
        assert "/site-packages/sqlalchemy/" not in maps
    finally:
        admin.stop_server(user)
        admin.api("DELETE", f"users/{user}")


# the TLS check of the contexts aiohttp built while the CA file was left out:
# a handshake with a server whose CA is in the system's CA directory, and one
# whose CA is not
TLS_PROBE = textwrap.dedent(f"""
    import json, os, socket, ssl, sys, threading
    sys.path.insert(0, {LAB_LIBRARY!r})
    import lab_server
    lab_server.skip_start_costs()
    import aiohttp.connector
    context = aiohttp.connector._SSL_CONTEXT_VERIFIED
    result = {{"cas_read_at_start": context.cert_store_stats()["x509_ca"],
               "variable_left": "SSL_CERT_FILE" in os.environ}}

    def handshake(name):
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(f"{{sys.argv[1]}}/{{name}}.pem", f"{{sys.argv[1]}}/{{name}}.key")
        listener = socket.create_server(("127.0.0.1", 0))

        def serve():
            conn, _ = listener.accept()
            try:
                server.wrap_socket(conn, server_side=True).close()
            except (ssl.SSLError, OSError):
                conn.close()
        threading.Thread(target=serve, daemon=True).start()
        with socket.create_connection(listener.getsockname(), timeout=30) as sock:
            try:
                context.wrap_socket(sock, server_hostname="localhost").close()
                return "verified"
            except ssl.SSLCertVerificationError:
                return "refused"

    result["trusted"], result["untrusted"] = handshake("trusted"), handshake("untrusted")
    print(json.dumps(result))
""")
MAKE_CERTIFICATES = """
set -e
cd "$1"
printf 'subjectAltName=DNS:localhost\\n' > san
for ca in trusted untrusted; do
    openssl req -x509 -newkey rsa:2048 -nodes -keyout $ca-ca.key -out $ca-ca.pem -days 1 \\
        -subj "/CN=lab fast start probe $ca CA $(basename "$1")" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout $ca.key -out $ca.csr -subj /CN=localhost 2>/dev/null
    openssl x509 -req -in $ca.csr -CA $ca-ca.pem -CAkey $ca-ca.key -CAcreateserial -out $ca.pem \\
        -days 1 -extfile san 2>/dev/null
done
chmod 755 . && chmod 644 ./*
ln -s "$1/trusted-ca.pem" "/etc/ssl/certs/$(openssl x509 -hash -noout -in trusted-ca.pem).0"
echo "/etc/ssl/certs/$(openssl x509 -hash -noout -in trusted-ca.pem).0"
"""


def test_aiohttp_reads_no_ca_bundle_at_start_and_still_verifies_with_the_system_cas(host):
    """aiohttp's default contexts are built without the system's CA file
    (lab_server.import_without_default_ca_file) and still trust exactly the
    system's CAs: those in OpenSSL's CA directory, read on a handshake."""
    directory = host.exec("mktemp", "-d", "/var/tmp/tlsprobe.XXXXXX").stdout.strip()
    link = ""
    try:
        link = host.exec("bash", "-c", MAKE_CERTIFICATES, "make-certificates", directory).stdout.strip()
        out = host.exec("runuser", "-u", "nobody", "--", "/usr/bin/env", "-i",
                        "PATH=/opt/jupyterlab/bin:/usr/local/bin:/usr/bin:/bin", "HOME=/tmp",
                        LAB_PYTHON, "-c", TLS_PROBE, directory, timeout=300)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result == {"cas_read_at_start": 0, "variable_left": False,
                          "trusted": "verified", "untrusted": "refused"}
    finally:
        host.exec("rm", "-rf", directory, *([link] if link else []), check=False)

