"""CHETAH port: parity with the package example's stored result, and behaviour on synthetic data."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from tests.helpers import shared_file
from vulnbench.core.errors import ConfigError, DataError
from vulnbench.sc.classifiers._chetah import UNASSIGNED, Chetah
from vulnbench.sc.classifiers.base import plurality

FIXTURE = "chetah_headneck_mel"
FIRST_APPEARANCE = ["Fibroblast", "B cell", "Macrophage", "Endothelial", "Dendritic", "Mast", "CD4 T cell",
                    "reg. T cell", "CD8 T cell"]
#: the node table of specs/sc-classifiers.md §2.2 (branch 1, branch 2)
SPEC_TREE = [
    (["Fibroblast", "Endothelial"], ["B cell", "Macrophage", "Dendritic", "Mast", "CD4 T cell", "reg. T cell",
                                     "CD8 T cell"]),
    (["Fibroblast"], ["Endothelial"]),
    (["B cell", "Macrophage", "Dendritic", "Mast"], ["CD4 T cell", "reg. T cell", "CD8 T cell"]),
    (["B cell"], ["Macrophage", "Dendritic", "Mast"]),
    (["Macrophage", "Mast"], ["Dendritic"]),
    (["Macrophage"], ["Mast"]),
    (["CD4 T cell"], ["reg. T cell", "CD8 T cell"]),
    (["reg. T cell"], ["CD8 T cell"]),
]


def _matrix(name: str) -> pd.DataFrame:
    """R-style genes × cells TSV (header one field short) → cells × genes."""
    return pd.read_csv(shared_file(f"{FIXTURE}/{name}"), sep="\t", index_col=0).T


@pytest.fixture(scope="module")
def headneck():
    """CHETAH fitted on `headneck_ref` (thresh 0.1 as stored), its detail on `input_mel`, and the input."""
    ref = _matrix("ref.tsv")
    ct = pd.read_csv(shared_file(f"{FIXTURE}/ref_ct.tsv"), sep="\t", index_col=0)["ct"]
    assert ct.index.equals(ref.index)
    inp = _matrix("input.tsv")
    model = Chetah(thresh=0.1).fit(ref, ct.to_numpy())
    return model, model.classify_detail(inp), inp


def _stored(name: str) -> pd.DataFrame:
    return pd.read_csv(shared_file(f"{FIXTURE}/{name}"), sep="\t", index_col=0)


def test_fixture_tree_and_type_order(headneck) -> None:
    model, detail, _ = headneck
    assert list(model.types_) == FIRST_APPEARANCE
    assert list(model.classes_) == sorted(FIRST_APPEARANCE)
    assert detail["nodes"] == SPEC_TREE


def test_fixture_labels_are_exact(headneck) -> None:
    model, detail, inp = headneck
    stored = _stored("stored_class.tsv")["ct"]
    assert detail["labels"].index.equals(stored.index)
    assert list(detail["labels"]) == list(stored)
    assert list(model.predict(inp)) == list(stored)  # the lazy path (each node scores only the cells reaching it)
    assert model.rethreshold(detail, 0.1).equals(detail["labels"])


@pytest.mark.parametrize("kind,key", [("cor", "correlations"), ("prof", "prof_scores"), ("conf", "conf_scores")])
def test_fixture_node_scores_match(headneck, kind: str, key: str) -> None:
    _model, detail, _ = headneck
    assert len(detail[key]) == len(SPEC_TREE)
    for k, mine in enumerate(detail[key]):
        stored = _stored(f"{kind}_Node{k}.tsv")
        assert list(mine.columns) == list(stored.columns), f"Node{k}: column order"
        assert mine.index.equals(stored.index)
        np.testing.assert_allclose(mine.to_numpy(), stored.to_numpy(), rtol=0, atol=1e-10, err_msg=f"{kind} Node{k}")


def test_fixture_selected_genes(headneck) -> None:
    model, _, _ = headneck
    stored = pd.read_csv(shared_file(f"{FIXTURE}/genes.tsv"), sep="\t", header=None, usecols=[0, 1, 2],
                         names=["node", "type", "genes"])  # lines end with a tab: a 4th, empty field
    mine = model.selected_genes()
    assert len(stored) == sum(len(node) for node in mine) == 32
    for node, cell_type, genes in stored.itertuples(index=False):
        assert set(mine[node - 1][cell_type]) == set(genes.split(",")), f"node {node} (1-based), {cell_type}"
        assert len(mine[node - 1][cell_type]) == 200


def test_fixture_path_scores_and_proba_follow_the_labels(headneck) -> None:
    model, detail, inp = headneck
    for thresh in (0.0, 0.1, 0.5):
        labels = model.rethreshold(detail, thresh).to_numpy()
        path = model.classify_detail(inp, thresh=thresh)["path_scores"]
        for label, row in zip(labels, path.to_numpy(), strict=True):
            assert set(path.columns[row >= 0]) == ({label} if label in model.types_ else set())
    proba = model.predict_proba(inp)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    labels = detail["labels"].to_numpy()
    assigned = np.isin(labels, model.types_)
    assert (model.classes_[np.argmax(proba, axis=1)][assigned] == labels[assigned]).all()


def test_thresh_zero_assigns_every_cell_and_rethreshold_matches(headneck) -> None:
    model, detail, inp = headneck
    relabelled = model.rethreshold(detail, 0.0)
    assert relabelled.isin(model.types_).all()
    zero = copy.copy(model)
    zero.thresh = 0.0
    assert list(zero.predict(inp)) == list(relabelled)


# -- synthetic ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic_model():
    """4 well-separated reference types (50 planted markers each) and test cells of those plus an unseen 5th type.

    With 10 markers among 400 genes (the contract suite's `synthetic_small`) most of CHETAH's 200 genes per node are
    noise and accuracy drops to ~0.83, hence a dataset of its own.
    """
    from vulnbench.sc.data import get, prepare

    adata = prepare(get("synthetic", n_cells=500, n_genes=600, n_types=5, n_markers=50, seed=5).load(), seed=0)
    unseen = (adata.obs["label"] == "type4").to_numpy()
    train = adata[(adata.obs["split"] == "train").to_numpy() & ~unseen]
    test = adata[(adata.obs["split"] == "test").to_numpy() & ~unseen]
    novel = adata[(adata.obs["split"] == "test").to_numpy() & unseen]
    return Chetah().fit(train, train.obs["label"].astype(str)), train, test, novel


def test_synthetic_accuracy_and_proba(synthetic_model) -> None:
    model, train, test, _ = synthetic_model
    assert list(model.types_) == list(pd.unique(train.obs["label"].astype(str)))
    labels = model.predict(test)
    truth = test.obs["label"].astype(str).to_numpy()
    assert np.mean(labels == truth) > 0.95
    proba = model.predict_proba(test)
    assert proba.shape == (test.n_obs, len(model.classes_))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (proba >= 0).all()
    assigned = np.isin(labels, model.types_)
    assert (model.classes_[np.argmax(proba, axis=1)][assigned] == labels[assigned]).all()


def test_unknown_type_and_high_threshold_are_not_assigned(synthetic_model) -> None:
    model, _, test, novel = synthetic_model
    labels = model.predict(novel).astype(str)
    stopped = np.char.startswith(labels, "Node") | (labels == UNASSIGNED)
    assert stopped.mean() >= 0.9, f"cells of a type absent from the reference: {labels}"
    strict = copy.copy(model)
    strict.thresh = 2.5  # CS ≤ 2: nothing passes the root
    assert (strict.predict(test) == UNASSIGNED).all()
    lenient = copy.copy(model)
    lenient.thresh = 0.0  # the argmax type always has CS ≥ 0
    assert np.isin(lenient.predict(test), model.types_).all()
    assert np.isin(lenient.predict(novel), model.types_).all()


def test_cluster_call_is_the_plurality_of_chetah_labels(synthetic_model) -> None:
    model, _, test, _ = synthetic_model
    clusters = test.obs["label"].astype(str).to_numpy()
    for target in ("type0", "type2"):
        assert model(test, clusters, target) == pytest.approx(plurality(model.predict(test[clusters == target])))
    strict = copy.copy(model)
    strict.thresh = 2.5
    assert strict(test, clusters, "type1") == (UNASSIGNED, 1.0)


def test_perturbed_labels_and_gene_alignment(synthetic_model) -> None:
    model, _, test, _ = synthetic_model
    block = model.align(test[:15])
    perturbations = [(np.array([3, 5]), np.array([8.0, 0.0])), (np.array([], dtype=int), np.array([]))]
    fast = model.predict_labels_perturbed(block, perturbations)
    for (cols, values), labels in zip(perturbations, fast, strict=True):
        modified = block.copy()
        modified[:, cols] = values
        assert list(labels) == list(model._predict_labels(modified))
    frame = pd.DataFrame(test.X[:15].toarray(), columns=test.var_names)
    np.testing.assert_array_equal(model.predict(frame[frame.columns[::-1]]), model.predict(frame))


def test_save_load_and_subsampled_reference(synthetic_model, tmp_path) -> None:
    model, train, test, _ = synthetic_model
    model.save(tmp_path / "chetah.pkl")
    np.testing.assert_array_equal(Chetah.load(tmp_path / "chetah.pkl").predict_proba(test), model.predict_proba(test))
    y = train.obs["label"].astype(str)
    small = [Chetah(max_cells_per_type=10, seed=1).fit(train, y) for _ in range(2)]
    assert all(len(c) <= 10 for node in small[0].nodes_ for c in node.cor_t)
    np.testing.assert_array_equal(small[0].predict_proba(test), small[1].predict_proba(test))


@pytest.mark.parametrize("params", [{"gs_method": "wilcox"}, {"cor_method": "kendall"},
                                    {"clust_method": "ward.D2"}, {"n_genes": 0}])
def test_unimplemented_options_are_config_errors(synthetic_model, params) -> None:
    _, train, _, _ = synthetic_model
    with pytest.raises(ConfigError, match="chetah"):
        Chetah(**params).fit(train, train.obs["label"].astype(str))


def test_reserved_type_names_are_rejected(synthetic_model) -> None:
    _, train, _, _ = synthetic_model
    y = train.obs["label"].astype(str).str.replace("type1", "Node 1")
    with pytest.raises(DataError, match="Node"):
        Chetah().fit(train, y.to_numpy())
