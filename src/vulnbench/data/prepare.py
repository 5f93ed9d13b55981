"""Prepared datasets: log-normalised, validated, with a seeded stratified train/test split."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.model_selection import train_test_split

from vulnbench.errors import DataError
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
