"""`vulnbench run`: start Snakemake so that restarting after a kill works without `--unlock`.

Snakemake locks its working directory with files under `.snakemake/locks/`; a run killed with SIGKILL never
removes them, and the next run stops on them until someone runs `snakemake --unlock`. Unlocking blindly is
unsafe (a run still in progress would be unlocked too), so the runner first decides whether the lock is stale:

1. every run started here holds an `flock` on `.snakemake/vulnbench-run.lock` for its whole life (the runner
   replaces itself with Snakemake, which keeps the descriptor); the kernel drops it when that process dies,
   however it dies;
2. as a second guard, for runs started with plain `snakemake`, `/proc` is scanned for a live Snakemake process
   whose working directory (or `--directory`) is this one.

If neither finds a live run the lock is stale: `snakemake --unlock` removes it (one line on stderr says so) and the
run goes on with `--rerun-incomplete`. Otherwise the runner stops with one line naming the process.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from vulnbench.core.errors import VulnbenchError

RUN_LOCK = "vulnbench-run.lock"
# Snakemake options after which a run neither takes nor needs the working-directory lock.
NO_LOCK_OPTIONS = frozenset({"-n", "--dry-run", "--dryrun", "--nolock", "--unlock", "--lint", "--report"})
SNAKEFILE_NAMES = ("Snakefile", "snakefile", "workflow/Snakefile", "workflow/snakefile")
REPO_SNAKEFILE = Path(__file__).resolve().parents[2] / "Snakefile"


class RunInProgress(VulnbenchError):
    """Another run works in the same directory: restarting now would run two Snakemakes on the same files."""


@dataclass(frozen=True)
class LiveRun:
    """A process that holds (or may hold) the working directory's Snakemake lock."""

    pid: int

    def describe(self) -> str:
        return f"PID {self.pid}, {_command_line(self.pid) or 'command unknown'}"


def snakemake_lock_files(workdir: Path) -> list[Path]:
    """The lock files Snakemake leaves under `.snakemake/locks/` while (or, after a kill, when no longer) running."""
    locks = workdir / ".snakemake" / "locks"
    return sorted(p for p in locks.iterdir() if p.is_file()) if locks.is_dir() else []


def acquire_run_lock(workdir: Path) -> int:
    """Take the run lock, write our PID into it and return its descriptor (kept open for the run's whole life).

    Raises RunInProgress when another live process holds it: the lock is an `flock`, so only a live process can."""
    path = workdir / ".snakemake" / RUN_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        holder = LiveRun(int(text)) if text.isdigit() else None
        who = holder.describe() if holder else "PID unknown"
        raise RunInProgress(f"another run is in progress in {workdir} ({who}); wait for it to finish or stop it "
                            "before starting a new one") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def live_snakemake_processes(workdir: Path) -> list[LiveRun]:
    """Live Snakemake processes (main or job processes) working in `workdir`, other than us and our ancestors."""
    target = os.path.realpath(workdir)
    ours = set(_ancestors(os.getpid()))
    found = []
    for pid in sorted(_pids()):  # a run's main process usually has the lowest PID: named first
        if pid in ours:
            continue
        argv = _argv(pid)
        if not argv or not _is_snakemake(argv):
            continue
        if target in _directories(pid, argv):
            found.append(LiveRun(pid))
    return found


