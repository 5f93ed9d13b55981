"""Attack registry: the pipeline finds attacks, their parameters, per-cluster summaries and figures here.

Every registered function takes `(X, clusters, target, classifier, *, params…)` and attacks one cluster;
`summarise` turns its result into the flat record that becomes one row of the attack's table.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from vulnbench.core.errors import ConfigError
from vulnbench.core.params import Parameter, declared_parameters
from vulnbench.core.registry import Registry
from vulnbench.sc.attacks._cgd import CGDResult, cgd_attack
from vulnbench.sc.attacks._max_change import MaxChangeResult, max_change
from vulnbench.sc.attacks._min_change import grid_attack, random_walk_attack
from vulnbench.sc.attacks._single_gene import single_gene
from vulnbench.sc.modifications import Modification

#: arguments every attack takes positionally; the rest are its parameters
POSITIONAL = ("X", "clusters", "target", "classifier")
#: keyword arguments that are plumbing, not experiment parameters
PLUMBING = ("stats", "progress")
#: signature lists longer than this are counted in tables, not listed
MAX_LISTED_GENES = 500


@dataclass(frozen=True)
class Figure:
    """A figure of an attack's table, as data: the `vulnbench.sc.plots` function that draws it and its arguments.

    Held by name so that attack jobs, which load this registry but never draw, do not import matplotlib."""

    function: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AttackSpec:
    name: str
    function: Callable[..., Any]
    summarise: Callable[[Any], dict[str, Any]]
    #: figure name → what `vulnbench.sc.plots` draws from the attack's table (results/figures/{attack}_{name}.png)
    figures: dict[str, Figure] = field(default_factory=dict)

    #: parameter name → a check of a config value beyond its type (raises ConfigError / ValueError)
    checks: dict[str, Callable[[Any], Any]] = field(default_factory=dict)

    @property
    def parameters(self) -> dict[str, Any]:
        """Tunable keyword parameters and their defaults, read from the function signature."""
        signature = inspect.signature(self.function)
        return {
            name: p.default
            for name, p in signature.parameters.items()
            if name not in POSITIONAL and name not in PLUMBING and p.kind is p.KEYWORD_ONLY
        }

    @property
    def declared(self) -> dict[str, Parameter]:
        """The same parameters with their type hints (choices as `Literal`): what the config check holds values to."""
        return {name: p for name, p in declared_parameters(self.function).items() if name in self.parameters}


def check_method(value: Any) -> None:
    """A modification mode a config can name (`decile+X` included; the `*_fct` modes need a Python function)."""
    Modification(method=str(value))


def check_modifications(value: Any) -> None:
    """A grid / random-walk list of modifications: each `[method]` or `[method, fixed_value]`."""
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError("must be a non-empty list of [method] or [method, value] items")
    for item in value:
        parts = list(item) if isinstance(item, list | tuple) else [item]
        if not parts or len(parts) > 2:
            raise ConfigError(f"item {item!r} must be [method] or [method, value]")
        Modification(method=str(parts[0]), **({"fixed_value": parts[1]} if len(parts) == 2 else {}))


#: value checks shared by every attack that takes a modification mode
MODIFICATION_CHECKS: dict[str, Callable[[Any], Any]] = {"method": check_method, "modifications": check_modifications}


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


def summarise_min_change(result: pd.DataFrame) -> dict[str, Any]:
    """The smallest flipping combination (min_genes = -1: none found)."""
    flips = result[result["typeModified"].astype(bool)] if len(result) else result
    gene_columns = [c for c in result.columns if c not in ("prediction", "odd", "genesModified", "typeModified",
                                                           "iteration")]
    record: dict[str, Any] = {"baseline_label": result.attrs.get("baseline_label"),
                              "n_evaluations": result.attrs.get("n_evaluations"),
                              "n_calls": result.attrs.get("n_calls"), "n_flips": len(flips)}
    if len(flips):
        best = flips.sort_values("genesModified", kind="stable").iloc[0]
        record.update(min_genes=int(best["genesModified"]), new_label=str(best["prediction"]),
                      combination=";".join(f"{g}={best[g]}" for g in gene_columns if best[g] != "NA"))
    else:
        record.update(min_genes=-1, new_label="", combination="")
    return record


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


def _heatmap(value: str, title: str, xlabel: str = "modification mode") -> Figure:
    return Figure("count_heatmap", {"value": value, "title": title, "xlabel": xlabel})


FIGURES: dict[str, dict[str, Figure]] = {
    "single_gene": {"heatmap": _heatmap("n_genes_flipping",
                                        "Single-gene attack: genes that flip the cluster's label on their own")},
    "max_change": {"signature": _heatmap("signature_size", "Max-change signature: genes that cannot all be "
                                                           "modified with the rest without a flip")},
    "overview_single_gene": {"heatmap": _heatmap("n_genes_flipping", "Single-gene overview (coarse groups of "
                                                                     "up to max_split_size genes)")},
    "overview_max_change": {"heatmap": _heatmap("n_genes", "Max-change overview: genes modifiable together "
                                                           "without a flip")},
    "cgd": {"genes_needed": Figure("cgd_genes_needed"), "trajectory": Figure("cgd_trajectory")},
    "grid_min_change": {"heatmap": _heatmap("min_genes", "Grid search: fewest modified signature genes that "
                                                         "flip the cluster (– : none)", "attack parameters")},
    "random_walk_min_change": {"heatmap": _heatmap("min_genes", "Random walk: fewest modified signature genes "
                                                                "found that flip the cluster (– : none)",
                                                   "attack parameters")},
}


ATTACKS: Registry[AttackSpec] = Registry("attack")


def _register() -> None:
    entries = [
        ("single_gene", single_gene, summarise_single_gene),
        ("max_change", max_change, summarise_max_change),
        ("overview_single_gene", single_gene, summarise_single_gene),
        ("overview_max_change", max_change, summarise_max_change),
        ("cgd", cgd_attack, summarise_cgd),
        ("grid_min_change", grid_attack, summarise_min_change),
        ("random_walk_min_change", random_walk_attack, summarise_min_change),
    ]
    for name, function, summarise in entries:
        ATTACKS.register(name)(AttackSpec(name, function, summarise, FIGURES[name], MODIFICATION_CHECKS))


_register()
