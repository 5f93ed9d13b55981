"""Faults: a run killed halfway resumes without redoing finished work, and attack jobs that stop on bad input are
rows of the tables (written by the aggregation) while the run still ends non-zero naming them."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from vulnbench.core.errors import DataError
from vulnbench.core.io import write_json
from vulnbench.core.jobs import write_failed_result
from vulnbench.img.stages import run_img_attack_table
from vulnbench.pipeline import run_job_status
from vulnbench.sc.plots import run_plot

from .conftest import REPO, SNAKEMAKE, job_counts, snakemake

SC_DATA = {"synthetic": {"n_cells": 240, "n_genes": 300, "n_types": 3, "n_markers": 10, "test_size": 0.5}}
SINGLE_GENE = {"params": {"search": "dichotomic", "first_dichot": 20}}
TABLE = "results/tables/single_gene.tsv"
STATUS = "results/tables/job_status.tsv"


def write_config(workdir: Path, classifiers: dict, methods: list[str]) -> Path:
    config = {"seed": 0, "datasets": SC_DATA, "classifiers": classifiers,
              "attacks": {"single_gene": {**SINGLE_GENE, "grid": {"method": methods}}}}
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start(workdir: Path, *args: str) -> subprocess.Popen:
    """The conftest's snakemake command line as a background process, alone in a new process group."""
    command = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    with open(workdir / "snakemake.out", "w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def output(workdir: Path) -> str:
    return (workdir / "snakemake.out").read_text()


def comparable(path: Path) -> pd.DataFrame:
    """A table without its timing columns (runtime_s, fit_s, …), rows in a fixed order."""
    table = pd.read_csv(path, sep="\t")
    table = table[[c for c in table.columns if not c.endswith("_s")]]
    return table.sort_values(list(table.columns[:5])).reset_index(drop=True)


def assert_complete(path: Path) -> None:
    """A file at its final name holds a whole output: it opens with the reader the pipeline uses."""
    from vulnbench.sc.classifiers.base import PerCellClassifier
    from vulnbench.sc.data.prepare import read_prepared

    if path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".tsv":
        pd.read_csv(path, sep="\t")
    elif path.suffix == ".h5ad":
        read_prepared(path)
    elif path.suffix == ".pkl":
        PerCellClassifier.load(path)
    else:
        raise AssertionError(f"unexpected file {path}")


def incomplete_outputs(workdir: Path) -> set[str]:
    """The outputs Snakemake marked incomplete (their job was running when it died): one marker file per output
    under .snakemake/incomplete, named by the output's path in URL-safe base64 (long names split into
    '@'-prefixed folders). Read directly: a dry run reporting them costs another Snakemake start."""
    root = workdir / ".snakemake" / "incomplete"
    names = set()
    for marker in root.rglob("*"):
        if marker.is_file() and marker.name != "migration_underway":
            encoded = "".join(part.removeprefix("@") for part in marker.relative_to(root).parts)
            names.add(base64.urlsafe_b64decode(encoded).decode())
    return names


CLASSIFIERS = {"scrf": {"n_estimators": 20}, "scmlp": {"epochs": 5}}
METHODS = ["perc99", "positive_aberrant"]
TARGETS = (TABLE, "results/tables/classifiers.tsv")
N_CLUSTERS = 3


class CleanRun:
    """One uninterrupted run of the shared config, started in the background: the reference both slow tests use."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.config = write_config(workdir, CLASSIFIERS, METHODS)
        self.process = start(workdir, *TARGETS, "--cores", "1", "--configfile", str(self.config))

    def finished(self) -> Path:
        assert self.process.wait(timeout=600) == 0, output(self.workdir)[-3000:]
        return self.workdir


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CleanRun]:
    run = CleanRun(tmp_path_factory.mktemp("clean"))
    yield run
    if run.process.poll() is None:
        os.killpg(run.process.pid, signal.SIGKILL)
        run.process.wait()


@pytest.mark.slow
def test_a_run_killed_halfway_resumes_and_matches_an_uninterrupted_run(tmp_path: Path, clean_run: CleanRun) -> None:
    config = write_config(tmp_path, CLASSIFIERS, METHODS)
    run = start(tmp_path, *TARGETS, "--cores", "1", "--configfile", str(config))  # alongside the clean run
    attacks = tmp_path / "results" / "attacks" / "synthetic"
    logs = tmp_path / "logs" / "attack" / "synthetic"
    try:
        # kill while a second attack job runs: one result is complete, the others are not
        deadline = time.monotonic() + 300
        while not (len(list(attacks.glob("*/*/*/result.json"))) == 1 and len(list(logs.glob("*/*/*.log"))) == 2):
            assert run.poll() is None, output(tmp_path)[-3000:]
            assert time.monotonic() < deadline, "the run never reached its second attack job"
            time.sleep(0.05)
        time.sleep(0.3)
        os.killpg(run.pid, signal.SIGKILL)  # snakemake and its job's process: one process group
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)

    # nothing half-written: no temporary file, and every file at its final name opens
    files = [p for p in (tmp_path / "results").rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.endswith(".tmp")]
    for path in files:
        assert_complete(path)
    assert 1 <= len(list(attacks.glob("*/*/*/result.json"))) < 2 * len(METHODS)
    assert not (tmp_path / TABLE).exists()

    # what finished before the kill, minus what Snakemake marked incomplete (the job it was running)
    incomplete = incomplete_outputs(tmp_path)
    assert incomplete and all((tmp_path / name).parent.parent.parent.parent == attacks for name in incomplete)
    finished = {str(p.relative_to(tmp_path)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in files
                if str(p.relative_to(tmp_path)) not in incomplete}
    finished_results = [name for name in finished if name.endswith("result.json")]
    assert finished_results and any(name.endswith("model.pkl") for name in finished)

    unlocked = snakemake(tmp_path, "--unlock", "--configfile", str(config))  # the killed run's lock is stale
    assert unlocked.returncode == 0, unlocked.stderr[-2000:]
    resumed = snakemake(tmp_path, *TARGETS, "--cores", "2", "--rerun-incomplete", "--configfile", str(config))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    plan = job_counts(resumed.stdout + resumed.stderr)
    assert plan["run_attack"] == 2 * len(METHODS) - len(finished_results)
    for name, identity in finished.items():
        path = tmp_path / name
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == identity, f"{name} was recomputed"
    assert not list((tmp_path / "results").rglob("*.tmp"))
    reference = clean_run.finished()
    for table in TARGETS:
        pd.testing.assert_frame_equal(comparable(tmp_path / table), comparable(reference / table))


@pytest.mark.slow
def test_jobs_that_stop_on_bad_input_are_table_rows_the_run_fails_and_the_next_run_repairs_it(
        tmp_path: Path, clean_run: CleanRun) -> None:
    workdir = tmp_path / "run"
    shutil.copytree(clean_run.finished(), workdir, ignore=shutil.ignore_patterns("snakemake.out"))
    config = write_config(workdir, CLASSIFIERS, METHODS)

    # a model file cut short (a copy interrupted, a full disk): newer than the results, so its attacks rerun
    model = workdir / "results" / "models" / "synthetic" / "scmlp" / "model.pkl"
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 2])

    failed = snakemake(workdir, TABLE, STATUS, "--cores", "2", "--configfile", str(config))
    text = failed.stdout + failed.stderr
    assert failed.returncode != 0
    reason = ("cannot read model file results/models/synthetic/scmlp/model.pkl: UnpicklingError: pickle data was "
              "truncated")
    errors = sorted({line for line in text.splitlines() if line.startswith("vulnbench error:")})
    assert len(errors) == 1 and errors[0].startswith(f"vulnbench error: {len(METHODS)} attack job(s) stopped on "
                                                     f"bad input (rows with status job_failed in {TABLE}): ")
    assert errors[0].count(reason) == len(METHODS) and "single_gene on synthetic/scmlp" in errors[0]
    assert "Traceback" not in text
    assert job_counts(text)["run_attack"] == len(METHODS)  # the scmlp jobs only
    assert not (workdir / STATUS).exists()

    # the table was written by the aggregation: scrf's rows as before, one status row per failed scmlp job
    table = pd.read_csv(workdir / TABLE, sep="\t")
    ok, stopped = table[table["classifier"] == "scrf"], table[table["classifier"] == "scmlp"]
    assert (ok["status"] == "ok").all() and len(ok) == len(METHODS) * N_CLUSTERS
    assert (stopped["status"] == "job_failed").all() and sorted(stopped["mode"]) == sorted(METHODS)
    assert set(stopped["reason"]) == {reason} and stopped["cluster"].isna().all()
    reference = comparable(clean_run.finished() / TABLE)
    # (the same values; a column with the failed rows' blanks reads as float)
    pd.testing.assert_frame_equal(comparable_rows(ok), comparable_rows(reference[reference["classifier"] == "scrf"]),
                                  check_dtype=False)
    for row in stopped.itertuples():  # the job's log holds the same one line
        log = workdir / f"logs/attack/synthetic/scmlp/single_gene/{row.pid}.log"
        assert f"vulnbench error: {reason}" in log.read_text()

    # the figure of such a table draws (failed jobs marked)
    run_plot("single_gene", "heatmap", workdir / TABLE, tmp_path / "heatmap.png")
    assert (tmp_path / "heatmap.png").read_bytes()[:4] == b"\x89PNG"

    # the same run again retries the failed jobs only and fails the same way (nothing hides the failure)
    results = workdir / "results" / "attacks" / "synthetic"
    finished = {p: p.stat().st_mtime_ns for p in results.glob("scrf/single_gene/*/result.json")}
    again = snakemake(workdir, TABLE, STATUS, "--cores", "2", "--configfile", str(config))
    assert again.returncode != 0 and job_counts(again.stdout + again.stderr)["run_attack"] == len(METHODS)
    assert "stopped on bad input" in again.stderr and (workdir / TABLE).is_file()
    assert {p: p.stat().st_mtime_ns for p in finished} == finished

    # fix the fault (retrain): the next plain run redoes the failed jobs only and rewrites the real table
    model.unlink()
    fixed = snakemake(workdir, TABLE, STATUS, "--cores", "2", "--configfile", str(config))
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    plan = job_counts(fixed.stdout + fixed.stderr)
    assert plan["run_attack"] == len(METHODS) and plan["train_classifier"] == 1 and plan["aggregate_attack"] == 1
    table = pd.read_csv(workdir / TABLE, sep="\t")
    assert (table["status"] == "ok").all() and len(table) == len(CLASSIFIERS) * len(METHODS) * N_CLUSTERS
    status = pd.read_csv(workdir / STATUS, sep="\t")
    assert len(status) == len(CLASSIFIERS) * len(METHODS) and (status["status"] == "ok").all()


def comparable_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Rows without timing columns, in a fixed order, for comparing parts of two tables."""
    table = table[[c for c in table.columns if not c.endswith("_s")]]
    return table.sort_values(list(table.columns[:5])).reset_index(drop=True)


def test_an_image_attack_job_that_stops_on_bad_input_is_a_row_of_the_table(tmp_path: Path) -> None:
    """The image arm's table: done jobs from their results, a job that stopped on bad input as one status row
    naming the reason, written by the aggregation (nothing back-dated); the job status then names it."""
    job = {"arm": "img", "dataset": "synthetic_lesions", "attack": "fgsm", "pid": "eps_levels~8",
           "grid": {"eps_levels": 8}, "params": {"eps_levels": 8}}
    summary = {"n_images": 2, "n_attacked": 2, "n_success": 1, "success_rate": 0.5}
    record = {"image": "x", "outcome": "success", "params": None}
    write_json(tmp_path / "a" / "result.json", {"job": {**job, "model": "mn_a"}, "status": "ok", "summary": summary,
                                                "records": [record]})
    write_failed_result(tmp_path / "b" / "result.json", {**job, "model": "mn_b"},
                        DataError("model checkpoint not found: m.pt"))
    table, records = tmp_path / "img_attacks.tsv", tmp_path / "img_attack_records.tsv"
    run_img_attack_table([tmp_path / "a" / "result.json", tmp_path / "b" / "result.json"], table, records)
    frame = pd.read_csv(table, sep="\t").set_index("model")
    assert list(frame["status"]) == ["ok", "job_failed"]
    assert frame.loc["mn_a", "success_rate"] == 0.5
    assert frame.loc["mn_b", "reason"] == "model checkpoint not found: m.pt"
    assert len(pd.read_csv(records, sep="\t")) == 1
    with pytest.raises(DataError, match=r"1 attack job\(s\) stopped on bad input .*fgsm on synthetic_lesions/mn_b "
                                        r"\(eps_levels~8\): model checkpoint not found: m.pt"):
        run_job_status([table], tmp_path / "status.tsv")
    assert not (tmp_path / "status.tsv").exists()
