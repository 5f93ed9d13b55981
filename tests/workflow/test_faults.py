"""Faults: a run killed halfway resumes without redoing finished work, and a `--keep-going` run whose attack jobs
crash shows them in the tables (status rows) instead of tables that silently lack them."""

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

from .conftest import REPO, SNAKEMAKE, job_counts, snakemake

SC_DATA = {"synthetic": {"n_cells": 240, "n_genes": 300, "n_types": 3, "n_markers": 10, "test_size": 0.5}}
SINGLE_GENE = {"params": {"search": "dichotomic", "first_dichot": 20}}
TABLE = "results/tables/single_gene.tsv"


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
def test_keep_going_reports_crashed_jobs_in_the_table_and_the_next_run_repairs_it(tmp_path: Path,
                                                                                  clean_run: CleanRun) -> None:
    workdir = tmp_path / "run"
    shutil.copytree(clean_run.finished(), workdir, ignore=shutil.ignore_patterns("snakemake.out"))
    config = write_config(workdir, CLASSIFIERS, METHODS)

    # a model file cut short (a copy interrupted, a full disk): newer than the results, so its attacks rerun
    model = workdir / "results" / "models" / "synthetic" / "scmlp" / "model.pkl"
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 2])

    failed = snakemake(workdir, TABLE, "--cores", "2", "--keep-going", "--configfile", str(config))
    text = failed.stdout + failed.stderr
    assert failed.returncode != 0
    errors = {line for line in text.splitlines() if line.startswith("vulnbench error:")}
    assert errors == {"vulnbench error: cannot read model file results/models/synthetic/scmlp/model.pkl: "
                      "UnpicklingError: pickle data was truncated"}
    assert "Traceback" not in text
    assert job_counts(text)["run_attack"] == len(METHODS)  # the scmlp jobs only
    results = workdir / "results" / "attacks" / "synthetic"
    assert len(list(results.glob("scrf/single_gene/*/result.json"))) == len(METHODS)
    assert not list(results.glob("scmlp/single_gene/*/result.json"))

    table = pd.read_csv(workdir / TABLE, sep="\t")
    ok, crashed = table[table["classifier"] == "scrf"], table[table["classifier"] == "scmlp"]
    assert (ok["status"] == "ok").all() and len(ok) == len(METHODS) * N_CLUSTERS
    assert (crashed["status"] == "job_failed").all() and sorted(crashed["mode"]) == sorted(METHODS)
    for row in crashed.itertuples():
        log = f"logs/attack/synthetic/scmlp/single_gene/{row.pid}.log"
        assert row.reason == ("cannot read model file results/models/synthetic/scmlp/model.pkl: UnpicklingError: "
                              f"pickle data was truncated (log: {log})")
        assert (workdir / log).is_file()
    assert f"{TABLE} lists the failed jobs" in text

    # the figure of such a table draws (failed jobs marked), for a user who plots it by hand
    from vulnbench.sc.plots import run_plot

    run_plot("single_gene", "heatmap", workdir / TABLE, tmp_path / "heatmap.png")
    assert (tmp_path / "heatmap.png").read_bytes()[:4] == b"\x89PNG"

    # fix the fault (retrain): the next plain run redoes the failed jobs only and rewrites the real table
    model.unlink()
    fixed = snakemake(workdir, TABLE, "--cores", "2", "--configfile", str(config))
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    plan = job_counts(fixed.stdout + fixed.stderr)
    assert plan["run_attack"] == len(METHODS) and plan["train_classifier"] == 1 and plan["aggregate_attack"] == 1
    table = pd.read_csv(workdir / TABLE, sep="\t")
    assert (table["status"] == "ok").all() and len(table) == len(CLASSIFIERS) * len(METHODS) * N_CLUSTERS
    assert set(table["classifier"]) == set(CLASSIFIERS)
    newest_result = max(p.stat().st_mtime_ns for p in results.glob("*/single_gene/*/result.json"))
    assert (workdir / TABLE).stat().st_mtime_ns >= newest_result  # up to date again: no rebuild next time


