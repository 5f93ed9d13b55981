"""Speed benchmark of the single-gene attack (spec sc-attacks §5.2, §9) against adverSCarial-style baselines.

A. dichotomic search, cheap marker classifier, 1,318 cells × 13,714 genes, vs a literal port of upstream
   `advSingleGene` (depth-first, one full DataFrame copy + quantile per call), measured in the same run;
B. exhaustive search with scMLP over every gene on a ~140-cell cluster, vs the generic stacked
   `PerCellClassifier.predict_proba_perturbed` and vs one full classifier call per gene (both extrapolated).

Run: `.venv/bin/python benchmarks/single_gene.py [--quick]` (`--quick`: a few seconds, for smoke tests).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from vulnbench.sc.attacks import single_gene
from vulnbench.sc.classifiers import ScMLP
from vulnbench.sc.classifiers.base import PerCellClassifier
from vulnbench.sc.data.datasets import synthetic_counts
from vulnbench.sc.expression import as_expression
from vulnbench.sc.modifications import GeneStats

#: adverSCarial 1.3.13 on this setup (as given in the benchmark brief; spec §9.2 lists 11.3 s / 313 calls)
R_DICHOTOMIC_S, R_DICHOTOMIC_CALLS = 7.1, 355
TARGET_DICHOTOMIC_S, TARGET_EXHAUSTIVE_S = 0.3, 60.0
FIRST_DICHOT = 100
N_TRAPS = 8
#: markers per type in the cheap classifier: the target's first 5 planted markers; other types 4 + a trap
N_CLASSIFIER_MARKERS = 5
#: how far (in log-expression units) a trap's planted value goes beyond what is needed to flip
TRAP_MARGIN = 0.5
NAME_WIDTH = 44
#: timed repetitions of the (sub-second) vulnbench dichotomic attack; the median is reported
N_REPEATS = 3


@dataclass(frozen=True)
class Config:
    """Problem sizes of one run."""

    n_cells: int = 1318
    n_genes: int = 13714
    epochs: int = 5
    target_size: int = 140
    n_stacked: int = 300  # perturbations timed on the generic stacked path
    n_per_call: int = 30  # genes timed with one full classifier call each
    name: str = "full"  # the targets and the R reference only apply to the full sizes


def verdict(cfg: Config, seconds: float, target: float) -> str:
    """Whether the target time is met (full sizes only)."""
    if cfg.name != "full":
        return "not checked at quick sizes"
    return "met" if seconds <= target else "MISSED"


FULL = Config()
QUICK = Config(n_cells=300, n_genes=2000, epochs=2, target_size=32, n_stacked=60, n_per_call=8, name="quick")


def line(name: str, value: Any) -> None:
    """One aligned `name  value` report line."""
    print(f"  {name:<{NAME_WIDTH}} {value}")


def header(title: str) -> None:
    print(f"\n== {title} ==")


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(result, wall seconds) of one call."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


# -- data ---------------------------------------------------------------------------------------------


def make_data(cfg: Config) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Log-normalised (log1p of counts per 10k) dense cells × genes matrix, labels, planted marker columns."""
    counts, labels, markers = synthetic_counts(n_cells=cfg.n_cells, n_genes=cfg.n_genes, n_types=9,
                                               n_markers=20, fold_change=8.0, dispersion=0.2,
                                               mean_count=0.3, seed=0)
    totals = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    dense = counts.toarray().astype(np.float64)
    dense *= (1e4 / np.maximum(totals, 1.0))[:, None]
    np.log1p(dense, out=dense)
    return dense, labels, markers


def pick_target(labels: np.ndarray, size: int) -> tuple[str, pd.Series]:
    """The cell type whose cluster size is closest to `size` (ties: alphabetical), and all sizes."""
    sizes = pd.Series(labels).value_counts().sort_index()
    return str((sizes - size).abs().sort_values(kind="stable").index[0]), sizes


# -- part A: cheap marker classifier ------------------------------------------------------------------


class MarkerClassifier:
    """adverSCarial-style callable: type k scores the mean over the target cells of the mean of its markers.

    Only the target cells × marker columns block is read (one `np.ix_` gather on the frame's values, a
    view for a single-dtype frame); the label is the argmax type, the score its mean marker expression.
    """

    def __init__(self, markers: dict[str, list[str]]) -> None:
        self.types = list(markers)
        self.columns = list(dict.fromkeys(g for genes in markers.values() for g in genes))
        position = {g: i for i, g in enumerate(self.columns)}
        self.weights = np.zeros((len(self.columns), len(self.types)))
        for k, genes in enumerate(markers.values()):
            for gene in genes:
                self.weights[position[gene], k] += 1.0 / len(genes)

    def scores(self, X: pd.DataFrame, clusters: Sequence[str], target: str) -> np.ndarray:
        rows = np.flatnonzero(np.asarray(clusters) == target)
        cols = X.columns.get_indexer(self.columns)
        return X.to_numpy()[np.ix_(rows, cols)].mean(axis=0) @ self.weights

    def __call__(self, X: pd.DataFrame, clusters: Sequence[str], target: str) -> tuple[str, float]:
        scores = self.scores(X, clusters, target)
        best = int(np.argmax(scores))
        return self.types[best], float(scores[best])


