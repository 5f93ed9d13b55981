"""Grid and random-walk min-change attacks: planted truths, legacy parity quirks, both oracles, pbmc_short."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pandas as pd
import pytest

from tests.helpers import MarkerMeans, m_classifier
from vulnbench.core.errors import ConfigError
from vulnbench.sc.attacks._min_change import grid_min_change, parse_modifications, random_walk_min_change
from vulnbench.sc.modifications import Modification

GENES = ["A", "B", "C", "D", "E", "F"]


@pytest.fixture(scope="module")
def planted() -> tuple[pd.DataFrame, np.ndarray]:
    """20 target cells ("T") and 20 others ("O"). On T: A, B, D low (others high), C high (others 0).

    perc99 of A, B, D ≈ 10 (switch on), perc1 of C = 0 (switch off); E, F are decoys.
    """
    rng = np.random.default_rng(0)
    n = 20
    target = {"A": 1.0, "B": 1.0, "C": 10.0, "D": 1.0, "E": 3.0, "F": 3.0}
    other = {"A": 10.0, "B": 10.0, "C": 0.0, "D": 10.0, "E": 4.0, "F": 4.0}
    rows = [{g: target[g] + 0.01 * rng.random() for g in GENES} for _ in range(n)]
    rows += [{g: other[g] + 0.01 * rng.random() for g in GENES} for _ in range(n)]
    frame = pd.DataFrame(rows, index=[f"c{i}" for i in range(2 * n)], columns=GENES)
    return frame, np.array(["T"] * n + ["O"] * n)


def rules(X: pd.DataFrame, clusters: np.ndarray, target: str, *, na_on_a: bool = False,
          names: tuple[str, str] = ("T", "O")) -> tuple[str, float]:
    """Planted truth: A and B switched on → "AB"; C switched off and D switched on → "CD".

    No single gene flips; the minimal attacks are {A: perc99, B: perc99} and {C: perc1, D: perc99}.
    With `na_on_a`, A alone gives the non-label "NA".
    """
    mean = X.loc[np.asarray(clusters) == target].mean()
    if mean["A"] > 5 and mean["B"] > 5:
        return "AB", 0.9
    if mean["C"] < 2 and mean["D"] > 5:
        return "CD", 0.8
    if na_on_a and mean["A"] > 5:
        return "NA", 0.5
    return (names[0] if target == "T" else names[1]), 1.0


def flips(result: pd.DataFrame) -> set[tuple[tuple[str, str], ...]]:
    """The flipping rows as sets of (gene, modification) for the modified genes."""
    genes = [c for c in result.columns if c not in ("prediction", "odd", "genesModified", "typeModified",
                                                     "iteration")]
    return {tuple((g, row[g]) for g in genes if row[g] != "NA") for _, row in result[result["typeModified"]].iterrows()}


# -- modification list -------------------------------------------------------------------------------------

def test_parse_modifications_ids_like_r() -> None:
    def boost(x, mask):
        return 1000 * x.max()

    parsed = parse_modifications([("perc1",), "perc99", ("fixed", 1000), ("full_row_fct", boost),
                                  {"method": "fixed", "value": 2.5}, {"method": "target_row_fct", "fct": np.max,
                                                                        "id": "mx"}])
    assert [i for i, _ in parsed] == ["perc1", "perc99", "fixed_1000", "full_row_fct_boost", "fixed_2.5", "mx"]
    assert parsed[2][1] == Modification("fixed", 1000.0)
    assert parsed[3][1].fct is boost
    assert parse_modifications([("decile+5",)], legacy=True)[0][1].legacy


@pytest.mark.parametrize("bad", [[], [()], [("perc1", 2, 3)], [("nope",)], [("fixed", "x")], [{"value": 3}],
                                 [{"method": "perc1", "colour": 1}], [("full_row_fct",)], [(5,)],
                                 [("perc1",), ("perc1",)], "perc1"])
def test_parse_modifications_rejects_malformed_lists(bad) -> None:
    with pytest.raises(ConfigError) as info:
        parse_modifications(bad)
    assert "\n" not in str(info.value)


# -- grid -----------------------------------------------------------------------------------------------------

def test_grid_default_finds_exactly_the_minimal_combinations(planted) -> None:
    frame, clusters = planted
    result = grid_min_change(frame, clusters, "T", rules, ["A", "B", "C", "D"], return_first_found=True)
    assert flips(result) == {(("A", "perc99"), ("B", "perc99")), (("C", "perc1"), ("D", "perc99"))}
    assert result.attrs["baseline_label"] == "T"
    # k = 1 (8 rows) and k = 2 (6 pairs × 4 = 24 rows) evaluated, nothing beyond; + 1 baseline
    assert len(result) == 8 + 24
    assert result.attrs["n_evaluations"] == 8 + 24 + 1
    assert result["genesModified"].max() == 2
    assert list(result["typeModified"][:2]) == [True, True] and not result["typeModified"][2:].any()
    assert set(result["prediction"][:2]) == {"AB", "CD"}


def test_grid_default_without_first_found_evaluates_everything_sorted(planted) -> None:
    frame, clusters = planted
    result = grid_min_change(frame, clusters, "T", rules, ["A", "B", "C"])
    assert len(result) == 3**3 - 1 and result.attrs["n_evaluations"] == 3**3
    flipped = result[result["typeModified"]]
    # A and B on, C anything: 3 rows, the pair first, then the two with C modified as well
    assert list(flipped["genesModified"]) == [2, 3, 3]
    assert flipped["prediction"].eq("AB").all()
    # R's sort: flips first, then by genes modified; ties keep the enumeration order
    assert list(flipped["C"]) == ["NA", "perc1", "perc99"]
    rest = result[~result["typeModified"]]
    assert list(rest["genesModified"]) == sorted(rest["genesModified"])


def test_grid_legacy_stops_at_the_first_row_which_modifies_every_gene(planted) -> None:
    frame, clusters = planted
    # modification 1 = perc99 on every gene switches A and B on: upstream's very first row flips
    result = grid_min_change(frame, clusters, "T", rules, ["A", "B", "C", "D"], legacy=True,
                             modifications=[("perc99",), ("perc1",)], return_first_found=False)
    assert len(result) == 1 and result.attrs["n_evaluations"] == 1 and result.attrs["n_calls"] == 1
    row = result.iloc[0]
    assert row["prediction"] == "AB" and row["typeModified"] and row["genesModified"] == 4
    assert [row[g] for g in "ABCD"] == ["perc99"] * 4
    assert result.attrs["baseline_label"] is None  # upstream makes no baseline call


def test_grid_legacy_follows_r_enumeration_order(planted) -> None:
    frame, clusters = planted
    # perc1 everywhere → "T"; then (perc1, perc1, perc1, perc99) → C off and D on → "CD": stop there
    result = grid_min_change(frame, clusters, "T", rules, ["A", "B", "C", "D"], legacy=True)
    assert result.attrs["n_evaluations"] == 2
    assert list(result["prediction"]) == ["CD", "T"]
    assert list(result.iloc[0][list("ABCD")]) == ["perc1", "perc1", "perc1", "perc99"]
    assert list(result.iloc[1][list("ABCD")]) == ["perc1"] * 4


def test_grid_legacy_without_flip_returns_the_whole_grid_in_r_order(planted) -> None:
    frame, clusters = planted
    result = grid_min_change(frame, clusters, "T", rules, ["E", "F"], legacy=True)
    assert result.attrs["n_evaluations"] == 9 and not result["typeModified"].any()
    # sorted by genes modified; ties keep gtools::permutations order (last position varies fastest)
    assert list(result["genesModified"]) == [0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert list(zip(result["E"], result["F"], strict=True)) == [
        ("NA", "NA"), ("perc1", "NA"), ("perc99", "NA"), ("NA", "perc1"), ("NA", "perc99"),
        ("perc1", "perc1"), ("perc1", "perc99"), ("perc99", "perc1"), ("perc99", "perc99")]


def test_grid_legacy_compares_with_the_cluster_name(planted) -> None:
    frame, clusters = planted

    def other_vocabulary(X, c, t):
        return rules(X, c, t, names=("T cells", "others"))

    legacy = grid_min_change(frame, clusters, "T", other_vocabulary, ["E", "F"], legacy=True)
    assert len(legacy) == 1 and legacy["typeModified"].all()  # the unchanged label "T cells" ≠ "T"
    default = grid_min_change(frame, clusters, "T", other_vocabulary, ["E", "F"])
    assert default.attrs["baseline_label"] == "T cells"
    assert len(default) == 8 and not default["typeModified"].any()


def test_grid_refuses_too_many_combinations_unless_sure(planted, caplog) -> None:
    frame, clusters = planted
    calls = []

    def counting(X, c, t):
        calls.append(1)
        return rules(X, c, t)

    with caplog.at_level(logging.WARNING):
        refused = grid_min_change(frame, clusters, "T", counting, GENES, max_combinations=100)
    assert refused.empty and not calls
    assert list(refused.columns) == ["prediction", "odd", "genesModified", "typeModified", *GENES]
    assert "too many combinations to test: 729" in caplog.text
    sure = grid_min_change(frame, clusters, "T", counting, GENES, max_combinations=100, iamsure=True,
                           return_first_found=True)
    assert flips(sure) == {(("A", "perc99"), ("B", "perc99")), (("C", "perc1"), ("D", "perc99"))}
    assert len(calls) == sure.attrs["n_calls"] == 1 + 12 + 60


def test_grid_unknown_gene_and_mixed_value_shapes(planted) -> None:
    frame, clusters = planted
    with pytest.raises(ConfigError):
        grid_min_change(frame, clusters, "T", rules, ["A", "ZZZ"])
    with pytest.raises(ConfigError):
        grid_min_change(frame, clusters, "T", rules, [])

    def high(column):  # per-cell values: target_row_fct returns one value per target cell
        return column + 20

    result = grid_min_change(frame, clusters, "T", rules, ["A", "B"],
                             modifications=[("target_row_fct", high), ("perc1",)], return_first_found=True)
    assert flips(result) == {(("A", "target_row_fct_high"), ("B", "target_row_fct_high"))}


# -- random walk ----------------------------------------------------------------------------------------------

def test_random_walk_finds_the_planted_minimal_attack_and_is_reproducible(planted) -> None:
    frame, clusters = planted
    runs = [random_walk_min_change(frame, clusters, "T", rules, GENES, seed=7, walk_length=60) for _ in range(2)]
    best = runs[0].iloc[0]
    assert best["typeModified"] and best["genesModified"] == 2
    assert {(g, best[g]) for g in GENES if best[g] != "NA"} in ({("A", "perc99"), ("B", "perc99")},
                                                                  {("C", "perc1"), ("D", "perc99")})
    assert runs[0].attrs["best_genes_modified"] == 2
    # 3^6 = 729 > 100: seed batch = (all perc99) first, which already flips; the walk then shrinks it
    seed_rows = runs[0][runs[0]["iteration"] == 1]
    assert len(seed_rows) == 1 and seed_rows.iloc[0]["genesModified"] == 6
    pd.testing.assert_frame_equal(runs[0], runs[1])
    assert runs[0].attrs["n_evaluations"] == runs[1].attrs["n_evaluations"]
    other = random_walk_min_change(frame, clusters, "T", rules, GENES, seed=8, walk_length=60)
    assert not runs[0].drop(columns="odd").equals(other.drop(columns="odd"))


def test_random_walk_walk_rows_and_iterations(planted) -> None:
    frame, clusters = planted
    result = random_walk_min_change(frame, clusters, "T", rules, GENES, seed=1, walk_length=5)
    assert set(result["iteration"]) <= set(range(1, 7))
    assert result.attrs["n_evaluations"] == len(result) + 1  # + baseline
    walked = result[result["iteration"] > 1]
    # every proposal modifies strictly fewer genes than the best attack at that time
    assert (walked["genesModified"] < 6).all()
    flipped = result[result["typeModified"]]
    assert list(flipped["genesModified"]) == sorted(flipped["genesModified"])
    assert result["typeModified"].iloc[: len(flipped)].all()
    # upstream prepends walk rows: within equal (flip, genes modified), the newest step comes first
    for _, group in result.groupby(["typeModified", "genesModified"], sort=False):
        assert list(group["iteration"]) == sorted(group["iteration"], reverse=True)
    assert len(set(result["iteration"])) > 2


def test_random_walk_step_probabilities() -> None:
    from vulnbench.sc.attacks._min_change import _resample

    rng = np.random.default_rng(0)
    n, m = 200_000, 1  # one modification: a redrawn position becomes unmodified half of the time
    modified = np.zeros(n, dtype=np.intp)
    step = _resample(rng, modified, m, 0.2, unmodified_in_previous=0)
    assert abs((step == m).mean() - 1 / 5 / 2) < 0.005  # redrawn with probability 1/round(1/0.2)
    unmodified = np.full(n, m, dtype=np.intp)
    assert (_resample(rng, unmodified, m, 0.2, unmodified_in_previous=0) == m).all()  # first try: never
    step = _resample(rng, unmodified, m, 0.2, unmodified_in_previous=100)  # 1/round(√100/0.2) = 1/50
    assert abs((step != m).mean() - 1 / 50 / 2) < 0.002
    assert (_resample(rng, modified, m, 1.0, 0) == m).mean() > 0.45  # ratio 1: every position redrawn


def test_random_walk_not_na_ignores_na_labels(planted) -> None:
    frame, clusters = planted

    def with_na(X, c, t):
        return rules(X, c, t, na_on_a=True)

    kwargs = {"seed": 3, "walk_length": 80}
    any_change = random_walk_min_change(frame, clusters, "T", with_na, GENES, **kwargs)
    assert any_change.iloc[0]["prediction"] == "NA" and any_change.iloc[0]["genesModified"] == 1
    not_na = random_walk_min_change(frame, clusters, "T", with_na, GENES, change_type="not_na", **kwargs)
    assert not_na.iloc[0]["genesModified"] == 2 and not_na.iloc[0]["prediction"] in ("AB", "CD")
    assert not (not_na["typeModified"] & not_na["prediction"].eq("NA")).any()
    # a configurable set of non-labels (fixed mode): "AB" no longer counts either
    custom = random_walk_min_change(frame, clusters, "T", with_na, GENES, change_type="not_na",
                                    non_labels=("NA", "AB"), **kwargs)
    assert set(custom.loc[custom["typeModified"], "prediction"]) == {"CD"}


def test_random_walk_without_a_seed_flip(planted, caplog) -> None:
    frame, clusters = planted
    with caplog.at_level(logging.WARNING):
        result = random_walk_min_change(frame, clusters, "T", rules, ["E", "F"], first_batch=100)
    assert "No modified type" in caplog.text
    assert len(result) == 9 and not result["typeModified"].any()  # 3^2 ≤ 100: the full grid
    assert result.attrs["best_genes_modified"] is None


def test_random_walk_legacy_compares_with_the_cluster_name(planted) -> None:
    frame, clusters = planted

    def other_vocabulary(X, c, t):
        return rules(X, c, t, names=("T cells", "others"))

    legacy = random_walk_min_change(frame, clusters, "T", other_vocabulary, ["E", "F"], legacy=True, seed=0)
    assert legacy["typeModified"].any() and legacy.attrs["baseline_label"] is None
    default = random_walk_min_change(frame, clusters, "T", other_vocabulary, ["E", "F"], seed=0)
    assert not default["typeModified"].any()


@pytest.mark.parametrize("kwargs", [{"change_type": "some"}, {"step_change_ratio": 0}, {"step_change_ratio": 3},
                                    {"first_batch": 0}, {"walk_length": -1}])
def test_random_walk_validates_arguments(planted, kwargs) -> None:
    frame, clusters = planted
    with pytest.raises(ConfigError):
        random_walk_min_change(frame, clusters, "T", rules, GENES, **kwargs)


# -- both oracles ---------------------------------------------------------------------------------------------

def test_per_cell_model_and_callable_give_the_same_grid(synthetic_small) -> None:
    adata, markers = synthetic_small
    test = adata[adata.obs["split"] == "test"]
    model = MarkerMeans(test.var_names, markers)
    clusters = test.obs["label"].astype(str).to_numpy()
    dense = pd.DataFrame(test.X.toarray(), index=test.obs_names, columns=test.var_names)
    genes = [markers["type0"][0], markers["type1"][0], markers["type2"][0], markers["type1"][1]]
    modifications = [("perc1",), ("positive_aberrant",)]
    fast = grid_min_change(test, clusters, "type0", model, genes, modifications=modifications)
    slow = grid_min_change(dense, clusters, "type0", lambda X, c, t: model(X, c, t), genes,
                           modifications=modifications)
    pd.testing.assert_frame_equal(fast, slow)
    assert fast["typeModified"].any()
    assert fast.attrs["n_evaluations"] == slow.attrs["n_evaluations"] == 3**4
    assert slow.attrs["n_calls"] == 3**4
    assert fast.attrs["n_calls"] <= 5  # baseline + one batch per number of modified genes


# -- pbmc_short (adverSCarial's toy data, MClassifier) --------------------------------------------------------

def test_pbmc_short_dc_grid(pbmc_short) -> None:
    frame, types = pbmc_short
    result = grid_min_change(frame, types, "DC", m_classifier, ["PF4", "CD74"])
    assert result.attrs["baseline_label"] == "DC" and len(result) == 8
    pf4 = result[(result["PF4"] == "perc99") & (result["CD74"] == "NA")].iloc[0]
    assert pf4["prediction"] == "Platelet" and pf4["typeModified"]
    assert result.iloc[0]["genesModified"] == 1 and result.iloc[0]["typeModified"]
    # raising CD74 keeps DC (it is DC's marker): never a flip on its own
    cd74 = result[(result["PF4"] == "NA") & (result["CD74"] == "perc99")].iloc[0]
    assert cd74["prediction"] == "DC" and not cd74["typeModified"]
    first = grid_min_change(frame, types, "DC", m_classifier, ["PF4", "CD74"], return_first_found=True)
    assert first["genesModified"].max() == 1
    assert {(r["PF4"], r["CD74"], r["prediction"]) for _, r in first[first["typeModified"]].iterrows()} >= {
        ("perc99", "NA", "Platelet")}
    legacy = grid_min_change(frame, types, "DC", m_classifier, ["PF4", "CD74"], legacy=True)
    assert len(legacy) == 1 and legacy.iloc[0]["genesModified"] == 2  # first row (perc1, perc1) already flips


def test_pbmc_short_random_walk_reaches_a_single_gene(pbmc_short) -> None:
    frame, types = pbmc_short
    genes = ["PF4", "CD74", "LTB", "CD79A", "S100A9", "GZMB", "GZMK"]
    result = random_walk_min_change(frame, types, "DC", m_classifier, genes, seed=1, walk_length=30)
    assert result.iloc[0]["typeModified"] and result.iloc[0]["genesModified"] == 1
    assert result.attrs["stop_reason"] in ("minimal", "walk_length")


def test_level_enumeration_matches_the_filtered_full_grid() -> None:
    from vulnbench.sc.attacks._min_change import _level

    full = list(itertools.product(range(3), repeat=4))
    for k in range(5):
        assert list(_level(4, 2, k)) == [a for a in full if sum(j != 2 for j in a) == k]
