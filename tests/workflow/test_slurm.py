"""profiles/slurm against a real SLURM: a throwaway one-node cluster on localhost runs a small sweep.

Needs root on Debian (installs slurm-wlm and munge with apt-get when missing); skipped elsewhere with the reason.
The cluster has no accounting (no slurmdbd), so the run only finishes if the profile's squeue status command
works, and its jobs go to a non-default partition under a made-up account, so both must come from the profile's
$SLURM_PARTITION / $SLURM_ACCOUNT expansion. The result tables must equal a local run of the same config.
max_change gets an explicit seed in tests/slurm/config.yaml: it is unseeded by default, so two runs differ.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tests.slurm.cluster import SlurmCluster, ensure_installed, skip_reason, start_cluster

from .conftest import REPO, snakemake

CONFIG = REPO / "tests" / "slurm" / "config.yaml"
PROFILE = REPO / "profiles" / "slurm"
ACCOUNT = "vbtest_account"
# One thread per training job on both runs: the two trainings share the 2-CPU node, and torch gives the same model.
SAME_THREADS = ("--set-threads", "train_classifier=1")
SUBMITTED = re.compile(r"^Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.$", re.MULTILINE)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A running one-node cluster; its daemons are stopped and its config removed even when the test fails."""
    reason = skip_reason()
    if reason:
        pytest.skip(f"real SLURM test: {reason}")
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="snakemake-executor-plugin-slurm not installed")
    reason = ensure_installed(timeout=600)
    if reason:
        pytest.skip(f"real SLURM test: {reason}")
    try:
        running = start_cluster(tmp_path_factory.mktemp("slurm"), timeout=90)
    except RuntimeError as error:  # the daemon logs are in the message
        pytest.fail(f"could not start the one-node SLURM cluster: {error}")
    try:
        yield running
    finally:
        running.stop()


def explain(result: subprocess.CompletedProcess, cluster: SlurmCluster) -> str:
    return (f"snakemake exited {result.returncode}\n--- stdout (end) ---\n{result.stdout[-3000:]}\n"
            f"--- stderr (end) ---\n{result.stderr[-6000:]}\n--- daemon logs ---\n{cluster.logs()}")


def tables_without_timings(folder: Path) -> dict[str, pd.DataFrame]:
    """Every result table with its timing columns (fit_s, runtime_s, ...) dropped and rows in a canonical order."""
    tables = {}
    for path in sorted(folder.glob("*.tsv")):
        table = pd.read_csv(path, sep="\t")
        table = table.drop(columns=[c for c in table.columns if c.endswith("_s") or "time" in c])
        tables[path.name] = table.sort_values(list(table.columns)).reset_index(drop=True)
    return tables


def test_slurm_profile_runs_the_sweep_through_sbatch_with_local_results(
    cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    local = snakemake(tmp_path / "local", "--cores", "2", "--configfile", str(CONFIG), *SAME_THREADS, timeout=300)
    assert local.returncode == 0, local.stderr[-3000:]

    for variable in ("SLURM_JOB_ID", "SLURM_JOBID", "SNAKEMAKE_PROFILE"):
        monkeypatch.delenv(variable, raising=False)  # a test run inside a SLURM job must still submit its own
    monkeypatch.setenv("SLURM_ACCOUNT", ACCOUNT)
    monkeypatch.setenv("SLURM_PARTITION", cluster.partition)
    workdir = tmp_path / "slurm"
    remote = snakemake(workdir, "--workflow-profile", str(PROFILE), "--configfile", str(CONFIG), *SAME_THREADS,
                       "--slurm-init-seconds-before-status-checks", "1", "--slurm-keep-successful-logs",
                       timeout=420)
    assert remote.returncode == 0, explain(remote, cluster)
    log = remote.stdout + remote.stderr

    # Every computing job went through sbatch: prepare, two trainings, and ONE batch holding the three attacks.
    submissions = SUBMITTED.findall(log)
    kinds = {Path(slurm_log).relative_to(workdir / "logs" / "slurm").parts[0] for _, _, slurm_log in submissions}
    assert kinds == {"rule_prepare_dataset", "rule_train_classifier", "group_sc_attacks_run_attack"}, log[-3000:]
    assert len(submissions) == 4, submissions
    assert "Finished jobid" in log and log.count("(Rule: run_attack)") == 3
    group_logs = [Path(path) for _, _, path in submissions if "group_sc_attacks" in path]
    group_log = group_logs[0].read_text()
    for target in ("classifier=scrf,attack=single_gene", "classifier=scmlp,attack=single_gene",
                   "classifier=scmlp,attack=max_change"):
        assert target in group_log, f"{target} not run inside the batch job:\n{group_log[-2000:]}"

    # SLURM's own view (squeue, since there is no accounting): the run's jobs finished, with the profile's account
    # and partition; the batch asks for one CPU and the sum of its three members' runtimes (3 x 20 min).
    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
    listing = cluster.run("squeue", "-h", "-t", "all", "--name", run_id, "-o", "%i|%a|%P|%T|%C|%l")
    assert listing.returncode == 0, listing.stderr
    jobs = {row.split("|")[0]: row.split("|")[1:] for row in listing.stdout.split()}
    assert set(jobs) == {jobid for _, jobid, _ in submissions}, listing.stdout
    assert {tuple(row[:3]) for row in jobs.values()} == {(ACCOUNT, cluster.partition, "COMPLETED")}, listing.stdout
    with capsys.disabled():  # into the CI log: what went through sbatch, and SLURM's own record of it
        print("\nreal SLURM run through profiles/slurm:")
        print("\n".join(line for line in log.splitlines() if SUBMITTED.match(line)))
        print("squeue -t all (jobid|account|partition|state|cpus|time limit):")
        print(listing.stdout.rstrip())
    group_jobid = next(jobid for _, jobid, path in submissions if "group_sc_attacks" in path)
    assert jobs[group_jobid][3:] == ["1", "1:00:00"], listing.stdout

    # Same science as the local run, to the last digit of every non-timing column.
    local_tables = tables_without_timings(tmp_path / "local" / "results" / "tables")
    remote_tables = tables_without_timings(workdir / "results" / "tables")
    assert {"classifiers.tsv", "single_gene.tsv", "max_change.tsv"} <= set(local_tables)
    assert set(remote_tables) == set(local_tables)
    for name, table in local_tables.items():
        pd.testing.assert_frame_equal(remote_tables[name], table, check_exact=True, obj=name)
    single_gene = remote_tables["single_gene.tsv"]
    assert len(single_gene) == 2 * 3 and (single_gene["status"] == "ok").all()  # classifiers x clusters
    assert remote_tables["max_change.tsv"]["signature_size"].gt(0).all()
