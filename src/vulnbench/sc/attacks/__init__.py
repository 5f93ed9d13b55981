"""Attacks on a whole cell cluster. Each takes (X, clusters, target, classifier) and keyword parameters."""

from vulnbench.sc.attacks._single_gene import single_gene
from vulnbench.sc.attacks.registry import ATTACKS, AttackSpec

__all__ = ["ATTACKS", "AttackSpec", "single_gene"]
