"""Editing a classifier's or an attack's module reruns exactly the jobs that run it (issue 16, item 9).

The pipeline runs once on a copy of the package (put first on PYTHONPATH), then the copy's modules are edited and
`snakemake -n` must plan only the affected jobs, saying their params changed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.workflow.conftest import REPO, SNAKEMAKE, job_counts

pytestmark = pytest.mark.slow

CONFIG = {
    "seed": 0,
    "datasets": {"synthetic": {"n_cells": 120, "n_genes": 80, "n_types": 3, "n_markers": 6, "test_size": 0.5}},
    "classifiers": {"scrf": {"n_estimators": 5}, "scmlp": {"epochs": 2}},
    "attacks": {"single_gene": {"grid": {"method": ["perc99"]}, "params": {"first_dichot": 10}}},
}


def run(workdir: Path, package: Path, *args: str) -> subprocess.CompletedProcess:
    command = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile",
               str(workdir / "config.yaml"), *args]
    env = {**os.environ, "PYTHONPATH": str(package), "PYTHONWARNINGS": "ignore"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900, check=False)


def edit(module: Path) -> None:
    module.write_text(module.read_text() + "\n# a user's edit\n")


def test_only_the_jobs_running_an_edited_module_rerun(tmp_path: Path) -> None:
    package = tmp_path / "package"
    shutil.copytree(REPO / "src" / "vulnbench", package / "vulnbench",
                    ignore=shutil.ignore_patterns("__pycache__"))
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    first = run(workdir, package, "--cores", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    nothing = run(workdir, package, "-n")
    assert "Nothing to be done" in nothing.stdout + nothing.stderr

    edit(package / "vulnbench" / "sc" / "classifiers" / "_scrf.py")
    plan = run(workdir, package, "-n")
    counts = job_counts(plan.stdout)
    assert counts.get("train_classifier") == 1 and counts.get("run_attack") == 1, plan.stdout[-3000:]
    assert "prepare_dataset" not in counts
    assert "params" in plan.stdout.lower()
    assert "scmlp" not in "\n".join(line for line in plan.stdout.splitlines() if "wildcards:" in line)

    # then the attack: its jobs with both classifiers; the scrf training is still planned from the first edit
    edit(package / "vulnbench" / "sc" / "attacks" / "_single_gene.py")
    counts = job_counts(run(workdir, package, "-n").stdout)
    assert counts.get("run_attack") == 2 and counts.get("train_classifier") == 1, counts

    # a module no job runs (the image arm's plots) adds nothing to the plan
    edit(package / "vulnbench" / "img" / "plots.py")
    assert job_counts(run(workdir, package, "-n").stdout) == counts
