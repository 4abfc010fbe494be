"""Resource limits that hold (issue 15), attacked from inside real labs.

The suite's main test host cannot enforce a lab's limits (its cgroup
controllers are read-only); this module boots a second host of the enforcing
kind (``testhost.up(..., enforce_limits=True)``, docs/testing.md "Resource
limits") with small limits, and proves each one from a lab:

* memory: a kernel allocating past ``MemoryMax`` is killed by the kernel inside
  that lab only; the lab server, the hub and another user's lab stay up; the
  lab reports the kernel restarting (JupyterLab's "kernel died" dialog), the
  unit's journal shows the restart, its memory cgroup counts the OOM kill and
  the activity monitor shows that count for the victim only;
  nothing went to swap; a member of a resource profile with more memory keeps
  the same allocation;
* tasks: a fork bomb stops at ``TasksMax`` while the hub and another lab answer;
* CPU: a lab of a profile with ``cpu_limit`` 0.5 gets about half a core under
  contention, and two busy labs with equal limits share the cores fairly
  however many processes each runs;
* the activity monitor reads the units' memory, tasks and CPU from the cgroup
  v1 controllers of this host kind;
* disk quotas (the users' root is a loop-mounted btrfs here,
  ``testhost.LIMITS_HOST_USERS_BTRFS``): a user at their quota gets "Disk quota
  exceeded" in their own lab only, another user still writes, the hub answers,
  usage and limit show in the storage API, the admin storage page, the user's
  own Manage Volumes model and the activity monitor's sizes; a deleted user's
  limit is lifted; a nested btrfs subvolume (a qgroup outside the user's) cannot
  be made from a lab, by the btrfs tool or the ioctl itself, so writing into it
  stops at the quota too; the quota is applied at an account's first spawn only
  (the next spawn starts no quota unit), and a new limit reaches existing users
  through the hub's storage pass, without a spawn; a lab does not start when a
  directory it binds is on a mount that failed (RequiresMountsFor=); the shared
  directory's own quota (jupyterhub_storage_quota_shared) stops every user's
  writes there together.

Host: conftest's ``limits_host`` (``$TESTHOST_NAME-limits``), with the
limits of ``testhost.LIMITS_HOST_VARS``.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time

import pytest

from hubclient import HubClient, hub_config_dropin, lab_cell, lab_shell, login_client
from testhost import LIMITS_HOST_VARS

M = 2**20
MEM_LIMIT = 512 * M  # LIMITS_HOST_VARS
TASKS_MAX = LIMITS_HOST_VARS["jupyterhub_spawner_tasks_max"]
SAMPLE_INTERVAL = 4
ACTIVITY_DROPIN = f"""\
# test: sample every {SAMPLE_INTERVAL} s, live readings at most 1 s old
c.ActivityMonitor.sample_interval = {SAMPLE_INTERVAL}
c.ActivityMonitor.live_interval = 1.0
"""


@pytest.fixture(scope="module")
def admin(limits_admin) -> HubClient:
    """This module's admin is the enforcing host's (conftest's is the main host's)."""
    return limits_admin


@pytest.fixture(scope="module")
def fast_sampling(limits_host, admin):
    with hub_config_dropin(limits_host, admin, "90-test-limits.py", ACTIVITY_DROPIN):
        yield


@pytest.fixture(scope="module")
def labs(admin):
    """labs(n, group=None): n fresh users with running labs (in hub group ``group``);
    every lab is stopped at the end of the module."""
    started = []

    def make(n: int, group: str | None = None) -> list[str]:
        tag = secrets.token_hex(3)
        names = [f"lim-{tag}-{i}" for i in range(n)]
        for name in names:
            assert admin.api("POST", f"users/{name}").status_code == 201
        if group:
            assert admin.api("POST", f"groups/{group}").status_code in (201, 409)
            r = admin.api("POST", f"groups/{group}/users", json={"users": names})
            assert r.status_code == 200, r.text
        for name in names:
            admin.start_server(name)
            started.append(name)
        return names

    yield make
    for name in started:
        admin.stop_server(name)


def unit(user: str) -> str:
    return f"jupyter-{user}-singleuser.service"


def cgroup_file(host, user: str, controller: str, name: str) -> str:
    """A file of the lab unit's cgroup in one v1 controller hierarchy."""
    group = host.unit_properties(unit(user), "ControlGroup")["ControlGroup"]
    return host.exec("cat", f"/sys/fs/cgroup/{controller}{group}/{name}").stdout


