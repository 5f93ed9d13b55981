"""max_change, CGD and the overviews: upstream reference results and planted truths."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.helpers import MARKERS, MarkerMeans, m_classifier
from vulnbench.core.errors import ConfigError, DataError
from vulnbench.sc.attacks import cgd, max_change, max_change_overview, single_gene_overview


def m_classifier_full(X: pd.DataFrame, clusters, target):
    """MClassifier's full return shape: one-hot typePredictions (types × all cells), as upstream."""
    label, _ = m_classifier(X, clusters, target)
    types = list(dict.fromkeys(clusters))
    scores = pd.DataFrame(0.0, index=types, columns=X.index)
    scores.loc[label] = 1.0
    return {"prediction": label, "odd": 1, "typePredictions": scores,
            "cellTypes": [label] * int((np.asarray(clusters) == target).sum())}


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("seed", [0, 7])
def test_max_change_memory_cd4_t_keeps_179_genes(pbmc_short, legacy: bool, seed: int) -> None:
    frame, types = pbmc_short
    result = max_change(frame, types, "Memory CD4 T", m_classifier, exclude_genes=MARKERS, method="perc99",
                        legacy=legacy, seed=seed)
    assert len(result.genes) == 179
    left_out = set(frame.columns) - set(MARKERS) - set(result.genes)
    assert left_out == {"CD79A", "S100A9", "GZMB", "GZMK", "LST1", "CD74", "PF4"}
    assert set(result.signature) == set(frame.columns) - set(result.genes)
    if not legacy:
        assert result.verified and result.final_label == "Memory CD4 T"


def test_max_change_default_makes_fewer_calls_than_legacy(pbmc_short) -> None:
    frame, types = pbmc_short
    fixed = max_change(frame, types, "Memory CD4 T", m_classifier, exclude_genes=MARKERS, seed=1)
    legacy = max_change(frame, types, "Memory CD4 T", m_classifier, exclude_genes=MARKERS, seed=1, legacy=True)
    assert fixed.n_calls < legacy.n_calls
    again = max_change(frame, types, "Memory CD4 T", m_classifier, exclude_genes=MARKERS, seed=1)
    assert again.genes == fixed.genes and again.n_calls == fixed.n_calls


def test_max_change_finds_the_planted_set(synthetic_small) -> None:
    adata, markers = synthetic_small
    model = MarkerMeans(adata.var_names, markers)
    clusters = adata.obs["label"].astype(str).to_numpy()
    own = markers["type2"]
    result = max_change(adata, clusters, "type2", model, method="positive_aberrant", exclude_genes=own, seed=3)
    # any other type's marker at an aberrant value flips the cluster, alone or with harmless genes; nothing else
    flipping = {g for t, genes in markers.items() if t != "type2" for g in genes}
    assert set(result.signature) == flipping | set(own)
    assert result.verified


def test_max_change_with_a_single_candidate_works(pbmc_short) -> None:
    frame, types = pbmc_short
    assert max_change(frame, types, "DC", m_classifier, genes=["PF4"]).genes == []
    assert max_change(frame, types, "DC", m_classifier, genes=["LTB"]).genes == ["LTB"]


@pytest.mark.parametrize("legacy", [False, True])
def test_cgd_reference_memory_cd4_t_becomes_naive_with_ccr7(pbmc_short, legacy: bool) -> None:
    frame, types = pbmc_short
    result = cgd(frame, types, "Memory CD4 T", m_classifier_full, alpha=1, epsilon=1,
                 genes=list(frame.columns[::-1]), legacy=legacy)
    assert result.modified_genes == ["CCR7"]
    assert result.new_target == "Naive CD4 T"
    summary = result.one_row_summary
    assert summary["nbTestedGenes"] == 13 and summary["nbModifiedGenes"] == 1
    assert summary["oriType"] == "Memory CD4 T" and summary["nbCells"] == 24
    assert summary["targPourcEnd"] == 1.0 and summary["oriPourcEnd"] == 0.0
    by_gene = result.by_gene_summary
    assert by_gene.iloc[0]["gene"] == "#" and by_gene.iloc[-1]["gene"] == "CCR7"
    assert by_gene.iloc[-1]["nbModifiedCells"] == 24
    assert result.n_calls == 1 + 13 + 1  # initial, one trial per gene tested, one per gene accepted
    mask = types == "Memory CD4 T"
    changed = (frame != result.X).any(axis=0)
    assert list(changed[changed].index) == ["CCR7"]
    assert (result.X.loc[mask, "CCR7"] == 2 * frame.loc[mask, "CCR7"] + 1).all()  # x(1+α)+ε, all x ≥ 0


