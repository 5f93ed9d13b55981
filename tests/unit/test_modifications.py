"""Modification values against the spec's reference numbers (adverSCarial 1.3.13, measured)."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from vulnbench.core.errors import ConfigError
from vulnbench.sc.expression import as_expression
from vulnbench.sc.modifications import GeneStats, Modification, order_statistics, quantile_type7


@pytest.fixture
def spec_stats() -> GeneStats:
    frame = pd.DataFrame({"g1": np.arange(10.0), "g2": np.arange(10.0, 101.0, 10.0)})
    return GeneStats(as_expression(frame))


@pytest.mark.parametrize(
    ("method", "expected"),
    [("perc1", [0.09, 10.9]), ("perc99", [8.91, 99.1]), ("positive_aberrant", [90000, 1e6]),
     ("negative_aberrant", [-90000, -1e6]), ("fixed", [3, 3])],
)
def test_reference_values(spec_stats: GeneStats, method: str, expected: list[float]) -> None:
    values = Modification(method).values(spec_stats, np.array([0, 1]))
    np.testing.assert_allclose(values, expected, rtol=1e-12)


def test_fixed_value_is_used(spec_stats: GeneStats) -> None:
    np.testing.assert_array_equal(Modification("fixed", 1000).values(spec_stats, np.array([1])), [1000])


def test_unknown_method_is_an_error_not_a_no_op() -> None:
    with pytest.raises(ConfigError, match="unknown modification method 'perc50'"):
        Modification("perc50")


@pytest.mark.parametrize("p", [0.0, 0.01, 0.37, 0.5, 0.99, 1.0])
def test_quantile_matches_numpy_linear_on_sparse_and_dense(p: float) -> None:
    rng = np.random.default_rng(1)
    dense = rng.normal(size=(57, 40)) * (rng.random((57, 40)) < 0.3)  # negatives, zeros, positives
    dense[:, 3] = 0.0  # an all-zero column
    dense[:, 5] = -np.abs(dense[:, 5]) - 1  # an all-negative column
    expected = np.quantile(dense, p, axis=0, method="linear")
    np.testing.assert_allclose(quantile_type7(dense, p), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(quantile_type7(sp.csr_matrix(dense), p), expected, rtol=1e-12, atol=1e-12)


def test_order_statistics_sparse_equals_sorted_columns() -> None:
    rng = np.random.default_rng(2)
    dense = np.round(rng.normal(size=(30, 12)) * (rng.random((30, 12)) < 0.4), 2)
    for k in (0, 7, 15, 29):
        np.testing.assert_array_equal(order_statistics(sp.csr_matrix(dense), [k])[0], np.sort(dense, axis=0)[k])
        np.testing.assert_array_equal(order_statistics(dense, [k])[0], np.sort(dense, axis=0)[k])


SPEC_FRAME = pd.DataFrame({"g1": np.arange(10.0), "g2": np.arange(10.0, 101.0, 10.0)})
SPEC_CLUSTERS = ["T"] * 5 + ["O"] * 5


def target_values(method: str, **kwargs) -> pd.DataFrame:
    from vulnbench.sc import modify

    out = modify(SPEC_FRAME, ["g1", "g2"], SPEC_CLUSTERS, "T", method=method, **kwargs)
    pd.testing.assert_frame_equal(out.iloc[5:], SPEC_FRAME.iloc[5:])  # other cells untouched
    return out.iloc[:5]


def test_decile_legacy_reproduces_upstream_off_by_one() -> None:
    assert target_values("decile+5", legacy=True)["g1"].tolist() == [4, 5, 6, 7, 8]
    assert target_values("decile-2", legacy=True)["g1"].tolist() == [0, 0, 0, 0, 1]


def test_decile_default_moves_exactly_k_positions() -> None:
    assert target_values("decile+5")["g1"].tolist() == [5, 6, 7, 8, 9]
    assert target_values("decile-2")["g1"].tolist() == [0, 0, 0, 1, 2]
    assert target_values("decile+1")["g2"].tolist() == [20, 30, 40, 50, 60]  # a no-op upstream


def test_random_legacy_shares_one_integer_vector_across_genes() -> None:
    values = target_values("random", legacy=True, seed=0)
    assert (values["g1"] == values["g2"]).all()
    assert np.all(values["g1"] == np.round(values["g1"])) and values["g1"].between(0, 100).all()


def test_random_default_is_uniform_within_each_gene_range_and_seeded() -> None:
    first, again = target_values("random", seed=4), target_values("random", seed=4)
    pd.testing.assert_frame_equal(first, again)
    assert first["g1"].between(0, 9).all() and first["g2"].between(10, 100).all()
    assert first["g1"].nunique() == 5


def test_function_modes() -> None:
    row = target_values("full_row_fct", fct=lambda x, mask: 1000 * x.max())
    assert row["g1"].tolist() == [9000] * 5 and row["g2"].tolist() == [100000] * 5
    assert target_values("target_row_fct", fct=lambda x: x[::-1])["g1"].tolist() == [4, 3, 2, 1, 0]
    assert target_values("target_matrix_fct", fct=lambda m: m * 2)["g2"].tolist() == [20, 40, 60, 80, 100]
    recycled = target_values("full_matrix_fct", fct=lambda m, mask: [1, 2])  # R recycling, column-major
    assert recycled["g1"].tolist() == [1, 2, 1, 2, 1] and recycled["g2"].tolist() == [2, 1, 2, 1, 2]
    with pytest.raises(ConfigError, match="needs a function"):
        Modification("full_row_fct")


def test_modify_keeps_sparse_input_sparse() -> None:
    import anndata as ad
    import scipy.sparse as sp

    from vulnbench.sc import modify

    adata = ad.AnnData(X=sp.csr_matrix(SPEC_FRAME.to_numpy()), var=pd.DataFrame(index=SPEC_FRAME.columns))
    out = modify(adata, ["g2"], SPEC_CLUSTERS, "T", method="fixed", fixed_value=-1)
    assert sp.issparse(out.X) and sp.issparse(adata.X)
    assert out.X.toarray()[:5, 1].tolist() == [-1] * 5 and adata.X.toarray()[0, 1] == 10
