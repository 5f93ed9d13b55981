"""Attack registry: the pipeline finds attacks, their parameters, per-cluster summaries and figures here.

Every registered function takes `(X, clusters, target, classifier, *, params…)` and attacks one cluster;
`summarise` turns its result into the flat record that becomes one row of the attack's table.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from vulnbench.registry import Registry
from vulnbench.sc.attacks._cgd import CGDResult, cgd
from vulnbench.sc.attacks._max_change import MaxChangeResult, max_change
from vulnbench.sc.attacks._signature import signature_genes
from vulnbench.sc.attacks._single_gene import single_gene
from vulnbench.sc.modifications import GeneStats

#: arguments every attack takes positionally; the rest are its parameters
POSITIONAL = ("X", "clusters", "target", "classifier")
#: keyword arguments that are plumbing, not experiment parameters
PLUMBING = ("stats", "progress")
#: signature lists longer than this are counted in tables, not listed
MAX_LISTED_GENES = 500


@dataclass(frozen=True)
class AttackSpec:
    name: str
    function: Callable[..., Any]
    summarise: Callable[[Any], dict[str, Any]]
    #: figure name → plotting function (table, output path); files are results/figures/{attack}_{name}.png
    figures: dict[str, Callable[[pd.DataFrame, str], None]] = field(default_factory=dict)

    @property
    def parameters(self) -> dict[str, Any]:
        """Tunable keyword parameters and their defaults, read from the function signature."""
        signature = inspect.signature(self.function)
        return {
            name: p.default
            for name, p in signature.parameters.items()
            if name not in POSITIONAL and name not in PLUMBING and p.kind is p.KEYWORD_ONLY
        }


def summarise_single_gene(result: pd.DataFrame) -> dict[str, Any]:
    genes = [g for group in result["gene"] for g in group.split("__")]
    return {
        "baseline_label": result.attrs["baseline_label"],
        "n_groups": len(result),
        "n_genes_flipping": len(genes),
        "genes": ",".join(genes),
        "new_labels": ",".join(result["new_label"]),
        "n_evaluations": result.attrs["n_evaluations"],
        "n_calls": result.attrs["n_calls"],
    }


def summarise_max_change(result: MaxChangeResult) -> dict[str, Any]:
    return {
        "baseline_label": result.baseline_label,
        "n_candidates": result.n_candidates,
        "n_genes": len(result.genes),
        "signature_size": len(result.signature),
        "signature": ",".join(result.signature) if len(result.signature) <= MAX_LISTED_GENES else "",
        "verified": result.verified,
        "final_label": result.final_label,
        "n_evaluations": result.n_evaluations,
        "n_calls": result.n_calls,
    }


def cgd_attack(
    X: Any,
    clusters: Sequence[str],
    target: str,
    classifier: Any,
    *,
    alpha: float = 0.1,
    epsilon: float = 0.0,
    n_genes: int = 200,
    gene_order: str = "signature",
    new_target: str | None = None,
    exclude_new_targets: Sequence[str] = (),
    stop_at_switch: bool = True,
    slope_margin: float = 0.0,
    max_passes: int = 1,
    gradient: bool = False,
    legacy: bool = False,
    seed: int | None = None,
    stats: GeneStats | None = None,
    progress: bool = False,
) -> CGDResult:
    """CGD as the paper ran it: on the first `n_genes` genes of the signature ranking (`getSignGenes`), or of
    a seeded random order (`gene_order="random"`). The ranking is computed once per dataset."""
    if gene_order == "signature":
        def rank() -> list[str]:
            return list(signature_genes(X, clusters)["gene"])

        ranked = stats.memo("signature_genes", rank) if stats is not None else rank()
        genes = ranked[: int(n_genes)]
    elif gene_order == "random":
        names = list(X.var_names) if hasattr(X, "var_names") else list(X.columns)
        genes = [names[i] for i in np.random.default_rng(seed).permutation(len(names))[: int(n_genes)]]
    else:
        from vulnbench.errors import ConfigError

        raise ConfigError(f"cgd: gene_order must be 'signature' or 'random', got {gene_order!r}")
    return cgd(X, clusters, target, classifier, genes=genes, alpha=alpha, epsilon=epsilon, new_target=new_target,
               exclude_new_targets=exclude_new_targets, stop_at_switch=stop_at_switch, slope_margin=slope_margin,
               max_passes=max_passes, gradient=gradient, legacy=legacy, seed=seed, progress=progress)


def summarise_cgd(result: CGDResult) -> dict[str, Any]:
    summary = result.one_row_summary
    trajectory = result.by_gene_summary[["order", "oriCell_pourc", "targCell_pourc"]].astype(float)
    return {
        **{k: (v.item() if isinstance(v, np.generic) else v) for k, v in summary.items()},
        "baseline_label": summary["oriType"],
        "switched": bool(summary["targPourcEnd"] > summary["oriPourcEnd"]),
        "modified_genes": ",".join(result.modified_genes),
        "n_calls": result.n_calls,
        "trajectory": json.dumps(trajectory.round(4).to_numpy().tolist()),
    }


def _figures() -> dict[str, dict[str, Callable[[pd.DataFrame, str], None]]]:
    from vulnbench import plots

    def heatmap(value: str, title: str) -> Callable[[pd.DataFrame, str], None]:
        return lambda table, output: plots.count_heatmap(table, value, output, title)

    return {
        "single_gene": {"heatmap": heatmap("n_genes_flipping",
                                           "Single-gene attack: genes that flip the cluster's label on their own")},
        "max_change": {"signature": heatmap("signature_size", "Max-change signature: genes that cannot all be "
                                                              "modified with the rest without a flip")},
        "overview_single_gene": {"heatmap": heatmap("n_genes_flipping", "Single-gene overview (coarse groups of "
                                                                        "up to max_split_size genes)")},
        "overview_max_change": {"heatmap": heatmap("n_genes", "Max-change overview: genes modifiable together "
                                                              "without a flip")},
        "cgd": {"genes_needed": plots.cgd_genes_needed, "trajectory": plots.cgd_trajectory},
    }


ATTACKS: Registry[AttackSpec] = Registry("attack")


def _register() -> None:
    figures = _figures()
    entries = [
        ("single_gene", single_gene, summarise_single_gene),
        ("max_change", max_change, summarise_max_change),
        ("overview_single_gene", single_gene, summarise_single_gene),
        ("overview_max_change", max_change, summarise_max_change),
        ("cgd", cgd_attack, summarise_cgd),
    ]
    for name, function, summarise in entries:
        ATTACKS.register(name)(AttackSpec(name, function, summarise, figures[name]))


_register()
