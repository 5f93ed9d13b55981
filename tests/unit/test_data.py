"""Dataset loaders and preparation: real formats, deterministic splits, one-line errors for bad input."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from tests.helpers import make_10x_archive, shared_file
from vulnbench.core.errors import ConfigError, DataError
from vulnbench.sc.data import get, prepare
from vulnbench.sc.data.datasets import read_label_file


def test_pbmc68k_reduced_is_embedded_and_log_normalised() -> None:
    adata = get("pbmc68k_reduced").load()
    assert adata.shape == (700, 765) and adata.uns["normalised"]
    assert adata.obs["label"].nunique() == 10
    assert adata.X.min() >= 0  # log-normalised raw values, not the z-scored X


def test_synthetic_is_seeded_and_plants_markers() -> None:
    first = get("synthetic", n_cells=200, n_genes=100, n_types=2, n_markers=5, seed=7).load()
    again = get("synthetic", n_cells=200, n_genes=100, n_types=2, n_markers=5, seed=7).load()
    other = get("synthetic", n_cells=200, n_genes=100, n_types=2, n_markers=5, seed=8).load()
    assert (first.X != again.X).nnz == 0 and (first.X != other.X).nnz > 0
    markers = first.uns["markers"]["type0"]
    in_type = first[first.obs["label"] == "type0", markers].X.mean()
    out_type = first[first.obs["label"] == "type1", markers].X.mean()
    assert in_type > 3 * out_type


def test_prepare_normalises_and_splits_stratified_and_reproducibly() -> None:
    raw = get("synthetic", n_cells=400, n_genes=80, n_types=4, n_markers=5, seed=1).load()
    a = prepare(raw.copy(), test_size=0.25, seed=3)
    b = prepare(raw.copy(), test_size=0.25, seed=3)
    c = prepare(raw.copy(), test_size=0.25, seed=4)
    assert (a.obs["split"] == b.obs["split"]).all() and not (a.obs["split"] == c.obs["split"]).all()
    np.testing.assert_allclose(np.expm1(a.X.toarray()).sum(axis=1), 1e4, rtol=1e-4)
    share = pd.crosstab(a.obs["label"], a.obs["split"], normalize="index")["test"]
    assert share.between(0.2, 0.3).all()


def test_prepare_drops_types_too_small_to_split() -> None:
    raw = get("synthetic", n_cells=100, n_genes=50, n_types=2, n_markers=5, seed=0).load()
    raw.obs["label"] = raw.obs["label"].astype(str)
    raw.obs.iloc[:3, raw.obs.columns.get_loc("label")] = "rare"
    prepared = prepare(raw, min_cells_per_type=5)
    assert "rare" not in set(prepared.obs["label"])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda a: a.obs.drop(columns="label", inplace=True), "no 'label' column"),
        (lambda a: a.var_names.values.__setitem__(1, a.var_names[0]), "duplicated gene name"),
        (lambda a: a.X.data.__setitem__(0, np.nan), "NaN"),
        (lambda a: a.X.data.__setitem__(0, -3.0), "negative"),
    ],
)
def test_prepare_rejects_bad_input_in_one_line(damage, message: str) -> None:
    raw = get("synthetic", n_cells=60, n_genes=30, n_types=2, n_markers=5, seed=0).load()
    raw.X = raw.X.astype(np.float64)
    raw.var_names = pd.Index(list(raw.var_names))
    damage(raw)
    with pytest.raises(DataError, match=message) as info:
        prepare(raw)
    assert "\n" not in str(info.value)


def _md5(path: Path) -> str:
    import hashlib

    return "md5:" + hashlib.md5(path.read_bytes()).hexdigest()


def test_pbmc3k_loads_a_10x_archive_with_an_r_style_label_file(tmp_path) -> None:
    archive, labels = make_10x_archive(tmp_path)
    checksum = _md5(archive)
    adata = get("pbmc3k", labels_file=str(labels), checksum=checksum).load(archive)
    assert adata.n_obs == 85 and adata.var_names.is_unique  # 5 unlabelled cells dropped
    assert not adata.uns["normalised"] and set(adata.obs["label"]) == {"type0", "type1", "type2"}
    with pytest.raises(DataError, match="label column 'celltype' missing"):
        get("pbmc3k", labels_file=str(labels), label_column="celltype", checksum=checksum).load(archive)
    with pytest.raises(DataError, match="label file not found"):
        get("pbmc3k", labels_file=str(tmp_path / "nope.tsv"), checksum=checksum).load(archive)


def test_a_placed_pbmc3k_archive_is_held_to_the_checksum_and_kept(tmp_path) -> None:
    """A hand-placed archive never went through the download rule: the same checksum check refuses it, untouched."""
    archive, labels = make_10x_archive(tmp_path)
    before = archive.read_bytes()
    with pytest.raises(DataError, match=r"pbmc3k_filtered_gene_bc_matrices\.tar\.gz") as error:
        get("pbmc3k", labels_file=str(labels)).load(archive)  # the real archive's md5, not this one's
    assert "f76d73bf7a582aaf32b798bcae9574d3" in str(error.value) and "\n" not in str(error.value)
    assert archive.read_bytes() == before


def test_corrupt_archive_is_a_one_line_error(tmp_path) -> None:
    archive, labels = make_10x_archive(tmp_path)
    archive.write_bytes(archive.read_bytes()[:300])
    with pytest.raises(DataError):
        get("pbmc3k", labels_file=str(labels), checksum=None).load(archive)


def test_the_shared_pbmc3k_label_file_reads_as_published() -> None:
    labels = read_label_file(shared_file("pbmc3k_cell_types.tsv"), "cell_type")
    assert len(labels) == 2700 and labels.index[0] == "AAACATACAACCAC-1"
    assert labels.value_counts()["Naive CD4 T"] == 711 and labels.value_counts()["Platelet"] == 14


def test_unknown_dataset_parameter_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown parameter 'n_cell'"):
        get("synthetic", n_cell=5)


def test_prepared_file_round_trips(tmp_path) -> None:
    from vulnbench.sc.data.prepare import read_prepared
    from vulnbench.sc.stages import run_prepare

    run_prepare("synthetic", {"n_cells": 120, "n_genes": 40, "n_types": 2, "n_markers": 5},
                {"test_size": 0.5, "seed": 0, "min_cells_per_type": 5}, None, tmp_path / "p.h5ad")
    test = read_prepared(tmp_path / "p.h5ad", split="test")
    assert isinstance(test, ad.AnnData) and set(test.obs["split"]) == {"test"} and test.n_obs == 60
    (tmp_path / "broken.h5ad").write_bytes(b"not an h5ad file")
    with pytest.raises(DataError, match="cannot read prepared dataset"):
        read_prepared(tmp_path / "broken.h5ad")


def _user_anndata(n_per_type: int = 20, n_genes: int = 30) -> ad.AnnData:
    """A user's AnnData: raw counts in X, a log-normalised copy in a layer, extra obs columns, sparse X."""
    import scipy.sparse as sp

    rng = np.random.default_rng(4)
    types = np.repeat(["B", "NK", "T"], n_per_type)
    counts = rng.poisson(2.0, (len(types), n_genes)).astype(np.float32) + 1
    obs = pd.DataFrame({"cell_type": pd.Categorical(types), "batch": "b1"},
                       index=[f"cell{i}" for i in range(len(types))])
    adata = ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=[f"G{j}" for j in range(n_genes)]))
    adata.layers["lognorm"] = np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4)
    return adata