def unlock(snakemake: Sequence[str], workdir: Path) -> None:
    """`snakemake --unlock` with the run's own Snakefile, directory and config; raises if it fails."""
    done = subprocess.run([*snakemake, "--unlock"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise VulnbenchError(f"could not remove the stale Snakemake lock in {workdir}: snakemake --unlock failed "
                             f"with status {done.returncode}: {last}")


def prepare(workdir: Path, snakemake: Sequence[str], args: Sequence[str]) -> tuple[list[str], int | None]:
    """Make the directory ready for a run: take the run lock and remove a stale Snakemake lock.

    `snakemake` is the command without its run options (executable, Snakefile, directory, config), `args` the run
    options. Returns the full command and the run lock's descriptor (None when the run takes no lock)."""
    command = [*snakemake, *args]
    if NO_LOCK_OPTIONS.intersection(args):
        return command, None
    fd = acquire_run_lock(workdir)
    try:
        locks = snakemake_lock_files(workdir)
        if locks:
            live = live_snakemake_processes(workdir)
            if live:
                raise RunInProgress(f"another run is in progress in {workdir} ({live[0].describe()}); it holds the "
                                    "Snakemake lock: wait for it to finish or stop it before starting a new one")
            print(f"vulnbench: removing the stale Snakemake lock in {workdir / '.snakemake' / 'locks'} (no live "
                  "Snakemake process holds it: the last run was killed); resuming with --rerun-incomplete",
                  file=sys.stderr, flush=True)
            unlock(snakemake, workdir)
            if "--rerun-incomplete" not in args and "--ri" not in args:
                command.append("--rerun-incomplete")
    except BaseException:
        os.close(fd)
        raise
    return command, fd


def snakemake_command(config: Path | None, workdir: Path, snakefile: Path | None) -> list[str]:
    """Executable, Snakefile, directory and config file: what both the run and `--unlock` are given."""
    executable = Path(sys.executable).with_name("snakemake")
    program = str(executable) if executable.exists() else shutil.which("snakemake")
    if program is None:
        raise VulnbenchError("snakemake is not installed (run `make setup`, or pip install 'vulnbench[workflow]')")
    snakefile = snakefile or find_snakefile()
    if not snakefile.is_file():
        raise VulnbenchError(f"Snakefile {snakefile} not found")
    command = [program, "--snakefile", str(snakefile.resolve()), "--directory", str(workdir)]
    if config is not None:
        if not config.is_file():
            raise VulnbenchError(f"config file {config} not found (CONFIG comes first: vulnbench run CONFIG "
                                 "[options] [targets])")
        command += ["--configfile", str(config.resolve())]
    return command


def find_snakefile() -> Path:
    """Snakemake's own search in the current directory, else the Snakefile of this checkout (editable install)."""
    for name in SNAKEFILE_NAMES:
        if Path(name).is_file():
            return Path(name)
    return REPO_SNAKEFILE


def run(config: Path | None, args: Sequence[str], *, workdir: Path | None = None,
        snakefile: Path | None = None) -> NoReturn:
    """Prepare the directory, then become Snakemake (exec): its exit status and signals are the run's own, and the
    run lock's descriptor stays open in it until it exits or is killed."""
    workdir = (workdir or Path.cwd()).resolve()
    if not workdir.is_dir():
        raise VulnbenchError(f"working directory {workdir} does not exist")
    command, fd = prepare(workdir, snakemake_command(config, workdir, snakefile), args)
    if fd is not None:
        os.set_inheritable(fd, True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)


# ---- /proc helpers (Linux) ---------------------------------------------------------------------------------------


def _pids() -> Iterator[int]:
    try:
        entries = os.listdir("/proc")
    except OSError:
        return
    for name in entries:
        if name.isdigit():
            yield int(name)


def _argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _command_line(pid: int) -> str:
    return " ".join(_argv(pid))[:200]


def _ancestors(pid: int) -> Iterator[int]:
    """`pid` and its parents up to init: they may look like Snakemake (a job calling us) but hold no lock of ours."""
    seen = set()
    while pid > 0 and pid not in seen:
        seen.add(pid)
        yield pid
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        pid = int(stat.rpartition(")")[2].split()[1])


def _is_snakemake(argv: list[str]) -> bool:
    """`snakemake …`, `python …/bin/snakemake …` (the console script) or `python -m snakemake …` (a job process)."""
    program = os.path.basename(argv[0])
    if program == "snakemake":
        return True
    if not program.startswith("python") or len(argv) < 2:
        return False
    return os.path.basename(argv[1]) == "snakemake" or argv[1:3] == ["-m", "snakemake"]


def _directories(pid: int, argv: list[str]) -> set[str]:
    """Where the process works: its current directory and its `--directory`/`-d` (relative to that directory)."""
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        cwd = None
    found = {cwd} if cwd else set()
    for i, part in enumerate(argv):
        value = None
        if part in ("--directory", "-d") and i + 1 < len(argv):
            value = argv[i + 1]
        elif part.startswith("--directory="):
            value = part.partition("=")[2]
        if value and (os.path.isabs(value) or cwd):
            found.add(os.path.realpath(os.path.join(cwd or "/", value)))
    return found


# ---- the `vulnbench run` command -----------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `run` to the top-level `vulnbench` command; options it does not know go to Snakemake unchanged."""
    parser = subparsers.add_parser(
        "run", help="run the pipeline with Snakemake, recovering a killed run's stale lock by itself",
        description="Run the Snakemake pipeline. A lock left by a killed run is removed (never while a Snakemake "
                    "process still works in the directory) and the run resumes; every option not listed here is "
                    "passed to Snakemake unchanged (targets, --until, --workflow-profile, ...).",
        allow_abbrev=False,
        usage="vulnbench run [CONFIG] [--cores N] [--directory DIR] [--snakefile FILE] [SNAKEMAKE OPTIONS ...]")
    parser.add_argument("config", nargs="?", type=Path, default=None,
                        help="config file (default: the Snakefile's own, config/config.yaml)")
    parser.add_argument("--cores", "-c", default=None, help="cores to use (default: the profile's; 'all')")
    parser.add_argument("--directory", "-d", type=Path, default=None, help="working directory (default: here)")
    parser.add_argument("--snakefile", "-s", type=Path, default=None,
                        help="Snakefile (default: ./Snakefile, else this checkout's)")
    parser.set_defaults(handler=_run_command)


def _run_command(args: argparse.Namespace) -> NoReturn:
    extra = list(getattr(args, "snakemake_args", []))
    if args.cores is not None:
        extra = ["--cores", str(args.cores), *extra]
    run(args.config, extra, workdir=args.directory, snakefile=args.snakefile)
