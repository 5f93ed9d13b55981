"""Modification modes of adverSCarial: what value a gene takes on the target cells.

Per-gene statistics are computed once per dataset (vectorised over all genes, sparse-aware) and shared by
every candidate an attack evaluates; upstream recomputes them over the whole matrix on every call.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from vulnbench.core.errors import ConfigError
from vulnbench.sc.expression import Expression, ExpressionInput, as_expression, as_labels, target_mask

#: built-in modes; "decile+X" / "decile-X" take any positive X (e.g. "decile+5")
METHODS = ("perc1", "perc99", "random", "positive_aberrant", "negative_aberrant", "decile+X", "decile-X", "fixed",
           "full_row_fct", "target_row_fct", "target_matrix_fct", "full_matrix_fct")
FUNCTION_METHODS = ("full_row_fct", "target_row_fct", "target_matrix_fct", "full_matrix_fct")
DECILE = re.compile(r"^decile([+-])(\d+(?:\.\d+)?)$")
#: sorted columns kept in memory for decile shifts up to this many values (float64: 400 MB)
SORTED_CACHE_ELEMENTS = 50_000_000


def order_statistics(matrix: np.ndarray | sp.spmatrix, ks: Sequence[int]) -> np.ndarray:
    """The k-th smallest values (0-based) of every column, shape (len(ks), n_columns).

    Dense: one multi-threaded top-k when every k is near an end of the column (percentiles 1 and 99), else
    one partial sort for all ks. Sparse: one sort of the stored values, never densifying.
    """
    n = matrix.shape[0]
    ks = [int(k) for k in ks]
    if any(not 0 <= k < n for k in ks):
        raise ValueError(f"order statistics {ks} out of range for {n} rows")
    if sp.issparse(matrix):
        return _sparse_order_statistics(matrix, ks)
    depth = max(min(k + 1, n - k) for k in ks)
    if depth <= max(1, n // 16):
        import torch

        values = torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float64))
        low = torch.topk(values, depth, dim=0, largest=False).values.numpy()  # ascending: low[i] = i-th smallest
        high = torch.topk(values, depth, dim=0, largest=True).values.numpy() if any(k >= depth for k in ks) else None
        return np.stack([low[k] if k < depth else high[n - 1 - k] for k in ks]).astype(np.float64)
    return np.partition(matrix, ks, axis=0)[ks].astype(np.float64)


def _sparse_order_statistics(matrix: sp.spmatrix, ks: Sequence[int]) -> np.ndarray:
    n = matrix.shape[0]
    csc = sp.csc_matrix(matrix, copy=True)
    csc.eliminate_zeros()
    csc.sort_indices()
    n_genes = csc.shape[1]
    starts, counts = csc.indptr[:-1], np.diff(csc.indptr)
    values = csc.data  # a private copy: sorted in place, in its own dtype (no float64 copy of every value)
    n_negative = np.zeros(n_genes, dtype=np.intp)
    for j, (start, stop) in enumerate(zip(csc.indptr[:-1], csc.indptr[1:], strict=True)):
        segment = values[start:stop]
        segment.sort()  # per column: far faster than one global lexsort
        n_negative[j] = np.searchsorted(segment, 0)
    n_zero = n - counts
    # sorted column = [negatives..., zeros..., positives...]; stored values skip the zeros
    out = np.zeros((len(ks), n_genes), dtype=np.float64)
    for row, k in enumerate(ks):
        below = k < n_negative
        out[row, below] = values[starts[below] + k]
        above = k >= n_negative + n_zero
        out[row, above] = values[starts[above] + k - n_zero[above]]
    return out


def quantile_type7(matrix: np.ndarray | sp.spmatrix, p: float) -> np.ndarray:
    """R's default (type 7) quantile of every column: linear interpolation at h = (n − 1)·p."""
    n = matrix.shape[0]
    h = (n - 1) * p
    lo = int(np.floor(h))
    hi = min(lo + 1, n - 1)
    if hi == lo or h == lo:
        return order_statistics(matrix, [lo])[0]
    low, high = order_statistics(matrix, [lo, hi])
    return low + (h - lo) * (high - low)


