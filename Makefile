# inferline: `make demo` and `make test` each create .venv if missing, install, and run.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
STAGES := features training export serving batch monitor benchmarks
PKGS   := inferline $(STAGES)

.PHONY: docs docs-check import-graph demo test test-fast bench bench-quick bench-deps wrk system-deps lint typecheck install clean serve-down gpu-check

$(STAMP): pyproject.toml examples/crop_yield/pyproject.toml examples/leaf_images/pyproject.toml \
		examples/review_text/pyproject.toml examples/pump_vibration/pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (CPython 3.11) on PATH"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@start=$$(date +%s); \
	$(PY) -m pip install --quiet --upgrade pip && \
	$(PY) -m pip install --quiet -e '.[cpu,dev]' && \
	$(PY) -m pip install --quiet -e examples/crop_yield -e examples/leaf_images -e examples/review_text \
		-e examples/pump_vibration && \
	echo "install took $$(( $$(date +%s) - start )) s"
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/inferline demo

wrk:
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; } \
	  || { echo "bench needs Debian's wrk: apt-get install wrk"; exit 1; }

# Debian's real components and tools the tests start: Prometheus + promtool, Alertmanager + amtool, headless Chromium +
# its driver, iproute2 (`ip netns` for the multi-host tests), wrk (the closed-loop load generator of `bench run`),
# nginx with njs (its config is checked with `nginx -t`; the edge benchmark's nginx designs) and openssl (test
# certificates), curl (the docs' examples post labels and read /metrics with it), and gcc (tritonserver gets its
# admin key through serving/argv_secret.c, built on first use; without a compiler no server starts, saying so).
# Without them (no apt) those tests skip with a reason, and this says so.
SYSTEM_BINS := prometheus promtool prometheus-alertmanager amtool chromium chromedriver ip wrk nginx openssl gcc curl
SYSTEM_PKGS := prometheus prometheus-alertmanager chromium chromium-driver iproute2 wrk nginx libnginx-mod-http-js openssl gcc curl
system-deps:
	@missing=$$(for b in $(SYSTEM_BINS); do command -v $$b >/dev/null || echo $$b; done; \
	  test -e /usr/lib/nginx/modules/ngx_http_js_module.so || echo njs); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for: $$missing"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      $(SYSTEM_PKGS) >/dev/null; } \
	  || echo "WARNING: could not install $(SYSTEM_PKGS); the tests that need them skip with a reason"; \
	fi

bench-deps: $(STAMP)
	$(PY) -m pip install --quiet -e '.[cpu,dev,bench]'

bench: bench-deps wrk  # never beside other work: the figures become noise
	$(VENV)/bin/inferline bench run

bench-quick: bench-deps wrk
	$(VENV)/bin/inferline bench run --quick

# lint-imports: the layers contract of pyproject.toml ([tool.importlinter]); a back-edge between packages fails here
lint: $(STAMP)
	$(VENV)/bin/ruff check $(PKGS) tests examples docs/gen_reference.py
	$(VENV)/bin/ruff format --check $(PKGS) tests examples docs/gen_reference.py
	$(VENV)/bin/lint-imports

import-graph: $(STAMP)  # the packages' import graph, one line per edge, and any cycle
	$(PY) .ci/import_graph.py

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: $(STAMP) system-deps lint typecheck docs-check
	$(PY) -m pytest

# the unit tier alone: tests that start no process (tests/unit/conftest.py refuses one), for a quick check of a change
test-fast: $(STAMP)
	$(PY) -m pytest tests/unit

# where an NVIDIA GPU is lent: the system python3 (that machine has no venv), this checkout uninstalled;
# exit 0 all checks passed, 1 one failed, 2 none failed but some could not run (no GPU). See benchmarks/README.md
gpu-check:
	PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

# the docs site (mkdocs.yml, docs/) into site/; --strict fails on a broken link, anchor or nav entry.
# `make docs` regenerates the reference pages (CLI, metrics, alert runbooks) first; `make test` runs docs-check:
# the committed reference pages are what the code generates, and the site builds --strict (into a temporary folder).
export NO_MKDOCS_2_WARNING := 1
docs: $(STAMP)
	$(PY) docs/gen_reference.py
	$(PY) -m mkdocs build --strict --site-dir site

docs-check: $(STAMP)
	$(PY) docs/gen_reference.py --check
	@# not --quiet: mkdocs 1.6 counts no warnings for --strict under --quiet (a broken link then passed); the log
	@# is shown only when the build fails
	@out=$$(mktemp -d) && log=$$(mktemp) && { $(PY) -m mkdocs build --strict --site-dir "$$out" >"$$log" 2>&1; rc=$$?; }; \
	  [ $$rc = 0 ] || cat "$$log"; rm -rf "$$out" "$$log"; exit $$rc

serve-down:
	$(VENV)/bin/inferline serve down

clean:
	rm -rf .inferline triton_models/*/ triton_models/*.registry.json triton_models/.staging
