# make demo : set up the environment if missing, then run one round of the data loop on the demo set
# make test : set up the environment if missing, then run the test suite (what CI runs)
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench clean-env
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV)
	touch $@

# A CPU-sized round: 16 instructions, short generations. `selftaught run` alone uses the full defaults.
DEMO_ARGS ?= data.limit=16 pairs.max_tokens=192 pairs.modify_max_tokens=192 judge.n=4 judge.max_tokens=128

demo: setup
	$(VENV)/bin/selftaught run $(DEMO_ARGS) $(ARGS)

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: setup
	$(PY) scripts/bench_generate.py $(ARGS)

clean-env:
	rm -rf $(VENV)
