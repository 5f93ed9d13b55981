"""Overviews: an attack on every cluster × every modification, as one long table."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from vulnbench.sc.attacks._max_change import max_change
from vulnbench.sc.attacks._min_change import parse_modifications
from vulnbench.sc.attacks._single_gene import single_gene
from vulnbench.sc.expression import ExpressionInput, as_expression, as_labels
from vulnbench.sc.modifications import GeneStats

log = logging.getLogger(__name__)


def _modification_list(modifications: Sequence[Any], method: str, fixed_value: float,
                       fct: Callable[..., object] | None, legacy: bool) -> list[tuple[str, dict[str, Any]]]:
    """(column id, keyword arguments) per modification; an empty list means "use method / fixed_value / fct"."""
    if not modifications:
        return [("default", {"method": method, "fixed_value": fixed_value, "fct": fct})]
    return [(name, {"method": m.method, "fixed_value": m.fixed_value, "fct": m.fct})
            for name, m in parse_modifications(modifications, legacy=legacy)]


def _overview_tasks(X: ExpressionInput, clusters: Sequence[str], modifications: Sequence[Any], method: str,
                    fixed_value: float, fct: Callable[..., object] | None, legacy: bool,
                    ) -> tuple[Any, GeneStats, list[tuple[str, tuple[str, dict[str, Any]]]]]:
    """Labels, statistics shared by every attack of the overview, and the cluster × modification tasks."""
    expression = as_expression(X)
    labels = as_labels(clusters, expression.n_cells)
    todo = [(c, m) for c in _clusters_in_order(labels)
            for m in _modification_list(modifications, method, fixed_value, fct, legacy)]
    return labels, GeneStats(expression), todo


def _clusters_in_order(labels: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(labels))  # R's unique(): order of first appearance


def single_gene_overview(
    X: ExpressionInput,
    clusters: Sequence[str],
    classifier: Any,
    *,
    modifications: Sequence[Any] = (("perc1",), ("perc99",)),
    method: str = "perc99",
    fixed_value: float = 3,
    fct: Callable[..., object] | None = None,
    genes: Sequence[str] | None = None,
    exclude_genes: Iterable[str] = (),
    first_dichot: int = 100,
    max_split_size: int = 100,
    change_type: str = "any",
    legacy: bool = False,
    seed: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """adverSCarial's `singleGeneOverview`: single-gene attacks on every cluster and modification.

    Upstream reports the number of flipping *groups* (of up to `max_split_size` genes); the table has both
    `n_groups` and `n_genes`. `attrs["wide"]` is the upstream-shaped cluster × modification table of groups.
    """
    labels, stats, todo = _overview_tasks(X, clusters, modifications, method, fixed_value, fct, legacy)
    rows = []
    for cluster, (name, kwargs) in tqdm(todo, disable=not progress, desc="single-gene overview"):
        result = single_gene(X, labels, cluster, classifier, **kwargs, legacy=legacy, seed=seed, genes=genes,
                             exclude_genes=exclude_genes, first_dichot=first_dichot, max_split_size=max_split_size,
                             change_type=change_type, stats=stats)
        rows.append({"cluster": cluster, "modification": name, "n_groups": len(result),
                     "n_genes": sum(len(g.split("__")) for g in result["gene"]),
                     "baseline_label": result.attrs["baseline_label"],
                     "n_evaluations": result.attrs["n_evaluations"], "n_calls": result.attrs["n_calls"]})
    table = pd.DataFrame(rows)
    table.attrs["wide"] = table.pivot(index="cluster", columns="modification", values="n_groups")
    return table


def max_change_overview(
    X: ExpressionInput,
    clusters: Sequence[str],
    classifier: Any,
    *,
    modifications: Sequence[Any] = (("perc1",), ("perc99",)),
    method: str = "perc99",
    fixed_value: float = 3,
    fct: Callable[..., object] | None = None,
    genes: Sequence[str] | None = None,
    exclude_genes: Iterable[str] = (),
    max_split_size: int = 100,
    legacy: bool = False,
    seed: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """adverSCarial's `maxChangeOverview`: the max-change set size for every cluster and modification.

    Real sizes for every modification (upstream reports 1 for one-element modifications: not reproduced).
    """
    labels, stats, todo = _overview_tasks(X, clusters, modifications, method, fixed_value, fct, legacy)
    rows = []
    for cluster, (name, kwargs) in tqdm(todo, disable=not progress, desc="max-change overview"):
        result = max_change(X, labels, cluster, classifier, **kwargs, legacy=legacy, seed=seed, genes=genes,
                            exclude_genes=exclude_genes, max_split_size=max_split_size, stats=stats)
        rows.append({"cluster": cluster, "modification": name, "n_genes": len(result.genes),
                     "signature_size": len(result.signature), "baseline_label": result.baseline_label,
                     "n_evaluations": result.n_evaluations, "n_calls": result.n_calls})
    table = pd.DataFrame(rows)
    table.attrs["wide"] = table.pivot(index="cluster", columns="modification", values="n_genes")
    return table
