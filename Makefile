# Two entry points: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test check install redis chromium model migrate bench lint docs clean clients

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "llmgw needs Python >= 3.11; set PYTHON=python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,semantic,local]"
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/llmgw db upgrade

# The local model (DESIGN 6): fetched once per machine into .cache/models, then reused.
model: install
	$(BIN)/llmgw local fetch

demo: install model
	$(BIN)/llmgw demo

# Tests start their own redis-server on a free loopback port; the package is only the binary.
# Debian may start a system redis on install: stop it, the tests never use it.
REDIS_MISSING := redis-server is not installed: run `make test` (installs it when root) or `apt-get install redis-server`

redis:
	@command -v redis-server >/dev/null 2>&1 || test -x /usr/bin/redis-server || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing redis-server (the tests run their own on a free port)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null \
	      && { service redis-server stop >/dev/null 2>&1 || true; }; \
	  else echo '$(REDIS_MISSING)' >&2; exit 1; fi; }

# tests/ui drive Debian's headless Chromium.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing chromium (tests/ui drive it headless)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo 'chromium is not installed: run `make test` as root or `apt-get install chromium`' >&2; exit 1; fi; }

# Real clients for tests/e2e (Claude Code, Codex, the Anthropic and OpenAI TypeScript SDKs, the
# Vercel AI SDK): pinned by
# tests/clients/package-lock.json, installed once per machine into .cache/clients with npm ci.
# The stamp holds the lockfile's sha256: a changed lockfile reinstalls, an unchanged one does nothing.
CLIENTS     := .cache/clients
CLIENTS_SRC := tests/clients

clients:
	@command -v npm >/dev/null 2>&1 || { echo 'npm is not installed: install Node.js 20+ with npm (`apt-get install nodejs npm`)' >&2; exit 1; }
	@sha=$$(sha256sum $(CLIENTS_SRC)/package-lock.json | cut -d' ' -f1); \
	if [ "$$(cat $(CLIENTS)/.lock-sha256 2>/dev/null)" = "$$sha" ] && [ -x $(CLIENTS)/node_modules/.bin/claude ] && [ -x $(CLIENTS)/node_modules/.bin/codex ] && [ -x $(CLIENTS)/node_modules/.bin/conformance ]; then exit 0; fi; \
	echo "Installing the test clients into $(CLIENTS) (npm ci, pinned by $(CLIENTS_SRC)/package-lock.json)"; \
	rm -rf $(CLIENTS) && mkdir -p $(CLIENTS) \
	  && cp $(CLIENTS_SRC)/package.json $(CLIENTS_SRC)/package-lock.json $(CLIENTS_SRC)/.npmrc $(CLIENTS)/ \
	  && (cd $(CLIENTS) && npm ci --no-audit --no-fund --loglevel=error) \
	  && echo "$$sha" > $(CLIENTS)/.lock-sha256

# The documentation site: CLI help blocks regenerated from the real CLI (cog), then built
# strictly, so a broken link or a drifted help block fails.
docs: install
	$(BIN)/cog -r docs/cli.md
	$(BIN)/mkdocs build --strict

lint: install
	$(BIN)/ruff check llmgw tests bench
	$(BIN)/mypy
	$(BIN)/cog --check docs/cli.md
	$(BIN)/mkdocs build --strict

# The fast specification: every test that needs no PostgreSQL, Redis, Chromium, local model,
# npm client or soak, and takes under a second. For a quick check of a change; CI runs `make test`.
check: install
	$(BIN)/python -m pytest -q -n 2 -m "not (pg or redis or browser or model or clients or soak or slow)"

test: install lint redis chromium model clients
	$(BIN)/python -m pytest -q -n 2 --dist worksteal --durations=25

bench: install redis
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/load.py

clean:
	rm -rf $(VENV) .cache/demo llmgw.db llmgw.db-wal llmgw.db-shm