def answers(admin: HubClient, user: str | None = None) -> bool:
    """The hub's API (or user's lab server) answers within 10 s."""
    path = f"user/{user}/api/status" if user else "hub/api/"
    try:
        return admin.get(path, timeout=10).status_code == 200
    except OSError:
        return False


def allocate(megabytes: int) -> str:
    """Cell code touching ``megabytes`` of memory (written, so really resident)."""
    return (f"chunks = []\nfor i in range({megabytes // 16}):\n"
            f"    chunks.append(bytearray(b'x' * {16 * M}))\n"
            f"print('allocated', len(chunks) * 16, 'MB')\n")


# --- the units and their cgroups ---------------------------------------------------


def test_lab_unit_limits_are_in_the_kernel(limits_host, admin, labs):
    user, = labs(1)
    props = limits_host.unit_properties(unit(user), "MemoryMax", "MemorySwapMax", "TasksMax",
                                        "CPUQuotaPerSecUSec")
    assert props == {"MemoryMax": str(MEM_LIMIT), "MemorySwapMax": "0",
                     "TasksMax": str(TASKS_MAX), "CPUQuotaPerSecUSec": "1s"}
    # what the kernel enforces, not only what systemd was told
    assert int(cgroup_file(limits_host, user, "memory", "memory.limit_in_bytes")) == MEM_LIMIT
    assert cgroup_file(limits_host, user, "pids", "pids.max").strip() == str(TASKS_MAX)
    quota = int(cgroup_file(limits_host, user, "cpu", "cpu.cfs_quota_us"))
    period = int(cgroup_file(limits_host, user, "cpu", "cpu.cfs_period_us"))
    assert quota == period  # one core
    # and the hub, proxy and nginx outweigh a lab (CPUWeight 1000 -> shares 10240)
    lab_shares = int(cgroup_file(limits_host, user, "cpu", "cpu.shares"))
    for service in ("jupyterhub", "configurable-http-proxy", "nginx"):
        group = limits_host.unit_properties(service, "ControlGroup")["ControlGroup"]
        shares = int(limits_host.exec("cat", f"/sys/fs/cgroup/cpu{group}/cpu.shares").stdout)
        assert shares == 10 * lab_shares, service


# --- memory ----------------------------------------------------------------------


