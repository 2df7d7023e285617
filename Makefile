# Blindpost developer entry points. `make run` and `make test` are the README's quick start.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= var
DIST   ?= dist
# Debian packages the test suite drives: real OpenSSH client and server, the age CLI,
# lftp as a third SFTP client, PostgreSQL for scale-out, sqlite3 for the backup runbook,
# Node.js for the second age implementation (and axe-core), systemd-analyze for the units
# in deploy/, haproxy for its example, Chromium for the console's browser tests (driven by
# Playwright, which downloads no browser of its own here).
TEST_DEBS := age openssh-client openssh-server lftp postgresql nodejs npm systemd haproxy sqlite3 \
             chromium

.PHONY: run test lint typecheck unit bench deps test-deps dist clean portal-js

$(BIN)/python:
	@# Debian splits ensurepip (needed by venv) into python3-venv.
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The gateway: the client package plus the `server` extra.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[server]'
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

deps: $(VENV)/.installed

## run: install, initialise ./var on first run, and start the gateway on embedded defaults.
run: deps
	@test -f $(DATA)/blindpost.toml || $(BIN)/blindpost init --data-dir $(DATA) --admin admin
	$(BIN)/blindpost serve --data-dir $(DATA)

## test-deps: the Python and Debian packages the tests need (apt only for what is missing).
test-deps: $(VENV)/.installed-dev
	@missing=""; for p in $(TEST_DEBS); do \
	  if [ "$$p" = nodejs ] || [ "$$p" = npm ]; then command -v $${p%js} >/dev/null 2>&1 && continue; fi; \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "apt-get install$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi
	@test -d tests/node/node_modules/cctv-age -a -d tests/node/node_modules/axe-core || \
	  npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
	@# The partner portal's pinned build tools: the suite rebuilds admin_ui/static/portal.js
	@# and checks it is the committed file.
	@test -d admin_ui/portal_js/node_modules/esbuild || \
	  npm ci --prefix admin_ui/portal_js --no-audit --no-fund --loglevel=error

## portal-js: rebuild the partner portal's script (typage bundled by esbuild) from the
## pinned packages in admin_ui/portal_js/package-lock.json; commit the result.
portal-js:
	npm ci --prefix admin_ui/portal_js --no-audit --no-fund --loglevel=error
	cd admin_ui/portal_js && node build.mjs

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy gateway sftp_server admin_ui

## test: install what the tests need, then lint, type checks and the whole suite, in three
## workers (a test file stays on one worker: its module fixtures are set up once).
PYTEST_WORKERS ?= 3
test: test-deps lint typecheck
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile

bench: test-deps
	@command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time; }
	$(BIN)/python bench/envelope.py
	$(BIN)/python bench/audit.py
	$(BIN)/python bench/clients.py
	$(BIN)/python bench/sftp.py
	$(BIN)/python bench/stop.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/payload_check.py
	$(BIN)/python bench/data_elements.py
	$(BIN)/python bench/preauth.py
	$(BIN)/python bench/reorder_memory.py
	$(BIN)/python bench/exposure.py
	$(BIN)/python bench/integrity.py
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/portal.py
	$(BIN)/python bench/upload.py

## dist: the release gateway/__init__.py names, in dist/: the wheel (partners install it as is,
## the gateway with [server]), the sdist, deploy/install.sh, the systemd units, the release's
## CHANGELOG.md entry and SHA256SUMS over all of them. Timestamps come from the last commit, so the same commit
## builds the same wheel.
dist: $(VENV)/.installed-dev
	@version=$$($(BIN)/python -c 'import gateway; print(gateway.__version__)'); \
	grep -q "^## $$version\b" CHANGELOG.md || { echo "CHANGELOG.md has no '## $$version' entry" >&2; exit 1; }; \
	rm -rf $(DIST) build *.egg-info && mkdir -p $(DIST) && \
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || date +%s) \
	  $(BIN)/python -m build --quiet --outdir $(DIST) . >/dev/null && \
	cp deploy/install.sh $(DIST)/ && cp -r deploy/systemd $(DIST)/ && \
	awk -v v="$$version" '/^## / {on = ($$2 == v)} on' CHANGELOG.md > $(DIST)/CHANGES-$$version.md && \
	(cd $(DIST) && find . -type f ! -name SHA256SUMS | sed 's|^\./||' | LC_ALL=C sort | xargs sha256sum -- > SHA256SUMS) && \
	rm -rf build *.egg-info && ls -1 $(DIST)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache dist build
