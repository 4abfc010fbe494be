# The two commands of README.md. Both need root on a Debian 12 machine.
PY := .venv/bin/python

.PHONY: bootstrap demo test down-demo

bootstrap:
	@scripts/bootstrap

# Build the local systemd test host, deploy the platform into it with
# ansible/site.yml, print the HTTPS URL and the admin login.
demo: bootstrap
	$(PY) tests/testhost/testhost.py demo

down-demo: bootstrap
	$(PY) tests/testhost/testhost.py down demo

# Every test: unit, integration on a fresh test host, benchmarks.
test: bootstrap
	$(PY) -m pytest
