"""scType port: marker weights, scores against a literal reading of the spec, fixture data, classifier contract."""

from __future__ import annotations

import importlib.util
import logging
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import shared_file
from vulnbench.core.errors import ConfigError, DataError
from vulnbench.sc.classifiers._sctype import (
    UNKNOWN,
    MarkerSets,
    ScType,
    load_markers,
    marker_weights,
    sctype_cluster_labels,
    sctype_scores,
)
from vulnbench.sc.classifiers.base import PerCellClassifier
from vulnbench.sc.data.datasets import synthetic_counts
from vulnbench.sc.oracle import is_per_cell


def immune_sets() -> MarkerSets:
    return MarkerSets.from_table(shared_file("sctype_immune_processed.tsv"))


# -- marker sets and weights ---------------------------------------------------------------------------
def test_weights_of_the_processed_immune_sets_reproduce_the_spec() -> None:
    sets = immune_sets()
    frame = pd.read_csv(shared_file("sctype_immune_processed.tsv"), sep="\t", keep_default_na=False)
    assert list(sets.cell_types) == list(frame["cell_type"])
    assert len(sets) == 34 and "Natural killer  cells" in sets.cell_types and "γδ-T cells" in sets.cell_types
    nk = sets.positive[sets.cell_types.index("Natural killer  cells")]
    assert nk.count("FCGR3A") == 2  # duplicates are kept: they enter n_g
    weights = marker_weights(sets)
    assert len(weights) == 259
    assert round(weights["ITGAM"], 3) == round(weights["PTPRC"], 3) == 0.515
    assert weights["PTPRC"] == pytest.approx((34 - 17) / 33, abs=1e-15)
    assert weights["IL2RA"] == pytest.approx((34 - 14) / 33, abs=1e-15) and round(weights["IL2RA"], 3) == 0.606
    for gene in ("CD3D", "CD3E", "CD3G", "CD247"):
        assert weights[gene] == pytest.approx((34 - 12) / 33, abs=1e-15) and round(weights[gene], 3) == 0.667
    assert max(weights.values()) == 1.0 and min(weights.values()) >= 0


def test_weights_with_a_single_type_are_the_midpoint() -> None:
    sets = MarkerSets(("A",), (("X", "Y", "X"),), ((),))
    assert marker_weights(sets) == {"X": 0.5, "Y": 0.5}


def test_project_pbmc_table_loads_and_is_sane() -> None:
    sets = load_markers("pbmc")
    assert len(sets) == 10
    assert {"Naive CD4 T", "Memory CD4 T", "CD8 T", "NK", "B", "CD14+ Mono", "FCGR3A+ Mono", "DC", "pDC",
            "Platelet"} == set(sets.cell_types)
    assert len(sets.sources) == 10 and all(len(s) > 20 for s in sets.sources)
    assert all(len(p) >= 5 for p in sets.positive) and all(len(n) >= 1 for n in sets.negative)
    genes = [g for lists in (sets.positive, sets.negative) for gs in lists for g in gs]
    assert all(g == g.upper() and " " not in g for g in genes)
    assert all(len(set(gs)) == len(gs) for gs in sets.positive)  # no accidental duplicates in our own table


def test_sctype_db_clean_up_without_hgnchelper() -> None:
    frame = pd.DataFrame({
        "tissueType": ["Immune system", "Immune system", "Liver"],
        "cellName": ["T cells", "Weird", "Hepatocytes"],
        "geneSymbolmore1": ["CD3E, Cd3d ,NA,,CD3E,Trac", "cd16", "ALB"],
        "geneSymbolmore2": ["MS4A1", "", "NA"],
        "shortName": ["T", "W", "H"],
    })
    sets = MarkerSets.from_sctype_frame(frame, "Immune system")
    assert sets.cell_types == ("T cells", "Weird")
    assert sets.positive == (("CD3D", "CD3E", "TRAC"), ("CD16",))  # upper-cased, sorted, unique, not mapped
    assert sets.negative == (("MS4A1",), ())
    with pytest.raises(DataError, match="no rows for tissue 'Eye'"):
        MarkerSets.from_sctype_frame(frame, "Eye")


