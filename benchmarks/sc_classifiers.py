"""Time of one cluster-level classification call per classifier (spec sc-classifiers §5; issue 4).

Data: a seeded synthetic dataset of 1,318 cells × 13,714 genes (the paper's pbmc3k size after filtering), 9 types
with planted markers, log-normalised; the target cluster is one type (~140 cells). Each registered classifier is
fitted on the data, then `model(X, clusters, target)` — the adverSCarial contract every attack calls — is timed
(median of repeats). The baseline, measured in the same run, is what the paper's R wrappers do: classify *every*
cell of the dataset and take the plurality over the cluster (`model.predict(X)[mask]`). For cell-independent
classifiers vulnbench scores only the target cells; for cell-dependent ones (scType unscaled, scAnnotatR: query-wide
z-scores) both paths must score everything, so the ratio is ~1 by design.

The paper's R wrappers averaged 138–514 s per call; the target is ≤ 1 s for every per-cell classifier.

Run: `.venv/bin/python benchmarks/sc_classifiers.py [--quick] [--with-r]` (`--with-r` adds SingleR's R backend).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from vulnbench.sc import classifiers
from vulnbench.sc.classifiers._sctype import MarkerSets
from vulnbench.sc.classifiers.base import plurality
from vulnbench.sc.data.datasets import synthetic_counts

PAPER_R_SECONDS = (138.0, 514.0)
TARGET_SECONDS = 1.0
NAME_WIDTH = 14


@dataclass(frozen=True)
class Config:
    n_cells: int = 1318
    n_genes: int = 13714
    n_types: int = 9
    repeats: int = 3
    name: str = "full"


FULL = Config()
QUICK = Config(n_cells=300, n_genes=1500, n_types=4, repeats=1, name="quick")

#: settings per classifier: the registered defaults, except where the synthetic genes need it (scType's markers)
#: or where a default only changes training time, not the cost of a call
SETTINGS: dict[str, dict[str, Any]] = {"scmlp": {"epochs": 5}}


def dataset(cfg: Config) -> tuple[pd.DataFrame, np.ndarray, dict[str, list[str]]]:
    counts, labels, markers = synthetic_counts(n_cells=cfg.n_cells, n_genes=cfg.n_genes, n_types=cfg.n_types,
                                               n_markers=20, fold_change=8.0, dispersion=0.2, mean_count=0.3, seed=0)
    counts = counts.toarray().astype(np.float64)
    x = np.log1p(counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0) * 1e4).astype(np.float32)
    genes = [f"GENE{j}" for j in range(cfg.n_genes)]
    named = {t: [genes[c] for c in cols] for t, cols in markers.items()}
    return pd.DataFrame(x, columns=genes), labels, named


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def build(name: str, markers: dict[str, list[str]], **extra: Any) -> classifiers.PerCellClassifier:
    params = dict(SETTINGS.get(name, {}))
    if name == "sctype":
        params["markers"] = MarkerSets(cell_types=tuple(markers), positive=tuple(tuple(g) for g in markers.values()),
                                       negative=tuple(() for _ in markers))
    params.update(extra)
    return classifiers.get(name, **params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds (smoke test)")
    parser.add_argument("--with-r", action="store_true", help="also time SingleR's R backend (needs R + SingleR)")
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    X, labels, markers = dataset(cfg)
    target = pd.Series(labels).value_counts().index[len(set(labels)) // 2]  # a mid-sized cluster
    mask = labels == target
    print(f"== one cluster-level call: {cfg.n_cells} cells × {cfg.n_genes} genes, target {target} "
          f"({int(mask.sum())} cells), median of {cfg.repeats} ==")
    print(f"  paper's R wrappers: {PAPER_R_SECONDS[0]:.0f}–{PAPER_R_SECONDS[1]:.0f} s per call; "
          f"target ≤ {TARGET_SECONDS:.0f} s per per-cell classifier")
    columns = f"{'fit s':>8} {'call s':>9} {'all-cells s':>12} {'ratio':>7}"
    print(f"  {'classifier':<{NAME_WIDTH}} {columns}  label / verdict")
    runs = [(name, {}) for name in classifiers.names()]
    if args.with_r:
        runs.append(("singler", {"backend": "r"}))
    for name, extra in runs:
        model = build(name, markers, **extra)
        start = time.perf_counter()
        model.fit(X, labels)
        fit_s = time.perf_counter() - start
        (label, _), call_s = median_time(lambda m=model: m(X, labels, target), cfg.repeats)
        (baseline, _), all_s = median_time(lambda m=model: plurality(m.predict(X)[mask]), cfg.repeats)
        assert baseline == label, f"{name}: the cluster call ({label}) and the all-cells baseline ({baseline}) differ"
        per_cell = model.cell_independent
        if cfg.name != "full":
            verdict = "not checked at quick sizes"
        elif not per_cell:
            verdict = "cell-dependent (scores need every cell)"
        else:
            verdict = "met" if call_s <= TARGET_SECONDS else "MISSED"
        shown = name + ("/r" if extra.get("backend") == "r" else "")
        print(f"  {shown:<{NAME_WIDTH}} {fit_s:8.2f} {call_s:9.4f} {all_s:12.4f} {all_s / call_s:7.1f}  "
              f"{label} / {verdict}")
    print("  ratio = all-cells baseline / vulnbench call (both measured above)")


if __name__ == "__main__":
    main()
