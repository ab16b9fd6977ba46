# pullgate: `make run` starts a local sandbox with the proxy in front; `make test` runs the suite.
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 5050

.PHONY: setup run test unit bench clean

setup:
	VENV=$(VENV) scripts/setup-debian.sh

run: setup
	$(PY) -m tests.realenv.demo --listen 127.0.0.1:$(PORT)

test: setup
	$(PY) -m pytest -q

unit: setup
	$(PY) -m pytest -q tests/test_trust_verification.py tests/test_pinning.py tests/test_config.py

bench: setup
	EXTRA_PACKAGES="nginx wrk" VENV=$(VENV) scripts/setup-debian.sh
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
