# make demo : set up the environment if missing, then run one round of the data loop on the demo set
# make test : set up the environment if missing, then run the test suite (what CI runs)
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench clean-env
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV)
	touch $@

demo: setup
	$(VENV)/bin/selftaught run $(ARGS)

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: setup
	$(PY) scripts/bench_generate.py $(ARGS)

clean-env:
	rm -rf $(VENV)
