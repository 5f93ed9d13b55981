"""Seeds derived from the config seed and a job's identity (vulnbench.core.seeding)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vulnbench.core.seeding import job_seed


def test_job_seed_is_the_same_in_another_process_with_another_hash_salt() -> None:
    code = "from vulnbench.core.seeding import job_seed; print(job_seed(7, 'sc', 'pbmc', 'scrf', 'max_change', 'NK'))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert int(other.stdout) == job_seed(7, "sc", "pbmc", "scrf", "max_change", "NK")


def test_job_seed_depends_on_the_config_seed_and_every_part_of_the_identity() -> None:
    base = job_seed(0, "sc", "pbmc", "scrf", "single_gene", "method~random", "NK")
    variants = [job_seed(1, "sc", "pbmc", "scrf", "single_gene", "method~random", "NK"),
                job_seed(0, "img", "pbmc", "scrf", "single_gene", "method~random", "NK"),
                job_seed(0, "sc", "pbmc", "scmlp", "single_gene", "method~random", "NK"),
                job_seed(0, "sc", "pbmc", "scrf", "single_gene", "method~random", "B cells"),
                # parts are kept apart: ("a", "bc") is not ("ab", "c")
                job_seed(0, "sc", "pbmcs", "crf", "single_gene", "method~random", "NK")]
    assert len({base, *variants}) == len(variants) + 1
    assert 0 <= base < 2**32


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_job_seed_refuses_a_seed_that_is_not_a_non_negative_integer(seed: object) -> None:
    with pytest.raises(ValueError, match="seed"):
        job_seed(seed, "sc")  # type: ignore[arg-type]
