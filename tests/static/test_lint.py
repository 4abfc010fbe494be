"""Static checks of what the playbook installs: ansible-lint's production profile."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_ansible_lint_production_profile_passes():
    lint = Path(sys.executable).parent / "ansible-lint"
    res = subprocess.run([str(lint), "--profile", "production", "--nocolor", "ansible/"],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "Profile 'production' was required, and it passed" in res.stderr + res.stdout