def test_sctype_db_reader(tmp_path) -> None:
    path = tmp_path / "ScTypeDB_full.xlsx"
    if importlib.util.find_spec("openpyxl") is None:
        path.write_bytes(b"PK")
        with pytest.raises(DataError, match="openpyxl"):
            MarkerSets.from_sctype_db(path)
        return
    pd.DataFrame({"tissueType": ["Immune system"], "cellName": ["B"], "geneSymbolmore1": ["MS4A1,CD19"],
                  "geneSymbolmore2": ["NA"], "shortName": ["B"]}).to_excel(path, index=False)
    sets = load_markers(path, tissue="Immune system")
    assert sets.positive == (("CD19", "MS4A1"),) and sets.negative == ((),)


def test_marker_table_errors(tmp_path) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("cell_type\tpositive\nA\tX\n")
    with pytest.raises(DataError, match="lacks column"):
        MarkerSets.from_table(bad)
    dup = tmp_path / "dup.tsv"
    dup.write_text("cell_type\tpositive\tnegative\nA\tX\t\nA\tY\t\n")
    with pytest.raises(DataError, match="duplicated cell type"):
        MarkerSets.from_table(dup)
    with pytest.raises(DataError, match="not found"):
        load_markers(tmp_path / "absent.tsv")


# -- scores against a literal, slow reading of §1.4 ---------------------------------------------------
def literal_scores(data: pd.DataFrame, sets: MarkerSets, scaled: bool) -> pd.DataFrame:
    """§1.3–1.4 cell by cell and type by type, with R's semantics (scale() drops NA; NaN negative term → 0)."""
    data = data.copy()
    data.index = [g.upper() for g in data.index]
    k = len(sets)
    counts = Counter(g for genes in sets.positive for g in genes)
    weight = {g: (k - n) / (k - 1) for g, n in counts.items()}
    p_sets = [[g for g in data.index if g in genes] for genes in sets.positive]
    n_sets = [[g for g in data.index if g in genes] for genes in sets.negative]
    z = {}
    for gene in data.index:
        row = data.loc[gene].to_numpy(dtype=float)
        if not scaled:
            values = [v for v in row if not math.isnan(v)]
            mean = sum(values) / len(values)
            centred = [v - mean for v in row]
            kept = [c for c in centred if not math.isnan(c)]
            sd = math.sqrt(sum(c * c for c in kept) / max(1, len(kept) - 1))
            row = np.array([c / sd if sd > 0 else math.nan for c in centred])
        z[gene] = row
    for gene in set().union(*p_sets):
        z[gene] = z[gene] * weight[gene]
    rows = {}
    for t, name in enumerate(sets.cell_types):
        scores = []
        for j in range(data.shape[1]):
            first = sum(z[g][j] for g in p_sets[t]) / math.sqrt(len(p_sets[t])) if p_sets[t] else math.nan
            second = sum(-z[g][j] for g in n_sets[t]) / math.sqrt(len(n_sets[t])) if n_sets[t] else math.nan
            scores.append(first + (0.0 if math.isnan(second) else second))
        rows[name] = scores
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=data.columns)
    return frame.loc[~frame.isna().all(axis=1)]


TOY_SETS = MarkerSets(
    cell_types=("A", "B", "C", "D", "E", "F"),
    positive=(("G0", "G1", "G2", "G7", "G1"), ("G1", "G3", "G4", "G5"), ("NOPE1", "NOPE2"),
              ("G2", "G3", "G8", "G9", "G0"), ("G8", "G13", "MISSING"), ("G15", "G16", "G17", "G1")),
    negative=(("G10", "G11"), (), ("G6",), ("G7", "G12", "G0"), ("G14",), ("G18", "G2")),
)


