"""getSignGenes port: pair order, per-pair tests (vectorised vs one gene at a time), round-robin ranking."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

from vulnbench.core.errors import ConfigError, DataError
from vulnbench.sc.attacks._signature import distant_couples, pair_pvalues, round_robin, signature_genes
from vulnbench.sc.data.datasets import synthetic_counts

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def r_get_distant_couples(cell_types: list[str]) -> list[tuple[str, str]]:
    """Literal port of upstream R `getDistantCouples` (1-based index, intKill / killLoop counters)."""
    combos = list(combinations(cell_types, 2))
    two_prevs: tuple[str, ...] = ()
    sel: list[tuple[str, str]] = []
    int_ind, kill_loop, int_kill = 1, False, 0
    while len(sel) < len(combos):
        if int_kill == 0 and kill_loop:
            sel += [c for c in combos if c not in sel]
        int_kill += 1
        kill_loop = True
        c1, c2 = combos[int_ind - 1]
        if c1 not in two_prevs and c2 not in two_prevs and (c1, c2) not in sel:
            int_kill, kill_loop = 0, False
            sel.append((c1, c2))
            two_prevs = (c1, c2)
        int_ind += 1
        if int_kill > len(combos) + 1:
            int_kill = 0
        if int_ind > len(combos):
            int_ind = 1
    return sel


def r_wilcox(c1: np.ndarray, c2: np.ndarray) -> float:
    """One gene like R's wilcox.test: exact if both < 50 and no ties, else normal with continuity correction."""
    ties = np.unique(np.concatenate([c1, c2])).size < c1.size + c2.size
    exact = c1.size < 50 and c2.size < 50 and not ties
    return float(stats.mannwhitneyu(c1, c2, method="exact" if exact else "asymptotic", use_continuity=True).pvalue)


