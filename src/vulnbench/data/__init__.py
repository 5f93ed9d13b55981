"""Datasets: a registry of loaders, each yielding an AnnData with an `obs["label"]` column."""

from vulnbench.data.datasets import DATASETS, Dataset, get
from vulnbench.data.prepare import prepare

__all__ = ["DATASETS", "Dataset", "get", "prepare"]
