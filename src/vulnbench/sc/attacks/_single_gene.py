"""Single-gene attack: every gene that, modified alone on the target cluster, flips its label."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from vulnbench.core.errors import ConfigError
from vulnbench.sc.expression import ExpressionInput, as_expression, as_labels, target_mask
from vulnbench.sc.modifications import GeneStats, Modification
from vulnbench.sc.oracle import ClusterOracle, Prediction, make_oracle

log = logging.getLogger(__name__)

Search = Literal["dichotomic", "exhaustive"]
ChangeType = Literal["any", "not_na"]
SEARCHES: tuple[str, ...] = get_args(Search)
CHANGE_TYPES: tuple[str, ...] = get_args(ChangeType)
#: gene sets per oracle call in the exhaustive search (bounded so progress shows and memory stays flat)
EXHAUSTIVE_CHUNK = 4096

Path = tuple[int, ...]


def candidate_genes(gene_names: pd.Index, genes: Sequence[str] | None, exclude_genes: Iterable[str]) -> np.ndarray:
    """Column indices to attack, in column order (or the order of `genes`), minus the excluded ones."""
    excluded = set(map(str, exclude_genes))
    if genes is None:
        names = [g for g in gene_names if g not in excluded]
    else:
        names = [g for g in dict.fromkeys(map(str, genes)) if g not in excluded]
        unknown = [g for g in names if g not in gene_names]
        if unknown:
            raise ConfigError(f"genes not in the data: {', '.join(unknown[:5])}")
    return gene_names.get_indexer(names).astype(np.intp)


def interleaved_halves(genes: np.ndarray, path: Path) -> list[tuple[Path, np.ndarray]]:
    """adverSCarial's split: odd positions first, then even positions; empty halves are dropped."""
    halves = [((*path, 0), genes[0::2]), ((*path, 1), genes[1::2])]
    return [(p, h) for p, h in halves if h.size]


