# Every target creates the virtual environment and installs jex (with its
# test dependencies) from pyproject.toml when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.jex-installed

.PHONY: demo test bench fast pure clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m jex demo

# pytest exits 5 when it collects nothing: treat that as a failure.
test: $(STAMP)
	@$(PY) -m pytest $(PYTEST_ARGS); code=$$?; \
	if [ $$code -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$code

# The mypyc-compiled core and journal read path (docs/benchmarks.md,
# "Compiled core"; the groups are GROUPS in jex/native.py): builds
# jex/core/*.so and jex/journal/*.so in place; Python then prefers them over
# the .py sources. JEX_CORE=pure runs pure Python anyway; `make pure` deletes them.
fast: $(STAMP)
	JEX_COMPILE=1 $(PY) setup.py build_ext --inplace

pure:
	rm -f jex/core/*.so jex/journal/*.so

clean: pure
	rm -rf .jex-demo .jex build *.egg-info