def plant_traps(dense: np.ndarray, labels: np.ndarray, markers: dict[str, np.ndarray], genes: pd.Index,
                target: str, seed: int = 0) -> tuple[MarkerClassifier, list[str], np.ndarray]:
    """Build the marker classifier and plant one trap gene in each of 8 other types' marker lists.

    A trap is a non-marker gene that a rare subpopulation of its type (2 % of all cells, so its 99th
    percentile is the planted value) expresses strongly enough that setting it alone to perc99 on the
    target cells lifts its type's score just above the target's. Traps avoid the round-robin slices of the
    target's markers, so no dichotomic half can hide them by compensation. Modifies `dense` in place.
    """
    rng = np.random.default_rng(seed)
    n_cells = dense.shape[0]
    others = [t for t in sorted(markers) if t != target][:N_TRAPS]
    own = markers[target][:N_CLASSIFIER_MARKERS]
    taken = set(np.concatenate(list(markers.values())).tolist())
    blocked = {int(c) % FIRST_DICHOT for c in own}
    free = [int(c) for c in rng.permutation(dense.shape[1])
            if c not in taken and c % FIRST_DICHOT not in blocked]
    traps = free[: len(others)]
    lists = {target: list(genes[own])}
    for other, trap in zip(others, traps, strict=True):
        lists[other] = [*genes[markers[other][: N_CLASSIFIER_MARKERS - 1]], genes[trap]]
    classifier = MarkerClassifier(lists)
    scores = dict(zip(classifier.types, classifier.scores(pd.DataFrame(dense, columns=genes, copy=False),
                                                          labels, target), strict=True))
    in_target = labels == target
    # type-7 99th percentile = the planted value once at least n − floor(0.99·(n − 1)) cells carry it
    n_planted = max(n_cells - math.floor(0.99 * (n_cells - 1)), math.ceil(0.02 * n_cells))
    planted = []
    for other, trap in zip(others, traps, strict=True):
        needed = len(lists[other]) * (scores[target] - scores[other])
        value = dense[in_target, trap].mean() + needed + TRAP_MARGIN
        cells = rng.choice(np.flatnonzero(labels == other), n_planted, replace=False)
        dense[cells, trap] = value
        planted.append(value)
    return classifier, [str(genes[t]) for t in traps], np.array(planted)


def closed_form_flips(frame: pd.DataFrame, labels: np.ndarray, target: str,
                      classifier: MarkerClassifier) -> list[str]:
    """Every gene that flips the target cluster when set alone to perc99 (exact, no search)."""
    block = frame[classifier.columns].to_numpy()
    mean = block[labels == target].mean(axis=0)
    shift = np.quantile(block, 0.99, axis=0) - mean
    base = mean @ classifier.weights
    shifted = base[None, :] + shift[:, None] * classifier.weights  # marker genes × types
    flips = np.argmax(shifted, axis=1) != np.argmax(base)
    return [classifier.columns[i] for i in np.flatnonzero(flips)]


def copy_and_modify(X: pd.DataFrame, mask: np.ndarray, genes: list[str]) -> pd.DataFrame:
    """adverSCarial's `advModifications(perc99)`: full copy, quantile of the genes on the copy, assign."""
    modified = X.copy()
    if genes:
        values = np.quantile(modified[genes].to_numpy(), 0.99, axis=0)
        modified.loc[mask, genes] = np.broadcast_to(values, (int(mask.sum()), len(genes)))
    return modified


class NaiveSingleGene:
    """Literal port of upstream `advSingleGene` (perc99): depth-first recursion, a full copy per call."""

    def __init__(self, X: pd.DataFrame, clusters: np.ndarray, target: str,
                 classifier: Callable[[pd.DataFrame, np.ndarray, str], tuple[str, float]]) -> None:
        self.X, self.clusters, self.target, self.classifier = X, clusters, target, classifier
        self.mask = np.asarray(clusters) == target
        self.n_calls = 0

    def classify(self, genes: list[str]) -> tuple[str, float]:
        self.n_calls += 1
        return self.classifier(copy_and_modify(self.X, self.mask, genes), self.clusters, self.target)

    def run(self, first_dichot: int = FIRST_DICHOT, max_split_size: int = 1) -> dict[str, tuple[str, float]]:
        """Flipping genes (joined with "__" for groups) → (new label, score), in discovery order."""
        baseline = self.classify([])[0]
        found: dict[str, tuple[str, float]] = {}

        def bisect(genes: list[str]) -> None:
            for half in (genes[0::2], genes[1::2]):  # R: positions 1, 3, 5, … then 2, 4, …
                if not half:
                    continue
                label, score = self.classify(half)
                if label == baseline:
                    continue
                if len(half) <= max_split_size:
                    found["__".join(half)] = (label, score)
                else:
                    bisect(half)

        candidates = list(self.X.columns)
        for index in range(first_dichot):
            if candidates[index::first_dichot]:
                bisect(candidates[index::first_dichot])
        return found


