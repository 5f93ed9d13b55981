"""scAnnotatR port: marker search, down-sampling, Platt scaling, query-wide z-scores, labels and the tree."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

from vulnbench.core.errors import ConfigError, DataError
from vulnbench.sc.classifiers._scannotatr import (
    UNKNOWN,
    RankTable,
    ScAnnotatR,
    downsample,
    fit_platt,
    select_markers,
)
from vulnbench.sc.classifiers.base import PerCellClassifier, plurality
from vulnbench.sc.data.datasets import synthetic_counts

N_TRAIN = 400


def log_normalise(counts: sp.csr_matrix) -> np.ndarray:
    """log1p of counts per 10k, as Seurat's LogNormalize."""
    counts = sp.csr_matrix(counts, dtype=np.float64)
    scaled = sp.diags(1e4 / np.asarray(counts.sum(axis=1)).ravel()) @ counts
    scaled.data = np.log1p(scaled.data)
    return scaled.toarray()


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray, dict[str, list[str]]]:
    """600 cells × 300 genes, 4 types with 8 planted markers each; the first 400 cells train."""
    counts, labels, planted = synthetic_counts(n_cells=600, n_genes=300, n_types=4, n_markers=8, fold_change=8.0,
                                               dispersion=0.2, mean_count=0.3, seed=1)
    genes = [f"g{j}" for j in range(counts.shape[1])]
    frame = pd.DataFrame(log_normalise(counts), columns=genes)
    return frame, labels, {t: [genes[j] for j in cols] for t, cols in planted.items()}


@pytest.fixture(scope="module")
def model(data) -> ScAnnotatR:
    frame, labels, _ = data
    return ScAnnotatR(n_markers=8).fit(frame[:N_TRAIN], labels[:N_TRAIN])


@pytest.fixture(scope="module")
def test_set(data) -> tuple[pd.DataFrame, np.ndarray]:
    frame, labels, _ = data
    return frame[N_TRAIN:].reset_index(drop=True), labels[N_TRAIN:]


def test_selected_markers_are_planted_markers(model, data) -> None:
    _, _, planted = data
    signal = {g for genes in planted.values() for g in genes}
    assert list(model.classes_) == sorted(planted)
    for cell_type, markers in model.markers_.items():
        assert len(markers) == 8
        assert set(markers) <= signal, "only genes with planted signal separate the types"
        # one-vs-rest tests are the most significant, so a type's own markers come first; the others are
        # other types' markers, low in this type (found by the one-vs-each comparisons)
        assert len(set(markers) & set(planted[cell_type])) >= 4, cell_type


def test_held_out_accuracy_and_probabilities(model, test_set) -> None:
    test, labels = test_set
    proba = model.predict_proba(test)
    assert proba.shape == (len(test), 4)
    assert ((proba >= 0) & (proba <= 1)).all()
    assert np.mean(model.predict(test) == labels) > 0.9


def test_a_cell_far_from_every_type_is_unknown(model, test_set) -> None:
    test, _ = test_set
    query = pd.concat([test, pd.DataFrame([np.zeros(test.shape[1])], columns=test.columns)], ignore_index=True)
    assert model.predict(query)[-1] == UNKNOWN
    assert (model.predict_proba(query)[-1] < model.threshold).all()


def test_deterministic_under_a_seed(model, data, test_set) -> None:
    frame, labels, _ = data
    again = ScAnnotatR(n_markers=8).fit(frame[:N_TRAIN], labels[:N_TRAIN])
    assert again.markers_ == model.markers_
    np.testing.assert_array_equal(again.predict_proba(test_set[0]), model.predict_proba(test_set[0]))


def test_scores_depend_on_the_other_query_cells(model, test_set) -> None:
    assert ScAnnotatR.cell_independent is False and "cell_independent" not in ScAnnotatR.capabilities
    test, _ = test_set
    shifted = test.copy()
    shifted.loc[1:, list(model.marker_genes_)] += 1.0  # every cell but cell 0
    before, after = model.predict_proba(test)[0], model.predict_proba(shifted)[0]
    np.testing.assert_array_equal(test.iloc[0], shifted.iloc[0])
    assert np.abs(before - after).max() > 0.05, "cell 0 is z-scored against the other cells"


def test_cluster_call_classifies_the_whole_dataset(model, test_set) -> None:
    test, labels = test_set
    for target in np.unique(labels):
        mask = labels == target
        label, fraction = model(test, labels, target)
        assert (label, fraction) == pytest.approx(plurality(model.predict(test)[mask]))
        assert label == target
        # the target cells alone: their markers z-scored among themselves lose the contrast with other types
        alone, alone_fraction = plurality(model.predict(test[mask]))
        assert (alone, alone_fraction) != (label, pytest.approx(fraction))
    assert model(test, labels, "no such cluster") == ("UNDETERMINED", 1.0)


