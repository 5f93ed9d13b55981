"""Signature genes (adverSCarial `getSignGenes`): genes ranked so the top of the list covers every cluster pair.

Upstream runs one R test per (pair, gene) and row-binds the ranking one gene at a time. Here each pair is one
vectorised scipy call over all genes on the two clusters' densified rows, and the round-robin ranking is a single
`np.unique` over the rank table.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from itertools import combinations
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from vulnbench.core.errors import ConfigError, DataError
from vulnbench.sc.expression import ExpressionInput, as_expression, as_labels
from vulnbench.sc.modifications import GeneStats

#: accepted `method` values; "ttest" is upstream's own spelling of "t"
METHODS = {"wilcox": "wilcox", "t": "t", "ttest": "t"}
#: R's wilcox.test uses the exact null distribution only when both groups are smaller than this (and no ties)
EXACT_LIMIT = 50
#: upstream tie breaker added to the first value of a constant group (legacy mode)
TIE_BREAKER = 0.01
PAIR_SEP = "|"


def distant_couples(cluster_names: Sequence[str]) -> list[tuple[str, str]]:
    """Order all cluster pairs so consecutive pairs share no cluster (upstream `getDistantCouples`).

    Taking genes round-robin over this order spreads the top of the ranking over disjoint comparisons first.
    Scan the pairs (combination order) cyclically from just after the last pick; pick a pair not yet taken that
    shares no cluster with the previous pick. When a whole cycle finds nothing, append every remaining pair in
    combination order (upstream gives up after n + 2 failed steps, which is equivalent: nothing changes meanwhile).
    """
    names = list(dict.fromkeys(map(str, cluster_names)))
    pairs = list(combinations(names, 2))
    n = len(pairs)
    taken = np.zeros(n, dtype=bool)
    order: list[int] = []
    previous: tuple[str, ...] = ()
    start = 0
    while len(order) < n:
        for step in range(n):
            j = (start + step) % n
            a, b = pairs[j]
            if not taken[j] and a not in previous and b not in previous:
                taken[j] = True
                order.append(j)
                previous = pairs[j]
                start = j + 1
                break
        else:
            order.extend(np.flatnonzero(~taken).tolist())
            break
    return [pairs[j] for j in order]


def _is_constant(block: np.ndarray) -> np.ndarray:
    """Per gene (column): all cells share one value."""
    return (block == block[:1]).all(axis=0)


def _has_ties(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per gene: any repeated value in the pooled sample (R's `TIES`, which disables the exact test)."""
    pooled = np.sort(np.concatenate([x, y], axis=0), axis=0)
    return (np.diff(pooled, axis=0) == 0).any(axis=0)


