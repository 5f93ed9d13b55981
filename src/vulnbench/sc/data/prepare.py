"""Prepared datasets: log-normalised, validated, with a seeded stratified train/test split."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.model_selection import train_test_split

from vulnbench.core.errors import DataError
from vulnbench.sc.expression import as_expression, negative_values

log = logging.getLogger(__name__)

#: uns flag a loader sets when the user accepted negative values (the h5ad dataset's `normalised: true`);
#: `prepare` refuses them otherwise, and never writes the flag out
ALLOW_NEGATIVE = "allow_negative_values"


def check_cell_names(adata: ad.AnnData) -> None:
    """Cells are addressed by name downstream (splits, attacks): a duplicated name would silently merge two."""
    if adata.obs_names.has_duplicates:
        raise DataError(f"duplicated cell name(s): {adata.obs_names[adata.obs_names.duplicated()][0]}")


def prepare(adata: ad.AnnData, *, test_size: float = 0.5, seed: int = 0, min_cells_per_type: int = 5,
            drop_labels: tuple[str, ...] = ()) -> ad.AnnData:
    """Validate, log-normalise (counts → log1p(CP10k), as Seurat's LogNormalize) and split.

    Types with fewer than `min_cells_per_type` cells cannot be split or learned and are dropped (logged).
    Negative values are refused (neither counts nor log-normalised values have them) unless the loader set
    `uns[ALLOW_NEGATIVE]`. Labels are text: "NA", "nan" or "None" are cell types, a missing label is an error
    (it would otherwise become the text "nan").
    """
    if "label" not in adata.obs:
        raise DataError("dataset has no 'label' column in obs")
    missing = adata.obs["label"].isna().to_numpy()
    if missing.any():
        raise DataError(f"{int(missing.sum())} cell(s) have no label, e.g. {adata.obs_names[missing][0]!r}")
    expression = as_expression(adata)  # duplicated genes, NaN / Inf, non-numeric values
    check_cell_names(adata)
    count, minimum = negative_values(expression.matrix)
    if count and not adata.uns.get(ALLOW_NEGATIVE, False):
        found = f"{count:,} negative value(s) of {int(np.prod(expression.matrix.shape)):,}, minimum {minimum:.4g}"
        raise DataError(f"raw counts contain negative values: {found}" if not adata.uns.get("normalised", False)
                        else f"expression has {found}: not log-normalised (scaled or z-scored?)")
    if not 0 < test_size < 1:
        raise DataError(f"test_size must be between 0 and 1, got {test_size}")
    keep = ~adata.obs["label"].astype(str).isin(drop_labels)
    counts = adata.obs.loc[keep, "label"].astype(str).value_counts()
    small = counts[counts < min_cells_per_type]
    if len(small):
        log.warning("dropping types with fewer than %d cells: %s", min_cells_per_type,
                    ", ".join(f"{k} ({v})" for k, v in small.items()))
    keep &= ~adata.obs["label"].astype(str).isin(small.index)
    adata = adata[keep.to_numpy()].copy()
    if adata.obs["label"].nunique() < 2:
        found = ", ".join(f"{k} ({v})" for k, v in counts.items()) or "none"
        raise DataError(f"fewer than two cell types with at least {min_cells_per_type} cells (min_cells_per_type) "
                        f"left to classify; cells per type: {found}")
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    if not adata.uns.get("normalised", False):
        totals = np.asarray(adata.X.sum(axis=1)).ravel()
        if (totals == 0).any():
            raise DataError(f"{int((totals == 0).sum())} cell(s) have no counts at all, e.g. "
                            f"{adata.obs_names[np.flatnonzero(totals == 0)[0]]!r}; remove them first")
        import scanpy as sc

        sc.pp.normalize_total(adata, target_sum=1e4)
        sc.pp.log1p(adata)
    adata.uns["normalised"] = True
    labels = adata.obs["label"].astype(str).to_numpy()
    try:
        train, _ = train_test_split(np.arange(adata.n_obs), test_size=test_size, random_state=seed, stratify=labels)
    except ValueError as exc:  # a split too small to hold one cell of every type
        raise DataError(f"cannot split {adata.n_obs} cells of {len(np.unique(labels))} types with test_size "
                        f"{test_size}: {exc}") from None
    split = np.full(adata.n_obs, "test", dtype=object)
    split[train] = "train"
    adata.obs["label"] = pd.Categorical(labels)
    adata.obs["split"] = pd.Categorical(split, categories=["train", "test"])
    adata.uns.pop("log1p", None)
    adata.uns.pop(ALLOW_NEGATIVE, None)
    log.info("prepared %d cells × %d genes, %d types; train %d / test %d", adata.n_obs, adata.n_vars,
             len(np.unique(labels)), len(train), adata.n_obs - len(train))
    return adata


def read_prepared(path: str | Path, split: str | None = None) -> ad.AnnData:
    try:
        adata = ad.read_h5ad(path)
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"cannot read prepared dataset {path}: {type(exc).__name__}") from None
    for column in ("label", "split"):
        if column not in adata.obs:
            raise DataError(f"{path} has no obs column {column!r}: not a prepared dataset")
    if split is not None:
        adata = adata[adata.obs["split"] == split].copy()
    return adata


def check_clusters(requested: str | Sequence[str] | None, labels: np.ndarray, where: str) -> list[str]:
    """The clusters to attack: all labels, or the requested names, each of which must be a label of the data."""
    present = sorted(set(labels))
    if requested in ("all", None):
        return present
    names = [requested] if isinstance(requested, str) else [str(c) for c in requested]
    unknown = [name for name in names if name not in present]
    if unknown:
        raise DataError(f"{where}: unknown cluster {unknown[0]!r} (clusters of the held-out cells: "
                        f"{', '.join(present)})")
    return names


#: attack parameters that name genes / clusters of the data
GENE_PARAMETERS, CLUSTER_PARAMETERS = ("genes", "exclude_genes"), ("new_target", "exclude_new_targets")


def check_data_names(params: Mapping[str, Any], labels: np.ndarray, gene_names: Sequence[str], where: str) -> None:
    """Gene and cluster names in an attack's parameters exist in the data, before the first cluster is attacked
    (a misspelt gene would otherwise fail every cluster alone, or a misspelt excluded gene be silently kept)."""

    known = set(map(str, gene_names))
    for key in GENE_PARAMETERS:
        unknown = [str(g) for g in params.get(key) or () if str(g) not in known]
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(known), n=3)
            hint = f"; close: {', '.join(close)}" if close else ""
            raise DataError(f"{where}: {key}: gene {unknown[0]!r} is not in the data ({len(known)} genes){hint}")
    for key in CLUSTER_PARAMETERS:
        value = params.get(key)
        if value:
            check_clusters([value] if isinstance(value, str) else list(value), labels, f"{where}: {key}")
