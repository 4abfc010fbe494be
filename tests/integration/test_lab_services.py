"""The lab services (docs/lab-services.md): MLflow, TensorBoard and Glances,
started on demand inside the user's own lab by jupyter-server-proxy and opened
through nginx at ``/user/<name>/<service>/`` on the lab's origin.

The default host has every switch on. A hub drop-in (the admin's escape hatch)
turns the three ``JUPYTERHUB_SERVICE_*`` variables to "0" for users named
``svcoff-*`` only, the values the Ansible switches set when off; one lab
started that way shows the off path (no launcher entry, 404).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from hubclient import HubClient, batch_create, lab_cell, lab_shell, login_client, unique_names

SWITCHES = ("JUPYTERHUB_SERVICE_MLFLOW", "JUPYTERHUB_SERVICE_TENSORBOARD",
            "JUPYTERHUB_SERVICE_RESOURCES_MONITOR")
OFF_PREFIX = "svcoff"
DROPIN = f"""
# test_lab_services.py: every lab service switched off for users named {OFF_PREFIX}-*
# (a drop-in's own `c` does not see the platform's environment; the hook
# changes only those users' spawners, before their labs start)
def _switch_services_off(spawner):
    if spawner.user.name.startswith("{OFF_PREFIX}-"):
        spawner.environment = {{**spawner.environment, **{{name: "0" for name in {SWITCHES!r}}}}}

c.Spawner.pre_spawn_hook = _switch_services_off
"""
# what each service's own page says about itself
PAGES = {
    "mlflow": "<title>MLflow</title>",
    "tensorboard": '<meta name="tb-relative-root" content="./">',
    "glances": "<title>Glances</title>",
}
# MLflow's first start creates its database (a minute or more on two busy cores)
FIRST_START = 300


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Labs:
    def __init__(self, host, admin: HubClient):
        self.host, self.admin = host, admin
        tag = unique_names(1, "svc")[0]
        self.owner, self.other, self.off = f"{tag}-own", f"{tag}-oth", f"{OFF_PREFIX}-{tag.split('-', 1)[1]}"
        passwords = batch_create(admin, [self.owner, self.other, self.off])
        self.clients = {name: login_client(host.https_url, name, password, spawn=False)
                        for name, password in passwords.items()}
        for name in passwords:
            admin.start_server(name)

    def get(self, who: str, lab: str, path: str, **kw):
        kw.setdefault("timeout", 60)
        return self.clients[who].get(f"user/{lab}/{path}", **kw)

    def close(self):
        for name in (self.owner, self.other, self.off):
            self.admin.stop_server(name)
            self.admin.api("DELETE", f"users/{name}")


@pytest.fixture(scope="module")
def labs(host, admin, hub_dropin):
    hub_dropin("90-test-lab-services.py", DROPIN)
    labs = Labs(host, admin)
    yield labs
    labs.close()


@pytest.mark.parametrize("service", list(PAGES))
def test_the_user_opens_each_service_through_nginx(labs, service):
    r = labs.get(labs.owner, labs.owner, f"{service}/", timeout=FIRST_START)
    assert r.status_code == 200, (r.status_code, r.text[:500])
    assert r.url == labs.clients[labs.owner].lab_url(labs.owner) + f"{service}/"
    assert PAGES[service] in r.text, r.text[:500]


def test_glances_reports_the_labs_machine(labs):
    r = labs.get(labs.owner, labs.owner, "glances/api/4/cpu", timeout=FIRST_START)
    assert r.status_code == 200, r.text[:300]
    assert "total" in r.json()


def test_tensorboard_reads_the_users_workspace(labs):
    r = labs.get(labs.owner, labs.owner, "tensorboard/data/environment", timeout=FIRST_START)
    assert r.status_code == 200, r.text[:300]
    assert r.json()["data_location"] == f"/home/jh-{labs.owner}/workspace/tensorboard"


def test_mlflow_keeps_its_runs_in_the_workspace_and_takes_writes_from_the_labs_origin_only(labs):
    client = labs.clients[labs.owner]
    api = "mlflow/ajax-api/2.0/mlflow/experiments"
    r = client.s.post(client.url(f"user/{labs.owner}/{api}/create"), json={"name": "from-the-test"},
                      headers={"Origin": origin_of(client.lab_url(labs.owner))}, timeout=FIRST_START)
    assert r.status_code == 200, r.text[:300]
    # another user's lab origin is same-site: its pages may send this user's cookie
    r = client.s.post(client.url(f"user/{labs.owner}/{api}/create"), json={"name": "cross-site"},
                      headers={"Origin": origin_of(client.lab_url(labs.other))}, timeout=60)
    assert r.status_code == 403, r.text[:300]
    found = labs.get(labs.owner, labs.owner, f"{api}/search?max_results=100").json()
    names = {e["name"] for e in found.get("experiments", [])}
    assert "from-the-test" in names and "cross-site" not in names
    data = f"/srv/jupyterhub/users/jh-{labs.owner}/workspace/mlflow"
    owners = labs.host.exec("stat", "-c", "%U %n", f"{data}/mlflow.db", f"{data}/artifacts").stdout.split("\n")
    assert [line.split()[0] for line in owners if line] == [f"jh-{labs.owner}"] * 2


NOTEBOOK_RUN = """
import mlflow
with mlflow.start_run(experiment_id="0") as run:
    mlflow.log_metric("accuracy", 0.5)
    mlflow.log_text("logged from a notebook", "note.txt")