def r_sign_genes(X: np.ndarray, clusters: np.ndarray, genes: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Slow literal port of upstream getSignGenes (wilcox, tie breaker, rbind loop) for cross-checking."""
    pairs = r_get_distant_couples(list(pd.unique(clusters)))
    pval_list = {}
    for a, b in pairs:
        p = []
        for g in range(X.shape[1]):
            c1, c2 = X[clusters == a, g].astype(float), X[clusters == b, g].astype(float)
            if np.unique(c1).size == 1:
                c1[0] += 0.01
            if np.unique(c2).size == 1:
                c2[0] += 0.01
            p.append(r_wilcox(c1, c2))
        df = pd.DataFrame({"gene": genes, "pval": p})
        pval_list[f"{a}|{b}"] = df.iloc[np.argsort(df["pval"].to_numpy(), kind="stable")].reset_index(drop=True)
    rows = []
    for i in range(X.shape[1]):
        for name, df in pval_list.items():
            if df.loc[i, "gene"] not in {r[0] for r in rows}:
                rows.append((df.loc[i, "gene"], df.loc[i, "pval"], name))
    return pd.DataFrame(rows, columns=["gene", "pval", "pair"]), list(pval_list)


@pytest.fixture(scope="module")
def synthetic() -> tuple[sp.csr_matrix, np.ndarray, dict]:
    counts, labels, markers = synthetic_counts(
        n_cells=300, n_genes=200, n_types=3, n_markers=5, fold_change=10.0, dispersion=0.2, mean_count=0.5, seed=0
    )
    return counts.log1p(), labels, markers


def as_frame(X: sp.csr_matrix) -> pd.DataFrame:
    return pd.DataFrame(X.toarray(), columns=[f"g{i}" for i in range(X.shape[1])])


# --- distant_couples -------------------------------------------------------------------------------------------


def test_distant_couples_doc_example() -> None:
    expected = [
        ("B", "CD4T"), ("NK", "CD8T"), ("B", "DC"), ("CD4T", "NK"), ("CD8T", "DC"),
        ("B", "NK"), ("CD4T", "CD8T"), ("NK", "DC"), ("B", "CD8T"), ("CD4T", "DC"),
    ]  # fmt: skip
    assert distant_couples(["B", "CD4T", "NK", "CD8T", "DC"]) == expected


@pytest.mark.parametrize("k", range(2, 10))
def test_distant_couples_matches_literal_r_loop(k: int) -> None:
    names = [f"c{i}" for i in range(k)]
    got = distant_couples(names)
    assert got == r_get_distant_couples(names)
    assert sorted(got) == sorted(combinations(names, 2))  # every pair exactly once


def test_distant_couples_small_cases() -> None:
    assert distant_couples(["a", "b"]) == [("a", "b")]
    # three clusters: every pair shares a cluster with a-b, so the rest follows in combination order
    assert distant_couples(["a", "b", "c"]) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert distant_couples(["a", "b", "c", "d"]) == [
        ("a", "b"), ("c", "d"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"),
    ]  # fmt: skip


# --- round robin -----------------------------------------------------------------------------------------------


def test_round_robin_hand_made() -> None:
    # pair 0 ranks genes 2,0,1,3 ; pair 1 ranks 2,3,0,1 ; pair 2 ranks 1,2,3,0
    order = np.array([[2, 0, 1, 3], [2, 3, 0, 1], [1, 2, 3, 0]])
    pair_pos, rank, gene = round_robin(order)
    # rank 1: gene 2 (pair 0), gene 2 again (skip), gene 1 (pair 2); rank 2: gene 0 (pair 0), gene 3 (pair 1)
    assert gene.tolist() == [2, 1, 0, 3]
    assert pair_pos.tolist() == [0, 2, 0, 1]
    assert rank.tolist() == [0, 0, 1, 1]


def test_round_robin_end_to_end_tiny() -> None:
    # clusters A, B, C (pairs A|B, A|C, B|C); gA separates A from the rest, gC separates C, gN is flat
    clusters = ["A"] * 4 + ["B"] * 4 + ["C"] * 4
    X = pd.DataFrame(
        {
            "gN": [1.0] * 12,
            "gC": [0.1, 0.2, 0.3, 0.4, 0.15, 0.25, 0.35, 0.45, 9.1, 9.2, 9.3, 9.4],
            "gA": [5.1, 5.2, 5.3, 5.4, 0.1, 0.2, 0.3, 0.4, 0.15, 0.25, 0.35, 0.45],
        }
    )
    res = signature_genes(X, clusters)
    # rank 1: A|B -> gA (exact p = 2/70); A|C -> gA and gC tie at 2/70, stable order puts gC first; B|C -> gC
    # (already listed). Rank 2 adds nothing new; rank 3: A|B -> gN.
    assert res["gene"].tolist() == ["gA", "gC", "gN"]
    assert res["pair"].tolist() == ["A|B", "A|C", "A|B"]
    assert res["pval"].iloc[0] == pytest.approx(2 / 70)
    assert res["pval"].iloc[2] == 1.0  # identical constant groups in the default mode
    assert res.attrs["pairs"] == ["A|B", "A|C", "B|C"]
    assert res.attrs["pval_list"]["A|C"]["gene"].tolist() == ["gC", "gA", "gN"]  # stable: gC before gA


# --- per-pair tests --------------------------------------------------------------------------------------------


def test_known_r_values() -> None:
    # wilcox.test(1:4, 5:8)$p.value = 2/70 (exact); t.test(1:10, 7:20)$p.value = 1.855e-05 (R's ?t.test example)
    x, y = np.arange(1, 5.0)[:, None], np.arange(5, 9.0)[:, None]
    assert pair_pvalues(x, y)[0] == pytest.approx(2 / 70)
    x, y = np.arange(1, 11.0)[:, None], np.arange(7, 21.0)[:, None]
    assert pair_pvalues(x, y, method="t")[0] == pytest.approx(1.855e-05, rel=1e-3)


def test_pvalues_match_scipy_gene_by_gene(synthetic) -> None:
    X, labels, markers = synthetic
    res = signature_genes(X, labels)
    dense = X.toarray().astype(np.float64)  # the port tests in double precision, like R
    for name, df in res.attrs["pval_list"].items():
        a, b = name.split("|")
        got = df.set_index("gene")["pval"]
        for g in [0, 7, markers["type0"][0], markers["type1"][0], 150]:
            expect = stats.mannwhitneyu(dense[labels == a, g], dense[labels == b, g], method="asymptotic").pvalue
            assert got[f"gene{g}"] == pytest.approx(expect, rel=1e-12, abs=1e-300)
            expect_t = stats.ttest_ind(dense[labels == a, g], dense[labels == b, g], equal_var=False).pvalue
            t_p = pair_pvalues(dense[labels == a][:, [g]], dense[labels == b][:, [g]], method="t")[0]
            assert t_p == pytest.approx(1.0 if np.isnan(expect_t) else expect_t, rel=1e-12, abs=1e-300)


def test_exact_and_ties_rule_per_gene() -> None:
    # small groups: genes without ties use the exact test, genes with ties the normal approximation, per gene
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 6))
    y = rng.normal(size=(9, 6)) + 1.0
    x[:3, 1] = 0.0  # ties in gene 1 only
    got = pair_pvalues(x, y)
    for g in range(6):
        assert got[g] == pytest.approx(r_wilcox(x[:, g], y[:, g]), rel=1e-12)
    assert got[0] != pytest.approx(
        stats.mannwhitneyu(x[:, 0], y[:, 0], method="asymptotic").pvalue, rel=1e-6
    )  # the exact path was really taken


def test_legacy_matches_literal_r_port() -> None:
    # small integer data: many ties, constant groups, groups below 50 cells (exact path after the tie breaker)
    rng = np.random.default_rng(3)
    clusters = np.array(["x"] * 6 + ["y"] * 9 + ["z"] * 5 + ["w"] * 1)
    X = rng.poisson(0.7, size=(clusters.size, 40)).astype(float)
    X[clusters == "x", 3] = 2.0
    X[:, 5] = 0.0
    X[clusters == "z", 7] += rng.normal(size=5)
    genes = [f"g{i}" for i in range(X.shape[1])]
    expected, pairs = r_sign_genes(X, clusters, genes)
    got = signature_genes(pd.DataFrame(X, columns=genes), clusters, legacy=True)
    assert got.attrs["pairs"] == pairs
    pd.testing.assert_frame_equal(got[["gene", "pval", "pair"]], expected, check_exact=False, rtol=1e-12)


# --- signature_genes -------------------------------------------------------------------------------------------


def test_planted_markers_rank_first(synthetic) -> None:
    X, labels, markers = synthetic
    res = signature_genes(as_frame(X), labels)
    planted = {f"g{i}" for cols in markers.values() for i in cols}
    assert set(res["gene"].head(10)) <= planted
    assert res["gene"].is_unique and len(res) == X.shape[1]
    assert res["pval"].between(0, 1).all() and (res["pval_adj"] >= res["pval"]).all()
    assert list(res.columns) == ["gene", "pval", "pair", "pval_adj"]
    assert list(res.attrs["pval_list"]) == res.attrs["pairs"] and len(res.attrs["pairs"]) == 3


def test_sparse_dense_anndata_identical(synthetic) -> None:
    X, labels, _ = synthetic
    frame = as_frame(X)
    dense = signature_genes(frame, labels)
    sparse = signature_genes(ad.AnnData(X=X, var=pd.DataFrame(index=frame.columns)), labels)
    dense_ad = signature_genes(ad.AnnData(X=X.toarray(), var=pd.DataFrame(index=frame.columns)), labels)
    pd.testing.assert_frame_equal(dense, sparse, check_exact=True)
    pd.testing.assert_frame_equal(dense, dense_ad, check_exact=True)


def test_t_method(synthetic) -> None:
    X, labels, markers = synthetic
    res = signature_genes(as_frame(X), labels, method="t", adjust=False)
    planted = {f"g{i}" for cols in markers.values() for i in cols}
    assert set(res["gene"].head(10)) <= planted
    assert "pval_adj" not in res.columns
    assert signature_genes(as_frame(X), labels, method="ttest", adjust=False).equals(res)  # upstream's spelling


def test_cluster_order_is_first_appearance() -> None:
    X = pd.DataFrame({"g": [1.0, 2.0, 3.0, 4.0]})
    assert signature_genes(X, ["z", "a", "z", "a"]).attrs["pairs"] == ["z|a"]


def test_errors() -> None:
    X = pd.DataFrame({"g": [1.0, 2.0, 3.0]})
    with pytest.raises(ConfigError, match="unknown signature method"):
        signature_genes(X, ["a", "b", "a"], method="ks")
    with pytest.raises(DataError, match="at least 2 clusters"):
        signature_genes(X, ["a", "a", "a"])


def test_pbmc_short_sanity() -> None:
    path = DATA / "pbmc_short.loom"
    if not path.exists():
        pytest.skip(f"{path} not available")
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "r") as f:
        counts = f["matrix"][:]
        genes = [g.decode() for g in f["col_attrs/colnames"][:]]
        labels = np.array([c.decode() for c in f["row_attrs/cell_type"][:]])
    res = signature_genes(pd.DataFrame(np.log1p(counts.astype(float)), columns=genes), labels)
    assert sorted(res["gene"]) == sorted(genes)
    assert res["pval"].between(0, 1).all() and res["pval_adj"].between(0, 1).all()
    n = len(pd.unique(labels))
    assert len(res.attrs["pairs"]) == n * (n - 1) // 2
