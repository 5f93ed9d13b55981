"""The single-gene attack: reference results, upstream call counts, planted truths, both oracles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tests.helpers import MARKERS, MarkerMeans, m_classifier
from vulnbench.core.errors import ConfigError, DataError
from vulnbench.sc.attacks import single_gene
from vulnbench.sc.classifiers.base import plurality
from vulnbench.sc.modifications import quantile_type7


def upstream_call_count(frame: pd.DataFrame, clusters: np.ndarray, target: str, classifier, *, exclude=(),
                        first_dichot=100, max_split_size=1, return_first_found=False, change_type="any",
                        method="perc99") -> tuple[int, list[str]]:
    """A literal, sequential port of adverSCarial 1.3.13's advSingleGene recursion, counting classifier calls.

    Every call copies the data and recomputes the modification, as upstream does; it is the yardstick for
    `n_evaluations` and for the genes found.
    """
    assert method == "perc99"
    calls = 0
    found: list[str] = []
    mask = clusters == target

    def classify(genes: list[str]) -> str:
        nonlocal calls
        calls += 1
        data = frame.copy()
        if genes:
            values = np.quantile(frame[genes].to_numpy(), 0.99, axis=0, method="linear")
            data.loc[mask, genes] = np.broadcast_to(values, (mask.sum(), len(genes)))
        return classifier(data, clusters, target)[0]

    baseline = classify([])
    genes = [g for g in frame.columns if g not in set(exclude)]

    def dichot(split: list[str]) -> None:
        if return_first_found and found:
            return
        for half in (split[0::2], split[1::2]):
            if return_first_found and found:
                return
            if not half:
                continue
            label = classify(half)
            if label != baseline:
                if len(half) <= max_split_size and (change_type == "any" or label != "NA"):
                    found.append("__".join(half))
                elif len(half) > max_split_size:
                    dichot(half)

    for i in range(first_dichot):
        if return_first_found and found:
            break
        if genes[i::first_dichot]:
            dichot(genes[i::first_dichot])
    return calls, found


def test_dc_return_first_found_flips_to_platelet_with_pf4(pbmc_short) -> None:
    frame, types = pbmc_short
    result = single_gene(frame, types, "DC", m_classifier, exclude_genes=MARKERS, method="perc99",
                         return_first_found=True, change_type="not_na", first_dichot=10)
    assert list(result["gene"]) == ["PF4"]
    assert list(result["new_label"]) == ["Platelet"]
    calls, genes = upstream_call_count(frame, types, "DC", m_classifier, exclude=MARKERS, first_dichot=10,
                                       return_first_found=True, change_type="not_na")
    assert genes == ["PF4"]
    assert result.attrs["n_evaluations"] == calls


@pytest.mark.parametrize("search", ["exhaustive", "dichotomic"])
def test_memory_cd4_t_has_the_eight_reference_genes(pbmc_short, search: str) -> None:
    frame, types = pbmc_short
    result = single_gene(frame, types, "Memory CD4 T", m_classifier, search=search)
    expected = {"CD79A": "B", "S100A9": "CD14+ Mono", "GZMB": "NK", "GZMK": "CD8 T", "LST1": "FCGR3A+ Mono",
                "CD74": "DC", "PF4": "Platelet", "CCR7": "Naive CD4 T"}
    assert dict(zip(result["gene"], result["new_label"], strict=True)) == expected


def test_exhaustive_reference_counts_for_dc_and_b(pbmc_short) -> None:
    frame, types = pbmc_short
    dc = single_gene(frame, types, "DC", m_classifier, search="exhaustive")
    assert list(dc["gene"]) == ["PF4"]
    b = single_gene(frame, types, "B", m_classifier, search="exhaustive")
    assert len(b) == 7
    assert b.attrs["n_evaluations"] == frame.shape[1] + 1


@pytest.mark.parametrize(
    "settings",
    [
        {"target": "Memory CD4 T"},
        {"target": "Memory CD4 T", "first_dichot": 5},
        {"target": "Memory CD4 T", "first_dichot": 3, "max_split_size": 4},
        {"target": "B", "first_dichot": 10, "exclude": MARKERS},
        {"target": "NK", "first_dichot": 7, "return_first_found": True},
        {"target": "Naive CD4 T", "first_dichot": 1},
    ],
)
def test_dichotomic_evaluates_the_same_candidates_as_upstream(pbmc_short, settings: dict) -> None:
    frame, types = pbmc_short
    settings = dict(settings)
    target, exclude = settings.pop("target"), settings.pop("exclude", ())
    calls, genes = upstream_call_count(frame, types, target, m_classifier, exclude=exclude, **settings)
    result = single_gene(frame, types, target, m_classifier, exclude_genes=exclude, **settings)
    assert result.attrs["n_evaluations"] == calls
    assert list(result["gene"]) == genes  # same results, in upstream's depth-first order


def test_exhaustive_finds_exactly_the_planted_genes(synthetic_small) -> None:
    adata, markers = synthetic_small
    test = adata[adata.obs["split"] == "test"]
    model = MarkerMeans(test.var_names, markers)
    clusters = test.obs["label"].astype(str).to_numpy()
    result = single_gene(test, clusters, "type0", model, method="positive_aberrant", search="exhaustive")
    planted = {g for t, genes in markers.items() if t != "type0" for g in genes}
    assert set(result["gene"]) == planted
    assert result.attrs["n_evaluations"] == test.n_vars + 1
    assert result.attrs["n_calls"] < 10  # thousands of candidates, batched into a few model calls


def test_per_cell_fast_path_and_callable_path_agree(synthetic_small) -> None:
    adata, markers = synthetic_small
    test = adata[adata.obs["split"] == "test"]
    model = MarkerMeans(test.var_names, markers)
    clusters = test.obs["label"].astype(str).to_numpy()
    dense = pd.DataFrame(test.X.toarray(), index=test.obs_names, columns=test.var_names)
    for method in ("perc99", "positive_aberrant", "negative_aberrant", "fixed"):
        fast = single_gene(test, clusters, "type1", model, method=method, fixed_value=50)
        slow = single_gene(dense, clusters, "type1", lambda X, c, t: model(X, c, t), method=method, fixed_value=50)
        pd.testing.assert_frame_equal(fast, slow)
        assert fast.attrs["n_evaluations"] == slow.attrs["n_evaluations"]
        assert fast.attrs["n_calls"] < slow.attrs["n_calls"]


def test_sparse_and_dense_inputs_give_the_same_result(pbmc_short) -> None:
    frame, types = pbmc_short
    import anndata as ad

    sparse = ad.AnnData(X=sp.csr_matrix(frame.to_numpy()), obs=pd.DataFrame(index=frame.index),
                        var=pd.DataFrame(index=frame.columns))

    def on_anndata(X, clusters, target):
        data = X.X.toarray() if sp.issparse(X.X) else X.X
        return m_classifier(pd.DataFrame(data, index=X.obs_names, columns=X.var_names), clusters, target)

    dense = single_gene(frame, types, "Memory CD4 T", m_classifier)
    from_sparse = single_gene(sparse, types, "Memory CD4 T", on_anndata)
    pd.testing.assert_frame_equal(dense, from_sparse)


def test_the_callable_sees_the_modified_values_and_the_data_is_restored(pbmc_short) -> None:
    frame, types = pbmc_short
    original = frame.copy()
    seen = []

    def spy(X: pd.DataFrame, clusters, target):
        seen.append(X.loc[clusters == target, "PF4"].to_numpy().copy())
        return m_classifier(X, clusters, target)

    single_gene(frame, types, "DC", spy, genes=["PF4"], search="exhaustive")
    perc99 = quantile_type7(frame[["PF4"]].to_numpy(), 0.99)[0]
    assert np.all(seen[1] == perc99) and not np.all(seen[0] == perc99)
    pd.testing.assert_frame_equal(frame, original)


def test_bad_inputs_give_one_line_errors(pbmc_short) -> None:
    frame, types = pbmc_short
    with pytest.raises(ConfigError, match="unknown modification method"):
        single_gene(frame, types, "DC", m_classifier, method="perc98")
    with pytest.raises(ConfigError, match="unknown search"):
        single_gene(frame, types, "DC", m_classifier, search="bisect")
    with pytest.raises(DataError, match="target cluster 'Eosinophil' has no cells"):
        single_gene(frame, types, "Eosinophil", m_classifier)
    with pytest.raises(ConfigError, match="genes not in the data: NOPE"):
        single_gene(frame, types, "DC", m_classifier, genes=["PF4", "NOPE"])
    with pytest.raises(DataError, match="entries for 200 cells"):
        single_gene(frame, types[:-1], "DC", m_classifier)
    nan = frame.copy()
    nan.iloc[3, 4] = np.nan
    with pytest.raises(DataError, match="NaN"):
        single_gene(nan, types, "DC", m_classifier)
    duplicated = frame.rename(columns={"PF4": "CD74"})
    with pytest.raises(DataError, match=r"duplicated gene name.*CD74"):
        single_gene(duplicated, types, "DC", m_classifier)


def test_a_plain_scikit_learn_estimator_gets_the_fast_path(synthetic_small) -> None:
    from sklearn.linear_model import LogisticRegression

    adata, _ = synthetic_small
    clusters = adata.obs["label"].astype(str).to_numpy()
    frame = pd.DataFrame(adata.X.toarray(), index=adata.obs_names, columns=adata.var_names)
    estimator = LogisticRegression(max_iter=500).fit(frame, clusters)  # remembers feature names
    flips = single_gene(adata, clusters, "type0", estimator, method="positive_aberrant", search="exhaustive")

    def cluster_call(X, c, t):
        return plurality(estimator.predict(X.loc[c == t]))

    reference = single_gene(frame, clusters, "type0", cluster_call, method="positive_aberrant", search="exhaustive")
    assert len(flips) > 0
    pd.testing.assert_frame_equal(flips, reference)
    assert flips.attrs["n_calls"] < reference.attrs["n_calls"]


def test_repeated_candidates_are_answered_from_the_cache(pbmc_short) -> None:
    from vulnbench.sc.expression import as_expression
    from vulnbench.sc.modifications import Modification
    from vulnbench.sc.oracle import make_oracle

    frame, types = pbmc_short
    oracle = make_oracle(m_classifier, as_expression(frame), types, "DC", Modification("perc99"))
    pf4 = np.array([list(frame.columns).index("PF4")])
    first = oracle.evaluate([pf4, pf4])
    assert first[0] == first[1] and first[0].label == "Platelet"
    assert oracle.n_calls == 1 and oracle.n_evaluations == 1
    oracle.evaluate([pf4])
    assert oracle.n_calls == 1
