"""The lab launcher (lab/lab_start.py): which startup scripts run, which are refused.

Real files in a temporary directory; "root" is the uid running the tests
(root_uid=), so the ownership rule is exercised without being root.
"""

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
