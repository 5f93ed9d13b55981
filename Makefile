# vulnbench: `make run` runs the default pipeline, `make test` runs the test suite; both set up .venv first.
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-done
CORES ?= all

.PHONY: setup run test lint bench dry-run clean

setup: $(STAMP)

$(STAMP): envs/setup.sh envs/requirements.txt envs/constraints.txt envs/apt-packages.txt pyproject.toml
	bash envs/setup.sh
	touch $(STAMP)

# vulnbench run = snakemake, plus: a lock left by a killed run is removed (never while a run is alive)
run: setup
	$(BIN)/vulnbench run config/config.yaml --cores $(CORES)
	$(BIN)/snakemake --configfile config/config.yaml --report results/report.html

dry-run: setup
	$(BIN)/snakemake -n --configfile config/config.yaml

test: setup
	$(BIN)/ruff check src tests benchmarks workflow/scripts
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check src tests benchmarks workflow/scripts
	$(BIN)/snakemake --lint

bench: setup
	$(BIN)/python benchmarks/single_gene.py
	$(BIN)/python benchmarks/sc_attacks.py
	$(BIN)/python benchmarks/sc_classifiers.py --with-r
	$(BIN)/python benchmarks/img_attacks.py
	$(BIN)/python benchmarks/dag.py

# Readers' answers are the one thing a rerun cannot make again: clean refuses while any lives under results/.
clean:
	@answers="$$(find results -path '*/answers/*' -type f 2>/dev/null | head -n 3 | tr '\n' ' ')"; \
	if [ -n "$$answers" ]; then \
	  echo "make clean: refused: results/ holds readers' answers ($$answers...); move the study folder out of results/ first" >&2; \
	  exit 1; \
	fi
	rm -rf results logs .snakemake
