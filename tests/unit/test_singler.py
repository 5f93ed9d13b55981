"""SingleR: the native port (accuracy, fine-tuning, determinism) and its parity with R's SingleR through rpy2."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import spearmanr

from vulnbench.core.errors import ConfigError, DataError
from vulnbench.sc import rbridge
from vulnbench.sc.attacks import single_gene
from vulnbench.sc.classifiers._singler import (
    SingleR,
    _default_n_markers,
    _quantile,
    _scaled_ranks,
    _top_quantile,
)
from vulnbench.sc.classifiers.base import PerCellClassifier
from vulnbench.sc.data.datasets import synthetic_counts


def log_normalised(n_cells: int, n_genes: int, n_types: int, fold_change: float, dispersion: float,
                   seed: int) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """Synthetic counts normalised as the benchmark's inputs: log1p of counts per 10k."""
    counts, labels, markers = synthetic_counts(n_cells=n_cells, n_genes=n_genes, n_types=n_types, n_markers=10,
                                               fold_change=fold_change, dispersion=dispersion, mean_count=1.0,
                                               seed=seed)
    dense = counts.toarray().astype(np.float64)
    library = np.maximum(dense.sum(axis=1, keepdims=True), 1.0)
    frame = pd.DataFrame(np.log1p(dense / library * 1e4).astype(np.float32),
                         index=[f"c{i}" for i in range(n_cells)], columns=[f"G{j}" for j in range(n_genes)])
    return frame, labels, markers


@pytest.fixture(scope="module")
def easy():
    """4 well-separated types (fold change 10): train on the first half, test on the second."""
    frame, labels, markers = log_normalised(300, 400, 4, fold_change=10.0, dispersion=0.2, seed=1)
    return frame.iloc[:150], labels[:150], frame.iloc[150:], labels[150:], markers


@pytest.fixture(scope="module")
def hard():
    """6 close types (fold change 3), where fine-tuning changes some labels: the parity data set."""
    frame, labels, _ = log_normalised(400, 300, 6, fold_change=3.0, dispersion=0.5, seed=1)
    return frame.iloc[:200], labels[:200], frame.iloc[200:], labels[200:]


@pytest.fixture(scope="module")
def r_singler() -> None:
    ok, reason = rbridge.r_available()
    if not ok:
        pytest.skip(f"R backend not testable: {reason}")
    missing = rbridge.missing_r_packages("SingleR", "SingleCellExperiment")
    if missing:
        pytest.skip(f"R backend not testable: R package(s) {', '.join(missing)} not installed "
                    f"({rbridge.install_hint(missing)})")


# -- native backend -------------------------------------------------------------------------------------
def test_native_is_accurate_and_scores_have_one_column_per_label(easy) -> None:
    train, y_train, test, y_test, _ = easy
    model = SingleR().fit(train, y_train)
    scores = model.predict_proba(test)
    assert scores.shape == (len(test), 4) and list(model.classes_) == ["type0", "type1", "type2", "type3"]
    assert np.all((scores >= -1) & (scores <= 1))  # correlations, not probabilities
    labels = model.predict(test)
    assert set(labels) <= set(model.classes_)
    assert np.mean(labels == y_test) > 0.95


def test_planted_markers_are_chosen(easy) -> None:
    train, y_train, _, _, markers = easy
    model = SingleR().fit(train, y_train)
    assert model.n_markers_ == 222  # round(500 · (2/3)^log2(4))
    chosen = model.marker_genes()
    for a, planted in markers.items():
        for b in model.classes_:
            if a != b:
                # a planted marker with median 0 in both labels (low base expression) cannot be chosen
                assert len({f"G{j}" for j in planted} & set(chosen[a][b])) >= 8
        assert chosen[a][a] == []


