"""Static checks: ansible-lint's production profile over the playbook, ruff over
the Python (its rules are in pyproject.toml's [tool.ruff])."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def test_ansible_lint_production_profile_passes():
    res = subprocess.run([str(VENV_BIN / "ansible-lint"), "--profile", "production", "--nocolor", "ansible/"],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "Profile 'production' was required, and it passed" in res.stderr + res.stdout


def test_ruff_finds_nothing():
    res = subprocess.run([str(VENV_BIN / "ruff"), "check", "--no-cache", "--output-format", "concise", "."],
                         cwd=REPO, capture_output=True, text=True)
    # rc 1: findings (listed on stdout); anything else is ruff itself failing
    assert res.returncode == 0, f"ruff check . (fix with `.venv/bin/ruff check --fix .`):\n{res.stdout}{res.stderr}"
