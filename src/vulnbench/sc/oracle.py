"""Cluster oracles: classify the target cluster under candidate gene modifications.

Attacks only ever ask an oracle "what label does the cluster get if these genes are modified?", for many
gene sets at once. Two oracles answer it:

* `PerCellOracle` for per-cell models (`predict_proba_perturbed`): only the target cells are scored, and all
  candidate sets go through the model in stacked batches, i.e. few model calls for many evaluations;
* `CallableOracle` for any adverSCarial-style callable `f(X, clusters, target)`: one call per candidate on
  the whole (modified) dataset, modified in place and restored, so that nothing is copied per call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from vulnbench.core.errors import DataError
from vulnbench.sc.classifiers.base import PerCellClassifier, plurality
from vulnbench.sc.expression import Expression
from vulnbench.sc.modifications import GeneStats, Modification

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float


def parse_prediction(result: Any) -> Prediction:
    """Read a classifier's answer: (label, score) by position, adverSCarial's full mapping, or a Prediction."""
    if isinstance(result, Prediction):
        return result
    if isinstance(result, Mapping):
        if "prediction" not in result:
            raise DataError("classifier returned a mapping without a 'prediction' key")
        return Prediction(str(result["prediction"]), _as_score(result.get("odd", np.nan)))
    if isinstance(result, str) or not isinstance(result, Sequence | np.ndarray) or len(result) < 2:
        raise DataError(f"classifier must return (label, score); got {type(result).__name__}")
    return Prediction(str(result[0]), _as_score(result[1]))


def _as_score(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def is_per_cell(classifier: Any) -> bool:
    """True when the classifier offers the per-cell fast path and its cells score independently."""
    return (
        hasattr(classifier, "predict_labels_perturbed")
        and hasattr(classifier, "classes_")
        and getattr(classifier, "cell_independent", False)
    )


class EstimatorAdapter(PerCellClassifier):
    """Gives any fitted per-cell estimator (scikit-learn style: `predict_proba`, `classes_`) the fast path.

    Genes are matched by `feature_names_in_` when the estimator has them, else by position.
    """

    name = "estimator"

    def __init__(self, estimator: Any, genes: pd.Index) -> None:
        self.estimator = estimator
        self.classes_ = np.asarray(estimator.classes_).astype(str)
        names = getattr(estimator, "feature_names_in_", None)
        self.genes_ = pd.Index(names if names is not None else genes).astype(str)
        if names is None and getattr(estimator, "n_features_in_", len(genes)) != len(genes):
            raise DataError(f"estimator expects {estimator.n_features_in_} genes, the data has {len(genes)}")

    def _predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        if getattr(self.estimator, "feature_names_in_", None) is not None:
            matrix = pd.DataFrame(matrix, columns=self.genes_, copy=False)
        return np.asarray(self.estimator.predict_proba(matrix))


def as_per_cell(classifier: Any, genes: pd.Index) -> Any | None:
    """The classifier as a per-cell model with the fast path, or None when it only works cluster-wide."""
    if is_per_cell(classifier):
        return classifier
    if (hasattr(classifier, "predict_proba") and hasattr(classifier, "classes_")
            and not isinstance(classifier, PerCellClassifier) and getattr(classifier, "cell_independent", True)):
        return EstimatorAdapter(classifier, genes)
    return None


class ClusterOracle:
    """Counts what it does: `n_evaluations` candidate sets classified, `n_calls` classifier invocations.

    A candidate is evaluated on top of the committed state: `commit(i)` keeps the i-th candidate of the
    last `evaluate` (with the very values it was evaluated with) for every later evaluation, which is how
    max-change grows its set without re-modifying it on every call.
    """

    def __init__(self, expression: Expression, clusters: np.ndarray, target: str,
                 modification: Modification, stats: GeneStats | None = None, seed: int | None = None) -> None:
        self.expression = expression
        self.clusters = clusters
        self.target = str(target)
        self.rows = np.flatnonzero(clusters == self.target)
        if self.rows.size == 0:
            raise DataError(f"target cluster {target!r} has no cells")
        self.modification = modification
        self.stats = stats or GeneStats(expression)
        self.rng = np.random.default_rng(seed)
        self.n_evaluations = 0
        self.n_calls = 0
        self.committed = np.empty(0, dtype=np.intp)
        self._baseline: Prediction | None = None
        self._last: list[tuple[np.ndarray, np.ndarray]] = []
        self._cache: dict[bytes, Prediction] = {}

    @property
    def baseline(self) -> Prediction:
        """The label on unmodified data: the reference every flip is measured against."""
        if self._baseline is None:
            if self.committed.size:
                raise RuntimeError("the baseline must be taken before anything is committed")
            self._baseline = self.evaluate([np.empty(0, dtype=np.intp)])[0]
        return self._baseline

    def evaluate(self, gene_sets: Sequence[np.ndarray]) -> list[Prediction]:
        """Labels of the cluster with each gene set modified by the oracle's modification (batched).

        Deterministic modifications are cached per (committed state, gene set): a repeated candidate is
        answered without a classifier call and not counted as an evaluation.
        """
        candidates = []
        for genes in gene_sets:
            genes = np.asarray(genes, dtype=np.intp)
            candidates.append((genes, self.modification.values(self.stats, genes, self.rows, self.rng)))
        if self.modification.method == "random":
            return self.evaluate_values(candidates)
        keys = [self.committed.tobytes() + b"|" + genes.tobytes() for genes, _ in candidates]
        first = {key: i for i, key in reversed(list(enumerate(keys)))}  # one evaluation per distinct set
        missing = sorted(i for key, i in first.items() if key not in self._cache)
        for i, prediction in zip(missing, self.evaluate_values([candidates[i] for i in missing]), strict=True):
            self._cache[keys[i]] = prediction
        self._last = [(g, np.asarray(v, dtype=np.float64)) for g, v in candidates]
        return [self._cache[key] for key in keys]

    def evaluate_values(self, candidates: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Prediction]:
        """Labels with explicit new values: (genes, values of shape (len(genes),) or (n_target, len(genes))).

        For attacks that mix modifications within one candidate (grid, random walk).
        """
        if not candidates:
            return []
        self.n_evaluations += len(candidates)
        self._last = [(np.asarray(g, dtype=np.intp), np.asarray(v, dtype=np.float64)) for g, v in candidates]
        return self._evaluate(self._last)

    def commit(self, index: int) -> None:
        genes, values = self._last[index]
        self._commit(genes, values)
        self.committed = np.union1d(self.committed, genes)

    def _evaluate(self, candidates: list[tuple[np.ndarray, np.ndarray]]) -> list[Prediction]:
        raise NotImplementedError

    def _commit(self, genes: np.ndarray, values: np.ndarray) -> None:
        raise NotImplementedError


class PerCellOracle(ClusterOracle):
    def __init__(self, classifier: Any, expression: Expression, clusters: np.ndarray, target: str,
                 modification: Modification, stats: GeneStats | None = None, seed: int | None = None) -> None:
        super().__init__(expression, clusters, target, modification, stats, seed)
        self.classifier = classifier
        model_genes = pd.Index(getattr(classifier, "genes_", expression.genes))
        # data column -> model column (-1: the model does not use this gene, modifying it is a no-op)
        self._to_model = model_genes.get_indexer(expression.genes)
        self._block = classifier.align(_subset_input(expression, self.rows))

    def _model_space(self, genes: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cols = self._to_model[genes]
        keep = cols >= 0
        values = values[:, keep] if values.ndim == 2 else values[keep]
        return cols[keep], values.astype(self._block.dtype)

    def _evaluate(self, candidates: list[tuple[np.ndarray, np.ndarray]]) -> list[Prediction]:
        perturbations = [self._model_space(genes, values) for genes, values in candidates]
        labels = self.classifier.predict_labels_perturbed(self._block, perturbations)
        self.n_calls += 1
        return [Prediction(*plurality(row)) for row in labels]

    def _commit(self, genes: np.ndarray, values: np.ndarray) -> None:
        cols, values = self._model_space(genes, values)
        self._block[:, cols] = values


class CallableOracle(ClusterOracle):
    def __init__(self, classifier: Callable[..., Any], expression: Expression, clusters: np.ndarray,
                 target: str, modification: Modification, stats: GeneStats | None = None,
                 seed: int | None = None) -> None:
        super().__init__(expression, clusters, target, modification, stats, seed)
        self.classifier = classifier
        if expression.is_sparse:
            self._target_block = expression.rows(self.rows).astype(np.float64)
            zero_target = sp.diags((clusters != self.target).astype(np.float64))
            self._others = sp.csr_matrix(zero_target @ expression.matrix)
            self._placer = sp.csr_matrix(
                (np.ones(self.rows.size), (self.rows, np.arange(self.rows.size))),
                shape=(expression.n_cells, self.rows.size),
            )
        else:
            self._working = np.array(expression.matrix, dtype=np.float64, copy=True)
            self._view = _wrap_like(expression, self._working)

    def _evaluate(self, candidates: list[tuple[np.ndarray, np.ndarray]]) -> list[Prediction]:
        return [self._classify(genes, values) for genes, values in candidates]

    def _classify(self, genes: np.ndarray, values: np.ndarray) -> Prediction:
        self.n_calls += 1
        if self.expression.is_sparse:
            block = self._target_block.copy()
            block[:, genes] = values
            modified = self._others + self._placer @ sp.csr_matrix(block)
            return parse_prediction(
                self.classifier(_wrap_like(self.expression, modified), self.clusters, self.target)
            )
        index = np.ix_(self.rows, genes)
        saved = self._working[index]
        self._working[index] = values
        try:
            return parse_prediction(self.classifier(self._view, self.clusters, self.target))
        finally:
            self._working[index] = saved

    def _commit(self, genes: np.ndarray, values: np.ndarray) -> None:
        if self.expression.is_sparse:
            self._target_block[:, genes] = values
        else:
            self._working[np.ix_(self.rows, genes)] = values


def make_oracle(classifier: Any, expression: Expression, clusters: np.ndarray, target: str,
                modification: Modification, stats: GeneStats | None = None, seed: int | None = None) -> ClusterOracle:
    """The fastest faithful oracle for this classifier."""
    per_cell = as_per_cell(classifier, expression.genes)
    if per_cell is not None:
        return PerCellOracle(per_cell, expression, clusters, target, modification, stats, seed)
    if not callable(classifier):
        raise DataError(f"classifier {type(classifier).__name__} is neither callable nor a per-cell model")
    return CallableOracle(classifier, expression, clusters, target, modification, stats, seed)


def _subset_input(expression: Expression, rows: np.ndarray) -> pd.DataFrame | ad.AnnData:
    matrix = expression.matrix[rows]
    return ad.AnnData(X=matrix, obs=pd.DataFrame(index=expression.cells[rows]),
                      var=pd.DataFrame(index=expression.genes))


def _wrap_like(expression: Expression, matrix: np.ndarray | sp.csr_matrix) -> Any:
    """Present the (modified) matrix to the classifier in the type the user gave us."""
    source = expression.source
    if isinstance(source, ad.AnnData):
        return ad.AnnData(X=matrix, obs=source.obs, var=source.var)
    if isinstance(source, pd.DataFrame):
        if sp.issparse(matrix):
            return pd.DataFrame.sparse.from_spmatrix(matrix, index=expression.cells, columns=expression.genes)
        return pd.DataFrame(matrix, index=expression.cells, columns=expression.genes, copy=False)
    return matrix

