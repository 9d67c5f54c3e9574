# The README's commands. Everything installs into .venv from pinned versions.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run test lint bench clean lock

setup: $(STAMP)

# Re-installs when pyproject.toml changes. A CUDA torch installed into .venv beforehand is kept
# (it satisfies the torch==2.13.0 pin); see docs/quickstart.md.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps ltx-core==1.0.0
	touch $@

# After changing dependencies in pyproject.toml: re-pin every package that .venv holds.
lock: setup
	{ head -n 2 constraints.txt; $(BIN)/python -m pip freeze --exclude-editable \
		| grep -v "^ltx-core==" | sed 's/^torch==\([0-9.]*\)+.*/torch==\1/'; } > constraints.tmp && mv constraints.tmp constraints.txt

run: setup
	$(BIN)/ltx-lora run $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# the dataset report is checked in headless Chromium, the registry's reflinked store on a
# loop-mounted XFS image, sweeps and sbatch jobs on a one-node SLURM cluster (Debian's packages;
# root on CI machines)
test: lint
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium) \
		|| echo "chromium unavailable: the report test will say so"
	command -v mkfs.xfs >/dev/null || apt-get install -y -q xfsprogs \
		|| (apt-get update -q && apt-get install -y -q xfsprogs) \
		|| echo "xfsprogs unavailable: the reflink tests will say so"
	command -v slurmctld >/dev/null && command -v munged >/dev/null \
		|| apt-get install -y -q slurm-wlm munge \
		|| (apt-get update -q && apt-get install -y -q slurm-wlm munge) \
		|| echo "slurm-wlm/munge unavailable: the SLURM tests will say so"
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# every bench/bench_*.py side by side: one table of ratios, also written to docs/benchmarks.md
# (ARGS=trainer runs one row and leaves the page alone). On a GPU: python -m bench.gpu_transformer
bench: setup
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf outputs .models .mlflow datasets/sample
