"""Multi-gene min-change attacks on a short gene list: adverSCarial's grid search and random walk.

Both look for a combination (gene → modification, or "leave unmodified") that flips the target cluster's
label while touching as few genes as possible. Every candidate goes through the batched cluster oracle,
and the new values of gene g under modification j are computed once and reused by every candidate.

`legacy=True` reproduces adverSCarial 1.3.13 (`advGridMinChange`, `advRandWalkMinChange`): a flip is a label
different from the cluster's *name*, and the grid stops at the first flipping row of its enumeration (which
modifies every gene). The default compares with the baseline prediction on unmodified data, and the grid
enumerates by increasing number of modified genes, i.e. it is a true minimal search.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from vulnbench.core.errors import ConfigError
from vulnbench.sc.attacks._signature import GeneOrder, ranked_genes
from vulnbench.sc.attacks._single_gene import CHANGE_TYPES, ChangeType, candidate_genes
from vulnbench.sc.expression import ExpressionInput, as_expression, as_labels, target_mask
from vulnbench.sc.modifications import GeneStats, Modification
from vulnbench.sc.oracle import ClusterOracle, PerCellOracle, Prediction, make_oracle

log = logging.getLogger(__name__)

ModificationItem = Sequence[Any] | Mapping[str, Any] | Modification | str
DEFAULT_MODIFICATIONS: tuple[tuple[str, ...], ...] = (("perc1",), ("perc99",))
#: candidates per oracle call (bounds memory; a per-cell model still scores them in few forward passes)
CHUNK = 4096
#: upstream's refusal threshold for the grid
MAX_COMBINATIONS = 100_000
RESULT_COLUMNS = ("prediction", "odd", "genesModified", "typeModified")
DICT_KEYS = {"method", "value", "fct", "fn", "id"}

#: an assignment: per gene, the 0-based modification index, or m (= number of modifications) for "unmodified"
Assignment = tuple[int, ...]


# -- modification list ------------------------------------------------------------------------------------

def parse_modifications(modifications: Iterable[ModificationItem],
                        legacy: bool = False) -> list[tuple[str, Modification]]:
    """adverSCarial's modification list → [(id, Modification)], ids as upstream column names.

    Items: R-style tuples `("perc1",)`, `("fixed", 1000)`, `("full_row_fct", f)` (a bare string counts as a
    1-tuple), dicts `{"method", "value", "fct", "id"}` or `Modification` objects. The id joins the items
    with "_" (`"fixed_1000"`; a function gives its `__name__`); ids must be unique so that result columns
    and overview columns are unambiguous.
    """
    if isinstance(modifications, str | Mapping | Modification):
        raise ConfigError("modifications must be a list of items such as ('perc1',) or ('fixed', 1000)")
    parsed = [_parse_item(item, legacy) for item in modifications]
    if not parsed:
        raise ConfigError("the modification list is empty")
    ids = [i for i, _ in parsed]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise ConfigError(f"duplicated modification id(s) {', '.join(duplicated)}: give dict items an explicit 'id'")
    return parsed


def _parse_item(item: ModificationItem, legacy: bool) -> tuple[str, Modification]:
    if isinstance(item, Modification):
        modification = Modification(item.method, item.fixed_value, item.fct, legacy)
        extra = item.fct if callable(item.fct) else (item.fixed_value if item.method == "fixed" else None)
        return _item_id(item.method, extra), modification
    if isinstance(item, str):
        item = (item,)
    if isinstance(item, Mapping):
        unknown = set(item) - DICT_KEYS
        if unknown or "method" not in item:
            raise ConfigError(f"modification {dict(item)!r}: needs 'method', may have 'value', 'fct', 'id'")
        method, value, fct = item["method"], item.get("value"), item.get("fct", item.get("fn"))
        extra = fct if fct is not None else value
        modification = _build(method, value, fct, legacy, item)
        return str(item.get("id") or _item_id(method, extra)), modification
    if not isinstance(item, Sequence) or not 1 <= len(item) <= 2 or not isinstance(item[0], str):
        raise ConfigError(f"modification {item!r}: expected ('method',) or ('method', value or function)")
    method, extra = item[0], (item[1] if len(item) == 2 else None)
    if callable(extra):
        return _item_id(method, extra), _build(method, None, extra, legacy, item)
    return _item_id(method, extra), _build(method, extra, None, legacy, item)


def _build(method: Any, value: Any, fct: Any, legacy: bool, item: object) -> Modification:
    if not isinstance(method, str):
        raise ConfigError(f"modification {item!r}: the method must be a string")
    if fct is not None and not callable(fct):
        raise ConfigError(f"modification {item!r}: 'fct' must be a function")
    if value is None:
        return Modification(method, fct=fct, legacy=legacy)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"modification {item!r}: the value must be a number or a function") from None
    return Modification(method, number, fct, legacy)


def _item_id(method: str, extra: Any) -> str:
    if extra is None:
        return method
    if callable(extra):
        return f"{method}_{getattr(extra, '__name__', type(extra).__name__)}"
    if isinstance(extra, str):
        return f"{method}_{extra}"
    return f"{method}_{format(float(extra), 'g')}"


# -- shared machinery ---------------------------------------------------------------------------------------

class _Candidates:
    """Turns assignments into oracle candidates; each gene × modification value is computed once.

    Upstream recomputes a gene's values for every row, on the partly modified matrix; for per-gene methods this
    gives the same values (a gene's own column is untouched until it is modified), except that `random` is
    drawn once per gene here instead of once per row.
    """

    def __init__(self, oracle: ClusterOracle, genes: np.ndarray, gene_names: list[str],
                 modifications: list[tuple[str, Modification]]) -> None:
        self.genes = genes
        self.gene_names = gene_names
        self.ids = [i for i, _ in modifications]
        self.unmodified = len(modifications)
        n_target = oracle.rows.size
        self.n_target = n_target
        # values[g][j]: a float (same value on every target cell) or an (n_target,) vector
        self.values: list[list[float | np.ndarray]] = []
        for gene in genes:
            row: list[float | np.ndarray] = []
            for _, modification in modifications:
                value = np.asarray(modification.values(oracle.stats, np.array([gene], dtype=np.intp), oracle.rows,
                                                       oracle.rng), dtype=np.float64)
                row.append(float(value.ravel()[0]) if value.ndim == 1 else value.reshape(n_target))
            self.values.append(row)

    def candidate(self, assignment: Assignment) -> tuple[np.ndarray, np.ndarray]:
        positions = [p for p, j in enumerate(assignment) if j != self.unmodified]
        chosen = [self.values[p][assignment[p]] for p in positions]
        genes = self.genes[positions] if positions else np.empty(0, dtype=np.intp)
        if all(isinstance(v, float) for v in chosen):
            return genes, np.asarray(chosen, dtype=np.float64)
        block = np.column_stack([np.broadcast_to(np.asarray(v, dtype=np.float64), (self.n_target,))
                                 for v in chosen])
        return genes, block

    def n_modified(self, assignment: Assignment) -> int:
        return sum(j != self.unmodified for j in assignment)

    def labels(self, assignment: Assignment) -> list[str]:
        return ["NA" if j == self.unmodified else self.ids[j] for j in assignment]


def _row(candidates: _Candidates, assignment: Assignment, prediction: Prediction, flipped: bool,
         **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"prediction": prediction.label, "odd": prediction.score,
                           "genesModified": candidates.n_modified(assignment), "typeModified": bool(flipped)}
    row.update(extra)
    row.update(zip(candidates.gene_names, candidates.labels(assignment), strict=True))
    return row


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """Upstream's output order: flips first, then fewer modified genes; ties keep their order (stable)."""
    frame = pd.DataFrame(rows, columns=columns).astype({"odd": float, "genesModified": int, "typeModified": bool})
    order = np.lexsort((frame["genesModified"].to_numpy(), ~frame["typeModified"].to_numpy()))
    return frame.iloc[order].reset_index(drop=True)


def _until_flip(oracle: ClusterOracle, candidates: _Candidates, assignments: Iterable[Assignment],
                is_flip: Callable[[Prediction], bool], sizes: Iterator[int]) -> list[tuple[Assignment, Prediction]]:
    """Evaluate in chunks of the given sizes and keep everything up to (and including) the first flip."""
    kept: list[tuple[Assignment, Prediction]] = []
    pending = iter(assignments)
    while chunk := list(itertools.islice(pending, next(sizes))):
        predictions = oracle.evaluate_values([candidates.candidate(a) for a in chunk])
        for assignment, prediction in zip(chunk, predictions, strict=True):
            kept.append((assignment, prediction))
            if is_flip(prediction):
                return kept
    return kept


def _chunk_sizes(oracle: ClusterOracle, *, doubling: bool) -> Iterator[int]:
    """Callables cost one call per candidate whatever the chunk: go one by one and stop exactly where
    upstream stops. Per-cell models batch for free: double the chunk (or take it whole) up to `CHUNK`."""
    if not isinstance(oracle, PerCellOracle):
        return itertools.repeat(1)
    if not doubling:
        return itertools.repeat(CHUNK)
    return (min(CHUNK, 2**i) for i in itertools.count())


def _setup(X: ExpressionInput, clusters: Sequence[str], target: str, classifier: Any, genes: Sequence[str] | str,
           modifications: Iterable[ModificationItem], legacy: bool, seed: int | None,
           stats: GeneStats | None) -> tuple[ClusterOracle, _Candidates]:
    expression = as_expression(X)
    labels = as_labels(clusters, expression.n_cells)
    target_mask(labels, target)
    if isinstance(genes, str):
        genes = [genes]
    if genes is None or len(genes) == 0:
        raise ConfigError("genes must name at least one gene to attack")
    parsed = parse_modifications(modifications, legacy)
    columns = candidate_genes(expression.genes, genes, ())
    clashing = sorted(set(expression.genes[columns]) & {*RESULT_COLUMNS, "iteration"})
    if clashing:
        raise ConfigError(f"gene name(s) {', '.join(clashing)} clash with result columns; rename them first")
    oracle = make_oracle(classifier, expression, labels, target, parsed[0][1], stats, seed)
    candidates = _Candidates(oracle, columns, [str(g) for g in expression.genes[columns]], parsed)
    return oracle, candidates


# -- grid ----------------------------------------------------------------------------------------------------

def grid_min_change(
    X: ExpressionInput,
    clusters: Sequence[str],
    target: str,
    classifier: Any,
    genes: Sequence[str],
    *,
    modifications: Iterable[ModificationItem] = DEFAULT_MODIFICATIONS,
    return_first_found: bool = False,
    legacy: bool = False,
    iamsure: bool = False,
    max_combinations: int = MAX_COMBINATIONS,
    seed: int | None = None,
    stats: GeneStats | None = None,
) -> pd.DataFrame:
    """Try combinations of modifications on a few genes to find the smallest one that flips the label.

    Default: candidates are enumerated by increasing number of modified genes k (within k in upstream's
    order), one batch per k; `return_first_found=True` stops after the first k with a flip, so the flips
    returned are exactly the minimal ones; otherwise every combination is evaluated. The unmodified
    combination is the baseline itself and is not repeated.

    `legacy=True` is adverSCarial 1.3.13's `advGridMinChange`: all (m+1)^G combinations in lexicographic
    order (the first modifies every gene with modification 1, the last modifies nothing), flip = label ≠
    `target`, stop at the first flip whatever `return_first_found` says; no baseline call.

    More than `max_combinations` combinations are refused (empty frame, logged) unless `iamsure`.
    Returns `prediction, odd, genesModified, typeModified` + one column per gene (modification id or "NA")
    for every evaluated combination, flips first then fewer genes; `attrs`: `n_evaluations`, `n_calls`,
    `baseline_label` (None in legacy mode), `n_combinations`, `runtime_s`. With a callable classifier
    `n_evaluations` counts exactly the rows returned (+ the baseline); a per-cell model may score a few rows
    past the legacy stop, batched for free.
    """
    started = time.perf_counter()
    if int(max_combinations) < 1:
        raise ConfigError("max_combinations must be at least 1")
    oracle, candidates = _setup(X, clusters, target, classifier, genes, modifications, legacy, seed, stats)
    n_genes, n_mods = len(candidates.genes), candidates.unmodified
    total = (n_mods + 1) ** n_genes
    columns = [*RESULT_COLUMNS, *candidates.gene_names]
    baseline_label: str | None = None
    if total > int(max_combinations) and not iamsure:
        log.warning("Exit because of too many combinations to test: %d (> %d). Lower the number of genes and/or "
                    "of modifications (5 genes and 2 modifications give 243), or pass iamsure=True.", total,
                    int(max_combinations))
        rows: list[dict[str, Any]] = []
    elif legacy:
        name = str(target)
        enumeration = itertools.product(range(n_mods + 1), repeat=n_genes)
        evaluated = _until_flip(oracle, candidates, enumeration, lambda p: p.label != name,
                                _chunk_sizes(oracle, doubling=True))
        rows = [_row(candidates, a, p, p.label != name) for a, p in evaluated]
    else:
        baseline_label = oracle.baseline.label
        rows = []
        for k in range(1, n_genes + 1):
            level = _level(n_genes, n_mods, k)
            n_flips = 0
            while chunk := list(itertools.islice(level, CHUNK)):
                predictions = oracle.evaluate_values([candidates.candidate(a) for a in chunk])
                for assignment, prediction in zip(chunk, predictions, strict=True):
                    flipped = prediction.label != baseline_label
                    n_flips += flipped
                    rows.append(_row(candidates, assignment, prediction, flipped))
            log.debug("grid on %r: %d genes modified, %d flips, %d evaluations", target, k, n_flips,
                      oracle.n_evaluations)
            if return_first_found and n_flips:
                break
    result = _frame(rows, columns)
    result.attrs.update(
        n_evaluations=oracle.n_evaluations,
        n_calls=oracle.n_calls,
        baseline_label=baseline_label,
        n_combinations=total,
        runtime_s=time.perf_counter() - started,
    )
    log.info("grid_min_change on %r (%s): %d rows, %d flips, %d evaluations, %d calls, %.2fs", target,
             "legacy" if legacy else "baseline", len(result), int(result["typeModified"].sum()),
             oracle.n_evaluations, oracle.n_calls, result.attrs["runtime_s"])
    return result


def _level(n_genes: int, n_mods: int, k: int) -> Iterator[Assignment]:
    """Assignments with exactly k modified genes, in the lexicographic order of the full grid."""

    def walk(position: int, left: int, prefix: tuple[int, ...]) -> Iterator[Assignment]:
        remaining = n_genes - position
        if remaining == 0:
            yield prefix
            return
        if left > 0:
            for j in range(n_mods):
                yield from walk(position + 1, left - 1, (*prefix, j))
        if remaining > left:
            yield from walk(position + 1, left, (*prefix, n_mods))

    return walk(0, k, ())


# -- random walk ----------------------------------------------------------------------------------------------

def random_walk_min_change(
    X: ExpressionInput,
    clusters: Sequence[str],
    target: str,
    classifier: Any,
    genes: Sequence[str],
    *,
    modifications: Iterable[ModificationItem] = DEFAULT_MODIFICATIONS,
    first_batch: int = 100,
    walk_length: int = 100,
    step_change_ratio: float = 0.2,
    while_max_count: int = 10000,
    change_type: ChangeType = "any",
    non_labels: Iterable[str] = ("NA",),
    legacy: bool = False,
    seed: int | None = None,
    stats: GeneStats | None = None,
) -> pd.DataFrame:
    """Random search for a flipping combination with few modified genes, for lists too long for the grid.

    adverSCarial's `advRandWalkMinChange`. Seed batch: if (m+1)^G > `first_batch`, the m rows "every gene
    with modification i" (i = m … 1) then `first_batch` − m distinct uniform random rows, else the full grid.
    Upstream classifies them in order up to the first flip; here a per-cell model gets the whole batch in one
    call (callables, which cost a call per row anyway, stop at the first flip) and only the rows up to the
    first flip are reported. The first flip seeds the walk: each step resamples every modified position of
    the best attack with probability 1/round(1/`step_change_ratio`) and every unmodified one with probability
    1/round(√u/`step_change_ratio`) (u = unmodified positions of the previous proposal, 0 → never) until the
    proposal is new and modifies strictly fewer genes (at most `while_max_count` + 1 proposals, then stop);
    a flipping proposal becomes the best.

    Flip: label ≠ `target` in legacy mode, ≠ the baseline label otherwise; with `change_type="not_na"`,
    labels in `non_labels` do not count (legacy: not for the seed batch, as upstream). All randomness comes
    from `np.random.default_rng(seed)`.
    Returns `prediction, odd, genesModified, typeModified, iteration` + one column per gene, smallest
    flipping attack first; `attrs`: `n_evaluations`, `n_calls`, `baseline_label` (None in legacy mode),
    `best_genes_modified` (None without a flip), `stop_reason` ("no_seed_flip", "walk_length", "while_max_count"
    or "minimal": no smaller untried combination is left), `runtime_s`.
    """
    started = time.perf_counter()
    if change_type not in CHANGE_TYPES:
        raise ConfigError(f"unknown change_type {change_type!r} (known: {', '.join(CHANGE_TYPES)})")
    if int(first_batch) < 1 or int(walk_length) < 0 or int(while_max_count) < 0:
        raise ConfigError("first_batch must be at least 1, walk_length and while_max_count at least 0")
    if not 0 < float(step_change_ratio) <= 1:
        raise ConfigError(f"step_change_ratio must be in (0, 1], got {step_change_ratio!r}")
    oracle, candidates = _setup(X, clusters, target, classifier, genes, modifications, legacy, seed, stats)
    rng = oracle.rng  # np.random.default_rng(seed): one stream for the `random` method and the walk
    n_genes, n_mods = len(candidates.genes), candidates.unmodified
    ignored = set(map(str, non_labels)) if change_type == "not_na" else set()
    reference = str(target) if legacy else oracle.baseline.label

    def changed(prediction: Prediction) -> bool:
        return prediction.label != reference

    def counts(prediction: Prediction) -> bool:
        return changed(prediction) and prediction.label not in ignored

    seed_flip = changed if legacy else counts
    batch = _seed_batch(rng, n_genes, n_mods, int(first_batch))
    sizes = _chunk_sizes(oracle, doubling=False)
    evaluated = _until_flip(oracle, candidates, batch, seed_flip, sizes)
    seed_rows = [_row(candidates, a, p, seed_flip(p), iteration=1) for a, p in evaluated]
    seen = {a for a, _ in evaluated}
    if not legacy:  # the unmodified combination is the baseline: never worth a walk step
        seen.add(tuple([n_mods] * n_genes))
    flips = [a for a, p in evaluated if seed_flip(p)]
    walk_rows: list[dict[str, Any]] = []
    best: np.ndarray | None = None
    stop_reason = "no_seed_flip"
    if not flips:
        log.warning("No modified type, try with a higher first_batch argument (%d rows tried)", len(evaluated))
    else:
        best = np.array(flips[0], dtype=np.intp)
        stop_reason = "walk_length"
        for step in range(1, int(walk_length) + 1):
            n_best = int((best != n_mods).sum())
            if _all_smaller_tried(n_best, n_genes, n_mods, seen):
                log.info("Every combination with fewer than %d modified genes was tried, stopping the walk", n_best)
                stop_reason = "minimal"  # upstream would spin until while_max_count, then stop
                break
            proposal = _propose(rng, best, n_mods, float(step_change_ratio), int(while_max_count), seen)
            if proposal is None:
                log.info("Infinite loop: no new combination with fewer than %d modified genes after %d tries, "
                         "returning the results", int((best != n_mods).sum()), int(while_max_count) + 1)
                stop_reason = "while_max_count"
                break
            assignment = tuple(int(j) for j in proposal)
            seen.add(assignment)
            prediction = oracle.evaluate_values([candidates.candidate(assignment)])[0]
            flipped = counts(prediction)
            walk_rows.append(_row(candidates, assignment, prediction, flipped, iteration=step + 1))
            if flipped:
                best = proposal
                log.debug("Better attack with only %d genes modified (walk step %d)", int((best != n_mods).sum()),
                         step)
            log.debug("walk step %d of %d: best attack modifies %d genes", step, walk_length,
                      int((best != n_mods).sum()))
    columns = [*RESULT_COLUMNS, "iteration", *candidates.gene_names]
    result = _frame(walk_rows[::-1] + seed_rows, columns).astype({"iteration": int})
    result.attrs.update(
        n_evaluations=oracle.n_evaluations,
        n_calls=oracle.n_calls,
        baseline_label=None if legacy else reference,
        best_genes_modified=None if best is None else int((best != n_mods).sum()),
        stop_reason=stop_reason,
        runtime_s=time.perf_counter() - started,
    )
    log.info("random_walk_min_change on %r (%s): best attack %s genes, %d evaluations, %d calls, %.2fs", target,
             "legacy" if legacy else "baseline", result.attrs["best_genes_modified"], oracle.n_evaluations,
             oracle.n_calls, result.attrs["runtime_s"])
    return result


def _seed_batch(rng: np.random.Generator, n_genes: int, n_mods: int, first_batch: int) -> list[Assignment]:
    """Upstream's first batch: 'all genes with modification i' (i = m … 1) + distinct random rows, or the grid."""
    if (n_mods + 1) ** n_genes <= first_batch:
        return list(itertools.product(range(n_mods + 1), repeat=n_genes))
    uniform = [tuple([j] * n_genes) for j in range(n_mods - 1, -1, -1)]
    drawn: dict[Assignment, None] = {}
    while len(drawn) < first_batch - n_mods:
        drawn.setdefault(tuple(int(j) for j in rng.integers(0, n_mods + 1, size=n_genes)))
    return uniform + list(drawn)


def _all_smaller_tried(n_best: int, n_genes: int, n_mods: int, seen: set[Assignment]) -> bool:
    """True when no untried combination modifies fewer than `n_best` genes (the walk could only spin)."""
    smaller = sum(math.comb(n_genes, k) * n_mods**k for k in range(n_best))
    if smaller > len(seen):
        return False
    return smaller == sum(sum(j != n_mods for j in a) < n_best for a in seen)


def _propose(rng: np.random.Generator, best: np.ndarray, n_mods: int, ratio: float, while_max_count: int,
             seen: set[Assignment]) -> np.ndarray | None:
    """A new assignment with strictly fewer modified genes than `best`, or None after too many tries."""
    n_best = int((best != n_mods).sum())
    unmodified_in_previous = 0  # no previous proposal yet: unmodified positions stay as they are
    for _ in range(while_max_count + 1):
        proposal = _resample(rng, best, n_mods, ratio, unmodified_in_previous)
        unmodified_in_previous = int((proposal == n_mods).sum())
        if best.size - unmodified_in_previous < n_best and tuple(int(j) for j in proposal) not in seen:
            return proposal
    return None


def _resample(rng: np.random.Generator, best: np.ndarray, n_mods: int, ratio: float,
              unmodified_in_previous: int) -> np.ndarray:
    """One random step from `best`: a modified position is redrawn uniformly (unmodified included) with
    probability 1/round(1/ratio), an unmodified one with probability 1/round(√u/ratio) (never when that is 0)."""
    modified = best != n_mods
    modified_odds = round(1 / ratio)  # Python and R both round half to even
    unmodified_odds = round(math.sqrt(unmodified_in_previous) / ratio)
    redraw = modified & (rng.integers(0, modified_odds, size=best.size) == 0)
    if unmodified_odds:
        redraw |= ~modified & (rng.integers(0, unmodified_odds, size=best.size) == 0)
    proposal = best.copy()
    proposal[redraw] = rng.integers(0, n_mods + 1, size=int(redraw.sum()))
    return proposal


def grid_attack(X: Any, clusters: Sequence[str], target: str, classifier: Any, *, n_genes: int = 4,
                gene_order: GeneOrder = "signature", modifications: Sequence[Any] = (("perc1",), ("perc99",)),
                return_first_found: bool = True, legacy: bool = False, seed: int | None = None,
                stats: GeneStats | None = None, progress: bool = False) -> pd.DataFrame:
    """The smallest combination of modifications on the top `n_genes` signature genes that flips the label.

    Args:
        n_genes: top signature genes whose (m+1)^n modification combinations are tried (more than 100,000: refused)
        gene_order: signature: the top genes of the getSignGenes ranking; random: seeded random genes
        modifications: list of [method] or [method, value]; each gene gets one of them or stays unmodified
        return_first_found: stop after the smallest number of modified genes that gives a flip
        legacy: upstream advGridMinChange: flip = label ≠ cluster name; lexicographic grid, stops at the first flip
        seed: seed of the attack's random draws; null: the job's own seed (top-level seed, job, cluster)
        stats: precomputed per-gene statistics (plumbing, not a config key)
        progress: show a progress bar (plumbing, not a config key)
    """
    genes = ranked_genes(X, clusters, n_genes, gene_order, seed, stats)
    return grid_min_change(X, clusters, target, classifier, genes, modifications=modifications,
                           return_first_found=return_first_found, legacy=legacy, seed=seed, stats=stats)


def random_walk_attack(X: Any, clusters: Sequence[str], target: str, classifier: Any, *, n_genes: int = 12,
                       gene_order: GeneOrder = "signature", modifications: Sequence[Any] = (("perc1",), ("perc99",)),
                       first_batch: int = 100, walk_length: int = 100, step_change_ratio: float = 0.2,
                       change_type: ChangeType = "any", legacy: bool = False, seed: int | None = None,
                       stats: GeneStats | None = None, progress: bool = False) -> pd.DataFrame:
    """A random walk towards the smallest flipping combination on the top `n_genes` signature genes.

    Args:
        n_genes: number of top signature genes the random walk may modify
        gene_order: signature: the top genes of the getSignGenes ranking; random: seeded random genes
        modifications: list of [method] or [method, value]; each gene gets one of them or stays unmodified
        first_batch: combinations in the seed batch (uniform rows + distinct random ones) before the walk
        walk_length: walk steps after the first flip; each proposes a combination with fewer modified genes
        step_change_ratio: per-step redraw probability of a modified gene ≈ 1/round(1/ratio); in (0, 1]
        change_type: any: every label change counts; not_na: changes to a non-label (non_labels, 'NA') are ignored
        legacy: upstream advRandWalkMinChange: flip = label ≠ cluster name, no baseline classification
        seed: seed of the attack's random draws; null: the job's own seed (top-level seed, job, cluster)
        stats: precomputed per-gene statistics (plumbing, not a config key)
        progress: show a progress bar (plumbing, not a config key)
    """
    genes = ranked_genes(X, clusters, n_genes, gene_order, seed, stats)
    return random_walk_min_change(X, clusters, target, classifier, genes, modifications=modifications,
                                  first_batch=first_batch, walk_length=walk_length,
                                  step_change_ratio=step_change_ratio, change_type=change_type, legacy=legacy,
                                  seed=seed, stats=stats)