@dataclass
class GeneStats:
    """Lazily computed, cached per-gene statistics over all cells of one dataset (the unmodified data)."""

    expression: Expression
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        """Anything else computed once per dataset and shared by every attack on it (e.g. gene rankings)."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def quantile(self, p: float) -> np.ndarray:
        key = f"q{p!r}"
        if key not in self._cache:
            self._cache[key] = quantile_type7(self.expression.matrix, p)
        return self._cache[key]

    def max(self) -> np.ndarray:
        return self._reduce("max")

    def min(self) -> np.ndarray:
        return self._reduce("min")

    def _reduce(self, which: str) -> np.ndarray:
        if which not in self._cache:
            m = self.expression.matrix
            value = m.max(axis=0) if which == "max" else m.min(axis=0)
            value = value.toarray() if sp.issparse(value) else value
            self._cache[which] = np.asarray(value, dtype=np.float64).ravel()
        return self._cache[which]

    def columns(self, genes: np.ndarray) -> np.ndarray:
        """Dense (n_cells, len(genes)) block of the original values."""
        block = self.expression.matrix[:, genes]
        return np.asarray(block.toarray() if sp.issparse(block) else block, dtype=np.float64)

    def target_block(self, rows: np.ndarray, genes: np.ndarray) -> np.ndarray:
        block = self.expression.matrix[rows][:, genes]
        return np.asarray(block.toarray() if sp.issparse(block) else block, dtype=np.float64)

    def sorted_columns(self, genes: np.ndarray) -> np.ndarray:
        """Each gene's column sorted ascending, (n_cells, len(genes)); cached for all genes when small enough."""
        n, g = self.expression.matrix.shape
        if n * g <= SORTED_CACHE_ELEMENTS:
            if "sorted" not in self._cache:
                self._cache["sorted"] = np.sort(self.columns(np.arange(g)), axis=0)
            return self._cache["sorted"][:, genes]
        return np.sort(self.columns(genes), axis=0)


@dataclass(frozen=True)
class Modification:
    """A modification mode with its parameters: the value each gene takes on the target cells.

    `legacy=True` reproduces adverSCarial 1.3.13 exactly where it deviates from its documentation: `random`
    draws one integer-step vector from the global range of the selected genes and gives it to every gene;
    `decile±X` moves k − 1 positions up / k + 1 down. By default `random` is uniform in [min_g, max_g] per gene
    and cell, and `decile±X` moves exactly k = round(X·n/10) positions from the value's own (first) position.
    """

    method: str = "perc99"
    fixed_value: float = 3.0
    fct: Callable[..., object] | None = None
    legacy: bool = False

    def __post_init__(self) -> None:
        method = self.method
        known = method in METHODS and "X" not in method
        if not known and not DECILE.match(str(method)):
            raise ConfigError(f"unknown modification method {method!r} (known: {', '.join(METHODS)})")
        if method in FUNCTION_METHODS and not callable(self.fct):
            raise ConfigError(f"modification {method!r} needs a function (fct=...)")
        if not np.isfinite(float(self.fixed_value)):
            raise ConfigError(f"fixed_value must be a finite number, got {self.fixed_value!r}")

    @property
    def label(self) -> str:
        return f"fixed {format(float(self.fixed_value), 'g')}" if self.method == "fixed" else self.method

    @property
    def per_cell(self) -> bool:
        """True when the new values differ between target cells (then `values` is 2-D)."""
        return self.method == "random" or self.method.startswith("decile") or self.method in FUNCTION_METHODS

    def values(self, stats: GeneStats, genes: np.ndarray, rows: np.ndarray | None = None,
               rng: np.random.Generator | None = None) -> np.ndarray:
        """New values: shape (len(genes),) for one value per gene, else (len(rows), len(genes))."""
        genes = np.asarray(genes, dtype=np.intp)
        method = self.method
        if method == "perc1":
            return stats.quantile(0.01)[genes]
        if method == "perc99":
            return stats.quantile(0.99)[genes]
        if method == "positive_aberrant":
            return 10000.0 * stats.max()[genes]
        if method == "negative_aberrant":
            return -10000.0 * stats.max()[genes]
        if method == "fixed":
            return np.full(genes.shape[0], float(self.fixed_value))
        if rows is None:
            raise ValueError(f"{method} needs the target rows")
        if method == "random":
            return self._random(stats, genes, len(rows), rng or np.random.default_rng())
        if method.startswith("decile"):
            return self._decile(stats, genes, rows)
        return self._function(stats, genes, rows)

    def _random(self, stats: GeneStats, genes: np.ndarray, n_rows: int, rng: np.random.Generator) -> np.ndarray:
        if genes.size == 0:
            return np.empty((n_rows, 0))
        low, high = stats.min()[genes], stats.max()[genes]
        if not self.legacy:
            return rng.uniform(low, high, size=(n_rows, genes.size))
        steps = np.arange(low.min(), high.max() + 1e-9, 1.0)  # R: seq(min, max) over the whole selection
        drawn = rng.choice(steps, size=n_rows, replace=True)
        return np.repeat(drawn[:, None], genes.size, axis=1)

    def _decile(self, stats: GeneStats, genes: np.ndarray, rows: np.ndarray) -> np.ndarray:
        sign, amount = DECILE.match(self.method).groups()
        n = stats.expression.n_cells
        k = int(np.round(float(amount) * n / 10))  # numpy rounds half to even, as R's round
        ordered = stats.sorted_columns(genes)  # (n, g)
        current = stats.target_block(rows, genes)  # (t, g)
        below = np.stack([np.searchsorted(ordered[:, j], current[:, j], side="left") for j in range(genes.size)],
                         axis=1) if genes.size else np.empty((len(rows), 0), dtype=np.intp)
        if self.legacy:  # upstream: 1-based index r ± k into the sorted column, clamped to max / min
            position = below + k - 1 if sign == "+" else below - k - 1
        else:  # exact shift from the value's own first position
            position = below + k if sign == "+" else below - k
        position = np.clip(position, 0, n - 1)
        return np.take_along_axis(ordered, position, axis=0)

    def _function(self, stats: GeneStats, genes: np.ndarray, rows: np.ndarray) -> np.ndarray:
        n_rows = len(rows)
        if self.method == "target_matrix_fct":
            return _recycle(self.fct(stats.target_block(rows, genes)), n_rows, genes.size)
        full = stats.columns(genes)
        mask = np.zeros(stats.expression.n_cells, dtype=bool)
        mask[rows] = True
        if self.method == "full_matrix_fct":
            return _recycle(self.fct(full, mask), n_rows, genes.size)
        out = np.empty((n_rows, genes.size))
        for j in range(genes.size):
            column = full[:, j]
            result = self.fct(column, mask) if self.method == "full_row_fct" else self.fct(column[mask])
            out[:, j] = np.broadcast_to(np.asarray(result, dtype=np.float64).ravel() if np.ndim(result) else result,
                                        (n_rows,))
        return out


