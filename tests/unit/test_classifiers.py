"""Contract suite run over every registered classifier: adding one to the registry adds it here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vulnbench.errors import ConfigError
from vulnbench.sc import classifiers
from vulnbench.sc.classifiers.base import PerCellClassifier, plurality

FAST_PARAMS = {"scrf": {"n_estimators": 30}, "scmlp": {"epochs": 8}}


def fitted(name: str, adata, seed: int = 0) -> PerCellClassifier:
    train = adata[adata.obs["split"] == "train"]
    params = {**FAST_PARAMS.get(name, {}), "seed": seed}
    return classifiers.get(name, **params).fit(train, train.obs["label"].astype(str))


@pytest.fixture(scope="module", params=classifiers.names())
def model_and_data(request, synthetic_small):
    adata, _ = synthetic_small
    return request.param, fitted(request.param, adata), adata


def test_predict_shapes_vocabulary_and_accuracy(model_and_data) -> None:
    name, model, adata = model_and_data
    test = adata[adata.obs["split"] == "test"]
    proba = model.predict_proba(test)
    assert proba.shape == (test.n_obs, len(model.classes_))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    labels = model.predict(test)
    assert set(labels) <= set(model.classes_) == set(adata.obs["label"].astype(str))
    accuracy = np.mean(labels == test.obs["label"].astype(str).to_numpy())
    assert accuracy > 0.8, f"{name}: accuracy {accuracy:.2f} on easy planted-marker data"


def test_deterministic_under_a_seed(model_and_data, synthetic_small) -> None:
    name, model, adata = model_and_data
    again = fitted(name, adata)
    np.testing.assert_allclose(again.predict_proba(adata), model.predict_proba(adata), atol=1e-6)


def test_save_load_round_trip(model_and_data, tmp_path) -> None:
    _name, model, adata = model_and_data
    model.save(tmp_path / "model.pkl")
    loaded = PerCellClassifier.load(tmp_path / "model.pkl")
    np.testing.assert_array_equal(loaded.predict_proba(adata), model.predict_proba(adata))


def test_fast_perturbed_path_equals_scoring_modified_copies(model_and_data) -> None:
    _name, model, adata = model_and_data
    block = model.align(adata[:25])
    rng = np.random.default_rng(0)
    perturbations = [(np.array([j]), np.array([rng.normal() * 3])) for j in rng.choice(block.shape[1], 20)]
    perturbations += [(np.array([1, 7, 9]), np.array([5.0, -2.0, 0.5])), (np.array([], dtype=int), np.array([]))]
    perturbations += [(np.array([4]), rng.normal(size=(25, 1))), (np.array([2, 3]), rng.normal(size=(25, 2)))]
    fast = model.predict_proba_perturbed(block, perturbations)
    for (cols, values), scores in zip(perturbations, fast, strict=True):
        modified = block.copy()
        modified[:, cols] = values
        np.testing.assert_allclose(scores, model._predict_proba(modified), atol=1e-5)


def test_cluster_call_is_the_plurality_of_per_cell_labels(model_and_data) -> None:
    _name, model, adata = model_and_data
    clusters = adata.obs["label"].astype(str).to_numpy()
    label, fraction = model(adata, clusters, "type2")
    expected = plurality(model.predict(adata[clusters == "type2"]))
    assert (label, fraction) == pytest.approx(expected)


def test_genes_are_aligned_by_name(model_and_data) -> None:
    _name, model, adata = model_and_data
    frame = pd.DataFrame(adata.X[:10].toarray(), columns=adata.var_names)
    shuffled = frame[frame.columns[::-1]]
    np.testing.assert_allclose(model.predict_proba(shuffled), model.predict_proba(frame), atol=1e-6)


def test_unknown_classifier_and_parameter_are_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown classifier 'scfr'.*did you mean 'scrf'"):
        classifiers.get("scfr")
    with pytest.raises(ConfigError, match="unknown parameter 'n_trees'"):
        classifiers.get("scrf", n_trees=10)


def test_plurality_breaks_ties_alphabetically() -> None:
    assert plurality(["NK", "B", "NK", "B", "T"]) == ("B", 0.4)