@pytest.mark.parametrize("scaled", [True, False])
def test_scores_equal_a_literal_implementation(scaled: bool) -> None:
    rng = np.random.default_rng(7)
    genes = [f"G{i}" for i in range(24)]
    genes[3], genes[13] = "g3", "g13"  # upper-cased before matching
    data = pd.DataFrame(rng.gamma(1.0, 1.0, (24, 40)), index=genes, columns=[f"c{j}" for j in range(40)])
    data.loc["G7"] = 0.0  # zero variance: NaN z-scores when unscaled (positive of A, negative of D)
    data.loc["G4", "c3"] = np.nan  # a missing value: R's scale() leaves it out of the statistics
    data.loc["G11", "c5"] = np.nan  # in a negative list: that cell's negative term becomes 0
    if scaled:
        data = data - data.mean(axis=1).to_numpy()[:, None]
    expected = literal_scores(data, TOY_SETS, scaled)
    got = sctype_scores(data.T.to_numpy(), data.index, TOY_SETS, scaled=scaled, cells=data.columns)
    assert list(got.index) == list(expected.index)
    assert "C" not in got.index  # no present positive marker: all-NaN row dropped
    assert ("A" in got.index) == scaled  # unscaled: zero-variance positive marker makes the row NaN
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-12)
    assert np.isnan(got.loc["B", "c3"]) and np.isfinite(got.loc["B", "c2"])
    assert np.isfinite(got.loc["D"]).all()  # zero-variance negative marker → term 0, as upstream
    frame_input = sctype_scores(data.T, None, TOY_SETS, scaled=scaled)
    pd.testing.assert_frame_equal(frame_input, got)


def test_scores_on_the_chetah_input_with_the_immune_sets() -> None:
    sets = immune_sets()
    data = pd.read_csv(shared_file("chetah_headneck_mel/input.tsv"), sep="\t", index_col=0)
    assert data.shape == (7943, 150)
    present = set(data.index.str.upper())
    with_markers = [t for t, p in zip(sets.cell_types, sets.positive, strict=True) if present & set(p)]
    for scaled in (True, False):
        scores = sctype_scores(data.T.to_numpy(), data.index, sets, scaled=scaled, cells=data.columns)
        assert scores.shape == (len(with_markers), 150)
        assert list(scores.index) == with_markers and list(scores.columns) == list(data.columns)
        assert np.isfinite(scores.to_numpy()).all()
    z = data.sub(data.mean(axis=1), axis=0).div(data.std(axis=1, ddof=1), axis=0)
    unscaled = sctype_scores(data.T.to_numpy(), data.index, sets, scaled=False)
    prescaled = sctype_scores(z.T.to_numpy(), z.index, sets, scaled=True)
    np.testing.assert_allclose(unscaled.to_numpy(), prescaled.to_numpy(), atol=1e-12)


# -- the classifier ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def planted() -> tuple[pd.DataFrame, np.ndarray]:
    """Log-normalised synthetic counts; 4 planted markers per type carry markers unique to a project-table type.

    An 11th type's planted markers keep dummy names: nothing in the table describes it.
    """
    sets = load_markers("pbmc")
    counts = Counter(g for genes in sets.positive for g in genes)
    unique = [[g for g in genes if counts[g] == 1][:4] for genes in sets.positive]
    raw, labels, markers = synthetic_counts(n_cells=550, n_genes=200, n_types=11, n_markers=4, fold_change=10.0,
                                            dispersion=0.2, mean_count=1.0, seed=1)
    raw = raw.toarray()
    x = np.log1p(raw / raw.sum(axis=1, keepdims=True) * 1e4)
    names = [f"GENE{j}" for j in range(x.shape[1])]
    for k, picked in enumerate(unique):
        assert len(picked) == 4
        for col, gene in zip(markers[f"type{k}"], picked, strict=True):
            names[col] = gene
    truth = np.array(["unmarked" if lab == "type10" else sets.cell_types[int(lab[4:])] for lab in labels])
    return pd.DataFrame(x, columns=names), truth


def test_labels_planted_clusters(planted, caplog) -> None:
    X, truth = planted
    with caplog.at_level(logging.WARNING):
        model = ScType().fit(X)
    assert "fewer than half" in caplog.text  # Naive CD4 T: 4 of its 9 markers planted
    assert list(model.classes_) == list(load_markers("pbmc").cell_types)
    marked = truth != "unmarked"
    labels = model.predict(X)
    assert np.mean(labels[marked] == truth[marked]) > 0.85
    scores = model.predict_proba(X)
    assert scores.shape == (len(X), 10) and np.isfinite(scores).all()
    for cluster in np.unique(truth[marked]):
        assert model(X, truth, cluster)[0] == cluster
    by_cluster = ScType(assignment="cluster").fit(X)
    for cluster in np.unique(truth[marked]):
        assert by_cluster(X, truth, cluster) == (cluster, 1.0)
    assert by_cluster(X, truth, "unmarked") == (UNKNOWN, 1.0)


