"""Job runtime settings: keep_freed_memory (repeated large allocations stop page-faulting once glibc keeps freed
memory) and use_threads (a job stays within its cores without paying for a torch import it does not need)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vulnbench.core.jobs import keep_freed_memory

# Allocate and touch four 24 MB buffers, then free them, 20 times (the activations of one DE generation's forward pass);
# print the minor page faults of the last 10 rounds. Run in a child process: the setting is process-wide and must not
# leak into the test session.
CHILD = """
import resource, sys
import numpy as np
from vulnbench.core.jobs import keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory()
for round_ in range(20):
    if round_ == 10:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffers = [np.ones(3 * 1024 * 1024) for _ in range(4)]
    del buffers
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def minor_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"),
                    reason="keep_freed_memory tunes glibc's malloc; this platform has no glibc")
def test_kept_memory_is_reused_without_page_faults():
    pages_per_round = 4 * 3 * 1024 * 1024 * 8 // os.sysconf("SC_PAGE_SIZE")
    default, kept = minor_faults("default"), minor_faults("kept")
    # by default glibc trims the freed heap top and faults pages back in (here ~10 % of each round's pages) ...
    assert default >= pages_per_round // 4, (default, pages_per_round)
    # ... kept, the same rounds reuse the heap: (almost) no page faults at all
    assert kept <= pages_per_round // 100, (kept, pages_per_round)
    assert keep_freed_memory() is True  # idempotent, and True on glibc


# In a fresh process: limit the job to one thread, check torch was not imported for it, then report the thread
# counts of BLAS / OpenMP (already loaded by numpy and scikit-learn) and of torch imported afterwards.
THREADS_CHILD = """
import json, sys
from vulnbench.core.jobs import use_threads
if sys.argv[1] == "limited":
    use_threads(1)
torch_imported_by_use_threads = "torch" in sys.modules
from threadpoolctl import threadpool_info
pools = sorted({pool["num_threads"] for pool in threadpool_info()})
import torch
print(json.dumps({"torch_imported": torch_imported_by_use_threads, "pools": pools, "torch": torch.get_num_threads()}))
"""


def thread_counts(mode: str) -> dict:
    import json

    done = subprocess.run([sys.executable, "-c", THREADS_CHILD, mode], capture_output=True, text=True, check=True,
                          env={k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")})
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: every thread pool has one thread anyway")
def test_use_threads_limits_loaded_and_later_libraries_without_importing_torch():
    default, limited = thread_counts("default"), thread_counts("limited")
    assert default["torch"] > 1 and max(default["pools"]) > 1, default  # what an unlimited job would take
    assert limited == {"torch_imported": False, "pools": [1], "torch": 1}, limited
