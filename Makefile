# make demo : set up the environment if missing, then run the CPU demo (seed eval + 2 rounds) on the demo set
# make test : set up the environment if missing, then run the test suite (what CI runs)
# make study: the CPU study (selftaught/conf/preset/cpu_study.yaml, ~1.5-2.5 h on 2 cores): every round on all of LLMBar
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo study test bench clean-env
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV)
	touch $@

# The CPU-sized demo (selftaught/conf/preset/cpu_demo.yaml). `selftaught run` alone uses the recipe defaults.
DEMO_ARGS ?= preset=cpu_demo

demo: setup
	$(VENV)/bin/selftaught run $(DEMO_ARGS) $(ARGS)

study: setup
	$(VENV)/bin/selftaught run preset=cpu_study name=study $(ARGS)

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: setup
	$(PY) scripts/bench_generate.py $(ARGS)

clean-env:
	rm -rf $(VENV)
