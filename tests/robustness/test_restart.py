"""Restart after a kill (issue 16, item 7): a run started with `vulnbench run` and killed with SIGKILL leaves
Snakemake's lock behind; restarting the same command removes it by itself and finishes with the tables of an
uninterrupted run. While a run is alive, the same command refuses and leaves its lock alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SNAKEFILE = REPO / "Snakefile"
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}

# Deterministic today: the seeded random forest and single-gene's dichotomic search on fixed percentile values.
CONFIG = {
    "seed": 0,
    "datasets": {"synthetic": {"n_cells": 240, "n_genes": 300, "n_types": 3, "n_markers": 10, "test_size": 0.5}},
    "classifiers": {"scrf": {"n_estimators": 20}},
    "attacks": {"single_gene": {"grid": {"method": ["perc99", "perc1"]},
                                "params": {"search": "dichotomic", "first_dichot": 20}}},
}
N_ATTACKS = 2
TABLE = "results/tables/single_gene.tsv"


def write_config(workdir: Path) -> Path:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


def vulnbench_run(workdir: Path, *args: str) -> list[str]:
    """The README's restart command for a run in `workdir` (the tests' scratch directory, not the checkout)."""
    return [str(BIN / "vulnbench"), "run", str(workdir / "config.yaml"), "--directory", str(workdir),
            "--snakefile", str(SNAKEFILE), *args]


def plain_snakemake(workdir: Path, *args: str) -> list[str]:
    return [str(BIN / "snakemake"), "-s", str(SNAKEFILE), "--directory", str(workdir),
            "--configfile", str(workdir / "config.yaml"), *args]


def start(command: list[str], workdir: Path) -> subprocess.Popen:
    """A background run alone in a new process group (so one killpg stops Snakemake and its jobs)."""
    with open(workdir / "run.out", "w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)


def output(workdir: Path) -> str:
    return (workdir / "run.out").read_text()


def lock_files(workdir: Path) -> list[Path]:
    locks = workdir / ".snakemake" / "locks"
    return sorted(locks.iterdir()) if locks.is_dir() else []


def wait_for(condition, process: subprocess.Popen, workdir: Path, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended before {what}:\n{output(workdir)[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def results(workdir: Path) -> list[Path]:
    return list((workdir / "results" / "attacks").glob("synthetic/*/*/*/result.json"))


def is_time(column: str) -> bool:
    return column.endswith("_s") or column in ("runtime", "fit_s") or "time" in column


def tables(workdir: Path) -> dict[str, pd.DataFrame]:
    """Every TSV under results/tables without the columns that hold times."""
    found = {}
    for path in sorted((workdir / "results" / "tables").glob("*.tsv")):
        table = pd.read_csv(path, sep="\t")
        found[path.name] = table[[c for c in table.columns if not is_time(c)]]
    return found


def refused(workdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(vulnbench_run(workdir, "--cores", "1"), capture_output=True, text=True, env=ENV,
                          timeout=120, check=False)


@pytest.fixture
def runs() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.mark.slow
def test_a_run_killed_midway_restarts_by_itself_and_matches_an_uninterrupted_run(
        tmp_path: Path, runs: list[subprocess.Popen]) -> None:
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    for workdir in (clean, killed):
        workdir.mkdir()
        write_config(workdir)
    # the reference, started with plain snakemake: only the /proc scan can see that it is alive
    reference = start(plain_snakemake(clean, "--cores", "1"), clean)
    runs.append(reference)
    run = start(vulnbench_run(killed, "--cores", "1"), killed)
    runs.append(run)

    # while either run lives, the runner refuses, names it, and leaves its lock in place
    for workdir, process in ((clean, reference), (killed, run)):
        wait_for(lambda w=workdir: lock_files(w), process, workdir, "Snakemake's lock")
        locks = lock_files(workdir)
        answer = refused(workdir)
        assert process.poll() is None, "the run ended while the refusal was checked: make the config larger"
        assert answer.returncode == 1, answer.stdout[-2000:] + answer.stderr[-2000:]
        assert answer.stderr.startswith(f"vulnbench error: another run is in progress in {workdir} "
                                        f"(PID {process.pid}, ")
        assert answer.stderr.count("\n") == 1
        assert lock_files(workdir) == locks

    # SIGKILL the run (Snakemake and its job processes) once an attack has finished, before the last one has
    wait_for(lambda: results(killed), run, killed, "the first attack result")
    os.killpg(run.pid, signal.SIGKILL)
    assert run.wait(timeout=30) == -signal.SIGKILL
    assert 1 <= len(results(killed)) < N_ATTACKS and not (killed / TABLE).exists()
    assert lock_files(killed), "a killed run leaves Snakemake's lock behind"

    # the lock is really stale: plain snakemake stops on it
    blocked = subprocess.run(plain_snakemake(killed, "--cores", "1"), capture_output=True, text=True, env=ENV,
                             timeout=300, check=False)
    assert blocked.returncode != 0
    assert "Directory cannot be locked" in blocked.stdout + blocked.stderr

    # the same command again recovers by itself, saying so in one line
    restarted = subprocess.run(vulnbench_run(killed, "--cores", "2"), capture_output=True, text=True, env=ENV,
                               timeout=600, check=False)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    notes = [line for line in restarted.stderr.splitlines() if line.startswith("vulnbench:")]
    assert notes == [f"vulnbench: removing the stale Snakemake lock in {killed}/.snakemake/locks (no live Snakemake "
                     "process holds it: the last run was killed); resuming with --rerun-incomplete"]
    assert lock_files(killed) == []
    assert len(results(killed)) == N_ATTACKS

    assert reference.wait(timeout=600) == 0, output(clean)[-3000:]
    expected, got = tables(clean), tables(killed)
    assert sorted(got) == sorted(expected) and TABLE.rpartition("/")[2] in got
    for name, table in expected.items():
        pd.testing.assert_frame_equal(got[name], table, obj=name)
