"""What every job of either arm shares: the versions it records, its thread and memory settings, its column label,
and the result it leaves when it stops on bad input."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import sys
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from vulnbench import __version__
from vulnbench.core.errors import VulnbenchError
from vulnbench.core.grid import format_value
from vulnbench.core.io import write_json

log = logging.getLogger(__name__)


def versions() -> dict[str, str]:
    """Library versions recorded in every result, so a number can be traced to the code that made it.

    Read from the installed distributions' metadata: importing torch and scanpy only to ask their version cost every
    attack job ~3 s."""

    return {"vulnbench": __version__,
            **{name: version(name) for name in ("numpy", "scipy", "scikit-learn", "torch", "scanpy", "anndata")}}


#: what OpenMP, BLAS and torch read when they start their thread pools (snakemake sets them for shell rules only)
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                   "NUMEXPR_NUM_THREADS")


def use_threads(threads: int | None) -> None:
    """Keep torch, OpenMP and BLAS within the cores the scheduler gave this job, without importing torch for it.

    Libraries already loaded are limited now (threadpoolctl; torch if imported); the environment covers those a job
    loads later (torch reads OMP_NUM_THREADS when first imported): importing torch only to set its thread count
    would add seconds to every single-cell job that never uses it."""
    if not threads:
        return
    count = int(threads)
    os.environ.update(dict.fromkeys(THREAD_ENV_VARS, str(count)))

    threadpool_limits(limits=count)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(count)


#: glibc mallopt parameters (malloc.h) and the values keep_freed_memory sets
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


KEPT_HEAP_BYTES, MMAP_ABOVE_BYTES = 1 << 30, 1 << 25


def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for reuse instead of handing it back to the OS after every batch.

    Batched scoring allocates and frees the same tens of MB of activations at every DE generation; by default glibc
    unmaps such blocks and page-faults them back in on the next batch, which cost a third of a CPU forward pass
    here (PyTorch's CPU tuning guide fixes the same with jemalloc/tcmalloc). Blocks up to 32 MB now come from the
    heap, which keeps up to 1 GB free. Process-wide and idempotent; returns False, changing nothing, off glibc."""

    if not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_TRIM_THRESHOLD, KEPT_HEAP_BYTES)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_ABOVE_BYTES))


def mode_label(grid: Mapping[str, Any]) -> str:
    """Column label of a grid cell in tables and heatmaps: the method itself, else `key=value` pairs."""

    if not grid:
        return "default"
    if set(grid) == {"method"}:
        return str(grid["method"])
    return ", ".join(f"{k}={format_value(v)}" for k, v in grid.items())


# -- a job that stopped on bad input -----------------------------------------------------------------------------------
#: `status` of a job that stopped on an expected problem (bad input, a corrupt file), in its result and table rows
JOB_FAILED = "job_failed"


def write_failed_result(output: str | Path, job: Mapping[str, Any], error: VulnbenchError) -> None:
    """The result of a job that stopped on an expected problem: its identity, `status` and the one-line reason.

    The job itself succeeds, so the aggregation still runs and tables the failure as a row (instead of a run that
    stops with tables silently lacking it); the run then ends non-zero naming it (results/tables/failed_jobs.tsv).
    A changed input or parameter reruns the job, as for any result."""
    log.error("vulnbench error: %s", error)
    write_json(output, {"job": dict(job), "status": JOB_FAILED, "reason": str(error), "records": []})


#: a result larger than this is a finished job's (a failure holds only its job and reason)
FAILED_RESULT_MAX_BYTES = 1 << 16


def retry_token(result: str | Path) -> str:
    """A rule parameter that reruns a job which stopped on bad input on every run, as if it had left no result.

    Empty for a missing or finished result; for a failure, its time of writing, which differs from the value
    Snakemake recorded when it planned that job: its `params` rerun trigger fires (a fixed input is then used, an
    unfixed one fails the same way again), while finished jobs keep their results."""
    path = Path(result)
    try:
        stat = path.stat()
        if stat.st_size > FAILED_RESULT_MAX_BYTES:
            return ""
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return ""
    failed = isinstance(payload, Mapping) and payload.get("status") == JOB_FAILED
    return f"retry after the failure of {stat.st_mtime_ns}" if failed else ""