def test_fine_tuning_runs_and_never_lowers_accuracy(easy, hard) -> None:
    for train, y_train, test, y_test, *_ in (easy, hard):
        tuned = SingleR().fit(train, y_train)
        scores = tuned.predict_proba(test)
        in_range = (scores >= scores.max(axis=1, keepdims=True) - tuned.tune_thresh).sum(axis=1)
        assert np.any((in_range > 1) & (in_range < scores.shape[1]))  # some cells do go through fine-tuning
        initial = SingleR(fine_tune=False).fit(train, y_train).predict(test)
        np.testing.assert_array_equal(initial, tuned.classes_[np.argmax(scores, axis=1)])
        assert np.mean(tuned.predict(test) == y_test) >= np.mean(initial == y_test)
    # on the close types fine-tuning does change labels
    train, y_train, test, _ = hard
    assert np.any(SingleR().fit(train, y_train).predict(test) != SingleR(fine_tune=False).fit(train, y_train)
                  .predict(test))


def test_deterministic_and_pickles(easy, tmp_path) -> None:
    train, y_train, test, *_ = easy
    first, second = SingleR().fit(train, y_train), SingleR().fit(train, y_train)
    np.testing.assert_array_equal(first.predict_proba(test), second.predict_proba(test))
    np.testing.assert_array_equal(first.predict(test), second.predict(test))
    first.save(tmp_path / "singler.pkl")
    loaded = PerCellClassifier.load(tmp_path / "singler.pkl")
    np.testing.assert_array_equal(loaded.predict(test), first.predict(test))


def test_cells_are_scored_independently(hard) -> None:
    train, y_train, test, _ = hard
    model = SingleR().fit(train, y_train)
    whole = model.predict(test)
    np.testing.assert_array_equal(np.concatenate([model.predict(test.iloc[i : i + 7])
                                                  for i in range(0, len(test), 7)]), whole)


def test_scaled_ranks_give_spearman_and_quantiles_are_type_7() -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 4, size=(6, 30)).astype(float)  # many ties, as in sparse log-counts
    values[5] = 1.0  # a constant cell stays all-zero
    scaled = _scaled_ranks(values)
    np.testing.assert_allclose((scaled[:5] ** 2).sum(axis=1), 0.25)
    assert not scaled[5].any()
    rho = 1 - 2 * ((scaled[0] - scaled[1]) ** 2).sum()
    assert rho == pytest.approx(spearmanr(values[0], values[1]).statistic, abs=1e-12)
    correlations = rng.uniform(-1, 1, size=(4, 23))
    for q in (0.8, 0.5, 0.05, 1.0):
        expected = np.quantile(correlations, q, axis=1)
        np.testing.assert_allclose(_quantile(correlations, q), expected, atol=1e-12)
        np.testing.assert_allclose(_top_quantile(correlations, q), expected, atol=1e-12)
    assert [_default_n_markers(n) for n in (2, 4, 10)] == [333, 222, 130]


def test_bad_settings_give_one_line_errors(easy) -> None:
    train, y_train, *_ = easy
    for params in ({"backend": "python"}, {"de_method": "wilcox"}, {"quantile": 1.5}, {"de_n": 0}):
        with pytest.raises(ConfigError) as info:
            SingleR(**params).fit(train, y_train)
        assert "\n" not in str(info.value)


def test_r_backend_without_r_is_a_one_line_config_error(easy, monkeypatch) -> None:
    train, y_train, *_ = easy
    monkeypatch.setattr(rbridge, "r_available", lambda: (False, "libR.so not found"))
    with pytest.raises(ConfigError, match=r"R is not usable .*apt-get install r-bioc-singler") as info:
        SingleR(backend="r").fit(train, y_train)
    assert "\n" not in str(info.value)


def test_importing_vulnbench_does_not_start_r() -> None:
    # _singler imports rbridge only inside the R backend's functions; rbridge imports rpy2 only when asked
    code = "import sys, vulnbench.sc.rbridge; assert 'rpy2' not in sys.modules, 'rpy2 imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- R bridge and R backend --------------------------------------------------------------------------------
