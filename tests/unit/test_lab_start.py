"""The lab launcher (lab/lab_start.py): which startup scripts run, which are refused.

Real files in a temporary directory; "root" is the uid running the tests
(root_uid=), so the ownership rule is exercised without being root.
"""

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab import lab_start

ME = os.getuid()


def script(directory: Path, name: str, body: str, mode: int = 0o755) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(mode)
    return path


@pytest.fixture
def scripts_dir(tmp_path):
    # the parents of tmp_path are not ours; check_parents is exercised separately
    d = tmp_path / "start-platform.d"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    return d


def fake_parents_ok(real_stat, root):
    """os.stat for the test dir's parents: pretend they are root-owned 0755."""
    def stat_fn(path):
        st = real_stat(path)
        if not str(path).startswith(str(root)):
            return os.stat_result((0o040755, *st[1:4], ME, *st[5:]))
        return st
    return stat_fn


def run(directory, **kw):
    return lab_start.run_scripts(str(directory), root_uid=ME,
                                 stat_fn=fake_parents_ok(os.stat, directory), **kw)


def test_scripts_run_in_name_order_failures_do_not_stop_the_rest(scripts_dir, tmp_path):
    out = tmp_path / "out.txt"
    script(scripts_dir, "20-second", f"echo second >> {out}")
    script(scripts_dir, "10-first", f"echo first >> {out}; exit 3")
    script(scripts_dir, "30-third", f"echo third >> {out}")
    script(scripts_dir, "15-not-executable", f"echo never >> {out}", mode=0o644)
    script(scripts_dir, ".hidden", f"echo never >> {out}")
    outcomes = run(scripts_dir)
    assert out.read_text().split() == ["first", "second", "third"]
    assert [os.path.basename(p) for p, _ in outcomes] == ["10-first", "20-second", "30-third"]
    assert outcomes[0][1] == "failed: exit status 3" and outcomes[1][1] == "ok"


def test_group_or_world_writable_script_is_refused(scripts_dir, tmp_path, capsys):
    out = tmp_path / "out.txt"
    bad = script(scripts_dir, "10-writable", f"echo bad >> {out}")
    bad.chmod(0o777)
    script(scripts_dir, "20-good", f"echo good >> {out}")
    outcomes = run(scripts_dir)
    assert out.read_text().split() == ["good"]
    assert outcomes[0][1].startswith("refused: writable by group or others")
    assert f"REFUSED startup script {bad}" in capsys.readouterr().err


def test_script_of_another_owner_is_refused(scripts_dir, tmp_path):
    s = script(scripts_dir, "10-other", "true")
    real = fake_parents_ok(os.stat, scripts_dir)

    def stat_fn(path):
        st = real(path)
        if str(path) == str(s):
            return os.stat_result((st.st_mode, *st[1:4], ME + 1, *st[5:]))
        return st

    outcomes = lab_start.run_scripts(str(scripts_dir), root_uid=ME, stat_fn=stat_fn)
    assert outcomes == [(str(s), f"refused: owned by uid {ME + 1}, not root")]


def test_unsafe_directory_refuses_every_script(scripts_dir, tmp_path, capsys):
    out = tmp_path / "out.txt"
    script(scripts_dir, "10-any", f"echo ran >> {out}")
    scripts_dir.chmod(0o777)
    outcomes = run(scripts_dir)
    assert not out.exists()
    assert outcomes[0][1].startswith("refused:") and "writable by group or others" in outcomes[0][1]
    assert "no script is run" in capsys.readouterr().err


def test_unsafe_parent_is_refused(tmp_path):
    parent = tmp_path / "shared"
    parent.mkdir()
    parent.chmod(0o777)  # like a user-writable shared volume
    d = parent / "start-platform.d"
    d.mkdir()
    d.chmod(0o755)
    problem = lab_start.directory_problem(str(d), ME, fake_parents_ok(os.stat, parent))
    assert problem == f"{parent} is writable by group or others (mode 0777)"


def test_timeout_is_a_failure_not_a_hang(scripts_dir):
    script(scripts_dir, "10-slow", "sleep 5")
    outcomes = run(scripts_dir, timeout=0.3)
    assert outcomes[0][1] == "failed: timed out after 0.3s"


def test_missing_directory_runs_nothing(tmp_path):
    assert lab_start.run_scripts(str(tmp_path / "absent")) == []


