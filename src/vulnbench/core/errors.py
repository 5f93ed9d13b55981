"""Expected failures: each carries a one-line message that names the problem, shown without a traceback."""


class VulnbenchError(Exception):
    """Base class of every error a user can cause and fix (bad config, bad data, no network)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class ConfigError(VulnbenchError):
    """The configuration names something unknown or has a value of the wrong shape."""


class DataError(VulnbenchError):
    """Input data is unusable: NaN, duplicated names, missing labels, corrupt files."""


class DownloadError(VulnbenchError):
    """A download failed (offline, bad checksum, server error)."""
