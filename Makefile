# inferline: `make demo` and `make test` each create .venv if missing, install, and run.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
PKGS   := features training export serving batch monitor benchmarks

.PHONY: demo test lint typecheck install clean serve-down

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (CPython 3.11) on PATH"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@start=$$(date +%s); \
	$(PY) -m pip install --quiet --upgrade pip && \
	$(PY) -m pip install --quiet -e '.[cpu,dev]' && \
	echo "install took $$(( $$(date +%s) - start )) s"
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m serving demo

lint: $(STAMP)
	$(VENV)/bin/ruff check $(PKGS) tests
	$(VENV)/bin/ruff format --check $(PKGS) tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: $(STAMP) lint typecheck
	$(PY) -m pytest

serve-down:
	$(PY) -m serving down

clean:
	rm -rf .inferline triton_models/*/ triton_models/*.registry.json triton_models/.staging
