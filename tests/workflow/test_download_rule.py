"""The pbmc3k download rule end to end against a real HTTP server on 127.0.0.1 (never a mock)."""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
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


# -- reference files (resources/<name>/<file>): scType's database workbook and R scoring file --------------------
CLEANROOM_R = Path(__file__).resolve().parents[1] / "resources" / "sctype_score_cleanroom.R"
SYNTHETIC = {"n_cells": 240, "n_genes": 300, "n_types": 3, "n_markers": 10, "seed": 0}


def sctype_workbook(path: Path) -> None:
    """A workbook in ScTypeDB's layout whose 'Immune system' rows mark the synthetic dataset's planted types."""
    import pandas as pd

    from vulnbench.sc.data.datasets import synthetic_counts

    _, _, markers = synthetic_counts(**SYNTHETIC, fold_change=8.0, dispersion=0.2, mean_count=0.3)
    rows = [{"tissueType": "Immune system", "cellName": t, "geneSymbolmore1": ",".join(f"gene{c}" for c in cols[:6]),
             "geneSymbolmore2": "", "shortName": t} for t, cols in markers.items()]
    rows.append({"tissueType": "Liver", "cellName": "Hepatocytes", "geneSymbolmore1": "ALB,APOA1",
                 "geneSymbolmore2": "", "shortName": "Hep"})
    pd.DataFrame(rows).to_excel(path, index=False)


def sctype_config(workdir: Path, url: str, checksums: dict[str, str]) -> Path:
    files = {"ScTypeDB_full.xlsx": "ScTypeDB_full.xlsx", "sctype_score_.R": "sctype_score_.R"}
    config = {
        "seed": 0,
        "datasets": {"synthetic": {**SYNTHETIC, "test_size": 0.5}},
        "classifiers": {"sctype": {"markers": "resources/sctype/ScTypeDB_full.xlsx", "backend": "r",
                                   "r_source": "resources/sctype/sctype_score_.R"}},
        "resources": {"sctype": {name: {"url": f"{url}/{served}", "checksum": checksums[name], "retries": 1}
                                 for name, served in files.items()}},
        "attacks": {"single_gene": {"grid": {"method": ["perc99"]}, "params": {"first_dichot": 20}}},
    }
    path = workdir / "sctype.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def served_sctype(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, dict[str, str]]]:
    from vulnbench.sc import rbridge

    ok, reason = rbridge.r_available()
    if not ok or rbridge.missing_r_packages("scales"):
        pytest.skip(f"scType's R backend needs R with the scales package: {reason or 'scales missing'}")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = tmp_path / "served"
    root.mkdir()
    sctype_workbook(root / "ScTypeDB_full.xlsx")
    (root / "sctype_score_.R").write_bytes(CLEANROOM_R.read_bytes())
    checksums = {p.name: "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest() for p in root.iterdir()}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", checksums
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_sctype_database_and_r_file_are_downloaded_then_scored_through_r(served_sctype, tmp_path: Path) -> None:
    """The download rule fetches the workbook and the R file, training reads the workbook (one tissue), the R
    backend sources the R file, and an attack runs on the resulting model."""
    import pickle

    url, checksums = served_sctype
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = sctype_config(workdir, url, checksums)
    result = snakemake(workdir, "results/tables/single_gene.tsv", "--cores", "2", "--configfile", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("ScTypeDB_full.xlsx", "sctype_score_.R"):
        assert "sha256:" + hashlib.sha256((workdir / "resources" / "sctype" / name).read_bytes()).hexdigest() == (
            checksums[name])
    with open(workdir / "results" / "models" / "synthetic" / "sctype" / "model.pkl", "rb") as fh:
        model = pickle.load(fh)
    assert model.backend == "r" and list(model.classes_) == ["type0", "type1", "type2"]  # Liver rows left out
    metrics = yaml.safe_load((workdir / "results" / "models" / "synthetic" / "sctype" / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.8
    table = (workdir / "results" / "tables" / "single_gene.tsv").read_text().splitlines()
    assert len(table) == 4 and all("sctype" in line for line in table[1:])


def test_a_bad_resource_checksum_fails_before_training(served_sctype, tmp_path: Path) -> None:
    url, checksums = served_sctype
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = sctype_config(workdir, url, {**checksums, "ScTypeDB_full.xlsx": "sha256:" + "1" * 64})
    result = snakemake(workdir, "results/tables/single_gene.tsv", "--cores", "1", "--configfile", str(config))
    assert result.returncode != 0
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("vulnbench error")]
    assert errors and "checksum mismatch" in errors[0] and "ScTypeDB_full.xlsx" in errors[0]
    assert not (workdir / "resources" / "sctype" / "ScTypeDB_full.xlsx").exists()
    assert not (workdir / "results" / "models").exists()


# -- a server that trickles: the rule must end on its own, in bounded time, with one line ------------------------
class _TrickleHandler(BaseHTTPRequestHandler):
    """Promises 100 kB, then sends a byte every 0.1 s (for at most 30 s, so the server always ends)."""

    stop: threading.Event

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        deadline = time.monotonic() + 30
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                self.wfile.write(b"x")
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.1)


@pytest.fixture
def trickling(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    stop = threading.Event()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_TrickleHandler,), {"stop": stop}))
    httpd.daemon_threads = True
    httpd.handle_error = lambda request, address: None  # the client hanging up is the point
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_a_trickling_server_fails_the_rule_in_bounded_time(trickling: str, tmp_path: Path) -> None:
    """timeout: 1 (from the config) is both the read timeout and the stall window: two attempts of about 1 s,
    each logged, then one line naming the URL; no file, no partial file."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    url = f"{trickling}/ScTypeDB_full.xlsx"
    config = {
        "seed": 0,
        "datasets": {"synthetic": {**SYNTHETIC, "test_size": 0.5}},
        "classifiers": {"scrf": {"n_estimators": 10}},
        "resources": {"sctype": {"ScTypeDB_full.xlsx": {"url": url, "checksum": None, "retries": 2, "timeout": 1}}},
        "attacks": {"single_gene": {"grid": {"method": ["perc99"]}, "params": {"first_dichot": 5}}},
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "resources/sctype/ScTypeDB_full.xlsx", "--cores", "1", "--configfile",
                       str(workdir / "config.yaml"), timeout=120)
    assert result.returncode != 0
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("vulnbench error")]
    assert errors and url in errors[0] and "after 2 attempt(s)" in errors[0] and "stalled" in errors[0]
    log = (workdir / "logs" / "download" / "sctype" / "ScTypeDB_full.xlsx.log").read_text()
    attempts = [line for line in log.splitlines() if "failed after" in line]
    assert len(attempts) == 2, log
    for line in attempts:  # each attempt ended by the stall rule after one 1 s window
        seconds = float(line.split("failed after ")[1].split(" s")[0])
        assert 0.9 <= seconds < 3.0, line
    folder = workdir / "resources" / "sctype"
    assert not folder.exists() or list(folder.iterdir()) == []
