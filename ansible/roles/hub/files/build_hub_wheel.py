"""Build the hub_ext wheel from a checkout into an output directory, one build
per checkout at a time.

Runs on the Ansible controller. setuptools stages the sdist in the checkout
(hub_ext.egg-info, build/): two deploys from one checkout at once (the test
suite deploys hosts side by side) would remove that directory under each other,
so the build holds an exclusive lock on the checkout's pyproject.toml (fcntl:
Linux and macOS controllers alike) for its few seconds.

usage: build_hub_wheel.py CHECKOUT OUTDIR
"""

import fcntl
import subprocess
import sys
from pathlib import Path


def main(checkout: str, outdir: str) -> int:
    with open(Path(checkout) / "pyproject.toml", "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return subprocess.call([sys.executable, "-m", "build", "--no-isolation", "--outdir", outdir, checkout])


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