def test_missing_r_packages_are_named_with_how_to_install(r_singler) -> None:
    with pytest.raises(ConfigError) as info:
        rbridge.require_r_packages("SingleR", "notARealPackage")
    message = str(info.value)
    assert "notARealPackage" in message and "BiocManager::install" in message and "\n" not in message
    assert "SingleR," not in message  # installed packages are not listed as missing
    rbridge.require_r_packages("SingleR", "SingleCellExperiment")


def test_to_sce_round_trip_keeps_values_names_and_orientation(r_singler) -> None:
    rng = np.random.default_rng(0)
    matrix = rng.random((5, 3)).astype(np.float32)  # cells × genes
    genes, cells = ["GA", "GB", "GC"], [f"cell{i}" for i in range(5)]
    coldata = pd.DataFrame({"label": list("aabbc"), "size": np.arange(5.0)})
    sce = rbridge.to_sce(matrix, genes, cells, coldata=coldata)
    assert list(rbridge.call_r("dim", sce)) == [3, 5]  # genes × cells in R
    back = rbridge.call_r("SummarizedExperiment::assay", sce, "logcounts")
    assert list(back.index) == genes and list(back.columns) == cells
    np.testing.assert_array_equal(back.to_numpy(), matrix.T.astype(np.float64))
    col = rbridge.call_r("SummarizedExperiment::colData", sce)
    assert list(col.index) == cells and list(col["label"]) == list("aabbc")
    np.testing.assert_array_equal(col["size"], np.arange(5.0))

    sparse = sp.random(5, 3, density=0.4, format="csr", random_state=1)
    sce = rbridge.to_sce(sparse, genes, cells)
    assay = rbridge.call_r("SummarizedExperiment::assay", sce, "logcounts", _raw=True)
    assert list(rbridge.call_r("class", assay)) == ["dgCMatrix"]
    dense = rbridge.call_r("as.matrix", assay)
    assert list(dense.index) == genes and list(dense.columns) == cells
    np.testing.assert_array_equal(dense.to_numpy(), sparse.toarray().T)


def test_r_results_convert_back(r_singler) -> None:
    named = rbridge.call_r("c", a=1.5, b=2)
    assert list(named.index) == ["a", "b"] and list(named) == [1.5, 2.0]
    listed = rbridge.call_r("list", x=np.array(["p", None], dtype=object), y=None)
    assert list(listed["x"]) == ["p", None] and listed["y"] is None
    assert list(rbridge.call_r("factor", np.array(["b", "a", "b"]))) == ["b", "a", "b"]
    np.testing.assert_array_equal(rbridge.call_r("rnorm", 3, _seed=7), rbridge.call_r("rnorm", 3, _seed=7))


def test_r_backend_agrees_with_the_native_port(r_singler, hard) -> None:
    train, y_train, test, _ = hard
    native = SingleR().fit(train, y_train).annotate(test)
    in_r = SingleR(backend="r").fit(train, y_train).annotate(test)
    agreement = float(np.mean(native["labels"] == in_r["labels"]))
    print(f"SingleR labels, native vs R: {agreement:.1%} of {len(test)} cells")
    assert agreement >= 0.9
    # measured: 100 % of labels and pruned labels, scores and delta.next to ~1e-15
    assert (native["pruned_labels"] == in_r["pruned_labels"]).mean() >= 0.9
    np.testing.assert_allclose(native.filter(like="scores.").to_numpy(), in_r.filter(like="scores.").to_numpy(),
                               atol=1e-9)
    np.testing.assert_allclose(native["delta_next"], in_r["delta_next"], atol=1e-9)


