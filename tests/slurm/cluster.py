"""A throwaway one-node SLURM cluster on localhost, so the slurm profile is tested against real sbatch/squeue.

Why /etc/slurm/slurm.conf and not only SLURM_CONF: the slurm plugin's job step strips every SLURM_* variable
(SLURM_CONF included) before it calls `srun` inside the allocation, so `srun` only finds the default path. The file
carries a marker line; it is written only when absent (or ours from an earlier, interrupted run) and removed again.
Everything else (munge key and socket, state, spool, logs, pid files) lives in a private temporary folder, and the
daemons run in the foreground as our children, so stopping them never touches anything we did not start.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = "# written by vulnbench tests/slurm/cluster.py: throwaway one-node test cluster, removed after the test"
PARTITION = "vbtest"  # not the default partition: jobs land there only if the profile's slurm_partition works
DEFAULT_PARTITION = "vbdefault"
DEBIAN_PACKAGES = ("slurm-wlm", "munge")
REQUIRED_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "srun", "scancel")
MEMORY_HEADROOM_MB = 2048


def skip_reason() -> str | None:
    """Why this machine cannot host the throwaway cluster (None when it can); checked before installing anything."""
    if platform.system() != "Linux":
        return f"needs Linux (this is {platform.system()})"
    if os.geteuid() != 0:
        return "needs root (installs slurm-wlm/munge with apt-get and starts slurmctld, slurmd and munged)"
    if not Path("/etc/debian_version").exists():
        return "needs Debian (installs slurm-wlm and munge with apt-get)"
    if shutil.which("apt-get") is None and not all(shutil.which(b) for b in REQUIRED_BINARIES):
        return "apt-get unavailable and slurm-wlm/munge not installed"
    if SYSTEM_CONF.exists() and MARKER not in SYSTEM_CONF.read_text(errors="replace"):
        return f"{SYSTEM_CONF} exists and is not ours: this machine has a real SLURM setup, the test will not touch it"
    running = [name for name in ("slurmctld", "slurmd") if _is_running(name)]
    if running:
        return f"{', '.join(running)} already running on this machine; the test only drives a cluster it starts itself"
    return None


def _is_running(name: str) -> bool:
    return subprocess.run(["pgrep", "-x", name], capture_output=True, check=False).returncode == 0


def ensure_installed(timeout: float = 600) -> str | None:
    """Install slurm-wlm and munge when a binary is missing; returns a skip reason when apt cannot."""
    if all(shutil.which(binary) for binary in REQUIRED_BINARIES):
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *DEBIAN_PACKAGES]
    deadline = time.monotonic() + timeout
    result = None
    for command in (install, ["apt-get", "update", "-q"], install):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return f"apt-get timed out after {timeout:.0f} s installing {' '.join(DEBIAN_PACKAGES)}"
        try:
            result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=remaining, check=False)
        except subprocess.TimeoutExpired:
            return f"apt-get timed out after {timeout:.0f} s installing {' '.join(DEBIAN_PACKAGES)}"
        if command is install and result.returncode == 0:
            break
    missing = [binary for binary in REQUIRED_BINARIES if shutil.which(binary) is None]
    if missing:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:] if result else []
        return f"could not install {' '.join(DEBIAN_PACKAGES)} (missing {', '.join(missing)}): {' | '.join(tail)}"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _node_memory_mb() -> int:
    """RealMemory for slurm.conf: the machine's memory minus headroom (slurmd rejects a node claiming more)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return max(512, int(line.split()[1]) // 1024 - MEMORY_HEADROOM_MB)
    raise RuntimeError("no MemTotal in /proc/meminfo")