def bench_dichotomic(frame: pd.DataFrame, labels: np.ndarray, target: str, classifier: MarkerClassifier,
                     traps: list[str], planted: np.ndarray, cfg: Config) -> None:
    """Part A: vulnbench's batched dichotomic search vs the naive sequential port."""
    header(f"A. dichotomic single-gene attack, cheap marker classifier, "
           f"{frame.shape[0]:,} cells × {frame.shape[1]:,} genes")
    truth = closed_form_flips(frame, labels, target, classifier)
    line("target cluster (cells)", f"{target} ({int((labels == target).sum())})")
    line("classifier", f"{len(classifier.types)} types × {N_CLASSIFIER_MARKERS} markers, mean + argmax")
    line("trap genes planted", f"{len(traps)} (perc99 {planted.min():.2f}–{planted.max():.2f} log1p-CP10k)")
    line("single genes that flip (closed form, all)", f"{len(truth)} ({len(set(truth) & set(traps))} traps)")
    classifier(frame, labels, target)  # warm-up

    def attack(stats: GeneStats | None = None) -> pd.DataFrame:
        return single_gene(frame, labels, target, classifier, method="perc99", search="dichotomic",
                           stats=stats)

    attack()  # warm-up
    runs = [timed(attack) for _ in range(N_REPEATS)]
    result, t_fast = runs[0][0], float(np.median([t for _, t in runs]))
    stats = GeneStats(as_expression(frame))
    stats.quantile(0.99)
    t_shared = float(np.median([timed(lambda: attack(stats))[1] for _ in range(N_REPEATS)]))
    _, t_classifier = timed(lambda: [classifier(frame, labels, target) for _ in range(100)])
    t_classifier *= result.attrs["n_calls"] / 100
    naive = NaiveSingleGene(frame, labels, target, classifier)
    found, t_naive = timed(naive.run)
    assert result.attrs["baseline_label"] == target, result.attrs["baseline_label"]
    assert list(result["gene"]) == list(found), (list(result["gene"]), list(found))
    assert list(result["new_label"]) == [label for label, _ in found.values()]
    assert result.attrs["n_calls"] == naive.n_calls, (result.attrs["n_calls"], naive.n_calls)
    assert set(result["gene"]) <= set(truth)
    line("vulnbench wall time", f"{t_fast:.3f} s (median of {N_REPEATS}, after a warm-up)")
    line("  of which classifier calls (estimated)", f"{t_classifier:.3f} s")
    line("  with precomputed GeneStats (stats=)", f"{t_shared:.3f} s (perc99 of all genes computed beforehand)")
    line("vulnbench n_evaluations / n_calls", f"{result.attrs['n_evaluations']} / {result.attrs['n_calls']}")
    line("vulnbench flipping genes found", f"{len(result)} of {len(truth)}")
    line("naive port wall time", f"{t_naive:.2f} s")
    line("naive port calls / genes found", f"{naive.n_calls} / {len(found)} (same genes, same calls: ok)")
    line("adverSCarial 1.3.13 (R, full sizes)", f"{R_DICHOTOMIC_S} s, {R_DICHOTOMIC_CALLS} calls")
    print(f"ratio dichotomic naive/vulnbench: {t_naive / t_fast:.1f}x (target: vulnbench ≤ "
          f"{TARGET_DICHOTOMIC_S} s, {verdict(cfg, t_fast, TARGET_DICHOTOMIC_S)})")
    if cfg.name == "full":
        print(f"ratio dichotomic R/vulnbench: {R_DICHOTOMIC_S / t_fast:.1f}x (R time from the reference run)")


# -- part B: scMLP, exhaustive --------------------------------------------------------------------------