def test_h5ad_loads_a_user_file_with_its_labels_and_detects_counts(tmp_path) -> None:
    original = _user_anndata()
    original = original[np.random.default_rng(0).permutation(original.n_obs)].copy()  # labels not in blocks
    path = tmp_path / "mine.h5ad"
    original.write_h5ad(path)
    adata = get("h5ad", path=str(path)).load()
    assert adata.shape == original.shape and list(adata.obs_names) == list(original.obs_names)
    assert (adata.obs["label"].astype(str) == original.obs["cell_type"].astype(str)).all()
    assert adata.uns["normalised"] is False  # non-negative integers → raw counts
    np.testing.assert_array_equal(adata.X.toarray(), original.X.toarray())
    lognorm = get("h5ad", path=str(path), layer="lognorm").load()
    assert lognorm.uns["normalised"] is True  # fractional values → already log-normalised
    np.testing.assert_allclose(np.asarray(lognorm.X), original.layers["lognorm"])
    forced = get("h5ad", path=str(path), normalised=True).load()
    assert forced.uns["normalised"] is True
    by_batch = get("h5ad", path=str(path), label_column="batch").load()
    assert set(by_batch.obs["label"]) == {"b1"}
    prepared = prepare(adata, test_size=0.5, seed=0)
    assert set(prepared.obs["label"]) == {"B", "NK", "T"} and set(prepared.obs["split"]) == {"train", "test"}


def test_h5ad_errors_name_the_file_and_what_is_missing(tmp_path) -> None:
    path = tmp_path / "mine.h5ad"
    _user_anndata().write_h5ad(path)
    with pytest.raises(DataError, match=r"no label column 'celltype' in obs \(columns: cell_type, batch\)"):
        get("h5ad", path=str(path), label_column="celltype").load()
    with pytest.raises(DataError, match=r"no layer 'counts' \(layers: lognorm\)"):
        get("h5ad", path=str(path), layer="counts").load()
    with pytest.raises(DataError, match=r"h5ad file not found: .*absent\.h5ad"):
        get("h5ad", path=str(tmp_path / "absent.h5ad")).load()
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match=r"cannot read h5ad file .*mine\.h5ad: truncated") as info:
        get("h5ad", path=str(path)).load()
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="set path"):
        get("h5ad")


