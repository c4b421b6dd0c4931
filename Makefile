# callrec: `make up` runs the whole stack locally, `make test` runs every test.
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: up down status demo-call test lint bench env clean-stack

up:
	@scripts/setup.sh
	@$(PY) -m devstack up

down:
	@if [ -x $(PY) ]; then $(PY) -m devstack down; else echo "nothing to stop"; fi

status:
	@$(PY) -m devstack status

env:
	@$(PY) -m devstack env

demo-call:
	@$(PY) -m devstack demo-call

# Every test: unit, PostgreSQL, real Asterisk 22 + SIPp, headless Chromium.
# pytest exits 5 when it collected nothing: say so instead of passing silently.
test:
	@scripts/setup.sh --test
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

lint:
	@scripts/setup.sh --test
	@.venv/bin/ruff check callrec devstack tests bench
	@.venv/bin/mypy

bench:
	@scripts/setup.sh --test
	@$(PY) -m bench

# Stops the stack and removes it (database, archive, Asterisk root); never leaves the
# stack's filesystem, whatever a build cut short left mounted there.
clean-stack:
	@if [ -x $(PY) ]; then $(PY) -m devstack clean; else \
	  awk -v d="$(CURDIR)/.stack/" 'index($$2, d) == 1 {print $$2}' /proc/mounts | sort -r | \
	    xargs -r umount -l; rm -rf --one-file-system .stack; fi