print("RUN", run.info.run_id)
"""


def test_a_notebook_logs_to_the_store_the_ui_shows(labs):
    # the server made the Default experiment when it first started (tests above)
    assert labs.get(labs.owner, labs.owner, "mlflow/", timeout=FIRST_START).status_code == 200
    out, status = lab_cell(labs.admin, labs.owner, NOTEBOOK_RUN, timeout=180)
    assert status == "ok", out
    run_id = re.search(r"RUN (\w+)", out)[1]
    api = "mlflow/ajax-api/2.0/mlflow"
    run = labs.get(labs.owner, labs.owner, f"{api}/runs/get?run_id={run_id}").json()["run"]
    assert [(m["key"], m["value"]) for m in run["data"]["metrics"]] == [("accuracy", 0.5)]
    listed = labs.get(labs.owner, labs.owner, f"{api}/artifacts/list?run_id={run_id}").json()
    assert [f["path"] for f in listed.get("files", [])] == ["note.txt"], listed
    note = f"/srv/jupyterhub/users/jh-{labs.owner}/workspace/mlflow/artifacts/0/{run_id}/artifacts/note.txt"
    assert labs.host.exec("cat", note).stdout == "logged from a notebook"


@pytest.mark.parametrize("service", list(PAGES))
def test_another_user_and_anonymous_are_refused(labs, host, service):
    r = labs.get(labs.other, labs.owner, f"{service}/")
    assert r.status_code == 403 and r.url.startswith(host.https_url + "hub/api/oauth2/authorize"), r.url
    assert PAGES[service] not in r.text
    r = HubClient(host.https_url).get(f"user/{labs.owner}/{service}/", timeout=60)
    assert r.url.startswith(host.https_url + "hub/login"), r.url
    assert PAGES[service] not in r.text


def test_the_launcher_offers_the_switched_on_services_only(labs):
    offered = labs.get(labs.owner, labs.owner, "server-proxy/servers-info").json()["server_processes"]
    entries = {p["name"]: p["launcher_entry"] for p in offered}
    assert {name: e["title"] for name, e in entries.items() if e["enabled"]} == {
        "mlflow": "MLflow", "tensorboard": "TensorBoard", "glances": "Glances"}
    icon = labs.get(labs.owner, labs.owner, "server-proxy/icon/mlflow")
    assert icon.status_code == 200 and icon.text.lstrip().startswith("<svg")

    r = labs.get(labs.off, labs.off, "server-proxy/servers-info")
    assert r.status_code == 200 and r.json()["server_processes"] == []
    for service in PAGES:
        r = labs.get(labs.off, labs.off, f"{service}/")
        assert r.status_code == 404, (service, r.status_code)
        assert PAGES[service] not in r.text


def test_services_listen_on_no_port_and_their_sockets_are_out_of_other_labs_reach(labs, host):
    """An attack from another user's lab: connect to the owner's services.

    Labs share the host's network, so a service on a loopback port would be open
    to every user; they listen on unix sockets in the owner's private /tmp."""
    for service in PAGES:  # every service running
        assert labs.get(labs.owner, labs.owner, f"{service}/", timeout=FIRST_START).status_code == 200
    uid = host.exec("id", "-u", f"jh-{labs.owner}").stdout.strip()
    tcp = host.exec("ss", "-Hltne").stdout
    assert not [line for line in tcp.splitlines() if re.search(rf"\buid:{uid}\b", line)], tcp
    sockets = re.findall(r"(/tmp/jupyter-server-proxy-\w+/socket)", host.exec("ss", "-Hxl").stdout)
    assert len(sockets) >= len(PAGES), sockets
    # connect_ex: 0 = connected, else the errno
    probe = ("python3 -c 'import socket, sys; [print(\"probe\", socket.socket(socket.AF_UNIX).connect_ex(p), p)"
             " for p in sys.argv[1:]]'")
    out, status = lab_shell(labs.admin, labs.other, f"{probe} {' '.join(sockets)}")
    assert status == 0, out
    results = re.findall(r"probe (\d+) (\S+)", out)
    assert sorted(path for _, path in results) == sorted(sockets), out
    assert [errno for errno, _ in results if errno == "0"] == [], out
