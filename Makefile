# Entry points: `make bench` (the default sweep and its report) and `make test`.
# Both create .venv on first use; the stamp file keeps later calls from reinstalling.
PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
CONFIG     ?= default
# points in flight (empty: the machine's CPUs over threads, or the Ray cluster's; their timed
# sections take turns under a lock)
JOBS       ?=
# where points run: local (fresh processes on this machine) or ray (a Ray cluster; ADDRESS=auto
# or HOST:PORT joins a running one, empty starts a local one)
EXECUTOR   ?= local
ADDRESS    ?=
PYTEST_ARGS ?=
# test files are spread over this many pytest processes (pytest-xdist; one file stays in one
# process, so module fixtures such as the report test's sweep run once. --dist loadgroup would
# hand out single tests, but pytest-xdist 3.8 cannot tag their groups under pytest 9.2). Three
# on two cores: many tests wait on subprocesses they start, and a third process fills that time
# (a fourth did not help: clean-clone pytest 595 s with four, 575 s with three, 1542 tests)
# Files are handed out longest first, in the order tests/conftest.py sorts them (LONGEST_FIRST).
TEST_WORKERS ?= 3

BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup bench test fuzz gate bench-pytest lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, from TORCH_SPEC (the CPU build on this machine), so nothing pulls a CUDA build.
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,peers,ray]'
	# qpth: the established QP layer the qp tests cross-check against. Its metadata pins
	# numpy<2, which it does not need (it runs on numpy 2); install it without dependencies.
	$(BIN)/pip install --quiet --no-deps qpth==0.0.18
	touch $(STAMP)

bench: $(STAMP)
	$(BIN)/python -m suite run --config $(CONFIG) $(if $(JOBS),--jobs $(JOBS)) --executor $(EXECUTOR) \
		$(if $(ADDRESS),--address $(ADDRESS)) --report

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# The property test of the command line (tests/test_cli_fuzz.py) with many more examples than
# make test's 10, with hypothesis's statistics (which commands ran, how they ended).
FUZZ_EXAMPLES ?= 400
fuzz: $(STAMP)
	IFT_BENCH_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest tests/test_cli_fuzz.py \
		-p no:cacheprovider --hypothesis-show-statistics $(PYTEST_ARGS)

# The CI regression gate: the gate sweep against benchmarks/baseline.json (exit 1 on regression).
gate: $(STAMP)
	$(BIN)/python -m suite gate --no-progress

# pytest-benchmark timings of the key cells (see README for saving and comparing baselines).
bench-pytest: $(STAMP)
	$(BIN)/python -m pytest tests/benchmarks --benchmark-enable --benchmark-only $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check suite problems backends reports tests

clean:
	rm -rf $(VENV) results .pytest_cache
