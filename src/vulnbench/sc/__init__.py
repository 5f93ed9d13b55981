"""The single-cell arm: expression input, modification modes, classifiers and cluster attacks."""

from vulnbench.sc.modifications import GeneStats, Modification, modify

__all__ = ["GeneStats", "Modification", "modify"]
