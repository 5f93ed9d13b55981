"""Reference files some classifiers read (not datasets): where to fetch them and how they are verified.

A resource is `resources/<name>/<file>`; the `download_resource` rule fetches it with the same downloader as the
datasets (checksum, retries, a stall rule bounded by `timeout`, one-line offline error; see vulnbench.core.download).
URLs are pinned to a commit, so the bytes cannot drift under a moving branch; where no checksum is pinned (the files
were never downloadable from the machines vulnbench is built on), the download logs the file's sha256 so that a user
can pin it in the config:

    resources:
      sctype:
        ScTypeDB_full.xlsx: {checksum: "sha256:<hex>"}

None of these files is committed to the repository: scType's database and R code are GPL-3.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vulnbench.core.download import download, parse_checksum
from vulnbench.core.errors import ConfigError

SCTYPE_RAW = "https://raw.githubusercontent.com/IanevskiAleksandr/sc-type"


@dataclass(frozen=True)
class RemoteFile:
    url: str
    checksum: str | None = None
    retries: int = 3
    timeout: float = 60.0


#: resource name → file name → where it comes from (commit-pinned)
RESOURCES: dict[str, dict[str, RemoteFile]] = {
    "sctype": {
        "ScTypeDB_full.xlsx": RemoteFile(f"{SCTYPE_RAW}/630e15cf1e51f2612eda4ad0406dfb17503fa8c9/ScTypeDB_full.xlsx"),
        "ScTypeDB_short.xlsx": RemoteFile(f"{SCTYPE_RAW}/171387c8f7cd803b49c4eb1d5188ec7c0ae5a05d/ScTypeDB_short.xlsx"),
        "sctype_score_.R": RemoteFile(f"{SCTYPE_RAW}/eea3eecc119df83fdf1e8f2d6400216c0c22a0e1/R/sctype_score_.R"),
        "gene_sets_prepare.R": RemoteFile(
            f"{SCTYPE_RAW}/039913c5e574193f1b3fe7d392856587881227a3/R/gene_sets_prepare.R"),
    },
    # ImageNet weights for fine-tuning the dermoscopy models as the paper did (`weights:` of an image model);
    # torchvision names each file after the first hex digits of its sha256, which is what is checked
    "torchvision": {
        "inception_v3_google-0cc3c7bd.pth": RemoteFile(
            "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth", "sha256-prefix:0cc3c7bd"),
        "mobilenet_v3_small-047dcff4.pth": RemoteFile(
            "https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth", "sha256-prefix:047dcff4"),
    },
}


def remote_file(config: Mapping[str, Any], resource: str, file: str) -> RemoteFile:
    """The built-in entry for resources/<resource>/<file>, with the config's `resources:` overrides applied."""
    known = RESOURCES.get(resource, {})
    overrides = ((config.get("resources") or {}).get(resource) or {}).get(file) or {}
    if file not in known and "url" not in overrides:
        choices = ", ".join(f"{r}/{f}" for r in RESOURCES for f in RESOURCES[r])
        raise ConfigError(f"unknown resource {resource}/{file} (known: {choices}; others need a url under "
                          f"'resources: {resource}: {file}:')")
    base = known.get(file, RemoteFile(url=str(overrides.get("url", ""))))
    unknown = set(overrides) - {"url", "checksum", "retries", "timeout"}
    if unknown:
        raise ConfigError(f"resources {resource}/{file}: unknown key(s) {', '.join(sorted(unknown))} "
                          f"(allowed: url, checksum, retries, timeout)")

    remote = replace(base, **overrides)
    parse_checksum(remote.checksum)  # a malformed checksum is a config error at planning time, not after a fetch
    return remote


def resource_paths(params: Mapping[str, Any]) -> list[str]:
    """Parameter values naming a file under resources/ — inputs of the rule that reads them (so Snakemake
    downloads them first)."""
    return sorted({str(v) for v in params.values()
                   if isinstance(v, str | Path) and Path(v).parts[:1] == ("resources",) and len(Path(v).parts) == 3
                   and Path(v).parts[1] in RESOURCES})


def run_download_resource(remote: RemoteFile, output: str | Path) -> None:
    """The download rule's work: fetch (or check, when it is already there) one reference file."""

    download(remote.url, Path(output), checksum=remote.checksum, retries=int(remote.retries),
             timeout=float(remote.timeout))
