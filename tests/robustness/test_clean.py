"""`make clean` never deletes readers' answers: it refuses while any lives under results/."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.workflow.conftest import REPO


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_clean_refuses_while_answers_live_under_results(tmp_path: Path) -> None:
    answers = tmp_path / "results" / "reader_study" / "study_v2" / "answers" / "drsmith.csv"
    answers.parent.mkdir(parents=True)
    answers.write_bytes(b"# vulnbench reader answers v2\nimage,answer\n")
    (tmp_path / "logs").mkdir()
    refused = subprocess.run(["make", "-s", "-f", str(REPO / "Makefile"), "clean"], cwd=tmp_path,
                             capture_output=True, text=True, check=False)
    assert refused.returncode != 0
    assert "refused" in refused.stderr and "drsmith.csv" in refused.stderr
    assert answers.read_bytes() == b"# vulnbench reader answers v2\nimage,answer\n" and (tmp_path / "logs").is_dir()

    answers.unlink()  # without answers it cleans as before
    cleaned = subprocess.run(["make", "-s", "-f", str(REPO / "Makefile"), "clean"], cwd=tmp_path,
                             capture_output=True, text=True, check=False)
    assert cleaned.returncode == 0, cleaned.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()
