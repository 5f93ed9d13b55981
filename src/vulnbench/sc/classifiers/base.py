"""The per-cell classifier contract and the cluster-level decision rule shared by every classifier."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from vulnbench.core.errors import DataError
from vulnbench.core.io import atomic_path
from vulnbench.core.plugins import load_plugins
from vulnbench.sc.expression import ExpressionInput, as_expression, as_labels

log = logging.getLogger(__name__)

#: a candidate perturbation in the model's feature space: (columns, new values per column)
Perturbation = tuple[np.ndarray, np.ndarray]

#: elements of one stacked batch of perturbed copies (float32: 4 bytes each → 256 MB)
BATCH_ELEMENTS = 1 << 26


def plurality(labels: Sequence[str] | np.ndarray) -> tuple[str, float]:
    """Most frequent label and its fraction; ties go to the alphabetically first (as R's sorted table)."""
    values, counts = np.unique(np.asarray(labels, dtype=str), return_counts=True)
    if values.size == 0:
        return "UNDETERMINED", 1.0
    best = int(np.argmax(counts))  # np.unique sorts, so the first maximum is alphabetical
    return str(values[best]), float(counts[best] / counts.sum())


class PerCellClassifier:
    """Scores cells independently: `predict_proba(X) -> (n_cells, n_classes)` over `classes_`.

    Subclasses set `name`, implement `_fit(matrix, y)` and `_predict_proba(matrix)`; they may override
    `predict_proba_perturbed` with a faster way to score many perturbed copies of the same cells.
    """

    name: ClassVar[str] = "per_cell"
    #: labels a method may give besides its types (CHETAH's "Unassigned", scAnnotatR's "unknown", ...)
    extra_labels: ClassVar[tuple[str, ...]] = ()
    capabilities: ClassVar[frozenset[str]] = frozenset({"proba", "cell_independent", "modality:expression"})
    cell_independent: ClassVar[bool] = True

    classes_: np.ndarray
    genes_: pd.Index

    # -- contract -----------------------------------------------------------------------------------
    def fit(self, X: ExpressionInput, labels: Sequence[str]) -> Self:
        expr = as_expression(X)
        y = as_labels(labels, expr.n_cells, name="labels")
        if np.unique(y).size < 2:
            raise DataError("training needs at least two cell types")
        self.genes_ = expr.genes
        self.classes_ = self._vocabulary(y)
        self._fit(_dense(expr.matrix), y)
        return self

    def _vocabulary(self, y: np.ndarray) -> np.ndarray:
        """The types the model scores: by default the training labels, alphabetical (as the paper's models)."""
        return np.unique(y)

    def predict_proba(self, X: ExpressionInput) -> np.ndarray:
        return self._predict_proba(self.align(X))

    def predict(self, X: ExpressionInput) -> np.ndarray:
        """Per-cell labels (some methods add labels of their own, e.g. CHETAH's "Unassigned" / "NodeK")."""
        return self._predict_labels(self.align(X))

    def __call__(self, X: ExpressionInput, clusters: Sequence[str], target: str) -> tuple[str, float]:
        """adverSCarial's cluster-level contract: plurality of per-cell labels over the target cluster."""
        expr = as_expression(X)
        mask = as_labels(clusters, expr.n_cells) == str(target)
        if not mask.any():
            return "UNDETERMINED", 1.0
        if self.cell_independent:
            return plurality(self._predict_labels(self.align(X, rows=mask)))
        return plurality(self._predict_labels(self.align(X))[mask])

    def align(self, X: ExpressionInput, rows: np.ndarray | None = None) -> np.ndarray:
        """Dense matrix in the training gene order; genes absent from X are zeros (logged)."""
        expr = as_expression(X)
        matrix = expr.matrix if rows is None else expr.matrix[rows]
        if expr.genes.equals(self.genes_):
            return _dense(matrix)
        positions = expr.genes.get_indexer(self.genes_)
        missing = int((positions < 0).sum())
        if missing == len(positions):
            raise DataError(f"{self.name}: none of the {len(positions)} training genes are in the data")
        if missing:
            log.warning("%s: %d of %d training genes missing from the data, set to 0", self.name, missing,
                        len(positions))
        out = np.zeros((matrix.shape[0], len(positions)), dtype=np.float32)
        present = positions >= 0
        out[:, present] = _dense(matrix[:, positions[present]])
        return out

    def predict_proba_perturbed(self, block: np.ndarray, perturbations: Sequence[Perturbation]) -> np.ndarray:
        """Scores of `block` (cells × model genes) under each perturbation: (n_pert, n_cells, n_classes).

        Default: stack perturbed copies and score them in as few `_predict_proba` calls as memory allows.
        """
        return self._map_perturbed(block, perturbations, self._predict_proba, len(self.classes_), np.float64)

    def predict_labels_perturbed(self, block: np.ndarray, perturbations: Sequence[Perturbation]) -> np.ndarray:
        """Per-cell labels under each perturbation: (n_pert, n_cells). What the attacks' fast path uses."""
        if type(self)._predict_labels is PerCellClassifier._predict_labels:
            return self.classes_[np.argmax(self.predict_proba_perturbed(block, perturbations), axis=2)]
        return self._map_perturbed(block, perturbations, self._predict_labels, None, object)

    def _map_perturbed(self, block: np.ndarray, perturbations: Sequence[Perturbation], fn: Any,
                       width: int | None, dtype: Any) -> np.ndarray:
        n_cells, n_genes = block.shape
        shape = (len(perturbations), n_cells) if width is None else (len(perturbations), n_cells, width)
        out = np.empty(shape, dtype=dtype)
        per_batch = max(1, BATCH_ELEMENTS // max(1, n_cells * n_genes))
        for start in range(0, len(perturbations), per_batch):
            chunk = perturbations[start : start + per_batch]
            stacked = np.repeat(block[None, :, :], len(chunk), axis=0)
            for i, (cols, values) in enumerate(chunk):
                stacked[i][:, cols] = values
            result = np.asarray(fn(stacked.reshape(-1, n_genes)))
            out[start : start + len(chunk)] = result.reshape((len(chunk), *shape[1:]))
        return out

    # -- persistence --------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            pickle.dump(self, fh, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        load_plugins()  # a plugin's model unpickles only once its module is imported
        try:
            with open(path, "rb") as fh:
                model = pickle.load(fh)
        # a corrupt or truncated file raises any of these (unpickling runs its bytes as a program)
        except (OSError, pickle.UnpicklingError, EOFError, ValueError, ArithmeticError, LookupError, TypeError,
                AttributeError, ImportError) as exc:
            raise DataError(f"cannot read model file {path}: {type(exc).__name__}: {exc}") from None
        if not isinstance(model, cls):
            raise DataError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    # -- to implement -------------------------------------------------------------------------------
    def _fit(self, matrix: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError

    def _predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _predict_labels(self, matrix: np.ndarray) -> np.ndarray:
        """Labels from an aligned matrix; by default the class with the highest score (first on ties)."""
        return self.classes_[np.argmax(self._predict_proba(matrix), axis=1)]

    def get_params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.endswith("_") and not k.startswith("_")}


def _dense(matrix: Any) -> np.ndarray:
    return np.asarray(matrix.toarray() if sp.issparse(matrix) else matrix, dtype=np.float32)
