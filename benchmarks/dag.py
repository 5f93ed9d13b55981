"""Scale of the plan (issue 7): Snakemake dry-run time for large attack sweeps, and aggregation of many results.

A. `snakemake -n` on a config whose single-gene grid has 1,000 and 10,000 cells (one dataset, one classifier: one
   attack job per cell), timed end to end as a user runs it (process start, config validation, job matrix, DAG).
   Target: ≤ 60 s for 10,000 jobs. Baseline measured in the same run: the dry run of a 10-job config (fixed costs).
B. `collect_results` (what the aggregate rule runs) over 10,000 small result files written to a temporary folder,
   against a baseline of reading the same files with `json.load` alone (the floor: no per-file work beyond reading).

Run: `.venv/bin/python benchmarks/dag.py [--quick]` (`--quick`: 100 / 1,000 jobs and 1,000 files).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from vulnbench.sc.stages import collect_results

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
TARGET_10K_S = 60.0
NAME_WIDTH = 40


def sweep_config(n_jobs: int) -> dict:
    return {
        "seed": 0,
        "datasets": {"synthetic": {"n_cells": 100, "n_genes": 50, "n_types": 2, "n_markers": 5}},
        "classifiers": {"scrf": {"n_estimators": 5}},
        "attacks": {"single_gene": {"grid": {"fixed_value": [round(0.001 * k, 3) for k in range(n_jobs)]},
                                    "params": {"method": "fixed"}}},
    }


def dry_run_seconds(n_jobs: int, workdir: Path) -> tuple[float, int]:
    """Wall time of `snakemake -n` for a sweep of n_jobs attack jobs, and the planned run_attack count."""
    config = workdir / f"sweep_{n_jobs}.yaml"
    config.write_text(yaml.safe_dump(sweep_config(n_jobs)))
    start = time.perf_counter()
    result = subprocess.run([str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "-n",
                             "--quiet", "rules", "--configfile", str(config)],
                            capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"dry run of {n_jobs} jobs failed:\n{result.stderr[-2000:]}")
    planned = 0
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "run_attack" and parts[1].isdigit():
            planned = int(parts[1])
    return seconds, planned


def write_results(n_files: int, folder: Path) -> list[Path]:
    paths = []
    for k in range(n_files):
        path = folder / f"r{k}" / "result.json"
        path.parent.mkdir(parents=True)
        job = {"arm": "sc", "dataset": "synthetic", "classifier": "scrf", "attack": "single_gene", "pid": f"p{k}",
               "params": {"method": "fixed", "fixed_value": k}, "grid": {"fixed_value": k}}
        payload = {"job": job,
                   "records": [{"cluster": f"type{c}", "status": "ok", "n_genes_flipping": c, "genes": "",
                                "n_evaluations": 10, "n_calls": 3} for c in range(3)]}
        path.write_text(json.dumps(payload))
        paths.append(path)
    return paths


def line(name: str, value: object) -> None:
    print(f"  {name:<{NAME_WIDTH}} {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = (100, 1000) if args.quick else (1000, 10000)
    n_files = 1000 if args.quick else 10000
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        print("== A. dry run (snakemake -n) of a single-gene sweep ==")
        base, _ = dry_run_seconds(10, workdir)
        line("10 jobs (fixed costs, baseline)", f"{base:.1f} s")
        for n in sizes:
            seconds, planned = dry_run_seconds(n, workdir)
            line(f"{n:,} jobs ({planned:,} run_attack planned)", f"{seconds:.1f} s ({seconds / base:.1f}× the "
                 f"10-job run, {1000 * (seconds - base) / n:.2f} ms per extra job)")
            if n == 10000:
                line("target ≤ 60 s for 10,000 jobs", "met" if seconds <= TARGET_10K_S else "MISSED")
        print(f"\n== B. aggregation of {n_files:,} result files ==")
        paths = write_results(n_files, workdir / "results")
        start = time.perf_counter()
        for path in paths:
            json.loads(path.read_text())
        floor = time.perf_counter() - start
        start = time.perf_counter()
        table = collect_results(paths)
        seconds = time.perf_counter() - start
        line("json.load of every file (floor)", f"{floor:.2f} s")
        line("collect_results (aggregate rule)", f"{seconds:.2f} s, {len(table):,} rows")
        line("ratio collect_results / floor", f"{seconds / floor:.1f}")


if __name__ == "__main__":
    main()
