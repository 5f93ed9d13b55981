"""Attack registry: the pipeline finds attacks, their parameters and their per-cluster summaries here."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from vulnbench.registry import Registry
from vulnbench.sc.attacks._single_gene import single_gene

#: arguments every attack takes positionally; the rest are its parameters
POSITIONAL = ("X", "clusters", "target", "classifier")
#: keyword arguments that are plumbing, not experiment parameters
PLUMBING = ("stats", "progress")


@dataclass(frozen=True)
class AttackSpec:
    name: str
    function: Callable[..., pd.DataFrame]
    summarise: Callable[[pd.DataFrame], dict[str, Any]]
    #: per-cluster number shown in the attack's heatmap, and the figure's title
    figure_value: str
    figure_title: str

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
        "n_genes_flipping": len(genes),
        "genes": ",".join(genes),
        "new_labels": ",".join(result["new_label"]),
        "n_evaluations": result.attrs["n_evaluations"],
        "n_calls": result.attrs["n_calls"],
    }


ATTACKS: Registry[AttackSpec] = Registry("attack")
ATTACKS.register("single_gene")(AttackSpec(
        "single_gene",
        single_gene,
        summarise_single_gene,
        figure_value="n_genes_flipping",
        figure_title="Single-gene attack: genes that flip the cluster's label on their own",
    ))