def test_cgd_needs_per_cell_scores(pbmc_short) -> None:
    frame, types = pbmc_short
    with pytest.raises(DataError, match="cgd needs per-cell scores"):
        cgd(frame, types, "DC", m_classifier, genes=["PF4"])


def planted_cgd_switch(block: np.ndarray, markers_new: np.ndarray, markers_orig: np.ndarray, order: list[int],
                       alpha: float, epsilon: float) -> int:
    """Genes needed for the switch when only new-type markers are modified, every unswitched cell moving up."""
    block = block.copy()
    for count, gene in enumerate(order, 1):
        movable = block[:, markers_new].mean(axis=1) <= block[:, markers_orig].mean(axis=1)
        if gene in markers_new:
            x = block[movable, gene]
            block[movable, gene] = x + alpha * np.abs(x) + epsilon
        switched = block[:, markers_new].mean(axis=1) > block[:, markers_orig].mean(axis=1)
        if switched.sum() > (~switched).sum():
            return count
    return -1


def test_cgd_planted_switch_on_a_per_cell_model(synthetic_small) -> None:
    adata, markers = synthetic_small
    only_two = {t: markers[t] for t in ("type0", "type1")}
    model = MarkerMeans(adata.var_names, only_two)
    clusters = adata.obs["label"].astype(str).to_numpy()
    names = list(adata.var_names)
    harmless = [g for g in names if g not in markers["type0"] + markers["type1"]][:5]
    order = [harmless[0], *markers["type1"][:4], harmless[1], *markers["type1"][4:]]
    result = cgd(adata, clusters, "type0", model, genes=order, alpha=3, epsilon=3)
    assert result.new_target == "type1"
    assert set(result.modified_genes) <= set(markers["type1"])
    rows = result.by_gene_summary
    assert (rows.loc[rows["gene"].isin(harmless), "nbModifiedCells"] == 0).all()
    assert harmless[0] in set(rows["gene"])
    block = adata[clusters == "type0"].X.toarray()
    idx = [names.index(g) for g in order]
    expected = planted_cgd_switch(block, np.array([names.index(g) for g in markers["type1"]]),
                                  np.array([names.index(g) for g in markers["type0"]]), idx, 3, 3)
    assert expected > 0
    assert result.one_row_summary["nbTestedGenes"] == expected
    assert result.one_row_summary["targPourcEnd"] > 0.5


def test_cgd_gradient_mode_on_scmlp(synthetic_small) -> None:
    from vulnbench.sc.classifiers import get

    adata, markers = synthetic_small
    train = adata[adata.obs["split"] == "train"]
    model = get("scmlp", epochs=10, seed=0).fit(train, train.obs["label"].astype(str))
    clusters = adata.obs["label"].astype(str).to_numpy()
    genes = markers["type1"] + markers["type0"]
    finite = cgd(adata, clusters, "type0", model, genes=genes, alpha=3, epsilon=3, new_target="type1")
    exact = cgd(adata, clusters, "type0", model, genes=genes, alpha=3, epsilon=3, new_target="type1",
                gradient=True)
    assert finite.one_row_summary["targPourcEnd"] > 0.5 and exact.one_row_summary["targPourcEnd"] > 0.5
    with pytest.raises(ConfigError, match="differentiable"):
        cgd(adata, clusters, "type0", MarkerMeans(adata.var_names, markers), genes=genes, gradient=True)


def test_overviews_report_real_counts(pbmc_short) -> None:
    frame, types = pbmc_short
    f = lambda x, mask: 1000 * x.max()  # noqa: E731  (vignette 02's outlier modification)
    modifications = [("perc1",), ("full_row_fct", f)]
    single = single_gene_overview(frame, types, m_classifier, modifications=modifications, max_split_size=20,
                                  first_dichot=5)
    assert list(dict.fromkeys(single["cluster"])) == list(dict.fromkeys(types))
    wide = single.attrs["wide"]
    assert wide.loc["Platelet", "full_row_fct_<lambda>"] == 0
    assert (single["n_genes"] >= single["n_groups"]).all()
    overview = max_change_overview(frame, types, m_classifier, modifications=modifications, max_split_size=20,
                                   seed=0)
    counts = overview.attrs["wide"]
    assert (counts["perc1"] > 1).all()  # upstream reports 1 here (bug); real sizes instead
    assert counts.loc["Platelet", "full_row_fct_<lambda>"] == 200