def test_cluster_sum_rule_and_unknown() -> None:
    sets = MarkerSets(("A", "B"), (("X1", "X2"), ("Y1",)), ((), ("X1",)))
    genes = ["X1", "X2", "Y1", "OTHER"]
    z = np.zeros((8, 4))
    z[:4, 0] = z[:4, 1] = 1.0  # cluster a: A scores (1 + 1)/√2 per cell (all weights 1), 5.66 in total ≥ 4/4
    z[4:, 2] = 0.1  # cluster b: B is the best type, 0.1 per cell, but 0.4 in total < 4/4 → "Unknown"
    frame = pd.DataFrame(z, columns=genes)
    clusters = np.array(["a"] * 4 + ["b"] * 4)
    model = ScType(markers=sets, scaled=True, assignment="cluster").fit(frame)
    assert model(frame, clusters, "a") == ("A", 1.0)
    assert model(frame, clusters, "b") == (UNKNOWN, 1.0)
    assert ScType(markers=sets, scaled=True).fit(frame)(frame, clusters, "b") == ("B", 1.0)
    table = sctype_cluster_labels(sctype_scores(z, genes, sets, scaled=True), clusters)
    assert table.to_dict() == {"a": "A", "b": UNKNOWN}


def test_cell_independence_follows_scaled(planted) -> None:
    X, _ = planted
    for scaled in (True, False):
        model = ScType(scaled=scaled).fit(X)
        assert model.cell_independent is scaled
        assert is_per_cell(model) is scaled
        head = model.predict_proba(X.iloc[:20])
        full = model.predict_proba(X)[:20]
        assert np.allclose(head, full) is scaled  # unscaled: z-scores use the cells passed


@pytest.mark.parametrize("scaled", [True, False])
def test_perturbed_fast_path_equals_scoring_modified_copies(planted, scaled: bool) -> None:
    X, _ = planted
    model = ScType(scaled=scaled).fit(X)
    block = model.align(X.iloc[:30])
    rng = np.random.default_rng(0)
    used = model.plan_.columns
    perturbations = [(np.array([j]), np.array([rng.normal() * 3])) for j in rng.choice(used, 10)]
    perturbations += [(np.array([used[0], 5, used[3]]), np.array([5.0, -2.0, 0.5])), (np.array([], int), np.array([]))]
    perturbations += [(np.array([used[1]]), rng.normal(size=(30, 1))), (np.array([7]), np.array([100.0]))]
    fast = model.predict_proba_perturbed(block, perturbations)
    labels = model.predict_labels_perturbed(block, perturbations)
    for (cols, values), scores, labs in zip(perturbations, fast, labels, strict=True):
        modified = block.copy()
        modified[:, cols] = values
        np.testing.assert_allclose(scores, model._predict_proba(modified), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(labs, model._predict_labels(modified))


def test_fit_checks_and_persistence(planted, tmp_path) -> None:
    X, truth = planted
    other = pd.DataFrame(np.ones((5, 3)), columns=["A1", "B2", "C3"])
    with pytest.raises(DataError, match="none of the"):
        ScType().fit(other)
    with pytest.raises(ConfigError, match="assignment"):
        ScType(assignment="clusters").fit(X)
    with pytest.raises(DataError, match="labels has 3 entries"):
        ScType().fit(X, ["a", "b", "c"])
    model = ScType().fit(X, truth)
    assert model.get_params() == {"markers": "pbmc", "tissue": "Immune system", "scaled": False,
                                  "assignment": "cell", "gene_names_to_uppercase": True, "backend": "native",
                                  "r_source": None}
    model.save(tmp_path / "sctype.pkl")
    loaded = PerCellClassifier.load(tmp_path / "sctype.pkl")
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_types_without_markers_are_never_predicted() -> None:
    sets = MarkerSets(("A", "B"), (("X1",), ("ABSENT",)), ((), ()))
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(6, 2)), columns=["x1", "OTHER"])
    model = ScType(markers=sets, scaled=True).fit(frame)
    scores = model.predict_proba(frame)
    assert np.isneginf(scores[:, 1]).all() and np.isfinite(scores[:, 0]).all()
    assert set(model.predict(frame)) == {"A"}
    single = ScType(markers=sets, scaled=False).fit(frame)
    assert list(single.predict(frame.iloc[:1])) == [UNKNOWN]  # one cell: sd undefined, no type can be scored


