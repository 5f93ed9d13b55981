"""CGD: cluster-based gradient descent (adverSCarial's `advCGD`, formerly IGD4C).

One pass over a gene list; for each gene, a trial step x ← x + α|x| + ε on the target cells not yet
carrying the new label, then every cell moves its value up or down according to whether the trial raised
the new type's score more than the original type's (a per-cell sign of a finite difference on the margin
S(c, new) − S(c, original)). Stops when the new type outnumbers the original one among the target cells.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from vulnbench.core.errors import ConfigError, DataError
from vulnbench.sc.attacks._signature import GeneOrder, ranked_genes
from vulnbench.sc.classifiers.base import plurality
from vulnbench.sc.expression import Expression, ExpressionInput, as_expression, as_labels, target_mask
from vulnbench.sc.modifications import GeneStats, copy_with_block, replace_block
from vulnbench.sc.oracle import _wrap_like, as_per_cell, parse_prediction

log = logging.getLogger(__name__)

BY_GENE_COLUMNS = ["order", "gene", "nbModifiedCells", "oriCell_pourc", "targCell_pourc", "oriCell_odd",
                   "targCell_odd", "wholeClust_oriOdd", "wholeClust_targOdd"]
ONE_ROW_FIELDS = ["oriType", "nbCells", "targType", "alpha", "epsilon", "changeClust", "nbModifiedGenes",
                  "nbTestedGenes", "oriPourcStart", "targPourcStart", "oriPourcEnd", "targPourcEnd",
                  "wholeClust_oriOdd_beg", "wholeClust_targOdd_beg", "wholeClust_oriOdd_end", "wholeClust_targOdd_end"]


@dataclass
class Scores:
    """One classification of the dataset: the cluster label and per-cell scores of the target cells."""

    prediction: str
    scores: pd.DataFrame  # target cells × types, columns in the classifier's type order

    def cell_labels(self) -> np.ndarray:
        values = self.scores.to_numpy()
        return np.asarray(self.scores.columns)[np.argmax(values, axis=1)]  # first maximum, as R

    def column(self, cell_type: str) -> np.ndarray:
        if cell_type in self.scores.columns:
            return self.scores[cell_type].to_numpy(dtype=np.float64)
        return np.zeros(len(self.scores))


class _Scorer:
    """Holds the target block (target cells × all genes, data order) and scores the dataset in that state.

    Columns change one at a time (`set_column`), so each scorer updates only what a column change touches.
    """

    def __init__(self, block: np.ndarray) -> None:
        self.block = block
        self.n_calls = 0

    def set_column(self, gene: int, values: np.ndarray) -> None:
        self.block[:, gene] = values

    def score(self) -> Scores:
        raise NotImplementedError


class _PerCellScorer(_Scorer):
    def __init__(self, model: Any, expression: Expression, block: np.ndarray) -> None:
        super().__init__(block)
        self.model = model
        self.classes = np.asarray(model.classes_).astype(str)
        to_data = expression.genes.get_indexer(pd.Index(getattr(model, "genes_", expression.genes)))
        self.to_model = np.full(expression.n_genes, -1)
        self.to_model[to_data[to_data >= 0]] = np.flatnonzero(to_data >= 0)
        self.aligned = np.zeros((block.shape[0], len(to_data)), dtype=np.float32)
        self.aligned[:, to_data >= 0] = block[:, to_data[to_data >= 0]]

    def set_column(self, gene: int, values: np.ndarray) -> None:
        super().set_column(gene, values)
        if self.to_model[gene] >= 0:
            self.aligned[:, self.to_model[gene]] = values

    def margin_gradient(self, new: str, original: str) -> np.ndarray:
        """d(S_new − S_original)/dx per cell and data gene (0 for genes the model does not use)."""
        self.n_calls += 1
        classes = list(self.classes)
        grad = self.model.input_gradient(self.aligned, classes.index(new), classes.index(original))
        out = np.zeros_like(self.block)
        used = self.to_model >= 0
        out[:, used] = grad[:, self.to_model[used]]
        return out

    def score(self) -> Scores:

        self.n_calls += 1
        probs = self.model._predict_proba(self.aligned)
        labels = self.classes[np.argmax(probs, axis=1)]
        return Scores(plurality(labels)[0], pd.DataFrame(probs, columns=self.classes))


class _CallableScorer(_Scorer):
    """An adverSCarial-style classifier returning the full form (`prediction`, `typePredictions`, ...)."""

    def __init__(self, classifier: Any, expression: Expression, clusters: np.ndarray, target: str,
                 rows: np.ndarray, block: np.ndarray) -> None:
        super().__init__(block)
        self.classifier, self.expression, self.clusters, self.target, self.rows = (
            classifier, expression, clusters, target, rows)
        self.changed: set[int] = set()
        if not expression.is_sparse:
            self.working = np.array(expression.matrix, dtype=np.float64, copy=True)
            self.view = _wrap_like(expression, self.working)

    def set_column(self, gene: int, values: np.ndarray) -> None:
        super().set_column(gene, values)
        self.changed.add(int(gene))
        if not self.expression.is_sparse:
            self.working[self.rows, gene] = values

    def score(self) -> Scores:
        self.n_calls += 1
        if self.expression.is_sparse:
            cols = np.array(sorted(self.changed), dtype=np.intp)
            data = _wrap_like(self.expression, replace_block(self.expression.matrix, self.rows, cols,
                                                             self.block[:, cols]))
        else:
            data = self.view
        result = self.classifier(data, self.clusters, self.target)
        if not isinstance(result, Mapping) or "typePredictions" not in result:
            raise DataError("cgd needs per-cell scores: the classifier must return a mapping with "
                            "'prediction' and 'typePredictions' (types × cells), or be a per-cell model")
        return Scores(parse_prediction(result).label, self._target_scores(result["typePredictions"]))

    def _target_scores(self, type_predictions: Any) -> pd.DataFrame:
        frame = type_predictions if isinstance(type_predictions, pd.DataFrame) else pd.DataFrame(type_predictions)
        if frame.shape[1] != self.expression.n_cells:
            raise DataError(f"typePredictions has {frame.shape[1]} columns for {self.expression.n_cells} cells")
        scores = frame.iloc[:, self.rows].T.astype(np.float64)
        scores.columns = scores.columns.astype(str)
        return scores.reset_index(drop=True)


@dataclass
class CGDResult:
    X: ExpressionInput
    modified_genes: list[str]
    by_gene_summary: pd.DataFrame
    one_row_summary: pd.Series
    mod_cell_types: np.ndarray
    ori_cell_types: np.ndarray
    new_target: str
    n_calls: int
    runtime_s: float


def _choose_target(scores: Scores, labels: np.ndarray, original: str, exclude: set[str], legacy: bool) -> str:
    """Upstream rule: the most frequent other per-cell label; if all cells agree, the best mean score."""
    counts = pd.Series(labels).value_counts()
    counts = counts.sort_index(kind="stable").sort_values(ascending=False, kind="stable")  # ties: alphabetical
    if len(counts) == 1:
        means = scores.scores.mean(axis=0).sort_values(ascending=False, kind="stable")  # ties: type order
        ranked = [t for t in means.index if legacy or t not in exclude]
        ranked = ranked if ranked and ranked[0] != original else ranked[1:]
        if not ranked:
            raise DataError("cgd: no other cell type to move the cluster to")
        return str(ranked[0])
    remaining = [t for t in counts.index if t not in exclude and t != original]
    if not remaining:
        raise DataError("cgd: every other predicted type is excluded as a new target")
    return str(remaining[0])


def cgd(
    X: ExpressionInput,
    clusters: Sequence[str],
    target: str,
    classifier: Any,
    *,
    genes: Sequence[str] | None = None,
    alpha: float = 0.1,
    epsilon: float = 0.0,
    new_target: str | None = None,
    exclude_new_targets: Iterable[str] = (),
    stop_at_switch: bool = True,
    slope_margin: float = 0.0,
    max_passes: int = 1,
    gradient: bool = False,
    legacy: bool = False,
    seed: int | None = None,
    progress: bool = False,
) -> CGDResult:
    """Cluster-based gradient descent with multiplicative (α) and additive (ε) steps.

    Faithful to `advCGD` with `legacy=True` (data.frame branch: accepted steps x(1±α)±ε ignore the sign of x;
    `exclude_new_targets` ignored when all cells agree; a given `new_target` is re-chosen after each accepted
    gene). By default steps are sign-aware (x ± (α|x| + ε)), `slope_margin` ignores finite differences
    smaller than the margin, `max_passes` repeats the pass over the genes until no gene is accepted, and
    `gradient=True` replaces the trial call by the input gradient of differentiable per-cell models (scMLP).
    """
    started = time.perf_counter()
    if alpha < 0 or epsilon < 0 or slope_margin < 0 or max_passes < 1:
        raise ConfigError("cgd: alpha, epsilon and slope_margin must be ≥ 0 and max_passes ≥ 1")
    expression = as_expression(X)
    labels = as_labels(clusters, expression.n_cells)
    rows = np.flatnonzero(target_mask(labels, target))
    per_cell = as_per_cell(classifier, expression.genes)
    block = expression.rows(rows).astype(np.float64)
    scorer: _Scorer = (_PerCellScorer(per_cell, expression, block) if per_cell is not None
                       else _CallableScorer(classifier, expression, labels, str(target), rows, block))
    if gradient and not hasattr(per_cell, "input_gradient"):
        raise ConfigError("cgd: gradient=True needs a differentiable per-cell classifier (e.g. scmlp)")
    if genes is None:
        order = np.random.default_rng(seed).permutation(expression.n_genes)
    else:
        order = expression.gene_indices(list(dict.fromkeys(map(str, genes))))
    exclude = set(map(str, exclude_new_targets))
    n_cells = len(rows)

    accepted = scorer.score()
    original = accepted.prediction
    cell_labels = accepted.cell_labels()
    ori_cell_types = cell_labels.copy()
    fixed_target = new_target is not None and not legacy
    chosen = str(new_target) if new_target is not None else _choose_target(accepted, cell_labels, original,
                                                                           exclude, legacy)

    def state_row(order_: int, gene: str, n_modified: int, scores: Scores, whole: tuple[float, float] | None):
        right = cell_labels == chosen
        orig = cell_labels == original
        ori_odd = float(np.mean(scores.column(original)[orig])) if orig.any() else float("nan")
        targ_odd = float(np.mean(scores.column(chosen)[right])) if right.any() else 0.0
        if whole is None:
            whole = (float(np.mean(scores.column(original))), float(np.mean(scores.column(chosen))))
        return [order_, gene, n_modified, orig.sum() / n_cells, right.sum() / n_cells, ori_odd, targ_odd, *whole]

    summary = [state_row(0, "#", 0, accepted, None)]
    start_fractions = (summary[0][3], summary[0][4])
    modified: list[str] = []
    tested = 0
    switched = False
    names = expression.genes
    steps = [(p, g) for p in range(max_passes) for g in order]
    gradients: np.ndarray | None = None
    for pass_index, gene in tqdm(steps, disable=not progress, desc="cgd genes"):
        if pass_index > 0 and tested % len(order) == 0 and not _accepted_in_last_pass(summary, len(order)):
            break
        movable = cell_labels != chosen
        if not movable.any():
            break
        tested += 1
        x = block[:, gene].copy()
        if gradient:
            if gradients is None:
                gradients = scorer.margin_gradient(chosen, original)
            slope = gradients[:, gene]
        else:
            scorer.set_column(gene, np.where(movable, x + alpha * np.abs(x) + epsilon, x))  # the trial step
            tried = scorer.score()
            scorer.set_column(gene, x)
            slope = ((tried.column(chosen) - accepted.column(chosen))
                     - (tried.column(original) - accepted.column(original)))
        up = movable & (slope > slope_margin)
        down = movable & (slope < -slope_margin)
        n_moved = int(up.sum() + down.sum())
        if n_moved == 0:
            summary.append(state_row(tested, str(names[gene]), 0, accepted, tuple(summary[-1][7:9])))
            continue
        if legacy:
            x_new = np.where(up, x * (1 + alpha) + epsilon, np.where(down, x * (1 - alpha) - epsilon, x))
        else:
            step = alpha * np.abs(x) + epsilon
            x_new = np.where(up, x + step, np.where(down, x - step, x))
        scorer.set_column(gene, x_new)
        gradients = None
        modified.append(str(names[gene]))
        accepted = scorer.score()
        cell_labels = accepted.cell_labels()
        if not fixed_target:
            chosen = _choose_target(accepted, cell_labels, original, exclude, legacy)
        summary.append(state_row(tested, str(names[gene]), n_moved, accepted, None))
        if stop_at_switch and (cell_labels == chosen).sum() > (cell_labels == original).sum():
            switched = True
            break
    final_cell_types = cell_labels
    if not switched:
        final_cell_types = scorer.score().cell_labels()
    by_gene = pd.DataFrame(summary, columns=BY_GENE_COLUMNS)
    last = summary[-1]
    one_row = pd.Series(
        [original, n_cells, chosen, alpha, epsilon, 0, len(modified), tested if switched else len(steps),
         *start_fractions, (cell_labels == original).sum() / n_cells, (cell_labels == chosen).sum() / n_cells,
         summary[0][7], summary[0][8], last[7], last[8]],
        index=ONE_ROW_FIELDS, dtype=object)
    if not legacy and not switched:
        one_row["nbTestedGenes"] = tested
    modified_cols = expression.gene_indices(list(dict.fromkeys(modified))) if modified else np.empty(0, np.intp)
    # `block` is the scorer's final state
    X_out = copy_with_block(X, expression, rows, modified_cols, block[:, modified_cols])
    runtime = time.perf_counter() - started
    log.info("cgd on %r: %d genes modified of %d tested, %s → %s (switched: %s), %d calls, %.2fs", target,
             len(modified), tested, original, chosen, switched, scorer.n_calls, runtime)
    return CGDResult(X_out, modified, by_gene, one_row, final_cell_types, ori_cell_types, chosen,
                     scorer.n_calls, runtime)


def _accepted_in_last_pass(summary: list[list[Any]], n_genes: int) -> bool:
    return any(row[2] > 0 for row in summary[-n_genes:])


def cgd_attack(
    X: Any,
    clusters: Sequence[str],
    target: str,
    classifier: Any,
    *,
    alpha: float = 0.1,
    epsilon: float = 0.0,
    n_genes: int = 200,
    gene_order: GeneOrder = "signature",
    new_target: str | None = None,
    exclude_new_targets: Sequence[str] = (),
    stop_at_switch: bool = True,
    slope_margin: float = 0.0,
    max_passes: int = 1,
    gradient: bool = False,
    legacy: bool = False,
    seed: int | None = None,
    stats: GeneStats | None = None,
    progress: bool = False,
) -> CGDResult:
    """CGD as the paper ran it: on the first `n_genes` genes of the signature ranking.

    Args:
        alpha: multiplicative step: a moved gene changes by ±(α·|x| + ε), x = that cell's current value
        epsilon: additive step (expression units, log-normalised) added to α·|x| in each move
        n_genes: number of top signature genes (getSignGenes ranking) CGD walks through, in order
        gene_order: signature: the top genes of the getSignGenes ranking; random: seeded random genes
        new_target: cell type to push the cluster towards; null: the most frequent other per-cell label (upstream
            rule)
        exclude_new_targets: cell types never chosen as the new target
        stop_at_switch: stop once more target cells carry the new type than the original one
        slope_margin: score-margin changes of at most this size count as flat: the cell is not moved for that gene
        max_passes: passes over the gene list, repeated while the previous pass accepted a gene
        gradient: use the model's input gradient (scMLP) instead of one trial classification per gene
        legacy: upstream advCGD: steps x(1±α)±ε ignore the sign of x; a given new_target is re-chosen after each gene
        seed: seed of the attack's random draws; null: the job's own seed (top-level seed, job, cluster)
        stats: precomputed per-gene statistics (plumbing, not a config key)
        progress: show a progress bar (plumbing, not a config key)
    """
    genes = ranked_genes(X, clusters, n_genes, gene_order, seed, stats)
    return cgd(X, clusters, target, classifier, genes=genes, alpha=alpha, epsilon=epsilon, new_target=new_target,
               exclude_new_targets=exclude_new_targets, stop_at_switch=stop_at_switch, slope_margin=slope_margin,
               max_passes=max_passes, gradient=gradient, legacy=legacy, seed=seed, progress=progress)
