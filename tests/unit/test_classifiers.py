"""Contract suite run over every registered classifier: adding one to the registry adds it here."""

from __future__ import annotations

import fnmatch

import numpy as np
import pandas as pd
import pytest

from vulnbench.core.errors import ConfigError
from vulnbench.core.params import signature_defaults
from vulnbench.sc import classifiers
from vulnbench.sc.classifiers.base import PerCellClassifier, plurality


def contract_params(name: str, markers: dict[str, list[str]]) -> dict:
    """Small, fast settings per classifier on the 4-type synthetic data (markers: the planted genes)."""
    from vulnbench.sc.classifiers._sctype import MarkerSets

    planted = MarkerSets(cell_types=tuple(markers), positive=tuple(tuple(markers[t]) for t in markers),
                         negative=tuple(() for _ in markers), sources=tuple("planted" for _ in markers))
    return {
        "scrf": {"n_estimators": 30},
        "scmlp": {"epochs": 8},
        "chetah": {"n_genes": 50},  # 10 planted markers: 200 genes per node would be mostly noise
        "sctype": {"markers": planted, "gene_names_to_uppercase": False},
    }.get(name, {})


def fitted(name: str, adata, markers: dict[str, list[str]], seed: int = 0) -> PerCellClassifier:
    train = adata[adata.obs["split"] == "train"]
    params = contract_params(name, markers)
    if "seed" in signature_defaults(classifiers.CLASSIFIERS.get(name)):
        params["seed"] = seed
    return classifiers.get(name, **params).fit(train, train.obs["label"].astype(str))


def allowed_label(label: str, model: PerCellClassifier) -> bool:
    return label in set(model.classes_) or any(fnmatch.fnmatch(label, p) for p in model.extra_labels)


@pytest.fixture(scope="module", params=classifiers.names())
def model_and_data(request, synthetic_small):
    adata, markers = synthetic_small
    return request.param, fitted(request.param, adata, markers), adata


def test_predict_shapes_vocabulary_and_accuracy(model_and_data) -> None:
    name, model, adata = model_and_data
    test = adata[adata.obs["split"] == "test"]
    proba = model.predict_proba(test)
    assert proba.shape == (test.n_obs, len(model.classes_))
    assert not np.isnan(proba).any()
    if "proba" in model.capabilities and not {"marker_based", "multilabel", "correlation_scores"} & model.capabilities:
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    labels = model.predict(test)
    assert all(allowed_label(label, model) for label in set(labels))
    assert set(model.classes_) == set(adata.obs["label"].astype(str))
    accuracy = np.mean(labels == test.obs["label"].astype(str).to_numpy())
    assert accuracy > 0.8, f"{name}: accuracy {accuracy:.2f} on easy planted-marker data"


def test_deterministic_under_a_seed(model_and_data, synthetic_small) -> None:
    name, model, adata = model_and_data
    again = fitted(name, adata, synthetic_small[1])
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
    labels = model.predict_labels_perturbed(block, perturbations)
    for (cols, values), row in zip(perturbations, labels, strict=True):
        modified = block.copy()
        modified[:, cols] = values
        np.testing.assert_array_equal(row, model._predict_labels(modified))


def test_cluster_call_is_the_plurality_of_per_cell_labels(model_and_data) -> None:
    _name, model, adata = model_and_data
    clusters = adata.obs["label"].astype(str).to_numpy()
    label, fraction = model(adata, clusters, "type2")
    mask = clusters == "type2"
    # a cell-dependent model (query-wide scaling) sees the whole dataset, as in adverSCarial
    expected = plurality(model.predict(adata[mask]) if model.cell_independent else model.predict(adata)[mask])
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


# -- the `backend` option --------------------------------------------------------------------------------
R_BACKED = {name: classifiers.CLASSIFIERS.get(name) for name in classifiers.names()
            if "backend" in signature_defaults(classifiers.CLASSIFIERS.get(name))}


def test_the_four_r_backed_classifiers_take_a_backend_option() -> None:
    assert set(R_BACKED) == {"sctype", "chetah", "scannotatr", "singler"}
    for cls in R_BACKED.values():
        assert signature_defaults(cls)["backend"] == "native"


@pytest.mark.parametrize("name", sorted(R_BACKED))
def test_unknown_backend_is_named(name, synthetic_small) -> None:
    adata, _ = synthetic_small
    with pytest.raises(ConfigError, match=rf"{name}: unknown backend 'python' \(choose from native, r\)"):
        classifiers.get(name, backend="python").fit(adata, adata.obs["label"].astype(str))


@pytest.mark.parametrize("name", ["chetah", "scannotatr"])
def test_r_backend_without_the_bioconductor_package_says_how_to_install_it(name, synthetic_small) -> None:
    from vulnbench.sc import rbridge

    ok, reason = rbridge.r_available()
    if not ok:
        pytest.skip(f"R is not usable here: {reason}")
    package = R_BACKED[name].r_packages[0]
    if not rbridge.missing_r_packages(package):
        pytest.skip(f"R package {package} is installed here: the R backend runs instead of stopping")
    adata, _ = synthetic_small
    with pytest.raises(ConfigError) as info:
        classifiers.get(name, backend="r").fit(adata, adata.obs["label"].astype(str))
    message = str(info.value)
    assert f"R package(s) {package} not installed" in message
    assert f'BiocManager::install(c("{package}"))' in message and "\n" not in message
