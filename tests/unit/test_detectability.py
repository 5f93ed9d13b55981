"""Detectability panel: the four attacks on one cluster, their visibility in PCA space and the two figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tests.helpers import MarkerMeans
from vulnbench.core.errors import ConfigError, DataError
from vulnbench.sc import detectability as det

TARGET = "type0"


@pytest.fixture(scope="module")
def held_out(synthetic_small):
    adata, markers = synthetic_small
    test = adata[adata.obs["split"] == "test"].copy()
    return test, test.obs["label"].astype(str).to_numpy(), markers


@pytest.fixture(scope="module")
def result(held_out):
    test, labels, markers = held_out
    # positive_aberrant: one other type's marker at 10000·max flips MarkerMeans, so single-gene finds a gene
    return det.detectability(test, labels, TARGET, MarkerMeans(test.var_names, markers),
                             single_gene_method="positive_aberrant", markers=markers[TARGET])


def test_table_has_the_original_and_four_attacks(result) -> None:
    table = result.table
    assert list(table["attack"]) == ["original", "single_gene", "max_change", "cgd_low", "cgd_high"]
    assert set(det.TABLE_COLUMNS) <= set(table.columns)
    assert (table["baseline_label"] == TARGET).all() and (table["n_cells"] == 40).all()
    assert (table["flipped"] == (table["new_label"] != TARGET)).all()
    # each attack's own verdict matches what the model says on the copy we measured
    assert (table["copy_label"] == table["new_label"]).all()
    row = result.row("single_gene")
    assert row["flipped"] and row["n_genes_modified"] == 1 and "positive_aberrant" in row["detail"]
    assert not result.row("max_change")["flipped"]  # max-change keeps the label by construction
    assert result.row("max_change")["n_genes_modified"] > 300
    assert table["frac_genes_modified"].tolist() == pytest.approx(table["n_genes_modified"] / 400)


def test_detectability_is_deterministic(result, held_out) -> None:
    test, labels, markers = held_out
    again = det.detectability(test, labels, TARGET, MarkerMeans(test.var_names, markers),
                              single_gene_method="positive_aberrant", markers=markers[TARGET])
    columns = [c for c in det.TABLE_COLUMNS if c != "runtime_s"]
    pd.testing.assert_frame_equal(again.table[columns], result.table[columns])


def test_visibility_is_zero_unmodified_and_grows_with_cgd_step(result) -> None:
    original = result.row("original")
    assert original["visibility"] == 0.0 and original["n_genes_modified"] == 0
    assert original["mean_abs_change"] == 0.0 and original["radius"] > 0
    low, high = result.row("cgd_low"), result.row("cgd_high")
    assert 0 < low["visibility"] <= high["visibility"]
    assert high["mean_abs_change"] > low["mean_abs_change"]
    # an aberrant value (10000·max) moves the cluster far beyond its own radius
    assert result.row("single_gene")["visibility"] > 100


def test_attacked_copies_differ_only_on_the_target_cells(result) -> None:
    others = np.flatnonzero(result.labels != TARGET)
    before = result.original.X
    for name, copy in result.modified.items():
        difference = abs(sp.csr_matrix(copy.X) - sp.csr_matrix(before))
        assert difference[others].sum() == 0, name
        assert difference[result.target_rows].sum() > 0, name


def test_visibility_planted_shift_is_exact_and_linear(held_out) -> None:
    test, labels, markers = held_out
    pca = det.fit_pca(test, seed=0)
    rows = np.flatnonzero(labels == TARGET)
    before = test.X[rows].toarray().astype(np.float64)
    unmoved, no_shift, radius = det.visibility(pca, before, before)
    assert unmoved == 0.0 and no_shift == 0.0 and radius > 0
    # along a principal axis the definition is exact: a shift of 3 radii scores 3
    along_pc1 = 3 * radius * pca.components_[0]
    assert det.visibility(pca, before, before + along_pc1)[0] == pytest.approx(3.0)
    # a planted strong shift: another type's 10 markers raised by 12 (log scale) on every target cell
    shift = np.zeros(test.n_vars)
    shift[test.var_names.get_indexer(markers["type1"])] = 12.0
    one, shift_one, _ = det.visibility(pca, before, before + shift)
    two, shift_two, _ = det.visibility(pca, before, before + 2 * shift)
    assert one > 1  # the cluster moved further than its own RMS radius
    assert two == pytest.approx(2 * one) and shift_two == pytest.approx(2 * shift_one)
    assert one == pytest.approx(shift_one / radius)
    # a constant (one-cell) cluster has no spread: unmoved is 0, moved is infinitely visible
    assert det.visibility(pca, before[:1], before[:1])[0] == 0.0
    assert det.visibility(pca, before[:1], before[:1] + shift)[0] == np.inf


def test_reference_is_the_nearest_other_cluster(result, held_out) -> None:
    test, labels, _ = held_out
    row = result.row("original")
    assert row["reference_cluster"] in {"type1", "type2", "type3"}
    # moving every target cell by the centroid difference scores exactly the reference visibility
    X = test.X.toarray().astype(np.float64)
    before = X[labels == TARGET]
    moved = before + X[labels == row["reference_cluster"]].mean(0) - before.mean(0)
    assert det.visibility(result.pca, before, moved)[0] == pytest.approx(row["reference_visibility"])
    assert (result.table["reference_visibility"] == row["reference_visibility"]).all()


def test_change_summary_counts_genes_and_mean_delta() -> None:
    before = np.zeros((3, 4))
    after = before.copy()
    after[0, 1], after[2, 1], after[1, 3] = 2.0, -1.0, 0.5
    assert det.change_summary(before, after) == (2, pytest.approx((2.0 + 1.0 + 0.5) / 3))
    assert det.change_summary(before, before) == (0, 0.0)


def test_no_flip_keeps_the_data_and_says_so(held_out) -> None:
    test, labels, markers = held_out
    res = det.detectability(test, labels, TARGET, MarkerMeans(test.var_names, markers), single_gene_method="perc1",
                            cgd_genes=10, markers=["NOT_A_GENE"])
    row = res.row("single_gene")
    assert not row["flipped"] and row["n_genes_modified"] == 0 and row["visibility"] == 0.0
    assert "no flip" in res.titles["single_gene"]
    assert (res.modified["single_gene"].X != test.X).nnz == 0
    # no requested marker in the data: the dot plot falls back to the top signature genes
    assert len(res.markers) == 10 and "signature" in res.markers_source


def test_bad_arguments_raise_one_line_errors(held_out) -> None:
    test, labels, markers = held_out
    model = MarkerMeans(test.var_names, markers)
    with pytest.raises(DataError, match="nope"):
        det.detectability(test, labels, "nope", model)
    with pytest.raises(ConfigError, match="cgd_low"):
        det.detectability(test, labels, TARGET, model, cgd_low=2.0, cgd_high=1.0)
    with pytest.raises(ConfigError, match="cgd_genes"):
        det.detectability(test, labels, TARGET, model, cgd_genes=0)


def test_plots_are_written(result, tmp_path) -> None:
    embedding = det.union_umap(result)
    assert embedding["original"].shape == (result.original.n_obs, 2)
    assert all(embedding[name].shape == (40, 2) for name in result.modified)
    # the aberrant single-gene copy forms its own island (ingest would have drawn it among real cells)
    points = np.vstack([embedding["original"], embedding["single_gene"]])
    distances = np.linalg.norm(points[:, None] - points[None], axis=2)
    np.fill_diagonal(distances, np.inf)
    nearest = distances.argmin(axis=1)[result.original.n_obs :]
    assert (nearest >= result.original.n_obs).mean() > 0.9
    umap, dots = tmp_path / "umap.png", tmp_path / "dots.png"
    det.plot_umaps(result, umap)
    det.plot_dotplot(result, dots)
    for path in (umap, dots):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary file


def test_run_detectability_end_to_end(tmp_path) -> None:
    from vulnbench.sc.classifiers._scmlp import ScMLP
    from vulnbench.sc.data.prepare import read_prepared
    from vulnbench.sc.stages import run_prepare

    prepared = tmp_path / "prepared.h5ad"
    run_prepare("synthetic", {"n_cells": 240, "n_genes": 200, "n_types": 3, "n_markers": 10, "seed": 5},
                {"test_size": 0.5, "seed": 0, "min_cells_per_type": 5}, None, prepared)
    data = read_prepared(prepared)
    train = data[data.obs["split"] == "train"]
    model_path = tmp_path / "model.pkl"
    ScMLP(epochs=3, seed=0).fit(train, train.obs["label"].astype(str)).save(model_path)
    outputs = [tmp_path / "out" / name for name in ("table.tsv", "umap.png", "dots.png")]
    det.run_detectability(prepared, model_path, None, {"cgd_genes": 20, "seed": 1}, *outputs, threads=1)
    table = pd.read_csv(outputs[0], sep="\t")
    test_labels = data.obs.loc[data.obs["split"] == "test", "label"].astype(str)
    assert table["target"].unique().tolist() == [det.largest_cluster(test_labels.to_numpy())]
    assert table["n_cells"].iloc[0] == test_labels.value_counts().max()
    assert len(table) == 5 and table.loc[0, "visibility"] == 0.0
    assert all(p.stat().st_size > 5_000 for p in outputs[1:])
    with pytest.raises(ConfigError, match="bogus"):
        det.run_detectability(prepared, model_path, None, {"bogus": 1}, *outputs)


def test_largest_cluster_breaks_ties_alphabetically() -> None:
    assert det.largest_cluster(np.array(["b", "b", "a", "a", "c"])) == "a"
    assert det.largest_cluster(np.array(["z", "z", "a"])) == "z"