def test_cluster_call_accepts_sparse_input_and_reordered_genes(model, test_set) -> None:
    import anndata as ad

    test, labels = test_set
    reordered = test[test.columns[::-1]]
    adata = ad.AnnData(sp.csr_matrix(reordered.to_numpy(np.float32)), var=pd.DataFrame(index=reordered.columns))
    assert model(adata, labels, "type1") == pytest.approx(model(test, labels, "type1"))


def test_downsampling_balances_every_binary_model(data) -> None:
    frame, labels, _ = data
    rng = np.random.default_rng(0)
    keep = np.concatenate([np.flatnonzero(labels == "type0")[:120], np.flatnonzero(labels == "type1")[:30],
                           np.flatnonzero(labels == "type2")[:12]])
    rng.shuffle(keep)
    x, y = frame.iloc[keep], labels[keep]
    balanced = ScAnnotatR(n_markers=5).fit(x, y)
    assert balanced.train_sizes_ == {"type0": (42, 42), "type1": (30, 30), "type2": (12, 12)}
    unbalanced = ScAnnotatR(n_markers=5, downsample=False).fit(x, y)
    assert unbalanced.train_sizes_ == {"type0": (120, 42), "type1": (30, 132), "type2": (12, 150)}


def test_downsample_draws_without_replacement_and_keeps_the_minority() -> None:
    target = np.zeros(50, dtype=bool)
    target[[3, 17, 40]] = True
    rows = downsample(target, np.random.default_rng(5))
    assert len(rows) == 6 and len(set(rows)) == 6
    assert set(rows[:3]) == {3, 17, 40} and not target[rows[3:]].any()
    np.testing.assert_array_equal(rows, downsample(target, np.random.default_rng(5)))


def test_labels_threshold_ambiguity_and_most_probable(model) -> None:
    proba = np.array([
        [0.7, 0.9, 0.1, 0.2],  # two accepting models: joined, the higher one is the most probable
        [0.1, 0.2, 0.3, 0.49],  # none
        [0.1, 0.5, 0.0, 0.0],  # p ≥ threshold is positive (R: `>=`)
    ])
    np.testing.assert_array_equal(model.predicted_cell_type(proba), ["type0/type1", UNKNOWN, "type1"])
    np.testing.assert_array_equal(model.most_probable(proba), ["type1", UNKNOWN, "type1"])


def test_classify_cells_table(model, test_set) -> None:
    test, _ = test_set
    table = model.classify_cells(test)
    assert {"type0_p", "type0_class", "predicted_cell_type", "most_probable_cell_type"} <= set(table.columns)
    np.testing.assert_array_equal(table["most_probable_cell_type"], model.predict(test))
    np.testing.assert_allclose(table[[f"{t}_p" for t in model.classes_]], model.predict_proba(test))


def test_hierarchy_evaluates_children_only_where_the_parent_accepts(data, test_set) -> None:
    frame, labels, _ = data
    tree = ScAnnotatR(n_markers=8, hierarchy={"type1": "T", "type2": "T"}).fit(frame[:N_TRAIN], labels[:N_TRAIN])
    assert list(tree.classes_) == ["T", "type0", "type1", "type2", "type3"]
    test, truth = test_set
    table = tree.classify_cells(test)
    rejected = table["T_class"] == "no"
    assert rejected.any() and table.loc[rejected, ["type1_p", "type2_p"]].isna().all().all()
    assert (tree.predict_proba(test)[rejected.to_numpy()][:, 2:4] == 0).all()
    accepted_child = (table["type1_class"] == "yes") & (table["most_probable_cell_type"] == "type1")
    assert table.loc[accepted_child, "predicted_cell_type"].str.startswith("T/").all()
    predicted = tree.predict(test)
    assert np.mean(predicted == truth) > 0.85
    assert np.mean(predicted[np.isin(truth, ["type1", "type2"])] == "T") < 0.1, "accepted T cells descend to a child"


def test_hierarchy_errors_are_one_line(data) -> None:
    frame, labels, _ = data
    x, y = frame[:N_TRAIN], labels[:N_TRAIN]
    with pytest.raises(ConfigError, match="cycle"):
        ScAnnotatR(hierarchy={"type1": "T", "T": "type1"}).fit(x, y)
    with pytest.raises(ConfigError, match="no training cells"):
        ScAnnotatR(hierarchy={"NK": "type0"}).fit(x, y)
    with pytest.raises(ConfigError, match="n_markers"):
        ScAnnotatR(n_markers=0).fit(x, y)


def test_no_separating_gene_is_a_data_error() -> None:
    x = pd.DataFrame(np.ones((20, 5)), columns=list("abcde"))
    with pytest.raises(DataError, match="no gene separates"):
        ScAnnotatR().fit(x, np.repeat(["A", "B"], 10))


