"""Attacks on a whole cell cluster. Each takes (X, clusters, target, classifier) and keyword parameters."""

from vulnbench.sc.attacks._cgd import CGDResult, cgd
from vulnbench.sc.attacks._max_change import MaxChangeResult, max_change
from vulnbench.sc.attacks._min_change import grid_min_change, parse_modifications, random_walk_min_change
from vulnbench.sc.attacks._overview import max_change_overview, single_gene_overview
from vulnbench.sc.attacks._signature import distant_couples, signature_genes
from vulnbench.sc.attacks._single_gene import single_gene
from vulnbench.sc.attacks.registry import ATTACKS, AttackSpec

__all__ = [
    "ATTACKS",
    "AttackSpec",
    "CGDResult",
    "MaxChangeResult",
    "cgd",
    "distant_couples",
    "grid_min_change",
    "max_change",
    "max_change_overview",
    "parse_modifications",
    "random_walk_min_change",
    "signature_genes",
    "single_gene",
    "single_gene_overview",
]
