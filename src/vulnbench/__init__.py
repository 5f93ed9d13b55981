"""vulnbench: how easily are biomedical classifiers fooled by small, deliberate input changes?"""

from vulnbench.core.errors import ConfigError, DataError, DownloadError, VulnbenchError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "DownloadError", "VulnbenchError", "__version__"]
