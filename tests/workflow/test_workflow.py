"""The workflow as a user drives it: lint, format, dry runs, bad config, a tiny real run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .conftest import REPO, SNAKEMAKE, job_counts, snakemake


def test_lint_is_clean() -> None:
    result = subprocess.run([str(SNAKEMAKE), "--lint"], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "good condition" in result.stdout + result.stderr


def test_snakefmt_is_clean() -> None:
    snakefmt = SNAKEMAKE.with_name("snakefmt")
    files = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    result = subprocess.run([str(snakefmt), "--check", *map(str, files)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr


def test_dry_run_of_the_default_config_plans_the_matrix(workdir: Path) -> None:
    result = snakemake(workdir, "-n", "--configfile", str(REPO / "config" / "config.yaml"))
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    n_models = len(config["datasets"]) * len(config["classifiers"])
    n_methods = len(config["attacks"]["single_gene"]["grid"]["method"])
    assert job_counts(result.stdout) == {
        "prepare_dataset": len(config["datasets"]),
        "train_classifier": n_models,
        "run_attack": n_models * n_methods,
        "classifier_table": 1,
        "aggregate_attack": 1,
        "plot_attack": 1,
        "all": 1,
        "total": 4 + len(config["datasets"]) + n_models * (1 + n_methods),
    }


def test_a_misspelt_classifier_stops_the_run_before_any_job(workdir: Path) -> None:
    config = yaml.safe_load((REPO / "tests" / "config" / "config.yaml").read_text())
    config["classifiers"]["scfr"] = config["classifiers"].pop("scrf")
    (workdir / "bad.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "--cores", "1", "--configfile", str(workdir / "bad.yaml"))
    assert result.returncode != 0
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "vulnbench config error" in line]
    assert errors == [
        "vulnbench config error: config classifiers: unknown classifier 'scfr' (known: scmlp, scrf); "
        "did you mean 'scrf'?"
    ]
    assert "Traceback" not in result.stderr
    assert not (workdir / "results").exists()


@pytest.mark.slow
def test_tiny_end_to_end_run(workdir: Path) -> None:
    config = REPO / "tests" / "config" / "config.yaml"
    result = snakemake(workdir, "--cores", "2", "--configfile", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(workdir / "results" / "tables" / "single_gene.tsv", sep="\t")
    for column in ("dataset", "classifier", "attack", "params", "cluster", "n_genes_flipping", "genes", "n_calls",
                   "runtime_s", "status"):
        assert column in table.columns
    assert set(table["classifier"]) == {"scrf", "scmlp"}
    assert set(table["mode"]) == {"perc99", "positive_aberrant"}
    assert len(table) == 2 * 2 * 3  # classifiers × modes × clusters
    assert (table["status"] == "ok").all()
    assert (table["n_genes_flipping"] >= 0).all() and (table["n_calls"] >= 1).all()
    figure = workdir / "results" / "figures" / "single_gene_heatmap.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000
    metrics = pd.read_csv(workdir / "results" / "tables" / "classifiers.tsv", sep="\t")
    assert set(metrics["classifier"]) == {"scrf", "scmlp"} and (metrics["accuracy"] > 0.5).all()
    params = json.loads(next((workdir / "results" / "attacks").rglob("params.json")).read_text())
    assert params["attack"] == "single_gene" and "method" in params["params"]
    assert list((workdir / "logs" / "attack").rglob("*.log"))
    again = snakemake(workdir, "-n", "--configfile", str(config))
    assert "Nothing to be done" in again.stdout + again.stderr