def test_negative_values_counts_sparse_stored_values_and_dense_blocks(monkeypatch) -> None:
    import scipy.sparse as sp

    from vulnbench.sc.expression import negative_values

    dense = np.array([[0.0, 1.5, -0.25], [2.0, -3.0, 0.0]], dtype=np.float32)
    assert negative_values(dense) == (2, -3.0)
    assert negative_values(np.asfortranarray(dense)) == (2, -3.0)
    assert negative_values(np.abs(dense)) == (0, 0.0)
    assert negative_values(np.array([[1, -4, 2]], dtype=np.int16)) == (1, -4.0)
    assert negative_values(np.array([[1, 4]], dtype=np.uint8)) == (0, 0.0)
    assert negative_values(np.array([[np.nan, -1.0]])) == (1, -1.0)  # NaN is not a negative value
    monkeypatch.setattr(sp.csr_matrix, "toarray", lambda self: pytest.fail("densified a sparse matrix"))
    assert negative_values(sp.csr_matrix(dense)) == (2, -3.0)


def test_prepare_refuses_negative_values_unless_the_loader_allows_them(caplog) -> None:
    from vulnbench.sc.data.prepare import ALLOW_NEGATIVE

    raw = get("synthetic", n_cells=60, n_genes=30, n_types=2, n_markers=5, seed=0).load()
    normalised = prepare(raw.copy())
    normalised.X.data[[0, 5]] = [-1.5, -0.5]  # as scaled (z-scored) values would be
    del normalised.obs["split"]
    with pytest.raises(DataError, match=r"expression has 2 negative value\(s\) of 1,800, minimum -1\.5: not log-norm"):
        prepare(normalised.copy())
    normalised.uns[ALLOW_NEGATIVE] = True
    accepted = prepare(normalised)
    assert accepted.X.min() == -1.5 and ALLOW_NEGATIVE not in accepted.uns


def test_prepare_keeps_labels_that_look_missing_and_refuses_missing_ones(tmp_path) -> None:
    raw = get("synthetic", n_cells=90, n_genes=30, n_types=3, n_markers=5, seed=0).load()
    names = {"type0": "NA", "type1": "nan", "type2": "None"}
    raw.obs["label"] = pd.Categorical(raw.obs["label"].astype(str).map(names))
    prepared = prepare(raw.copy())
    assert set(prepared.obs["label"]) == {"NA", "nan", "None"} and not prepared.obs["label"].isna().any()
    prepared.write_h5ad(tmp_path / "p.h5ad")
    assert set(ad.read_h5ad(tmp_path / "p.h5ad").obs["label"]) == {"NA", "nan", "None"}
    raw.obs["label"] = raw.obs["label"].astype(object)
    raw.obs.iloc[4, raw.obs.columns.get_loc("label")] = np.nan
    with pytest.raises(DataError, match=r"1 cell\(s\) have no label, e.g. 'cell4'"):
        prepare(raw)


def test_label_file_reads_na_like_cell_types_as_labels(tmp_path) -> None:
    path = tmp_path / "labels.tsv"
    path.write_text("barcode\tcell_type\nc1\tNA\nc2\tnan\nc3\tNone\nc4\tnull\nc5\tB\n")
    labels = read_label_file(path, "cell_type")
    assert labels.to_dict() == {"c1": "NA", "c2": "nan", "c3": "None", "c4": "null", "c5": "B"}
    path.write_text("barcode\tcell_type\nc1\tNA\nc2\t\nc3\t  \n")
    with pytest.raises(DataError, match="has 2 empty labels"):
        read_label_file(path, "cell_type")


def test_h5ad_layer_raw_reads_the_files_raw(tmp_path) -> None:
    original = _user_anndata()
    original.raw = ad.AnnData(X=original.layers["lognorm"], obs=original.obs[[]], var=original.var)
    original.X = original.layers.pop("lognorm") - 1.0  # scaled: negative values
    path = tmp_path / "scaled.h5ad"
    original.write_h5ad(path)
    adata = get("h5ad", path=str(path), layer="raw").load()
    assert adata.uns["normalised"] is True
    np.testing.assert_allclose(np.asarray(adata.X), original.raw.X)
    with pytest.raises(DataError, match=r"no layer 'counts' \(layers: raw = the file's \.raw\)"):
        get("h5ad", path=str(path), layer="counts").load()