CLEANROOM_R = Path(__file__).resolve().parents[1] / "resources" / "sctype_score_cleanroom.R"


def _require_r() -> None:
    from vulnbench.sc import rbridge

    ok, reason = rbridge.r_available()
    if not ok:
        pytest.skip(f"R is not usable here: {reason}")
    if rbridge.missing_r_packages("scales"):
        pytest.skip("R package scales is not installed (apt-get install r-cran-scales)")


@pytest.mark.parametrize("scaled", [True, False])
def test_r_backend_scores_through_sctype_score(planted, scaled: bool) -> None:
    """backend="r" hands the marker genes and sets to an R `sctype_score` and reads es.max back: here a clean-room
    R implementation stands in for scType's GPL-3 file, so this checks the bridge (names, order, dropped rows)."""
    _require_r()
    X, truth = planted
    X = X.iloc[:200]
    native = ScType(scaled=scaled).fit(X)
    r_model = ScType(scaled=scaled, backend="r", r_source=str(CLEANROOM_R)).fit(X)
    np.testing.assert_allclose(r_model.predict_proba(X), native.predict_proba(X), rtol=0, atol=1e-10)
    np.testing.assert_array_equal(r_model.predict(X), native.predict(X))
    block = r_model.align(X.iloc[:20]) if scaled else r_model.align(X)
    cols = r_model.plan_.columns
    perturbations = [(np.array([cols[0]]), np.array([4.0])), (np.array([cols[2], cols[5]]), np.array([-1.0, 3.0]))]
    np.testing.assert_allclose(r_model.predict_proba_perturbed(block, perturbations),
                               native.predict_proba_perturbed(block, perturbations), rtol=0, atol=1e-10)
    cluster = truth[0]
    assert r_model(X, truth[:200], cluster) == native(X, truth[:200], cluster)


def test_r_backend_types_without_markers_score_minus_inf() -> None:
    _require_r()
    sets = MarkerSets(("A", "B", "C"), (("X1", "X2"), ("ABSENT",), ("X2", "Y1")), ((), (), ("X1",)))
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(12, 4)), columns=["X1", "X2", "Y1", "Z"])
    r_model = ScType(markers=sets, scaled=True, backend="r", r_source=str(CLEANROOM_R)).fit(frame)
    scores = r_model.predict_proba(frame)
    assert np.isneginf(scores[:, 1]).all() and np.isfinite(scores[:, [0, 2]]).all()
    np.testing.assert_allclose(scores, ScType(markers=sets, scaled=True).fit(frame).predict_proba(frame), atol=1e-12)


def test_r_backend_errors_name_the_missing_piece(planted, tmp_path) -> None:
    X, _ = planted
    with pytest.raises(ConfigError, match="unknown backend 'python'"):
        ScType(backend="python").fit(X)
    _require_r()
    with pytest.raises(ConfigError, match=r"sctype_score_\.R: set r_source.*absent\.R"):
        ScType(backend="r", r_source=str(tmp_path / "absent.R")).fit(X)
    broken = tmp_path / "broken.R"
    broken.write_text("sctype_score <- function(\n")
    with pytest.raises(ConfigError, match=r"broken\.R"):
        ScType(backend="r", r_source=str(broken)).fit(X)
    other = tmp_path / "other.R"
    other.write_text("score <- function(x) x\n")
    with pytest.raises(ConfigError, match="sctype_score"):
        ScType(backend="r", r_source=str(other)).fit(X)
