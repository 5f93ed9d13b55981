"""Datasets: a registry of loaders, each yielding an AnnData with an `obs["label"]` column."""

from vulnbench.sc.data.datasets import DATASETS, Dataset, get
from vulnbench.sc.data.prepare import prepare

__all__ = ["DATASETS", "Dataset", "get", "prepare"]
