"""keep_freed_memory: repeated large allocations stop page-faulting once glibc keeps freed memory."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vulnbench.stages import keep_freed_memory

# Allocate and touch four 24 MB buffers, then free them, 20 times (the activations of one DE generation's forward pass);
# print the minor page faults of the last 10 rounds. Run in a child process: the setting is process-wide and must not
# leak into the test session.
CHILD = """
import resource, sys
import numpy as np
from vulnbench.stages import keep_freed_memory
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