@dataclass
class SlurmCluster:
    """A running one-node cluster: its config, daemons and the environment its clients need."""

    root: Path
    node: str
    cpus: int
    memory_mb: int
    partition: str = PARTITION
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    wrote_system_conf: bool = False

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    def log_paths(self) -> list[Path]:
        return sorted(self.root.glob("*.log")) + sorted((self.root / "munge").glob("*.log"))

    def logs(self, tail: int = 40) -> str:
        """The last lines of every daemon log, for a failing test's message."""
        parts = []
        for path in self.log_paths():
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"==> {path.name} <==\n" + "\n".join(lines))
        return "\n".join(parts)

    def run(self, *command: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)

    def node_state(self) -> str:
        """The node's state as sinfo shows it (one word, e.g. "idle"; sinfo lists the node once per partition)."""
        result = self.run("sinfo", "-h", "-N", "-n", self.node, "-o", "%t")
        if result.returncode != 0:
            return f"sinfo failed: {result.stderr.strip()}"
        return " ".join(sorted(set(result.stdout.split())))

    def stop(self) -> None:
        """Stop the daemons this object started (by pid), then remove the system config it wrote."""
        if self.processes.get("slurmctld") and self.processes["slurmctld"].poll() is None:
            self.run("scancel", "--full", timeout=10)
        for name in ("slurmd", "slurmctld", "munged"):
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self.wrote_system_conf and SYSTEM_CONF.exists() and MARKER in SYSTEM_CONF.read_text(errors="replace"):
            SYSTEM_CONF.unlink()
        self.wrote_system_conf = False

    def _start(self, name: str, command: list[str]) -> None:
        stream = (self.root / f"{name}.stdout.log").open("w")
        self.processes[name] = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL)
        stream.close()

    def _wait(self, what: str, check, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode} while waiting for {what}\n"
                                       + self.logs())
            if check():
                return
            time.sleep(0.5)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n" + self.logs())

    def slurm_conf(self, ctld_port: int, slurmd_port: int) -> str:
        root = self.root
        return "\n".join([
            MARKER,
            "ClusterName=vbtest",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={root}/state",
            f"SlurmdSpoolDir={root}/spool",
            f"SlurmctldPidFile={root}/slurmctld.pid",
            f"SlurmdPidFile={root}/slurmd.pid",
            f"SlurmctldLogFile={root}/slurmctld.log",
            f"SlurmdLogFile={root}/slurmd.log",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            # No cgroups in containers: track processes through /proc, no task binding.
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "SchedulerType=sched/builtin",
            # No slurmdbd: sacct has nothing to read, so the profile's squeue status command is what works.
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            # Finished jobs stay visible to squeue for an hour, which squeue-based status checks rely on.
            "MinJobAge=3600",
            "ReturnToService=2",
            "MpiDefault=none",
            "InactiveLimit=0",
            "KillWait=5",
            "SlurmdTimeout=120",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN",
            f"PartitionName={DEFAULT_PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
            f"PartitionName={self.partition} Nodes={self.node} Default=NO MaxTime=INFINITE State=UP",
            "",
        ])


def start_cluster(root: Path, timeout: float = 90) -> SlurmCluster:
    """Write the config, start munged, slurmctld and slurmd, and wait until the node is idle."""
    cluster = SlurmCluster(root=root, node=socket.gethostname().split(".")[0], cpus=min(2, os.cpu_count() or 1),
                           memory_mb=_node_memory_mb())
    for folder in ("munge", "state", "spool"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder).chmod(0o700)
    key = root / "munge" / "munge.key"
    if not key.exists():
        key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
    SYSTEM_CONF.write_text(cluster.slurm_conf(_free_port(), _free_port()))
    cluster.wrote_system_conf = True
    try:
        munge = root / "munge"
        cluster._start("munged", ["munged", "--foreground", "--force", f"--key-file={key}",
                                  f"--socket={cluster.munge_socket}", f"--pid-file={munge}/munged.pid",
                                  f"--log-file={munge}/munged.log", f"--seed-file={munge}/munged.seed"])
        cluster._wait("munged's socket", cluster.munge_socket.exists, timeout=20)
        cluster._start("slurmctld", ["slurmctld", "-D", "-c", "-f", str(SYSTEM_CONF)])
        cluster._wait("slurmctld", lambda: cluster.run("scontrol", "ping").returncode == 0, timeout=timeout)
        cluster._start("slurmd", ["slurmd", "-D", "-f", str(SYSTEM_CONF), "-N", cluster.node])
        cluster._wait(f"node {cluster.node} idle", lambda: cluster.node_state() == "idle", timeout=timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster
