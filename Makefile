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

run: setup
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml
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

clean:
	rm -rf results logs .snakemake