def test_main_runs_scripts_then_execs_the_lab(scripts_dir, tmp_path):
    """The launcher as the unit runs it: as a script, scripts first, then the command."""
    out = tmp_path / "out.txt"
    script(scripts_dir, "10-mark", f"echo script >> {out}")
    env = {"PATH": os.environ["PATH"], "JUPYTERLAB_AUX_SCRIPTS_PATH": str(scripts_dir)}
    # tmp_path's parents decide: not root-owned (a developer) or world-writable
    # (/tmp) means the scripts are refused and the lab starts all the same
    problem = lab_start.directory_problem(str(scripts_dir))
    r = subprocess.run([sys.executable, "-I", lab_start.__file__, "--", "sh", "-c",
                        f"echo lab >> {out}"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    lines = out.read_text().split()
    if problem:
        assert lines == ["lab"]
        assert "REFUSED" in r.stderr and problem in r.stderr, r.stderr
    else:
        assert lines == ["script", "lab"]


def test_main_without_a_command_is_a_usage_error():
    r = subprocess.run([sys.executable, "-I", lab_start.__file__], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr


# --- the disk quota barrier (docs/storage.md) --------------------------------------

X86_64, I386, AARCH64 = 0xC000003E, 0x40000003, 0xC00000B7
EPERM_ACTION = lab_start.SECCOMP_RET_ERRNO | 1
ALLOW = lab_start.SECCOMP_RET_ALLOW


def run_filter(program, nr: int, arch: int = X86_64, arg1: int = 0) -> int:
    """What seccomp answers for one call: classic BPF over struct seccomp_data."""
    data = {lab_start.DATA_NR: nr, lab_start.DATA_ARCH: arch, lab_start.DATA_ARG1_LOW: arg1 & 0xFFFFFFFF}
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = program[pc]
        if code == lab_start.BPF_LD_W_ABS:
            acc = data[k]
        elif code == lab_start.BPF_JEQ_K:
            pc += jt if acc == k else jf
        elif code == lab_start.BPF_RET_K:
            return k
        else:
            raise AssertionError(f"unexpected instruction {code:#x}")
        pc += 1


@pytest.mark.parametrize("request_name", sorted(lab_start.QUOTA_ESCAPE_IOCTLS))
def test_barrier_refuses_each_escape_ioctl_on_every_abi(request_name):
    program = lab_start.quota_barrier_program()
    request = lab_start.QUOTA_ESCAPE_IOCTLS[request_name]
    for arch, nr in ((X86_64, 16), (X86_64, 0x40000000 | 514), (I386, 54), (AARCH64, 29)):
        assert run_filter(program, nr, arch, request) == EPERM_ACTION, (arch, nr)
    # the kernel reads the request's low 32 bits: high bits set change nothing
    assert run_filter(program, 16, X86_64, (0xDEADBEEF << 32) | request) == EPERM_ACTION


def test_barrier_lets_everything_else_through():
    program = lab_start.quota_barrier_program()
    tcgets, btrfs_ioc_sync, fs_ioc_getflags = 0x5401, 0x9408, 0x80086601
    for request in (tcgets, btrfs_ioc_sync, fs_ioc_getflags):
        assert run_filter(program, 16, X86_64, request) == ALLOW
    # another call whose argument happens to be an escape request: read(fd, buf=..)
    assert run_filter(program, 0, X86_64, lab_start.QUOTA_ESCAPE_IOCTLS["BTRFS_IOC_SUBVOL_CREATE"]) == ALLOW
    # file_setattr sets the project id without ioctl; an unknown ABI gets nothing
    assert run_filter(program, lab_start.FILE_SETATTR) == EPERM_ACTION
    assert run_filter(program, 0, arch=0x80000016) == EPERM_ACTION  # s390x on this table: no way round


def test_barrier_jumps_stay_inside_the_program():
    program = lab_start.quota_barrier_program()
    for pc, (code, jt, jf, _k) in enumerate(program):
        if code == lab_start.BPF_JEQ_K:
            assert pc + 1 + max(jt, jf) < len(program), pc
    assert program[-1] == (lab_start.BPF_RET_K, 0, 0, EPERM_ACTION)


BARRIER_CHILD = """
import ctypes, errno, fcntl, os, subprocess, sys
sys.path.insert(0, sys.argv[1])
import lab_start
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS, as systemd's NoNewPrivileges
print(lab_start.install_quota_barrier())
fd = os.open(sys.argv[2], os.O_RDONLY)
def ioctl_errno(request):
    try:
        fcntl.ioctl(fd, request, bytearray(4096))
    except OSError as e:
        return e.errno
    return 0
print("setflags", ioctl_errno(lab_start.QUOTA_ESCAPE_IOCTLS["FS_IOC_SETFLAGS"]))
print("subvol", ioctl_errno(lab_start.QUOTA_ESCAPE_IOCTLS["BTRFS_IOC_SUBVOL_CREATE_V2"]))
print("getflags", ioctl_errno(0x80086601))
r = libc.syscall(lab_start.FILE_SETATTR, -100, b"x", 0, 0, 0)
print("file_setattr", ctypes.get_errno() if r else 0)
# inherited by children, which cannot drop it
print(subprocess.run([sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY)\\n"
                      "try: fcntl.ioctl(fd, 0x40086602, bytes(8))\\nexcept OSError as e: print('child', e.errno)",
                      sys.argv[2]], capture_output=True, text=True).stdout.strip())
"""


@pytest.mark.skipif(lab_start.platform.machine() not in lab_start.NATIVE_ARCH, reason="no table for this CPU")
def test_barrier_installed_for_real_refuses_the_calls_in_the_process_and_its_children(tmp_path):
    target = tmp_path / "f"
    target.write_text("x")
    r = subprocess.run([sys.executable, "-I", "-c", BARRIER_CHILD, os.path.dirname(lab_start.__file__),
                        str(target)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    got = dict(line.rsplit(" ", 1) for line in r.stdout.splitlines()[1:])
    assert got["setflags"] == str(errno.EPERM) and got["subvol"] == str(errno.EPERM)
    assert got["file_setattr"] == str(errno.EPERM)
    assert got["child"] == str(errno.EPERM)
    # an allowed ioctl reaches the file system (which may not support it: not EPERM)
    assert got["getflags"] != str(errno.EPERM)


def test_no_new_privileges_is_read_from_the_process_status(tmp_path):
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nNoNewPrivs:\t0\n")
    assert not lab_start.no_new_privileges(str(status))
    status.write_text("Name:\tpython\nNoNewPrivs:\t1\n")
    assert lab_start.no_new_privileges(str(status))