def single_gene(
    X: ExpressionInput,
    clusters: Sequence[str],
    target: str,
    classifier: Any,
    *,
    method: str = "perc99",
    fixed_value: float = 3,
    fct: Callable[..., object] | None = None,
    legacy: bool = False,
    seed: int | None = None,
    search: Search = "dichotomic",
    first_dichot: int = 100,
    max_split_size: int = 1,
    return_first_found: bool = False,
    change_type: ChangeType = "any",
    genes: Sequence[str] | None = None,
    exclude_genes: Iterable[str] = (),
    non_labels: Iterable[str] = ("NA",),
    stats: GeneStats | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Find genes whose modification alone (method on the target cells) changes the cluster's label.

    `search="dichotomic"` reproduces adverSCarial's `advSingleGene` group testing (round-robin slices,
    interleaved halves, recursion on flipping halves) and evaluates the same candidate sets, but all
    candidates of one recursion depth go to the classifier together. `search="exhaustive"` tests every
    gene alone, which is exact (no compensation can hide a flip) and, batched, cheap for per-cell models.

    `method` is any modification mode (see `vulnbench.sc.modifications`); `seed` drives `random`.
    Returns a frame `gene, new_label, score` (a gene group of up to `max_split_size` genes is joined
    with "__"); `attrs` holds `n_evaluations` (candidate sets classified, baseline included), `n_calls`
    (classifier invocations), `baseline_label`, `n_candidates` and `runtime_s`.

    Args:
        method: modification of the target cells' genes: perc1, perc99, random, positive_aberrant, negative_aberrant,
            decile±X, fixed
        fixed_value: value the genes take with method 'fixed' (expression units, log-normalised)
        fct: Python function for the *_fct modification modes (not settable in a config file)
        legacy: reproduce adverSCarial 1.3.13's quirks of 'random' (one shared vector) and decile±X (off by one)
        seed: seed of the attack's random draws; null: the job's own seed (top-level seed, job, cluster)
        search: dichotomic: adverSCarial's group testing (advSingleGene); exhaustive: every gene tested alone
        first_dichot: number of round-robin slices the candidate genes are cut into before bisection
        max_split_size: flipping gene groups of at most this size are reported, not split further (1: single genes)
        return_first_found: stop at the first flipping gene (group), searching depth-first
        change_type: any: every label change counts; not_na: changes to a non-label (non_labels, 'NA') are ignored
        genes: candidate genes to test (null: every gene of the data)
        exclude_genes: genes never modified or tested (e.g. known markers)
        non_labels: labels that do not count as a flip when change_type is not_na
    """
    started = time.perf_counter()
    if search not in SEARCHES:
        raise ConfigError(f"unknown search {search!r} (known: {', '.join(SEARCHES)})")
    if change_type not in CHANGE_TYPES:
        raise ConfigError(f"unknown change_type {change_type!r} (known: {', '.join(CHANGE_TYPES)})")
    if int(first_dichot) < 1 or int(max_split_size) < 1:
        raise ConfigError("first_dichot and max_split_size must be at least 1")
    expression = as_expression(X)
    labels = as_labels(clusters, expression.n_cells)
    target_mask(labels, target)
    modification = Modification(method, fixed_value, fct, legacy)
    oracle = make_oracle(classifier, expression, labels, target, modification, stats, seed)
    candidates = candidate_genes(expression.genes, genes, exclude_genes)
    baseline = oracle.baseline
    ignored = set(non_labels) if change_type == "not_na" else set()

    if search == "exhaustive":
        found = _exhaustive(oracle, candidates, baseline, ignored, progress)
    elif return_first_found:
        found = _dichotomic_first(oracle, candidates, baseline, ignored, int(first_dichot), int(max_split_size))
    else:
        found = _dichotomic(oracle, candidates, baseline, ignored, int(first_dichot), int(max_split_size), progress)

    found.sort(key=lambda item: item[0])
    names = expression.genes
    result = pd.DataFrame(
        {
            "gene": ["__".join(names[g]) for _, g, _ in found],
            "new_label": [p.label for _, _, p in found],
            "score": [p.score for _, _, p in found],
        }
    )
    result.attrs.update(
        n_evaluations=oracle.n_evaluations,
        n_calls=oracle.n_calls,
        baseline_label=baseline.label,
        baseline_score=baseline.score,
        n_candidates=int(candidates.size),
        runtime_s=time.perf_counter() - started,
    )
    log.info("single_gene %s/%s on %r: %d flipping, %d evaluations, %d calls, %.2fs", method, search, target,
             len(result), oracle.n_evaluations, oracle.n_calls, result.attrs["runtime_s"])
    return result


Found = list[tuple[Path, np.ndarray, Prediction]]


def _flips(prediction: Prediction, baseline: Prediction) -> bool:
    return prediction.label != baseline.label


def _exhaustive(oracle: ClusterOracle, candidates: np.ndarray, baseline: Prediction, ignored: set[str],
                progress: bool) -> Found:
    found: Found = []
    for start in tqdm(range(0, candidates.size, EXHAUSTIVE_CHUNK), disable=not progress, desc="genes",
                      unit="chunk"):
        chunk = candidates[start : start + EXHAUSTIVE_CHUNK]
        for offset, prediction in enumerate(oracle.evaluate([chunk[i : i + 1] for i in range(chunk.size)])):
            if _flips(prediction, baseline) and prediction.label not in ignored:
                found.append(((start + offset,), chunk[offset : offset + 1], prediction))
    return found


def _dichotomic(oracle: ClusterOracle, candidates: np.ndarray, baseline: Prediction, ignored: set[str],
                first_dichot: int, max_split_size: int, progress: bool) -> Found:
    """Breadth-first version of the upstream recursion: same candidate sets, one batch per depth."""
    frontier: list[tuple[Path, np.ndarray]] = []
    for index in range(first_dichot):
        frontier += interleaved_halves(candidates[index::first_dichot], (index,))
    found: Found = []
    with tqdm(disable=not progress, desc="dichotomic depth", unit="depth") as bar:
        while frontier:
            predictions = oracle.evaluate([genes for _, genes in frontier])
            deeper: list[tuple[Path, np.ndarray]] = []
            for (path, genes), prediction in zip(frontier, predictions, strict=True):
                if not _flips(prediction, baseline):
                    continue
                if genes.size <= max_split_size:
                    if prediction.label not in ignored:
                        found.append((path, genes, prediction))
                else:
                    deeper += interleaved_halves(genes, path)
            frontier = deeper
            bar.update()
    return found


def _dichotomic_first(oracle: ClusterOracle, candidates: np.ndarray, baseline: Prediction, ignored: set[str],
                      first_dichot: int, max_split_size: int) -> Found:
    """Depth-first, one candidate at a time, stopping at the first result (upstream `returnFirstFound`)."""
    found: Found = []

    def bisect(genes: np.ndarray, path: Path) -> None:
        for half_path, half in interleaved_halves(genes, path):
            if found:
                return
            prediction = oracle.evaluate([half])[0]
            if not _flips(prediction, baseline):
                continue
            if half.size <= max_split_size:
                if prediction.label not in ignored:
                    found.append((half_path, half, prediction))
            else:
                bisect(half, half_path)

    for index in range(first_dichot):
        if found:
            break
        bisect(candidates[index::first_dichot], (index,))
    return found