def bench_exhaustive(frame: pd.DataFrame, labels: np.ndarray, target: str, cfg: Config) -> None:
    """Part B: exhaustive search with scMLP vs the generic stacked path and one call per gene."""
    header(f"B. exhaustive single-gene attack, scMLP, all {frame.shape[1]:,} genes")
    with contextlib.redirect_stderr(io.StringIO()):  # scMLP's epoch progress bar
        mlp, t_train = timed(lambda: ScMLP(epochs=cfg.epochs, seed=0).fit(frame, labels))
    mask = labels == target
    line("scMLP training", f"{cfg.epochs} epochs (paper: 20; speed benchmark only), {t_train:.1f} s")
    line("validation accuracy", f"{mlp.history_[-1].get('val_accuracy', float('nan')):.3f}")
    line("target cluster (cells)", f"{target} ({int(mask.sum())})")
    block = mlp.align(frame, rows=mask)
    mlp.predict_proba_perturbed(block[:4], [(np.array([0]), np.array([1.0], dtype=np.float32))])  # warm-up
    mlp(frame, labels, target)

    with contextlib.redirect_stderr(io.StringIO()):  # scMLP's batch progress bar
        result, t_fast = timed(lambda: single_gene(frame, labels, target, mlp, method="perc99",
                                                   search="exhaustive"))
    n_genes = frame.shape[1]
    line("vulnbench wall time", f"{t_fast:.2f} s")
    line("vulnbench n_evaluations / n_calls", f"{result.attrs['n_evaluations']} / {result.attrs['n_calls']}")
    line("flipping genes", f"{len(result)} (baseline label {result.attrs['baseline_label']})")

    rng = np.random.default_rng(0)
    subset = np.sort(rng.choice(n_genes, cfg.n_stacked, replace=False))
    values = np.quantile(frame.to_numpy()[:, subset], 0.99, axis=0).astype(np.float32)
    perturbations = [(np.array([g]), values[i : i + 1]) for i, g in enumerate(subset)]
    fast, t_fast_subset = timed(lambda: mlp.predict_proba_perturbed(block, perturbations))
    generic, t_generic = timed(lambda: PerCellClassifier.predict_proba_perturbed(mlp, block, perturbations))
    assert np.allclose(fast, generic, atol=1e-4), float(np.abs(fast - generic).max())
    t_generic_all = t_generic * n_genes / len(subset)
    line(f"fast path, {len(subset)} perturbations", f"{t_fast_subset:.3f} s")
    line(f"generic stacked path, {len(subset)} perturbations", f"{t_generic:.2f} s")
    line("  extrapolated to all genes", f"{t_generic_all:.0f} s (linear extrapolation)")
    line("fast vs generic probabilities", f"allclose, max |diff| {np.abs(fast - generic).max():.1e}")

    per_call = subset[:: max(1, len(subset) // cfg.n_per_call)][: cfg.n_per_call]
    names = list(frame.columns[per_call])

    def one_call_per_gene() -> list[str]:
        return [mlp(copy_and_modify(frame, mask, [gene]), labels, target)[0] for gene in names]

    per_gene_labels, t_calls = timed(one_call_per_gene)
    t_calls_all = t_calls * n_genes / len(names)
    flipped = dict(zip(result["gene"], result["new_label"], strict=True))
    agree = sum(flipped.get(g, result.attrs["baseline_label"]) == lab
                for g, lab in zip(names, per_gene_labels, strict=True))
    line(f"one call per gene (copy + modify), {len(names)} genes", f"{t_calls:.2f} s")
    line("  extrapolated to all genes", f"{t_calls_all:.0f} s (linear extrapolation)")
    line("  labels agreeing with vulnbench", f"{agree}/{len(names)}")
    print(f"ratio exhaustive generic-stacked/vulnbench: {t_generic_all / t_fast:.1f}x (extrapolated)")
    print(f"ratio exhaustive one-call-per-gene/vulnbench: {t_calls_all / t_fast:.1f}x "
          f"(extrapolated; target: vulnbench ≤ {TARGET_EXHAUSTIVE_S:.0f} s, "
          f"{verdict(cfg, t_fast, TARGET_EXHAUSTIVE_S)})")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a few-second smoke run")
    cfg = QUICK if parser.parse_args(argv).quick else FULL
    torch.set_num_threads(2)
    started = time.perf_counter()
    dense, labels, markers = make_data(cfg)
    genes = pd.Index([f"gene{j}" for j in range(cfg.n_genes)])
    target, sizes = pick_target(labels, cfg.target_size)
    classifier, traps, planted = plant_traps(dense, labels, markers, genes, target)
    frame = pd.DataFrame(dense, index=[f"cell{i}" for i in range(cfg.n_cells)], columns=genes, copy=False)
    print(f"single-gene benchmark ({cfg.name}): synthetic_counts seed 0, "
          f"log1p CP10k, dense float64 DataFrame {frame.shape[0]:,} × {frame.shape[1]:,}; "
          f"torch threads {torch.get_num_threads()}")
    print("  cluster sizes: " + ", ".join(f"{t} {n}" for t, n in sizes.items()))
    bench_dichotomic(frame, labels, target, classifier, traps, planted, cfg)
    bench_exhaustive(frame, labels, target, cfg)
    print(f"\ntotal benchmark time: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