def test_native_markers_equal_r_classic_markers(r_singler, hard) -> None:
    train, y_train, *_ = hard
    in_r = rbridge.call_r("SingleR::getClassicMarkers",
                          rbridge.to_sce(train.to_numpy(), list(train.columns), list(train.index)), y_train)
    native = SingleR().fit(train, y_train).marker_genes()
    for a in native:
        for b in native:
            expected = [] if in_r[a][b] is None else [str(g) for g in np.atleast_1d(in_r[a][b])]
            assert native[a][b] == expected, (a, b)


def test_attack_runs_on_the_r_backend_in_few_r_calls(r_singler, monkeypatch) -> None:
    frame, labels, _ = log_normalised(200, 300, 4, fold_change=3.0, dispersion=0.3, seed=0)
    train, test = frame.iloc[:100], frame.iloc[100:]
    clusters = labels[100:]
    genes = ["G1", "G20", "G25", "G27", "G97", "G2", "G3", "G4", "G5", "G6"]
    in_r = SingleR(backend="r", de_n=10).fit(train, labels[:100])
    calls = []
    original = rbridge.call_r

    def counting(name: str, *args, **kwargs):
        if name == "SingleR::SingleR":
            calls.append(args[0])
        return original(name, *args, **kwargs)

    monkeypatch.setattr(rbridge, "call_r", counting)
    flips = single_gene(test, clusters, "type0", in_r, method="positive_aberrant", search="exhaustive", genes=genes)
    assert flips.attrs["n_calls"] == len(calls) == 2  # the baseline, then all 10 perturbed copies stacked at once
    assert flips.attrs["n_evaluations"] == 11
    native = single_gene(test, clusters, "type0", SingleR(de_n=10).fit(train, labels[:100]),
                         method="positive_aberrant", search="exhaustive", genes=genes)
    pd.testing.assert_frame_equal(flips, native)
    assert set(flips["gene"]) == {"G1", "G20", "G25", "G27", "G97"}


def test_fast_perturbed_path_equals_scoring_modified_copies(hard) -> None:
    train, y_train, test, _ = hard
    model = SingleR().fit(train, y_train)
    block = model.align(test.iloc[:30])
    rng = np.random.default_rng(0)
    outside = np.setdiff1d(np.arange(block.shape[1]), model.features_)
    perturbations = [(np.array([j]), np.array([rng.uniform(0, 6)])) for j in rng.choice(model.features_, 12)]
    perturbations += [(outside[:2], np.array([9.0, 9.0])), (np.array([], dtype=int), np.array([]))]
    perturbations += [(np.array([outside[3], model.features_[0]]), rng.uniform(0, 6, size=(30, 2)))]
    labels = model.predict_labels_perturbed(block, perturbations)
    scores = model.predict_proba_perturbed(block, perturbations)
    for (cols, values), row_labels, row_scores in zip(perturbations, labels, scores, strict=True):
        modified = block.copy()
        modified[:, cols] = values
        np.testing.assert_array_equal(row_labels, model._predict_labels(modified))
        np.testing.assert_allclose(row_scores, model._predict_proba(modified), atol=1e-12)


def test_r_objects_survive_serialisation_and_sourced_functions_are_called(r_singler, tmp_path) -> None:
    model = rbridge.call_r("stats::lm", rbridge.evaluate("y ~ x"),
                           data=pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [3.0, 5.0, 7.0, 9.0]}), _raw=True)
    data = rbridge.serialize(model)
    assert isinstance(data, bytes) and len(data) > 100
    coefficients = rbridge.call_r("stats::coef", rbridge.unserialize(data))
    np.testing.assert_allclose(coefficients.to_numpy(), [1.0, 2.0])
    source = tmp_path / "f.R"
    source.write_text("twice <- function(x, by = 2) x * by\n")
    twice = rbridge.source_file(str(source), "twice")
    np.testing.assert_array_equal(rbridge.call_function(twice, np.array([1.5, 2.0]), by=3), [4.5, 6.0])
    with pytest.raises(DataError, match="R call twice failed"):
        rbridge.call_function(twice, "a", _label="twice")
