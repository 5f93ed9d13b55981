"""The pbmc3k download rule end to end against a real HTTP server on 127.0.0.1 (never a mock)."""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anndata as ad
import pytest
import yaml

from tests.helpers import make_10x_archive

from .conftest import snakemake

PREPARED = "results/data/pbmc3k/prepared.h5ad"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path, Path]]:
    """(base URL, archive, label file): a 10x-format archive served over HTTP."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = tmp_path / "served"
    root.mkdir()
    archive, labels = make_10x_archive(root)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", archive, labels
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def pbmc3k_config(workdir: Path, url: str, checksum: str, labels: Path) -> Path:
    config = {
        "seed": 0,
        "datasets": {"pbmc3k": {"url": url, "checksum": checksum, "labels_file": str(labels), "retries": 2,
                                "test_size": 0.3}},
        "classifiers": {"scrf": {"n_estimators": 10}},
        "attacks": {"single_gene": {"grid": {"method": ["perc99"]}, "params": {"first_dichot": 5}}},
    }
    path = workdir / "pbmc3k.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_download_rule_fetches_verifies_and_prepares(served, tmp_path: Path) -> None:
    url, archive, labels = served
    workdir = tmp_path / "run"
    workdir.mkdir()
    checksum = "sha256:" + hashlib.sha256(archive.read_bytes()).hexdigest()
    config = pbmc3k_config(workdir, f"{url}/{archive.name}", checksum, labels)
    result = snakemake(workdir, PREPARED, "--cores", "1", "--configfile", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (workdir / "resources" / "pbmc3k" / archive.name).read_bytes() == archive.read_bytes()
    prepared = ad.read_h5ad(workdir / "results" / "data" / "pbmc3k" / "prepared.h5ad")
    assert prepared.n_obs == 85 and set(prepared.obs["split"]) == {"train", "test"}


def test_a_bad_checksum_fails_cleanly_and_leaves_nothing(served, tmp_path: Path) -> None:
    url, archive, labels = served
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = pbmc3k_config(workdir, f"{url}/{archive.name}", "sha256:" + "0" * 64, labels)
    result = snakemake(workdir, PREPARED, "--cores", "1", "--configfile", str(config))
    assert result.returncode != 0
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("vulnbench error")]
    assert errors and "checksum" in errors[0] and archive.name in errors[0]
    leftovers = list((workdir / "resources").rglob("*")) if (workdir / "resources").exists() else []
    assert [p for p in leftovers if p.is_file()] == []
    assert not (workdir / "results" / "data" / "pbmc3k" / "prepared.h5ad").exists()


def test_offline_download_is_a_one_line_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = pbmc3k_config(workdir, f"http://127.0.0.1:{port}/pbmc3k.tar.gz", "md5:" + "0" * 32,
                           tmp_path / "labels.tsv")
    result = snakemake(workdir, PREPARED, "--cores", "1", "--configfile", str(config))
    assert result.returncode != 0
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("vulnbench error")]
    assert errors and "offline or host unreachable" in errors[0]
