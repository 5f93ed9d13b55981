"""A run of another config never overwrites a directory's tables (vulnbench.core.workdir); the same config file, edited
or not, reruns as usual."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.workflow.conftest import REPO, snakemake
from vulnbench.core.workdir import ResultsOfAnotherConfig, claim_results

BASE = yaml.safe_load((REPO / "tests" / "config" / "config.yaml").read_text())


def test_the_stamp_names_the_config_and_refuses_another(tmp_path: Path) -> None:
    claim_results(tmp_path, ["mine.yaml"])
    assert json.loads((tmp_path / "results" / ".vulnbench-config.json").read_text()) == {"configfiles": ["mine.yaml"]}
    claim_results(tmp_path, ["other.yaml"])  # no tables yet: nothing to lose, the directory is taken over
    (tmp_path / "results" / "tables").mkdir()
    (tmp_path / "results" / "tables" / "single_gene.tsv").write_text("cluster\nNK\n")
    claim_results(tmp_path, [str(tmp_path / "other.yaml")])  # the same file, named absolutely
    with pytest.raises(ResultsOfAnotherConfig, match=r"holds the tables of config other\.yaml, not mine\.yaml"):
        claim_results(tmp_path, ["mine.yaml"])
    with pytest.raises(ResultsOfAnotherConfig, match=r"config/config\.yaml"):
        claim_results(tmp_path, [])  # no --configfile: the default config


@pytest.mark.slow
def test_a_run_of_another_config_stops_before_any_job_and_keeps_the_tables(tmp_path: Path) -> None:
    config = {**BASE, "classifiers": {"scrf": {"n_estimators": 5}},
              "attacks": {"single_gene": BASE["attacks"]["single_gene"]}}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({**config, "seed": 1}))
    first = snakemake(tmp_path, "--cores", "2", "--configfile", str(tmp_path / "a.yaml"))
    assert first.returncode == 0, first.stderr[-2000:]
    tables = {p: p.read_bytes() for p in (tmp_path / "results" / "tables").glob("*.tsv")}
    assert tables
    other = snakemake(tmp_path, "--cores", "2", "--configfile", str(tmp_path / "b.yaml"))
    assert other.returncode != 0
    errors = [line for line in (other.stdout + other.stderr).splitlines() if line.startswith("vulnbench error: ")]
    assert len(errors) == 1 and "a.yaml" in errors[0] and "--directory" in errors[0]
    assert {p: p.read_bytes() for p in tables} == tables
    assert "Finished job" not in other.stdout + other.stderr
