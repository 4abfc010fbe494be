"""The hub role builds the hub_ext wheel on the controller; deploys from one
checkout side by side (the suite's hosts) must not break each other's build."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "ansible" / "roles" / "hub" / "files" / "build_hub_wheel.py"


def test_concurrent_builds_from_one_checkout_all_make_the_wheel(tmp_path):
    # a copy without git metadata: setuptools-scm's fallback version, and no
    # staging directory left in the real checkout
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(REPO / "pyproject.toml", checkout)
    shutil.copytree(REPO / "hub_ext", checkout / "hub_ext",
                    ignore=shutil.ignore_patterns("__pycache__"))
    # setuptools stages in the checkout: unserialised, all but one of these fail
    builds = [subprocess.Popen([sys.executable, BUILD_SCRIPT, checkout, tmp_path / f"out{i}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
              for i in range(3)]
    errors = [b.communicate()[1] for b in builds]
    assert [b.returncode for b in builds] == [0, 0, 0], errors
    assert all(len(list((tmp_path / f"out{i}").glob("hub_ext-*.whl"))) == 1 for i in range(3))
