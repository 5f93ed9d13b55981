"""Modification modes of adverSCarial: what value a gene takes on the target cells.

Per-gene statistics are computed once per dataset (vectorised over all genes, sparse-aware) and shared by
every candidate an attack evaluates; upstream recomputes them over the whole matrix on every call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from vulnbench.errors import ConfigError
from vulnbench.sc.expression import Expression

METHODS = ("perc1", "perc99", "positive_aberrant", "negative_aberrant", "fixed")


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
    values = csc.data.astype(np.float64)
    for start, stop in zip(csc.indptr[:-1], csc.indptr[1:], strict=True):
        values[start:stop].sort()  # in place, per column: far faster than one global lexsort
    column = np.repeat(np.arange(n_genes), counts)
    n_negative = np.bincount(column[values < 0], minlength=n_genes)
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
    """Lazily computed, cached per-gene statistics over all cells of one dataset."""

    expression: Expression
    _cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def quantile(self, p: float) -> np.ndarray:
        key = f"q{p!r}"
        if key not in self._cache:
            self._cache[key] = quantile_type7(self.expression.matrix, p)
        return self._cache[key]

    def max(self) -> np.ndarray:
        if "max" not in self._cache:
            m = self.expression.matrix
            mx = m.max(axis=0)
            self._cache["max"] = np.asarray(mx.toarray() if sp.issparse(mx) else mx, dtype=np.float64).ravel()
        return self._cache["max"]


@dataclass(frozen=True)
class Modification:
    """A modification mode with its parameters; `values` gives each gene's new value on the target cells."""

    method: str = "perc99"
    fixed_value: float = 3.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown modification method {self.method!r} (known: {', '.join(METHODS)})")
        if not np.isfinite(float(self.fixed_value)):
            raise ConfigError(f"fixed_value must be a finite number, got {self.fixed_value!r}")

    def values(self, stats: GeneStats, genes: np.ndarray) -> np.ndarray:
        """New value per gene (shape (len(genes),)): one value assigned to every target cell."""
        genes = np.asarray(genes, dtype=np.intp)
        match self.method:
            case "perc1":
                return stats.quantile(0.01)[genes]
            case "perc99":
                return stats.quantile(0.99)[genes]
            case "positive_aberrant":
                return 10000.0 * stats.max()[genes]
            case "negative_aberrant":
                return -10000.0 * stats.max()[genes]
            case "fixed":
                return np.full(genes.shape[0], float(self.fixed_value))
        raise AssertionError(self.method)  # unreachable: validated in __post_init__
