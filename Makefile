# The two commands of README.md (demo, test): both need root on a Debian 12 machine.
# `make check` is the developer's fast loop: no root, no test host.
PY := .venv/bin/python

.PHONY: bootstrap demo test down-demo check load cluster

bootstrap:
	@scripts/bootstrap

# Build the local systemd test host, deploy the platform into it with
# ansible/site.yml, print the HTTPS URL and the admin login.
demo: bootstrap
	$(PY) tests/testhost/testhost.py demo

down-demo: bootstrap
	$(PY) tests/testhost/testhost.py down demo

# Every test, every tier: unit, static, integration and browser on a fresh test host, benchmarks,
# and the cluster tier (a hub and two workers, deployed in the background meanwhile).
test: bootstrap
	$(PY) -m pytest

# The fast tiers: unit + static (ruff, ansible-lint, the seam), well under a
# minute, no root. Needs the .venv that scripts/bootstrap makes (or, without
# root: python3 -m venv .venv && .venv/bin/pip install -r requirements-dev.txt).
check:
	@test -x $(PY) || { echo "make check: no $(PY); run scripts/bootstrap (root) or python3 -m venv .venv && .venv/bin/pip install -r requirements-dev.txt" >&2; exit 1; }
	$(PY) -m pytest -m "unit or static" tests/unit tests/static

# The load test (not part of `make test`: about 15 minutes): Locust drives 20,
# then 50 simulated users through login, lab start, a kernel over its websocket,
# a cell, idling and stop on a fresh test host; p50/p95 per step, 0 errors or
# it fails (docs/benchmarks.md). Same root and test host as `make test`.
load: bootstrap
	$(PY) tests/bench/load.py

# The cluster tier alone (it is part of `make test` too, as its last tier):
# a hub and two worker test hosts on a private network, a Slurm cluster
# deployed by ansible/site.yml, labs as Slurm jobs on both workers, Slurm's
# cgroup limits, queueing, a worker that dies (docs/cluster.md,
# docs/testing.md). Same root and needs as `make test`.
cluster: bootstrap
	$(PY) -m pytest tests/cluster