def _wilcox(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Two-sided rank-sum p per gene with R's rule: exact if both groups < 50 cells and no ties, else normal + cc.

    scipy's method="auto" differs (≤ 8 cells, and decides once for the whole matrix), so the choice is made here.
    """
    p = stats.mannwhitneyu(x, y, axis=0, method="asymptotic", use_continuity=True).pvalue
    if x.shape[0] < EXACT_LIMIT and y.shape[0] < EXACT_LIMIT:
        exact = ~_has_ties(x, y)
        if exact.any():
            p[exact] = stats.mannwhitneyu(x[:, exact], y[:, exact], axis=0, method="exact").pvalue
    return p


def pair_pvalues(x: np.ndarray, y: np.ndarray, *, method: str = "wilcox", legacy: bool = False) -> np.ndarray:
    """p-value per gene between two groups of cells (rows), one vectorised test over all columns.

    legacy: upstream's tie breaker (+0.01 on the first value of a constant group) and NaN kept as NaN (it ranks
    last, like R's NA). Default: identical constant groups get p = 1 and any NaN from scipy becomes 1.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown signature method {method!r}; use one of: wilcox, t")
    method = METHODS[method]
    n_genes = x.shape[1]
    if x.shape[0] == 0 or y.shape[0] == 0:
        return np.ones(n_genes)
    x = np.array(x, dtype=np.float64, copy=True)  # double precision like R; a copy, the tie breaker writes to it
    y = np.array(y, dtype=np.float64, copy=True)
    const_x, const_y = _is_constant(x), _is_constant(y)
    if legacy:
        x[0, const_x] += TIE_BREAKER
        y[0, const_y] += TIE_BREAKER
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        if method == "wilcox":
            p = _wilcox(x, y)
        else:
            p = np.asarray(stats.ttest_ind(x, y, axis=0, equal_var=False).pvalue, dtype=np.float64)
    if not legacy:
        p[const_x & const_y & (x[0] == y[0])] = 1.0
        p[np.isnan(p)] = 1.0
    return p


def _bh(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg per row over the finite p-values (NaN only occurs in legacy mode and stays NaN)."""
    adj = np.full_like(p, np.nan)
    for row in range(p.shape[0]):
        ok = np.isfinite(p[row])
        if ok.any():
            adj[row, ok] = stats.false_discovery_control(p[row, ok], method="bh")
    return adj


def round_robin(order: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First appearance of each gene when reading the rank table rank by rank, pair by pair.

    order: (n_pairs × n_genes) gene indices, each row a pair's genes best first. Returns, in final order, the
    pair position, the 0-based rank within that pair, and the gene index — upstream's double loop with
    `if (!gene %in% results)`, without the quadratic row-binding.
    """
    n_pairs = order.shape[0]
    flat = order.T.ravel()  # rank-major: rank 1 of every pair, then rank 2, ...
    _, first = np.unique(flat, return_index=True)
    first.sort()
    return first % n_pairs, first // n_pairs, flat[first]


def signature_genes(
    X: ExpressionInput,
    clusters: Sequence[str],
    *,
    method: str = "wilcox",
    legacy: bool = False,
    adjust: bool = True,
) -> pd.DataFrame:
    """Genes ordered by how well they separate cluster pairs, round-robin over `distant_couples` (getSignGenes).

    For rank i = 1..n_genes and each pair in order, the pair's i-th best gene (p ascending, ties in gene order) is
    appended unless already listed; `pval` is that pair's p, so rows are not comparable across pairs. Columns:
    gene, pval, pair ("A|B"), and pval_adj (BH within the pair) when `adjust`. attrs["pairs"] is the pair order,
    attrs["pval_list"] maps each pair to its DataFrame(gene, pval) sorted by p (upstream `pvalList`).
    """
    if method not in METHODS:
        raise ConfigError(f"unknown signature method {method!r}; use one of: wilcox, t")
    test = METHODS[method]
    expr = as_expression(X)
    labels = as_labels(clusters, expr.n_cells)
    names = list(pd.unique(labels))  # R's unique(): order of first appearance
    if len(names) < 2:
        raise DataError(f"signature genes need at least 2 clusters, got {len(names)}")
    pairs = distant_couples(names)
    members = {name: np.flatnonzero(labels == name) for name in names}

    pvals = np.vstack(
        [pair_pvalues(expr.rows(members[a]), expr.rows(members[b]), method=test, legacy=legacy) for a, b in pairs]
    )
    order = np.argsort(pvals, axis=1, kind="stable")  # stable like R's order(); NaN last like NA
    sorted_p = np.take_along_axis(pvals, order, axis=1)
    pair_pos, rank, gene_idx = round_robin(order)
    labels_pairs = [f"{a}{PAIR_SEP}{b}" for a, b in pairs]

    result = pd.DataFrame(
        {
            "gene": expr.genes[gene_idx].astype(str),
            "pval": sorted_p[pair_pos, rank],
            "pair": np.asarray(labels_pairs, dtype=object)[pair_pos],
        }
    )
    if adjust:
        result["pval_adj"] = _bh(pvals)[pair_pos, gene_idx]
    result.attrs["pairs"] = labels_pairs
    result.attrs["pval_list"] = {
        label: pd.DataFrame({"gene": expr.genes[order[k]].astype(str), "pval": sorted_p[k]})
        for k, label in enumerate(labels_pairs)
    }
    return result


#: how the attacked genes are chosen: the signature ranking (getSignGenes) or a seeded random order
GeneOrder = Literal["signature", "random"]


def ranked_genes(X: Any, clusters: Sequence[str], n_genes: int, gene_order: str, seed: int | None,
                 stats: GeneStats | None) -> list[str]:
    """The first `n_genes` genes of the signature ranking (getSignGenes; once per dataset) or a seeded order."""
    if gene_order == "signature":
        def rank() -> list[str]:
            return list(signature_genes(X, clusters)["gene"])

        return (stats.memo("signature_genes", rank) if stats is not None else rank())[: int(n_genes)]
    if gene_order == "random":
        names = list(X.var_names) if hasattr(X, "var_names") else list(X.columns)
        return [names[i] for i in np.random.default_rng(seed).permutation(len(names))[: int(n_genes)]]
    raise ConfigError(f"gene_order must be 'signature' or 'random', got {gene_order!r}")
