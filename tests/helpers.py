"""Test helpers: fixture-data access, the MClassifier port and a toy per-cell model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vulnbench.sc.classifiers.base import PerCellClassifier

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

#: the 14 Seurat PBMC markers excluded throughout the adverSCarial vignettes
MARKERS = ["IL7R", "CCR7", "CD14", "LYZ", "S100A4", "MS4A1", "CD8A", "FCGR3A", "MS4A7", "GNLY", "NKG7",
           "FCER1A", "CST3", "PPBP"]


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent: the public fixtures of ../shared/data are not committed (licences)")
    return path



def m_classifier(expr: pd.DataFrame, clusters: np.ndarray, target: str) -> tuple[str, float]:
    """adverSCarial's MClassifier (1.3.13): rules on the target cluster's mean raw counts; later rules win."""
    means = expr.loc[np.asarray(clusters) == target]
    mean = {g: float(means[g].mean()) for g in
            ("LTB", "CD79A", "S100A9", "GZMB", "GZMK", "LDHB", "CCR7", "LST1", "CD74", "PF4")}
    label = "UNDETERMINED"
    rules = [
        (mean["LTB"] > 7, "Memory CD4 T"),
        (mean["CD79A"] > 2, "B"),
        (mean["S100A9"] > 10, "CD14+ Mono"),
        (mean["GZMB"] > 5, "NK"),
        (mean["GZMK"] > 2, "CD8 T"),
        (3 < mean["LDHB"] < 3.3, "Naive CD4 T"),
        (mean["CCR7"] > 0.5, "Naive CD4 T"),
        (mean["LST1"] > 10, "FCGR3A+ Mono"),
        (mean["CD74"] > 50, "DC"),
        (mean["PF4"] > 10, "Platelet"),
    ]
    for fired, name in rules:
        if fired:
            label = name
    return label, 1.0


class MarkerMeans(PerCellClassifier):
    """A per-cell toy model: a cell's score for a type is the mean of that type's marker genes.

    With `positive_aberrant`, setting any marker of another type to 10000·max turns every target cell into
    that type, so the exact set of flipping genes is known in advance.
    """

    name = "marker_means"

    def __init__(self, genes: pd.Index, markers: dict[str, list[str]]) -> None:
        self.genes_ = pd.Index(genes)
        self.classes_ = np.array(sorted(markers))
        self.weights = np.zeros((len(genes), len(self.classes_)), dtype=np.float32)
        for k, name in enumerate(self.classes_):
            cols = self.genes_.get_indexer(markers[name])
            self.weights[cols, k] = 1.0 / len(cols)
        self.n_model_calls = 0

    def _predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        self.n_model_calls += 1
        return np.asarray(matrix, dtype=np.float64) @ self.weights

def make_10x_archive(folder: Path, n_cells: int = 90, n_genes: int = 60, seed: int = 0) -> tuple[Path, Path]:
    """A small archive in 10x's pbmc3k layout (filtered_gene_bc_matrices/hg19/) and a matching label TSV."""
    import io
    import tarfile

    import scipy.io
    import scipy.sparse as sp

    from vulnbench.sc.data.datasets import synthetic_counts

    counts, labels, _ = synthetic_counts(n_cells=n_cells, n_genes=n_genes, n_types=3, n_markers=8, fold_change=10.0,
                                         dispersion=0.2, mean_count=1.0, seed=seed)
    barcodes = [f"AAAC{i:08d}-1" for i in range(n_cells)]
    genes = [f"ENSG{j:011d}\tGENE{j}" for j in range(n_genes)]
    genes[1] = genes[1].replace("GENE1", "GENE0")  # 10x hg19 has duplicated symbols: must be made unique
    archive = folder / "pbmc3k_filtered_gene_bc_matrices.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        matrix = io.BytesIO()
        scipy.io.mmwrite(matrix, sp.csr_matrix(counts.T).astype(np.int64))
        for name, payload in [("matrix.mtx", matrix.getvalue()), ("genes.tsv", "\n".join(genes).encode() + b"\n"),
                              ("barcodes.tsv", "\n".join(barcodes).encode() + b"\n")]:
            info = tarfile.TarInfo(f"filtered_gene_bc_matrices/hg19/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    label_file = folder / "labels.tsv"
    # R-style: the header has one field fewer than the rows (row names first); 5 cells stay unlabelled
    rows = [f"{b}\t{b}\t{t}" for b, t in zip(barcodes[5:], labels[5:], strict=True)]
    label_file.write_text("bc\tcell_type\n" + "\n".join(rows) + "\n")
    return archive, label_file



CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def report_figures_in_chromium(report: Path, figures: dict[str, str]) -> dict[str, tuple[bool, str]]:
    """Open a Snakemake HTML report in headless Chromium; for each figure (path → report category) click its eye
    icon and its info icon: (a PNG is displayed, the caption text shown). Skips the test without a browser."""
    import pytest

    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (make setup installs it when run as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed")
    found: dict[str, tuple[bool, str]] = {}
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            for figure, category in figures.items():
                page.goto(report.resolve().as_uri())
                page.get_by_text(category, exact=True).click()
                row = page.locator("tr", has_text=figure)
                row.locator("a[iconname=eye]").click()
                page.wait_for_timeout(300)
                shown = page.locator("img[src^='data:image/png']").count() > 0
                page.locator("tr", has_text=figure).locator("a[iconname=information-circle]").click()
                page.wait_for_timeout(300)
                body = page.inner_text("body")
                caption = body.split("DESCRIPTION", 1)[1].split("SIZE", 1)[0].strip() if "DESCRIPTION" in body else ""
                found[figure] = (shown, caption)
        finally:
            browser.close()
    return found
