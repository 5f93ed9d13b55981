"""The same config gives the same tables: two runs of one config in two fresh working directories agree on every
TSV under results/tables, once the columns that hold times are dropped.

The config is issue 16's: pbmc68k_reduced (embedded in scanpy), scrf, and attacks whose results depend on random
choices (`random` modification, max-change's seeded split order, the random walk)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.workflow.conftest import REPO, SNAKEMAKE

pytestmark = pytest.mark.slow

CONFIG = {
    "seed": 0,
    "datasets": {"pbmc68k_reduced": {"test_size": 0.3}},
    "classifiers": {"scrf": {"n_estimators": 20}},
    "attacks": {
        "single_gene": {"grid": {"method": ["random"]}, "params": {"first_dichot": 50}},
        "max_change": {"grid": {"method": ["perc99"]}},
        "overview_max_change": {"grid": {"method": ["perc1"]}, "params": {"max_split_size": 100}},
        "random_walk_min_change": {"grid": {"n_genes": [6]}, "params": {"walk_length": 20}},
    },
}


def is_time_column(name: str) -> bool:
    """Columns that hold durations or clock times (`runtime_s`, `fit_s`, …): the only ones allowed to differ."""
    return name.endswith("_s") or "time" in name


def comparable(path: Path) -> pd.DataFrame:
    """A table as text (no float re-formatting, no NA coercion) without its time columns."""
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    return table[[c for c in table.columns if not is_time_column(c)]]


def start_run(workdir: Path) -> subprocess.Popen:
    workdir.mkdir(parents=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    command = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile",
               str(workdir / "config.yaml"), "--cores", "1", "--quiet"]
    log = open(workdir / "snakemake.out", "w")  # noqa: SIM115 - closed with the process below
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ,
                               "PYTHONWARNINGS": "ignore"})
    process.log = log  # type: ignore[attr-defined]
    return process


def test_two_runs_of_one_config_give_identical_tables(tmp_path: Path) -> None:
    runs = [start_run(tmp_path / name) for name in ("first", "second")]  # side by side: one core each
    for process in runs:
        process.wait(timeout=1200)
        process.log.close()  # type: ignore[attr-defined]
    for name in ("first", "second"):
        out = (tmp_path / name / "snakemake.out").read_text()
        assert runs[("first", "second").index(name)].returncode == 0, out[-3000:]

    first, second = tmp_path / "first" / "results" / "tables", tmp_path / "second" / "results" / "tables"
    names = sorted(p.name for p in first.glob("*.tsv"))
    assert names == sorted(p.name for p in second.glob("*.tsv"))
    assert {"single_gene.tsv", "max_change.tsv", "overview_max_change.tsv", "random_walk_min_change.tsv",
            "classifiers.tsv"} <= set(names)
    for name in names:
        a, b = comparable(first / name), comparable(second / name)
        assert list(a.columns) == list(b.columns), name
        different = [c for c in a.columns if not a[c].equals(b[c])]
        assert not different, f"{name}: columns {different} differ between two runs of one config"
    # the randomised attacks really drew from seeded streams: every attacked cluster records its own job seed
    single_gene = comparable(first / "single_gene.tsv")
    assert single_gene["job_seed"].str.fullmatch(r"\d+").all()
    assert single_gene["job_seed"].nunique() == len(single_gene)