def test_failed_image_attack_jobs_become_status_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The image arm's table after a failed run: done jobs from their results, a crashed job naming its log's
    one-line error, a job behind a missing model as not run; dated before its inputs so the next run rebuilds it."""
    from vulnbench.core.io import write_json
    from vulnbench.img.plan import build_image_jobs
    from vulnbench.img.stages import write_failed_img_attack_table

    monkeypatch.chdir(tmp_path)
    config = {"images": {"datasets": {"synthetic_lesions": {}},
                         "models": {"mn_a": {"architecture": "mobilenet_v3_small"},
                                    "mn_b": {"architecture": "mobilenet_v3_small"},
                                    "mn_c": {"architecture": "mobilenet_v3_small"}},
                         "attacks": {"fgsm": {"grid": {"eps_levels": [8]}}}}}
    jobs = build_image_jobs(config)
    assert list(jobs["model"]) == ["mn_a", "mn_b", "mn_c"]
    root = "results/img/attacks/synthetic_lesions"
    summary = {"n_images": 2, "n_attacked": 2, "n_success": 1, "success_rate": 0.5}
    record = {"image": "x", "outcome": "success", "params": None}
    job = {"arm": "img", "dataset": "synthetic_lesions", "model": "mn_a", "attack": "fgsm", "pid": "eps_levels~8",
           "grid": {"eps_levels": 8}, "params": {"eps_levels": 8}}
    write_json(f"{root}/mn_a/fgsm/eps_levels~8/result.json", {"job": job, "summary": summary, "records": [record]})
    for name in ("mn_a", "mn_b"):
        Path(f"results/img/models/synthetic_lesions/{name}").mkdir(parents=True)
        Path(f"results/img/models/synthetic_lesions/{name}/model.pt").write_bytes(b"x")
    Path("results/img/data/synthetic_lesions").mkdir(parents=True)
    Path("results/img/data/synthetic_lesions/manifest.tsv").write_text("image\n")
    Path("logs/img/attack/synthetic_lesions/mn_b/fgsm").mkdir(parents=True)
    Path("logs/img/attack/synthetic_lesions/mn_b/fgsm/eps_levels~8.log").write_text(
        "INFO start\nvulnbench error: model checkpoint not found: m.pt\n")

    written = write_failed_img_attack_table(
        jobs, result="results/img/attacks/{img_dataset}/{img_model}/{img_attack}/{pid}/result.json",
        log_file="logs/img/attack/{img_dataset}/{img_model}/{img_attack}/{pid}.log",
        inputs=["results/img/data/{img_dataset}/manifest.tsv", "results/img/models/{img_dataset}/{img_model}/model.pt"],
        table="results/tables/img_attacks.tsv", records="results/tables/img_attack_records.tsv")
    assert written == [Path("results/tables/img_attacks.tsv")]
    table = pd.read_csv(written[0], sep="\t").set_index("model")
    assert list(table["status"]) == ["ok", "job_failed", "job_not_run"]
    assert table.loc["mn_a", "success_rate"] == 0.5
    assert table.loc["mn_b", "reason"] == ("model checkpoint not found: m.pt "
                                           "(log: logs/img/attack/synthetic_lesions/mn_b/fgsm/eps_levels~8.log)")
    assert table.loc["mn_c", "reason"] == ("not run: its input results/img/models/synthetic_lesions/mn_c/model.pt is "
                                           "missing (an upstream job failed)")
    assert len(pd.read_csv("results/tables/img_attack_records.tsv", sep="\t")) == 1
    result_time = Path(f"{root}/mn_a/fgsm/eps_levels~8/result.json").stat().st_mtime_ns
    assert written[0].stat().st_mtime_ns < result_time

    from vulnbench.img.plots import plot_attacks

    plot_attacks(pd.read_csv(written[0], sep="\t"), tmp_path / "attacks.png")
    assert (tmp_path / "attacks.png").read_bytes()[:4] == b"\x89PNG"