def _recycle(result: object, n_rows: int, n_genes: int) -> np.ndarray:
    """R's recycling of whatever a matrix function returns into the (cells × genes) target block."""
    array = np.asarray(result, dtype=np.float64)
    if array.shape == (n_rows, n_genes):
        return array
    flat = np.ravel(array, order="F")
    if flat.size == 0:
        raise ConfigError("the modification function returned no values")
    return np.resize(flat, n_rows * n_genes).reshape((n_rows, n_genes), order="F")


def replace_block(matrix: np.ndarray | sp.spmatrix, rows: np.ndarray, cols: np.ndarray,
                  values: np.ndarray) -> np.ndarray | sp.csr_matrix:
    """A copy of `matrix` with rows × cols set to `values`; sparse stays sparse (only the rows are densified)."""
    if not sp.issparse(matrix):
        out = np.array(matrix, dtype=np.result_type(matrix.dtype, np.float64), copy=True)
        out[np.ix_(rows, cols)] = values
        return out
    csr = sp.csr_matrix(matrix, dtype=np.float64)
    block = csr[rows].toarray()
    block[:, cols] = values
    keep = np.ones(csr.shape[0])
    keep[rows] = 0
    placer = sp.csr_matrix((np.ones(len(rows)), (rows, np.arange(len(rows)))), shape=(csr.shape[0], len(rows)))
    out = sp.csr_matrix(sp.diags(keep) @ csr + placer @ sp.csr_matrix(block))
    out.eliminate_zeros()
    return out


def modify(X: ExpressionInput, genes: Sequence[str], clusters: Sequence[str], target: str, method: str = "perc99",
           fixed_value: float = 3, fct: Callable[..., object] | None = None, legacy: bool = False,
           seed: int | None = None) -> ExpressionInput:
    """A modified copy of X (same type): `genes` set on the cells of cluster `target` by `method`.

    The Python counterpart of adverSCarial's `advModifications`; statistics come from the unmodified data.
    """

    expression = as_expression(X)
    labels = as_labels(clusters, expression.n_cells)
    rows = np.flatnonzero(target_mask(labels, target))
    cols = expression.gene_indices(list(genes))
    modification = Modification(method, fixed_value, fct, legacy)
    values = modification.values(GeneStats(expression), cols, rows, np.random.default_rng(seed))
    return copy_with_block(X, expression, rows, cols, values)


def copy_with_block(X: ExpressionInput, expression: Expression, rows: np.ndarray, cols: np.ndarray,
                    values: np.ndarray) -> ExpressionInput:
    """A copy of X, of the same type, with rows × cols set to `values` (what modify() and CGD return)."""
    import anndata as ad
    import pandas as pd

    matrix = replace_block(expression.matrix, rows, cols, values)
    if isinstance(X, pd.DataFrame):
        return pd.DataFrame(matrix, index=X.index, columns=X.columns)
    if isinstance(X, ad.AnnData):
        out = X.copy()
        out.X = matrix
        return out
    return matrix
