"""The `backend` option shared by classifiers that can run their R package instead of the native port.

`backend="native"` (default) is the NumPy/scikit-learn implementation; `backend="r"` calls the R package through
`vulnbench.sc.rbridge`. Choosing `r` when R or the package is missing stops at once with a one-line error that says how
to install it (Debian package or BiocManager), before anything is trained.
"""

from __future__ import annotations

from typing import ClassVar

from vulnbench.core.errors import ConfigError
from vulnbench.sc import rbridge

BACKENDS = ("native", "r")


class RBackendMixin:
    """Adds `_check_backend()`; subclasses list the R packages their `r` backend loads in `r_packages`."""

    name: ClassVar[str]
    #: R packages the `r` backend needs (checked, with an install hint, before any R work)
    r_packages: ClassVar[tuple[str, ...]] = ()
    backend: str

    def required_r_packages(self) -> tuple[str, ...]:
        """The R packages this configuration needs (a subclass may add some for particular options)."""
        return self.r_packages

    def _check_backend(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"{self.name}: unknown backend {self.backend!r} (choose from {', '.join(BACKENDS)})")
        if self.backend == "r":

            rbridge.require_r_packages(*self.required_r_packages())
