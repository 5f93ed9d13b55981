"""Benchmarks must keep running (their numbers are read by people, not asserted here)."""

from __future__ import annotations

import subprocess
import sys

from .conftest import REPO


def test_single_gene_benchmark_runs_in_quick_mode() -> None:
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "single_gene.py"), "--quick"],
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ratio dichotomic naive/vulnbench" in result.stdout
    assert "ratio exhaustive generic-stacked/vulnbench" in result.stdout


def test_sc_classifiers_benchmark_runs_in_quick_mode() -> None:
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "sc_classifiers.py"), "--quick"],
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("chetah", "scannotatr", "scmlp", "scrf", "sctype", "singler"):
        assert f"\n  {name} " in result.stdout
    assert "ratio = all-cells baseline / vulnbench call" in result.stdout


def test_img_attacks_benchmark_runs_in_quick_mode() -> None:
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "img_attacks.py"), "--quick"],
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("seed", "ART", "vulnbench (probability)", "vulnbench (margin)"):
        assert f"\n  {name} " in result.stdout
    assert "ratio seed/vulnbench" in result.stdout
    assert "ratio ART/vulnbench" in result.stdout
