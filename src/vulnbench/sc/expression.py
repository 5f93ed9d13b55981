"""One view of expression input (AnnData, DataFrame, array, sparse), cells × genes, validated once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from vulnbench.core.errors import DataError

ExpressionInput = ad.AnnData | pd.DataFrame | np.ndarray | sp.spmatrix | sp.sparray


@dataclass
class Expression:
    """Cells × genes matrix plus names. `matrix` is a dense ndarray or a CSR matrix, never densified here."""

    matrix: np.ndarray | sp.csr_matrix
    genes: pd.Index
    cells: pd.Index
    source: ExpressionInput

    @property
    def n_cells(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_genes(self) -> int:
        return self.matrix.shape[1]

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.matrix)

    def rows(self, index: np.ndarray) -> np.ndarray:
        """Dense copy of some rows (the target cells): the only block attacks ever materialise."""
        block = self.matrix[index]
        return block.toarray() if sp.issparse(block) else np.array(block, copy=True)

    def gene_indices(self, names: Sequence[str], *, strict: bool = True) -> np.ndarray:
        """Column positions of `names`; unknown names raise (strict) or are dropped."""
        positions = self.genes.get_indexer(list(names))
        if strict and (positions < 0).any():
            missing = [n for n, p in zip(names, positions, strict=True) if p < 0]
            raise DataError(f"gene(s) not in the data: {', '.join(map(str, missing[:5]))}")
        return positions[positions >= 0]


def as_expression(X: ExpressionInput, *, check_finite: bool = True) -> Expression:
    """Normalise any supported input to an `Expression`, with one-line errors for unusable data."""
    if isinstance(X, ad.AnnData):
        matrix, genes, cells = X.X, pd.Index(X.var_names), pd.Index(X.obs_names)
    elif isinstance(X, pd.DataFrame):
        if not all(pd.api.types.is_numeric_dtype(t) for t in X.dtypes.unique()):
            bad = [c for c, t in X.dtypes.items() if not pd.api.types.is_numeric_dtype(t)][:3]
            raise DataError(f"expression has non-numeric column(s): {', '.join(map(str, bad))}")
        matrix, genes, cells = X.to_numpy(), pd.Index(X.columns.astype(str)), pd.Index(X.index.astype(str))
    elif isinstance(X, np.ndarray) or sp.issparse(X):
        matrix = X
        genes = pd.Index([f"gene{i}" for i in range(X.shape[1])])
        cells = pd.Index([f"cell{i}" for i in range(X.shape[0])])
    else:
        raise DataError(f"unsupported expression type {type(X).__name__}; use AnnData or a cells × genes DataFrame")
    if matrix is None or matrix.ndim != 2:
        raise DataError("expression must be a two-dimensional cells × genes matrix")
    matrix = sp.csr_matrix(matrix) if sp.issparse(matrix) else np.asarray(matrix)
    if not np.issubdtype(matrix.dtype, np.number) or np.issubdtype(matrix.dtype, np.complexfloating):
        raise DataError(f"expression must be real numbers, got dtype {matrix.dtype}")
    if genes.has_duplicates:
        dup = genes[genes.duplicated()].unique()[:3]
        raise DataError(f"duplicated gene name(s): {', '.join(map(str, dup))}; make them unique first")
    if check_finite:
        values = matrix.data if sp.issparse(matrix) else matrix
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            raise DataError("expression contains NaN or infinite values")
    return Expression(matrix=matrix, genes=genes, cells=cells, source=X)


def negative_values(matrix: np.ndarray | sp.spmatrix | sp.sparray) -> tuple[int, float]:
    """How many values are below zero, and the smallest: counts and log-normalised expression never are, scaled or
    z-scored values are. Reads a sparse matrix's stored values and a dense one in blocks of rows, so a large matrix
    is never densified or copied whole."""
    if sp.issparse(matrix):
        blocks = [matrix.data]
    else:
        dense = np.asarray(matrix)
        if dense.ndim != 2:
            dense = dense.reshape(1, -1)
        step = max(1, (1 << 24) // max(1, dense.shape[1]))
        blocks = (dense[start:start + step] for start in range(0, dense.shape[0], step))
    count, minimum = 0, 0.0
    for block in blocks:
        if block.size == 0 or not (np.issubdtype(block.dtype, np.signedinteger)
                                   or np.issubdtype(block.dtype, np.floating)):
            continue  # unsigned or bool: nothing below zero
        below = block < 0  # NaN compares False: it is as_expression's to report
        if below.any():
            count += int(below.sum())
            minimum = min(minimum, float(block[below].min()))
    return count, minimum


def as_labels(clusters: Sequence | np.ndarray | pd.Series, n_cells: int, name: str = "clusters") -> np.ndarray:
    """Cluster labels as a string array aligned by position with the cells."""
    labels = np.asarray(clusters, dtype=object)
    if labels.ndim != 1 or labels.shape[0] != n_cells:
        raise DataError(f"{name} has {labels.shape[0] if labels.ndim else 0} entries for {n_cells} cells")
    if pd.isna(labels).any():
        raise DataError(f"{name} contains missing labels")
    return labels.astype(str)


def target_mask(clusters: np.ndarray, target: str) -> np.ndarray:
    mask = clusters == str(target)
    if not mask.any():
        known = ", ".join(sorted(set(clusters))[:10])
        raise DataError(f"target cluster {target!r} has no cells (clusters: {known})")
    return mask