def test_kernel_past_the_memory_limit_dies_alone(limits_host, admin, labs):
    victim, other = labs(2)
    lab_pid = limits_host.unit_properties(unit(victim), "MainPID")["MainPID"]
    out, status = lab_cell(admin, victim, allocate(2 * MEM_LIMIT // M), timeout=120)
    # the lab tells the user: its restarter reports the kernel restarting
    # (JupyterLab: "The kernel appears to have died. It will restart automatically.")
    assert status == "died", (status, out[-500:])
    assert "allocated" not in out
    # the kernel's OOM killer acted inside this unit's memory cgroup
    oom = dict(line.split() for line in
               cgroup_file(limits_host, victim, "memory", "memory.oom_control").splitlines())
    assert int(oom["oom_kill"]) >= 1, oom
    # nothing escaped into swap: memory + swap peaked at the limit (the kernel
    # charges in per-CPU batches, a few hundred KB past it; an escape into swap
    # would have reached the twice the limit the cell asked for)
    peak = int(cgroup_file(limits_host, victim, "memory", "memory.memsw.max_usage_in_bytes"))
    assert peak <= MEM_LIMIT + M, peak
    journal = limits_host.exec("journalctl", "-u", unit(victim), "--no-pager", "-o", "cat").stdout
    assert "restarting kernel" in journal, journal[-2000:]
    # the activity monitor shows the kill for the victim only (a live reading is
    # at most live_interval, 5 s, old)
    deadline = time.monotonic() + 30
    while True:
        users = {u["name"]: u for u in admin.api("GET", "activity").json()["users"]}
        if users[victim]["oom_kills"] or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert users[victim]["oom_kills"] == int(oom["oom_kill"]), users[victim]
    assert users[victim]["sources"]["oom_kills"] == "cgroup-v1"
    assert users[victim]["last_oom_kill_at"] is not None
    assert users[other]["oom_kills"] == 0 and users[other]["last_oom_kill_at"] is None
    # the lab server (same process), the hub and the other lab stay up
    assert limits_host.unit_properties(unit(victim), "ActiveState", "MainPID") == {
        "ActiveState": "active", "MainPID": lab_pid}
    assert answers(admin, victim) and answers(admin)
    out, status = lab_cell(admin, other, "print(6 * 7)")
    assert (status, out.strip()) == ("ok", "42")
    # and the victim's lab runs a new kernel
    out, status = lab_cell(admin, victim, "print(6 * 7)")
    assert (status, out.strip()) == ("ok", "42")


def test_memory_profile_gives_its_members_more(limits_host, admin, labs):
    member, = labs(1, group="big-mem")
    assert int(cgroup_file(limits_host, member, "memory", "memory.limit_in_bytes")) == 2 * MEM_LIMIT
    # past the default limit, within the profile's
    out, status = lab_cell(admin, member, allocate(MEM_LIMIT * 3 // 2 // M), timeout=120)
    assert status == "ok", out[-500:]
    assert f"allocated {MEM_LIMIT * 3 // 2 // M} MB" in out


# --- tasks ----------------------------------------------------------------------

FORK_BOMB = f"""python3 -c '
import os, time
kids, refused = [], 0
end = time.monotonic() + 15
while time.monotonic() < end and len(kids) < {2 * TASKS_MAX}:
    try:
        pid = os.fork()
    except OSError:  # EAGAIN: the unit is at TasksMax
        refused += 1
        continue
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    kids.append(pid)
print("forked", len(kids), "refused", refused)
for pid in kids:
    os.kill(pid, 9)
'"""


def test_fork_bomb_stops_at_tasks_max_and_the_rest_answers(limits_host, admin, labs):
    bomber, other = labs(2)
    result = {}

    def bomb():
        result["out"], result["status"] = lab_shell(admin, bomber, FORK_BOMB, timeout=120)

    thread = threading.Thread(target=bomb)
    thread.start()
    peak, answered = 0, []
    while thread.is_alive():
        peak = max(peak, int(limits_host.unit_properties(unit(bomber), "TasksCurrent")["TasksCurrent"]))
        answered.append((answers(admin), answers(admin, other)))
        time.sleep(1)
    thread.join()
    counts = re.search(r"forked (\d+) refused (\d+)", result["out"])
    assert counts, result["out"]
    forked, refused = int(counts[1]), int(counts[2])
    assert refused > 0 and forked < TASKS_MAX, result["out"]
    assert forked > TASKS_MAX // 2  # the bomb did fill the lab
    assert TASKS_MAX - 20 <= peak <= TASKS_MAX
    # the hub and the other lab answered all along
    assert answered and all(hub and lab for hub, lab in answered), answered
    assert answers(admin, bomber)


# --- CPU ------------------------------------------------------------------------

BURN = ("for i in $(seq {n}); do setsid nohup timeout {secs} bash -c 'while :; do :; done' "
        ">/dev/null 2>&1 </dev/null & done; echo burning")


# CPU seconds of a unit's processes (utime + stime of each). Not CPUUsageNSec:
# systemd takes cpu and cpuacct for one v1 hierarchy, and on this host they are
# two, so a unit has no cpuacct cgroup of its own (docs/testing.md).
UNIT_CPU_SECONDS = """
import os, subprocess, sys
group = subprocess.run(["systemctl", "show", "-p", "ControlGroup", "--value", sys.argv[1]],
                       capture_output=True, text=True, check=True).stdout.strip()
ticks = 0
for pid in open(f"/sys/fs/cgroup/systemd{group}/cgroup.procs").read().split():
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    ticks += int(fields[11]) + int(fields[12])
print(ticks / os.sysconf("SC_CLK_TCK"))
"""


def cores_used(host, users: list[str], seconds: float = 6) -> dict[str, float]:
    """CPU cores each user's lab used over ``seconds`` (its processes' CPU time)."""
    def usage():
        return {u: float(host.exec("python3", "-c", UNIT_CPU_SECONDS, unit(u)).stdout) for u in users}
    before, start = usage(), time.monotonic()
    time.sleep(seconds)
    after, wall = usage(), time.monotonic() - start
    return {u: (after[u] - before[u]) / wall for u in users}


def burn(admin: HubClient, user: str, processes: int, secs: int = 30) -> None:
    out, status = lab_shell(admin, user, BURN.format(n=processes, secs=secs))
    assert status == 0 and "burning" in out


def test_half_core_profile_gets_half_a_core_under_contention(limits_host, admin, labs):
    half, = labs(1, group="half-cpu")
    full, = labs(1)
    assert limits_host.unit_properties(unit(half), "CPUQuotaPerSecUSec")["CPUQuotaPerSecUSec"] == "500ms"
    for user in (half, full):
        burn(admin, user, processes=2)  # both want two cores of the two
    time.sleep(2)
    used = cores_used(limits_host, [half, full])
    assert 0.3 <= used[half] <= 0.6, used
    assert used[full] <= 1.05, used


def test_equal_limits_share_fairly_whatever_the_process_count(limits_host, admin, labs):
    many, one = labs(2)
    # per process, 4 loops against 1 would take 80 % of the cores; per lab, half each
    burn(admin, many, processes=4)
    burn(admin, one, processes=1)
    time.sleep(2)
    used = cores_used(limits_host, [many, one])
    assert 0.6 <= used[many] / used[one] <= 1.6, used


# --- activity monitor on cgroup v1 ---------------------------------------------


def test_activity_monitor_reads_the_v1_controllers(limits_host, admin, labs, fast_sampling):
    busy, idle = labs(2)
    burn(admin, busy, processes=1, secs=60)
    deadline = time.monotonic() + 2 * SAMPLE_INTERVAL + 30
    while True:
        users = {u["name"]: u for u in admin.api("GET", "activity").json()["users"]}
        b, i = users[busy], users[idle]
        # the idle lab's first figure may still cover its own start (seconds of
        # CPU on a loaded machine): wait for a sample of it idling
        if (b["cpu_percent"] is not None and b["cpu_percent"] >= 50
                and i["cpu_percent"] is not None and i["cpu_percent"] <= 5):
            break
        assert time.monotonic() < deadline, (b["cpu_percent"], b["sources"], i["cpu_percent"])
        time.sleep(1)
    for u in (b, i):
        assert u["sources"]["memory"] == "cgroup-v1", u["sources"]
        assert u["sources"]["tasks"] == "cgroup-v1", u["sources"]
        # a unit has no cpuacct cgroup here (cores_used): the psutil fallback
        assert u["sources"]["cpu"] == "psutil", u["sources"]
        assert u["memory_limit"] == MEM_LIMIT
        assert 20 * M < u["memory_bytes"] <= MEM_LIMIT and 1 <= u["tasks"] <= TASKS_MAX
    assert i["cpu_percent"] <= 5 and b["cpu_percent"] <= 105  # one core at most
    # the figures are the kernel's own for the unit
    tasks = int(limits_host.unit_properties(unit(idle), "TasksCurrent")["TasksCurrent"])
    assert abs(i["tasks"] - tasks) <= 2


# --- disk quotas ------------------------------------------------------------------

QUOTA = 100 * M  # LIMITS_HOST_VARS jupyterhub_storage_quota_per_user
USERS_ROOT = "/srv/jupyterhub/users"


def quota_of(admin: HubClient, user: str, at_least: int = 0) -> dict:
    """The storage API's quota figures of ``user`` once they reach ``at_least``
    bytes (btrfs accounts at a transaction commit; the hub rereads every 10 s)."""
    deadline = time.monotonic() + 40
    while True:
        entry = admin.api("GET", "storage").json()["users"][user]
        used = entry["quota"]["used_bytes"]
        if (used is not None and used >= at_least) or time.monotonic() > deadline:
            return entry
        time.sleep(2)


def test_user_at_the_quota_is_refused_in_their_own_lab_only(limits_host, admin, labs, fast_sampling):
    hog, other = labs(2)
    unix = quota_of(admin, hog)["unix_name"]
    # the apply unit made the user's root a subvolume of its own, limited
    assert limits_host.exec("btrfs", "subvolume", "show", f"{USERS_ROOT}/{unix}", check=False).returncode == 0
    # the privileged steps run in hardened units (the hub keeps no CAP_SYS_ADMIN)
    for quota_unit in (f"jupyterhub-disk-quota@apply-{unix}.service", "jupyterhub-disk-quota-usage.service"):
        assert limits_host.unit_properties(quota_unit, "Result")["Result"] == "success", quota_unit
        score, out = limits_host.exposure(quota_unit)
        assert score <= 2.0, out[-2000:]
    # twice the quota, from the user's terminal
    out, _status = lab_shell(admin, hog, f"dd if=/dev/zero of=$HOME/workspace/fill bs=1M count={2 * QUOTA // M}"
                             "; sync", timeout=180)
    assert "Disk quota exceeded" in out, out[-1000:]
    entry = quota_of(admin, hog, at_least=QUOTA * 9 // 10)
    assert entry["quota"]["limit_bytes"] == QUOTA
    assert QUOTA * 9 // 10 <= entry["quota"]["used_bytes"] <= QUOTA + 4 * M, entry
    # another user writes as before; the hub and the hog's own lab answer
    out, status = lab_shell(admin, other, "dd if=/dev/zero of=$HOME/workspace/f bs=1M count=20 && sync && echo wrote")
    assert status == 0 and "wrote" in out, out[-1000:]
    assert answers(admin) and answers(admin, hog)
    other_entry = quota_of(admin, other, at_least=20 * M)
    assert 20 * M <= other_entry["quota"]["used_bytes"] < QUOTA // 2, other_entry

    # the figures on the pages: the admin storage page, the user's own dialog model
    # (what the home page's quota line shows), the activity monitor's sizes
    browser = login_client(limits_host.https_url, limits_host.admin_user, limits_host.admin_password,
                           spawn=False)
    page = browser.get("hub/storage")
    row = re.search(rf'<tr data-user="{hog}">.*?</tr>', page.text, re.S)
    assert row and f'data-limit="{QUOTA}"' in row[0], page.text[:2000]
    used_on_page = int(re.search(r'class="text-end storage-quota"\s+data-used="(\d+)"', row[0])[1])
    assert used_on_page >= QUOTA * 9 // 10
    token = admin.api("POST", f"users/{hog}/tokens", json={"note": "quota test"}).json()["token"]
    own = HubClient(limits_host.https_url, token=token)
    assert own.api("GET", f"users/{hog}/manage-volumes").json()["quota"]["limit_bytes"] == QUOTA
    # the home page's quota line, filled from that model by its script
    assert 'id="disk-quota"' in browser.get("hub/home").text
    deadline = time.monotonic() + 30
    while True:
        sizes = {u["name"]: u["sizes"] for u in admin.api("GET", "activity").json()["users"]}
        if (sizes.get(hog) or {}).get("total", 0) >= QUOTA * 9 // 10 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert list(sizes[hog]["dirs"]) == ["all (disk quota)"], sizes[hog]
    assert sizes[hog]["total"] >= QUOTA * 9 // 10

    # freeing space lets the user write again
    out, status = lab_shell(admin, hog, "rm $HOME/workspace/fill && sync && sleep 1 && "
                            "dd if=/dev/zero of=$HOME/.cache/again bs=1M count=10 && sync && echo wrote")
    assert status == 0 and "wrote" in out, out[-1000:]


def test_a_nested_subvolume_does_not_escape_the_quota(limits_host, admin, labs):
    """The attack: a btrfs subvolume made inside one's own directories is a qgroup
    of its own, outside the user's limit. The lab's seccomp filter refuses to make
    it (lab/lab_start.py), by the btrfs tool or the ioctl itself, so the same
    writes stop at the quota."""
    (attacker,) = labs(1)
    unix = quota_of(admin, attacker)["unix_name"]
    # from the user's terminal: the ioctl (BTRFS_IOC_SUBVOL_CREATE), the tool, then
    # twice the quota written into the would-be subvolume
    raw_ioctl = ("import ctypes, os, struct; libc = ctypes.CDLL(None, use_errno=True); "
                 "fd = os.open(os.path.expanduser('~/workspace'), os.O_RDONLY); "
                 "args = ctypes.create_string_buffer(struct.pack('q', 0) + b'raw-nest'.ljust(4088, bytes(1))); "
                 "print('ioctl-answer', libc.ioctl(fd, 0x5000940E, args), ctypes.get_errno())")
    out, _status = lab_shell(
        admin, attacker,
        f'cd $HOME/workspace; python3 -c "{raw_ioctl}"; btrfs subvolume create nest; '
        f"echo create-status-$?; mkdir -p nest; dd if=/dev/zero of=nest/fill bs=1M count={2 * QUOTA // M}; sync",
        timeout=180)
    assert "ioctl-answer -1 1" in out, out[-2000:]  # EPERM
    assert "create-status-1" in out and "Operation not permitted" in out, out[-2000:]
    assert "Disk quota exceeded" in out, out[-2000:]
    # no subvolume below the user's own, and the kernel's figure stays at the limit
    nested = limits_host.exec("btrfs", "subvolume", "list", "-o", f"{USERS_ROOT}/{unix}").stdout
    assert nested.strip() == "", nested
    entry = quota_of(admin, attacker, at_least=QUOTA * 9 // 10)
    assert QUOTA * 9 // 10 <= entry["quota"]["used_bytes"] <= QUOTA + 4 * M, entry
    # the lab's journal says the filter is in place
    journal = limits_host.exec("journalctl", "-u", unit(attacker), "--no-pager", "-o", "cat").stdout
    assert "disk quota barrier installed" in journal, journal[-2000:]


def qgroup_limit(host, unix: str) -> str:
    """The max-referenced limit btrfs holds for ``unix``'s subvolume ("none" or bytes)."""
    show = host.exec("btrfs", "qgroup", "show", "--raw", "-re", USERS_ROOT).stdout
    found = re.search(rf"^0/\d+\s+\d+\s+\d+\s+(\S+)\s+\S+\s+{unix}$", show, re.M)
    assert found, show
    return found[1]


def test_the_quota_is_applied_once_per_account_and_again_when_the_limit_changes(limits_host, admin, labs):
    (user,) = labs(1)
    unix = quota_of(admin, user)["unix_name"]
    apply_unit = f"jupyterhub-disk-quota@apply-{unix}.service"
    record = f"/var/lib/jupyterhub-disk-quota/applied/{unix}"

    def apply_runs() -> int:
        """How often the apply unit ran for the user: each run logs one "limited to"."""
        journal = limits_host.exec("journalctl", "-u", apply_unit, "--no-pager", "-o", "cat").stdout
        return journal.count("limited to")

    assert apply_runs() == 1
    assert limits_host.exec("cat", record).stdout.strip() == str(QUOTA)
    # the next spawn starts no quota unit: the record says the limit is in place
    admin.stop_server(user)
    admin.start_server(user)
    assert apply_runs() == 1
    assert qgroup_limit(limits_host, unix) == str(QUOTA)

    # a new limit (as a deploy would write it): the hub's storage pass brings the
    # existing roots to it through the sync unit, without a spawn
    path = "/etc/jupyterhub/platform_config.json"
    original = limits_host.exec("cat", path).stdout
    changed = json.loads(original)
    changed["StorageManager"]["quota_per_user"] = "150M"

    def switch_to(text: str, limit: int) -> None:
        limits_host.exec("tee", path, input=text)
        limits_host.exec("systemctl", "restart", "jupyterhub")
        admin.wait_hub()
        deadline = time.monotonic() + 60
        while qgroup_limit(limits_host, unix) != str(limit) and time.monotonic() < deadline:
            time.sleep(2)
        assert qgroup_limit(limits_host, unix) == str(limit)

    try:
        switch_to(json.dumps(changed), 150 * M)
        assert limits_host.exec("cat", record).stdout.strip() == str(150 * M)
        sync_unit = "jupyterhub-disk-quota@sync.service"
        assert limits_host.unit_properties(sync_unit, "Result")["Result"] == "success"
        assert apply_runs() == 1  # the sync unit did it, no spawn was needed
    finally:
        switch_to(original, QUOTA)


def test_the_shared_directory_keeps_its_own_quota(limits_host, admin):
    """jupyterhub_storage_quota_shared: every user's files in /mnt/shared together
    stop at its limit (without it, /mnt/shared is a way round one's own quota).
    This host's shared directory is not on btrfs: the test binds a subvolume of
    the users' btrfs image there, as the storage role makes it on a btrfs host,
    and sets the limit in platform_config.json as a deploy would."""
    shared, backing = "/srv/jupyterhub/shared", f"{USERS_ROOT}/.shared-quota-test"
    config_path = "/etc/jupyterhub/platform_config.json"
    original = limits_host.exec("cat", config_path).stdout
    changed = json.loads(original)
    changed["StorageManager"]["quota_shared"] = "30M"
    limits_host.exec("btrfs", "subvolume", "create", backing)
    limits_host.exec("chown", "root:jupyterhub-users", backing)
    limits_host.exec("chmod", "2775", backing)
    limits_host.exec("mount", "--bind", backing, shared)
    names = [f"lim-sh-{secrets.token_hex(3)}-{i}" for i in range(2)]
    try:
        limits_host.exec("tee", config_path, input=json.dumps(changed))
        limits_host.exec("systemctl", "restart", "jupyterhub")
        admin.wait_hub()
        # the hub's first storage pass starts the sync unit, which limits the subvolume
        deadline = time.monotonic() + 60
        while qgroup_limit(limits_host, ".shared-quota-test") != str(30 * M) and time.monotonic() < deadline:
            time.sleep(2)
        assert qgroup_limit(limits_host, ".shared-quota-test") == str(30 * M)
        for name in names:
            assert admin.api("POST", f"users/{name}").status_code == 201
            admin.start_server(name)
        first, second = names
        out, _status = lab_shell(admin, first, "dd if=/dev/zero of=/mnt/shared/fill-$USER bs=1M count=60; sync",
                                 timeout=120)
        assert "Disk quota exceeded" in out, out[-1000:]
        # the limit is everyone's: the second user cannot add to it either, and
        # still writes in their own directories
        out, status = lab_shell(admin, second, "dd if=/dev/zero of=/mnt/shared/more bs=1M count=5; sync; "
                                "dd if=/dev/zero of=$HOME/workspace/own bs=1M count=5 && sync && echo own-ok")
        assert "Disk quota exceeded" in out and "own-ok" in out, out[-1000:]
    finally:
        for name in names:
            if admin.server_running(name):
                admin.stop_server(name)
        limits_host.exec("umount", shared, check=False)
        limits_host.exec("btrfs", "subvolume", "delete", backing, check=False)
        limits_host.exec("rm", "-f", "/var/lib/jupyterhub-disk-quota/applied/.shared")
        limits_host.exec("tee", config_path, input=original)
        limits_host.exec("systemctl", "restart", "jupyterhub")
        admin.wait_hub()
        for name in names:
            admin.api("DELETE", f"users/{name}")


def test_a_lab_does_not_start_on_a_directory_whose_mount_failed(limits_host, admin):
    """A users' root or shared directory on a NAS whose mount failed: the lab unit's
    RequiresMountsFor= (every directory it binds) makes its start fail, where the
    lab would otherwise write below the bare mount point (files that vanish under
    the mount when it comes back). Simulated with a CIFS mount unit for the shared
    directory whose share cannot be reached (this kernel has no CIFS either)."""
    mount_unit = "srv-jupyterhub-shared.mount"
    path = f"/etc/systemd/system/{mount_unit}"
    limits_host.exec("tee", path, input="[Mount]\nWhat=//nas.invalid/share\nWhere=/srv/jupyterhub/shared\n"
                                         "Type=cifs\nOptions=guest\n")
    limits_host.exec("systemctl", "daemon-reload")
    name = f"lim-nas-{secrets.token_hex(3)}"
    since = limits_host.exec("date", "+%Y-%m-%d %H:%M:%S").stdout.strip()
    try:
        assert admin.api("POST", f"users/{name}").status_code == 201
        r = admin.api("POST", f"users/{name}/server")
        deadline = time.monotonic() + 120
        while r.status_code in (201, 202) and time.monotonic() < deadline:
            server = admin.api("GET", f"users/{name}").json().get("servers", {}).get("")
            if not server or server.get("ready"):
                break
            time.sleep(1)
        server = admin.api("GET", f"users/{name}").json().get("servers", {}).get("")
        assert not (server and server.get("ready")), "the lab started on the unmounted directory"
        assert limits_host.unit_properties(mount_unit, "ActiveState")["ActiveState"] == "failed"
        # systemd says why, in the lab unit's journal
        journal = limits_host.exec("journalctl", "-u", unit(name), "--since", since, "--no-pager",
                                   "-o", "cat").stdout
        assert "start failed with result 'dependency'" in journal, journal[-3000:]
    finally:
        limits_host.exec("rm", "-f", path)
        limits_host.exec("systemctl", "daemon-reload")
        limits_host.exec("systemctl", "reset-failed", mount_unit, check=False)
    # mounted again (here: no mount unit at all), the same user's lab starts
    admin.start_server(name)
    admin.stop_server(name)
    assert admin.api("DELETE", f"users/{name}").status_code == 204


def test_a_deleted_users_limit_is_lifted(limits_host, admin):
    name = f"lim-del-{secrets.token_hex(3)}"
    assert admin.api("POST", f"users/{name}").status_code == 201
    admin.start_server(name)
    unix = quota_of(admin, name)["unix_name"]
    admin.stop_server(name)
    show = limits_host.exec("btrfs", "qgroup", "show", "--raw", "-re", USERS_ROOT).stdout
    assert re.search(rf"^0/\d+\s+\d+\s+\d+\s+{QUOTA}\s+\S+\s+{unix}$", show, re.M), show
    assert admin.api("DELETE", f"users/{name}").status_code == 204
    show = limits_host.exec("btrfs", "qgroup", "show", "--raw", "-re", USERS_ROOT).stdout
    archived = re.search(rf"^0/\d+\s+\d+\s+\d+\s+(\S+)\s+\S+\s+\.archive/\S+-{unix}$", show, re.M)
    assert archived and archived[1] == "none", show
    # a new user of that name is a new account: applied again at their first spawn
    record = f"/var/lib/jupyterhub-disk-quota/applied/{unix}"
    assert limits_host.exec("test", "-e", record, check=False).returncode == 1
