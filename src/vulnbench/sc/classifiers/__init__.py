"""Single-cell classifiers: `get(name, **params)` returns an object with `fit`, `predict`, `predict_proba`."""

from __future__ import annotations

from typing import Any

from vulnbench.core.params import check_params
from vulnbench.core.registry import Registry
from vulnbench.sc.classifiers._chetah import Chetah
from vulnbench.sc.classifiers._scannotatr import ScAnnotatR
from vulnbench.sc.classifiers._scmlp import ScMLP
from vulnbench.sc.classifiers._scrf import ScRF
from vulnbench.sc.classifiers._sctype import ScType
from vulnbench.sc.classifiers._singler import SingleR
from vulnbench.sc.classifiers.base import PerCellClassifier, plurality

CLASSIFIERS: Registry[type[PerCellClassifier]] = Registry("classifier")
CLASSIFIERS.register("scrf")(ScRF)
CLASSIFIERS.register("scmlp")(ScMLP)
CLASSIFIERS.register("sctype")(ScType)
CLASSIFIERS.register("chetah")(Chetah)
CLASSIFIERS.register("scannotatr")(ScAnnotatR)
CLASSIFIERS.register("singler")(SingleR)


def get(name: str, **params: Any) -> PerCellClassifier:
    """A new, unfitted classifier; unknown names or parameters give a one-line error."""

    cls = CLASSIFIERS.get(name)
    check_params(f"classifier {name!r}", params, cls)
    return cls(**params)


def names() -> list[str]:
    return CLASSIFIERS.names()


__all__ = [
    "CLASSIFIERS", "Chetah", "PerCellClassifier", "ScAnnotatR", "ScMLP", "ScRF", "ScType", "SingleR",
    "get", "names", "plurality",
]
