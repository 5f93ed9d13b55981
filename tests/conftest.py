"""Shared fixtures. Public fixture data lives in ../shared/data (licences forbid committing it)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.helpers import shared_file


@pytest.fixture(scope="session")
def pbmc_short() -> tuple[pd.DataFrame, np.ndarray]:
    """adverSCarial's toy data: 200 cells × 200 genes of raw counts, rows = cells, and the cell types."""
    import h5py

    with h5py.File(shared_file("pbmc_short.loom"), "r") as f:
        genes = [g.decode() for g in f["col_attrs/colnames"][:]]
        cells = [c.decode() for c in f["row_attrs/rownames"][:]]
        frame = pd.DataFrame(f["matrix"][:].astype(np.float64), index=cells, columns=genes)
        types = np.array([t.decode() for t in f["row_attrs/cell_type"][:]])
    return frame, types


@pytest.fixture(scope="session")
def synthetic_small():
    """300 cells × 400 genes of log-normalised synthetic counts with 4 types × 10 planted markers."""
    from vulnbench.sc.data import get, prepare

    raw = get("synthetic", n_cells=300, n_genes=400, n_types=4, n_markers=10, seed=3).load()
    adata = prepare(raw, test_size=0.5, seed=0)
    return adata, raw.uns["markers"]
