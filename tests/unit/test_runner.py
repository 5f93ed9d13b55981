"""The runner's two guards against unlocking a live run, with real processes (no Snakemake needed: the full
kill-and-restart cycle with Snakemake is tests/robustness/test_restart.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vulnbench import runner

VULNBENCH = Path(sys.executable).with_name("vulnbench")

HOLD_FLOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.pwrite(fd, f"{os.getpid()}\\n".encode(), 0)
print("locked", flush=True)
time.sleep(300)
"""


def wait_for_line(process: subprocess.Popen, expected: str) -> None:
    assert process.stdout is not None
    assert process.stdout.readline().strip() == expected


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    """Processes a test starts; killed at its end whatever happens."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def hold_run_lock(workdir: Path, processes: list[subprocess.Popen]) -> subprocess.Popen:
    """Another live process holding the run lock, as a run started by `vulnbench run` does."""
    (workdir / ".snakemake").mkdir(exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_FLOCK, str(workdir / ".snakemake" / runner.RUN_LOCK)],
                              stdout=subprocess.PIPE, text=True)
    processes.append(holder)
    wait_for_line(holder, "locked")
    return holder


def fake_snakemake(tmp_path: Path, processes: list[subprocess.Popen], *args: str, cwd: Path) -> subprocess.Popen:
    """A live process whose command line is that of the `snakemake` console script (`python …/bin/snakemake …`),
    as a run started with plain snakemake looks in /proc; it only sleeps."""
    script = tmp_path / "bin" / "snakemake"
    script.parent.mkdir(exist_ok=True)
    script.write_text("import time\nprint('started', flush=True)\ntime.sleep(300)\n")
    process = subprocess.Popen([sys.executable, str(script), *args], cwd=cwd, stdout=subprocess.PIPE, text=True)
    processes.append(process)
    wait_for_line(process, "started")
    return process


def stale_locks(workdir: Path) -> list[Path]:
    """Lock files as a killed Snakemake run leaves them."""
    locks = workdir / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    for name in ("0.input.lock", "0.output.lock"):
        (locks / name).write_text(f"{workdir}/results/tables/single_gene.tsv\n")
    return sorted(locks.iterdir())


def test_the_run_lock_is_refused_while_its_holder_lives_and_free_once_it_is_killed(
        tmp_path: Path, processes: list[subprocess.Popen]) -> None:
    holder = hold_run_lock(tmp_path, processes)
    with pytest.raises(runner.RunInProgress, match=rf"another run is in progress in .*\(PID {holder.pid}, "):
        runner.acquire_run_lock(tmp_path)

    holder.send_signal(signal.SIGKILL)
    holder.wait()
    fd = runner.acquire_run_lock(tmp_path)
    try:
        assert (tmp_path / ".snakemake" / runner.RUN_LOCK).read_text() == f"{os.getpid()}\n"
    finally:
        os.close(fd)


def test_a_live_snakemake_is_found_by_its_directory_or_its_working_directory(
        tmp_path: Path, processes: list[subprocess.Popen]) -> None:
    workdir, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    workdir.mkdir()
    elsewhere.mkdir()
    by_option = fake_snakemake(tmp_path, processes, "--cores", "1", "--directory", "../run", cwd=elsewhere)
    by_cwd = fake_snakemake(tmp_path, processes, "--cores", "1", cwd=workdir)
    other = fake_snakemake(tmp_path, processes, "--cores", "1", cwd=elsewhere)

    assert {run.pid for run in runner.live_snakemake_processes(workdir)} == {by_option.pid, by_cwd.pid}
    assert other.pid in {run.pid for run in runner.live_snakemake_processes(elsewhere)}
    for process in (by_option, by_cwd):
        process.kill()
        process.wait()
    assert runner.live_snakemake_processes(workdir) == []


def test_snakemake_command_lines_are_recognised() -> None:
    assert runner._is_snakemake(["/v/bin/python", "/v/bin/snakemake", "--cores", "2"])
    assert runner._is_snakemake(["snakemake", "-n"])
    assert runner._is_snakemake(["/v/bin/python3.11", "-m", "snakemake", "--target-jobs", "run_attack:x"])
    assert not runner._is_snakemake(["/v/bin/python", "-m", "pytest", "tests/workflow/test_snakemake.py"])
    assert not runner._is_snakemake(["less", "snakemake"])  # a file named snakemake, not the program
    assert not runner._is_snakemake(["/v/bin/python", "notes/snakemake.py"])


def test_a_lock_held_by_a_live_snakemake_is_refused_and_kept(tmp_path: Path,
                                                              processes: list[subprocess.Popen]) -> None:
    locks = stale_locks(tmp_path)
    live = fake_snakemake(tmp_path, processes, "--cores", "1", cwd=tmp_path)
    with pytest.raises(runner.RunInProgress, match=rf"\(PID {live.pid}, .*holds the Snakemake lock"):
        runner.prepare(tmp_path, ["snakemake-is-not-called"], ["--cores", "1"])
    assert sorted((tmp_path / ".snakemake" / "locks").iterdir()) == locks
    runner.acquire_run_lock(tmp_path)  # the refused attempt released the run lock it had taken


def test_a_run_lock_held_by_a_live_run_is_refused_and_the_snakemake_lock_kept(
        tmp_path: Path, processes: list[subprocess.Popen]) -> None:
    locks = stale_locks(tmp_path)
    holder = hold_run_lock(tmp_path, processes)
    with pytest.raises(runner.RunInProgress, match=rf"PID {holder.pid}"):
        runner.prepare(tmp_path, ["snakemake-is-not-called"], ["--cores", "1"])
    assert sorted((tmp_path / ".snakemake" / "locks").iterdir()) == locks
    # a dry run takes no lock: it goes ahead
    command, fd = runner.prepare(tmp_path, ["snakemake"], ["-n"])
    assert (command, fd) == (["snakemake", "-n"], None)


def test_the_command_refuses_with_one_line_and_status_1(tmp_path: Path,
                                                         processes: list[subprocess.Popen]) -> None:
    stale_locks(tmp_path)
    holder = hold_run_lock(tmp_path, processes)
    config = tmp_path / "config.yaml"
    config.write_text("seed: 0\n")
    done = subprocess.run([str(VULNBENCH), "run", str(config), "--cores", "1", "--directory", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"vulnbench error: another run is in progress in {tmp_path} (PID {holder.pid}, ")

    missing = subprocess.run([str(VULNBENCH), "run", str(tmp_path / "nope.yaml"), "--cores", "1"],
                             capture_output=True, text=True, timeout=120, check=False)
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"vulnbench error: config file {tmp_path / 'nope.yaml'} not found")
