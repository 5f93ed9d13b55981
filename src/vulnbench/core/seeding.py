"""Seeds derived from the config's `seed` and a job's identity: the same config gives the same numbers.

A job that draws random numbers with `seed=None` gives another result on every run, and one shared seed for every
job makes jobs' streams identical where they should be independent. `job_seed` keys NumPy's `SeedSequence` by the
config seed and the job's identity (its arm, dataset, model, attack, grid cell, cluster…), hashed with SHA-256 so
that it is the same in every process and on every machine (Python's `hash()` of a string is salted per process).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np


def identity_words(*identity: Any) -> list[int]:
    """The identity as 32-bit words of its SHA-256: stable across processes, machines and Python versions."""
    text = json.dumps([str(part) for part in identity], ensure_ascii=False)
    digest = hashlib.sha256(text.encode()).digest()
    return [int(word) for word in np.frombuffer(digest, dtype="<u4")]


def job_seed(seed: int, *identity: Any) -> int:
    """A 32-bit seed for one job (or one cluster of a job): a function of the config seed and the identity only."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer ≥ 0, got {seed!r}")
    sequence = np.random.SeedSequence([int(seed), *identity_words(*identity)])
    return int(sequence.generate_state(1)[0])