def test_rank_table_matches_r_wilcox_test() -> None:
    """Normal approximation with continuity and tie corrections (scipy's asymptotic test is R's), exact p
    for small groups without ties."""
    rng = np.random.default_rng(0)
    x = np.round(rng.exponential(1, (300, 40)) * (rng.random((300, 40)) < 0.4), 1)
    x[:, 0] = 0.0
    x[:, 1] = rng.normal(size=300)
    code = rng.integers(0, 4, 300)

    def table(values: np.ndarray, codes: np.ndarray) -> RankTable:
        order = np.argsort(values, axis=0, kind="stable")
        return RankTable(np.take_along_axis(values, order, 0).T.copy(), codes[order].T.copy(), 4)

    sizes = np.bincount(code, minlength=4).astype(float)
    ranks = table(x, code)
    for a, b in [((0,), (1, 2, 3)), ((1,), (2,)), ((2,), (1,)), ((0, 1), (3,))]:
        expected = stats.mannwhitneyu(x[np.isin(code, a)], x[np.isin(code, b)], axis=0, method="asymptotic").pvalue
        np.testing.assert_allclose(np.exp(ranks.logp(a, b, sizes)), np.nan_to_num(expected, nan=1.0), atol=1e-12)
    small = np.concatenate([np.flatnonzero(code == 0)[:12], np.flatnonzero(code == 1)[:9]])
    logp = table(x[small], code[small]).logp((0,), (1,), np.bincount(code[small], minlength=4).astype(float))
    a, b = x[small][code[small] == 0], x[small][code[small] == 1]
    assert np.exp(logp[1]) == pytest.approx(stats.mannwhitneyu(a[:, 1], b[:, 1], method="exact").pvalue)


def test_marker_selection_keeps_the_minimum_p_and_its_mean_difference() -> None:
    """Gene 0 separates A from the rest; gene 1 separates A only from C (one-vs-each finds it); gene 2 has two
    A outliers (large mean difference, weak p); gene 3 separates A perfectly but by less than 0.5; gene 4 is
    noise."""
    rng = np.random.default_rng(1)
    y = np.repeat(["A", "B", "C"], 30)
    x = rng.normal(0, 0.01, (90, 5))
    x[y == "A", 0] += 3
    x[y == "C", 1] -= 3
    x[:2, 2] += 20
    x[y == "A", 3] += 0.3
    groups = {"A": ["A"], "B": ["B"], "C": ["C"]}
    chosen = select_markers(x, y, groups, n_markers=3, min_mean_diff=0.5, scale=False)
    assert list(chosen["A"]) == [0, 1, 2]
    assert list(select_markers(x, y, groups, n_markers=2, min_mean_diff=0.5, scale=False)["A"]) == [0, 1]
    assert list(chosen["C"][:2]) == [0, 1]
    assert 3 in select_markers(x, y, groups, n_markers=3, min_mean_diff=0.2, scale=False)["A"]


def test_platt_recovers_a_known_sigmoid() -> None:
    rng = np.random.default_rng(2)
    f = rng.normal(0, 2, 20000)
    target = rng.random(20000) < 1 / (1 + np.exp(-2.0 * f + 0.5))
    a, b = fit_platt(f, target)
    assert a == pytest.approx(-2.0, abs=0.1) and b == pytest.approx(0.5, abs=0.1)


def test_perturbed_path_scores_each_copy_as_its_own_query(model, test_set) -> None:
    test, _ = test_set
    block = model.align(test[:30])
    cols = model.genes_.get_indexer(model.marker_genes_[:3])
    others = np.setdiff1d(np.arange(block.shape[1]), model.marker_cols_)[:2]
    rng = np.random.default_rng(3)
    perturbations = [(cols[:1], np.array([4.1])), (others, np.array([9.3, 9.7])),
                     (cols[1:3], rng.normal(2, 1, (30, 2))), (np.array([], dtype=int), np.array([]))]
    fast = model.predict_proba_perturbed(block, perturbations)
    labels = model.predict_labels_perturbed(block, perturbations)
    for (c, v), scores, row in zip(perturbations, fast, labels, strict=True):
        modified = block.copy()
        modified[:, c] = v
        np.testing.assert_allclose(scores, model._predict_proba(modified), atol=1e-12)
        np.testing.assert_array_equal(row, model._predict_labels(modified))


def test_save_load_round_trip(model, test_set, tmp_path) -> None:
    model.save(tmp_path / "scannotatr.pkl")
    loaded = PerCellClassifier.load(tmp_path / "scannotatr.pkl")
    np.testing.assert_array_equal(loaded.predict_proba(test_set[0]), model.predict_proba(test_set[0]))
