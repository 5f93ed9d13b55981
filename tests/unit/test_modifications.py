"""Modification values against the spec's reference numbers (adverSCarial 1.3.13, measured)."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from vulnbench.errors import ConfigError
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
