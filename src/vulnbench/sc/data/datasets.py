"""Dataset registry. A dataset knows what to download (if anything) and how to load itself.

`load()` returns an AnnData with `obs["label"]` and either raw counts (`uns["normalised"] = False`) or
log-normalised values (`True`); `vulnbench.sc.data.prepare` turns either into the prepared h5ad.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from vulnbench.core.download import download, extract_tar, verify_file
from vulnbench.core.errors import ConfigError, DataError
from vulnbench.core.params import check_params
from vulnbench.core.registry import Registry
from vulnbench.sc.data.prepare import ALLOW_NEGATIVE, check_cell_names
from vulnbench.sc.expression import as_expression, negative_values

log = logging.getLogger(__name__)

DATASETS: Registry[type[Dataset]] = Registry("dataset")


class Dataset:
    """Base class; parameters are the constructor's keyword arguments (checked against the config)."""

    name: ClassVar[str]
    #: file name of the downloaded archive under resources/{name}/, or None for embedded datasets
    archive: ClassVar[str | None] = None

    def download(self, dest: Path) -> Path:
        raise DataError(f"dataset {self.name!r} has nothing to download")

    def load(self, archive: Path | None = None) -> ad.AnnData:
        raise NotImplementedError

    def input_files(self) -> list[Path]:
        """User files `load` reads: the prepare rule lists them as inputs, so editing one reruns it."""
        return []


def get(name: str, **params: Any) -> Dataset:

    cls = DATASETS.get(name)
    check_params(f"dataset {name!r}", params, cls)
    return cls(**params)


def with_labels(adata: ad.AnnData, labels: pd.Series | np.ndarray, normalised: bool) -> ad.AnnData:
    adata.obs["label"] = pd.Categorical(np.asarray(labels, dtype=str))
    adata.uns["normalised"] = normalised
    return adata


@DATASETS.register("pbmc68k_reduced")
class Pbmc68kReduced(Dataset):
    """700 PBMCs × 765 genes shipped inside scanpy (Zheng et al. 2017); labels from `bulk_labels`.

    `X` there is z-scored; `raw` keeps the log-normalised values, which is what the classifiers get.
    """

    name = "pbmc68k_reduced"

    def __init__(self, label_column: str = "bulk_labels") -> None:
        """Keyword parameters, as a config sets them.

        Args:
            label_column: obs column of scanpy's pbmc68k_reduced that holds the cell-type labels
        """
        self.label_column = label_column

    def load(self, archive: Path | None = None) -> ad.AnnData:
        import scanpy as sc

        full = sc.datasets.pbmc68k_reduced()
        if self.label_column not in full.obs:
            raise DataError(f"pbmc68k_reduced has no label column {self.label_column!r}")
        adata = ad.AnnData(X=sp.csr_matrix(full.raw.X), obs=pd.DataFrame(index=full.obs_names),
                           var=pd.DataFrame(index=full.raw.var_names))
        return with_labels(adata, full.obs[self.label_column], normalised=True)


@DATASETS.register("pbmc3k")
class Pbmc3k(Dataset):
    """10x Genomics PBMC3k filtered matrices (2,700 cells × 32,738 genes) with labels from a TSV file.

    The label file maps barcodes to cell types (e.g. the Seurat-tutorial labels distributed with
    adverSCarial as `pbmc3k_cell_types.tsv`); cells without a label are dropped.
    """

    name = "pbmc3k"
    archive = "pbmc3k_filtered_gene_bc_matrices.tar.gz"

    def __init__(
        self,
        url: str = "https://cf.10xgenomics.com/samples/cell-exp/1.1.0/pbmc3k/"
        "pbmc3k_filtered_gene_bc_matrices.tar.gz",
        checksum: str | None = "md5:f76d73bf7a582aaf32b798bcae9574d3",
        labels_file: str = "resources/pbmc3k/pbmc3k_cell_types.tsv",
        label_column: str = "cell_type",
        retries: int = 3,
    ) -> None:
        """Keyword parameters, as a config sets them.

        Args:
            url: where the 10x pbmc3k filtered gene-barcode archive is downloaded from
            checksum: digest of the archive ('md5:…' or 'sha256:…'); null: not verified
            labels_file: TSV mapping cell barcodes to cell types (e.g. the Seurat-tutorial labels); unlabelled cells
                dropped
            label_column: column of labels_file that holds the cell type
            retries: download attempts in all before the download fails
        """
        self.url = url
        self.checksum = checksum
        self.labels_file = labels_file
        self.label_column = label_column
        self.retries = retries

    def download(self, dest: Path) -> Path:

        return download(self.url, dest, checksum=self.checksum, retries=self.retries)

    def load(self, archive: Path | None = None) -> ad.AnnData:
        import scanpy as sc


        if archive is None or not Path(archive).exists():
            raise DataError(f"pbmc3k archive missing: {archive}; run the download_dataset rule first")
        # a hand-placed archive never went through the download rule: the same checksum holds it
        verify_file(archive, self.checksum)
        folder = extract_tar(archive, Path(archive).with_suffix("").with_suffix(""))
        matrices = next(folder.rglob("matrix.mtx"), None)
        if matrices is None:
            raise DataError(f"{archive} holds no matrix.mtx: not a 10x filtered gene-barcode archive")
        adata = sc.read_10x_mtx(matrices.parent, var_names="gene_symbols")
        adata.var_names_make_unique()
        labels = read_label_file(self.labels_file, self.label_column)
        common = adata.obs_names.intersection(labels.index)
        if common.empty:
            raise DataError(f"no barcode of {self.labels_file} matches the pbmc3k matrix")
        if len(common) < adata.n_obs:
            log.info("pbmc3k: %d of %d cells have a label; the rest are dropped", len(common), adata.n_obs)
        adata = adata[common].copy()
        adata.X = sp.csr_matrix(adata.X)
        return with_labels(adata, labels.loc[common], normalised=False)


def read_label_file(path: str | Path, column: str) -> pd.Series:
    """Labels indexed by cell barcode from a TSV (R-style files with one header field fewer work too)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"label file not found: {path} (set labels_file in the config)")
    try:  # as text, without NA coercion: a cell type called "NA", "nan" or "None" is a label, not a missing one
        table = pd.read_csv(path, sep="\t", index_col=0, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot parse label file {path}: {exc}") from None
    if column not in table.columns:
        raise DataError(f"label column {column!r} missing from {path} (columns: {', '.join(table.columns)})")
    labels = table[column]
    empty = labels.isna() | (labels.fillna("").str.strip() == "")  # NaN only where a row has too few fields
    if empty.any():
        raise DataError(f"label column {column!r} of {path} has {int(empty.sum())} empty labels")
    if labels.index.has_duplicates:
        raise DataError(f"duplicated cell barcode(s) in {path}: {labels.index[labels.index.duplicated()][0]}")
    return labels.astype(str)


@DATASETS.register("h5ad")
class H5ad(Dataset):
    """The user's own AnnData file: labels from an obs column, expression from X or a layer.

    `normalised=None` autodetects: a matrix of non-negative integers is raw counts (log-normalised in
    `prepare`), anything else is taken as already log-normalised. Set it explicitly when that guess is wrong
    (e.g. integer-rounded normalised values). Negative values are refused unless `normalised=True`: neither
    counts nor log-normalised expression has them, scaled or z-scored values (scanpy's `pp.scale`, a common X)
    do, and classifiers and attacks would silently run on the wrong scale. `layer="raw"` reads the file's
    `.raw` (where scanpy keeps the log-normalised values before scaling) unless a layer is called "raw".
    Only the matrix, the cell and gene names and the labels are kept; other obs/var columns, obsm and uns
    are dropped.
    """

    name = "h5ad"

    def __init__(self, path: str | None = None, label_column: str = "cell_type", layer: str | None = None,
                 normalised: bool | None = None) -> None:
        """Keyword parameters, as a config sets them.

        Args:
            path: your own AnnData .h5ad file (required; a rule input: editing it reruns the preparation)
            label_column: obs column of the file that holds the cell-type labels
            layer: read expression from this layer instead of X; raw reads the file's .raw (log-normalised before
                scaling)
            normalised: null: autodetect (non-negative integers = raw counts); false: raw counts; true:
                log-normalised, negative values kept (with a warning)
        """
        if not path:
            raise ConfigError("dataset 'h5ad': set path to the .h5ad file to load")
        if normalised not in (None, True, False):
            raise ConfigError(f"dataset 'h5ad': normalised must be true, false or null (autodetect), "
                              f"got {normalised!r}")
        self.path = str(path)
        self.label_column = label_column
        self.layer = layer
        self.normalised = normalised

    def input_files(self) -> list[Path]:
        return [Path(self.path)]

    def load(self, archive: Path | None = None) -> ad.AnnData:

        path = Path(self.path)
        if not path.is_file():
            raise DataError(f"h5ad file not found: {path}")
        full = read_h5ad_file(path)
        if not full.n_obs or not full.n_vars:
            raise DataError(f"{path}: no expression matrix ({full.n_obs} cells × {full.n_vars} genes)")
        if self.label_column not in full.obs:
            raise DataError(f"{path}: no label column {self.label_column!r} in obs "
                            f"(columns: {', '.join(map(str, full.obs.columns)) or 'none'}); set label_column")
        labels = full.obs[self.label_column]
        empty = labels.isna().to_numpy() | (labels.astype(str).str.strip() == "").to_numpy()
        if empty.any():
            raise DataError(f"{path}: label column {self.label_column!r} has {int(empty.sum())} missing or empty "
                            f"label(s), e.g. cell {full.obs_names[np.flatnonzero(empty)[0]]!r}")
        genes = full.var_names
        if self.layer is None:
            matrix, source = full.X, "X"
        elif self.layer in full.layers:
            matrix, source = full.layers[self.layer], f"layer {self.layer!r}"
        elif self.layer == "raw" and full.raw is not None:
            matrix, genes, source = full.raw.X, full.raw.var_names, ".raw"
        else:
            raise DataError(f"{path}: no layer {self.layer!r} (layers: {layer_choices(full) or 'none'})")
        adata = ad.AnnData(X=matrix, obs=pd.DataFrame(index=full.obs_names), var=pd.DataFrame(index=genes))
        try:
            expression = as_expression(adata)  # non-numeric, NaN / Inf, duplicated genes
            check_cell_names(adata)
        except DataError as error:
            raise DataError(f"{path}: {error}") from None
        allow_negative = self.check_negative_values(path, expression.matrix, source, full)
        normalised = self.normalised if self.normalised is not None else not is_count_matrix(expression.matrix)
        log.info("%s: %d cells × %d genes, %s (%s)", path, adata.n_obs, adata.n_vars,
                 "log-normalised" if normalised else "raw counts",
                 "as configured" if self.normalised is not None else "autodetected")
        if sp.issparse(adata.X):
            adata.X = sp.csr_matrix(adata.X)
        adata = with_labels(adata, labels.to_numpy(), normalised=normalised)
        if allow_negative:
            adata.uns[ALLOW_NEGATIVE] = True
        return adata

    def check_negative_values(self, path: Path, matrix: np.ndarray | sp.spmatrix, source: str,
                              full: ad.AnnData) -> bool:
        """Refuse negative values in one line that says what was found and where counts or log-normalised
        values may be instead; with `normalised: true` they are the user's choice: a warning, and True."""
        count, minimum = negative_values(matrix)
        if not count:
            return False
        found = f"{source} has {count:,} negative value(s) of {int(np.prod(matrix.shape)):,}, minimum {minimum:.4g}"
        if self.normalised:
            log.warning("%s: %s; used as they are because normalised: true is set (counts and log-normalised "
                        "expression are never negative: scaled or z-scored values?)", path, found)
            return True
        choices = layer_choices(full, skip=self.layer)
        what = ("raw counts contain negative values" if self.normalised is False
                else "not raw counts or log-normalised expression (scaled or z-scored?)")
        raise DataError(f"{path}: {found}: {what}; point layer: at counts or log-normalised values "
                        f"({f'this file has: {choices}' if choices else 'this file has no other layer'}) "
                        f"or set normalised: true to use {source} as it is")


def layer_choices(adata: ad.AnnData, skip: str | None = None) -> str:
    """What `layer:` may name in this file, for messages: its layers, and "raw" for its `.raw` unless a layer has
    that name; `skip` is the one already chosen."""
    names = [str(name) for name in adata.layers if name != skip]
    if adata.raw is not None and "raw" not in adata.layers and skip != "raw":
        names.append("raw = the file's .raw")
    return ", ".join(names)


def read_h5ad_file(path: Path) -> ad.AnnData:
    """The whole AnnData of a user file; a truncated or foreign file is a one-line DataError naming it."""
    try:
        return ad.read_h5ad(path)
    except MemoryError:
        raise
    except Exception as exc:  # h5py and anndata raise many types for a damaged file
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise DataError(f"cannot read h5ad file {path}: truncated, corrupt or not an AnnData file "
                        f"({type(exc).__name__}{': ' + first if first else ''})") from None


def is_count_matrix(matrix: np.ndarray | sp.spmatrix) -> bool:
    """True when every stored value is a non-negative integer (raw UMI counts), checked in chunks."""
    values = matrix.data if sp.issparse(matrix) else np.asarray(matrix).ravel()
    if np.issubdtype(values.dtype, np.integer):
        return values.size == 0 or bool(values.min() >= 0)
    for start in range(0, values.size, 1 << 24):
        chunk = values[start:start + (1 << 24)]
        if (chunk < 0).any() or (chunk != np.floor(chunk)).any():
            return False
    return True


@DATASETS.register("synthetic")
class Synthetic(Dataset):
    """Seeded negative-binomial counts with planted marker genes: for scale tests and benchmarks.

    Each type has `n_markers` genes whose mean is multiplied by `fold_change`; library sizes vary
    log-normally and counts are gamma-Poisson with the given `dispersion`, as in real UMI data.
    """

    name = "synthetic"

    def __init__(self, n_cells: int = 1000, n_genes: int = 2000, n_types: int = 5, n_markers: int = 20,
                 fold_change: float = 8.0, dispersion: float = 0.2, mean_count: float = 0.3, seed: int = 0) -> None:
        """Keyword parameters, as a config sets them.

        Args:
            n_cells: number of simulated cells
            n_genes: number of simulated genes
            n_types: number of simulated cell types (labels type0, type1, …)
            n_markers: planted marker genes per type (n_types × n_markers ≤ n_genes)
            fold_change: factor multiplying the mean count of a type's marker genes
            dispersion: gamma-Poisson (negative-binomial) dispersion of the counts
            mean_count: median of the per-gene baseline mean counts (log-normal, σ 1), before library size
            seed: seed of the simulated counts (its own default 0; the top-level seed is not used)
        """
        self.n_cells = n_cells
        self.n_genes = n_genes
        self.n_types = n_types
        self.n_markers = n_markers
        self.fold_change = fold_change
        self.dispersion = dispersion
        self.mean_count = mean_count
        self.seed = seed

    def load(self, archive: Path | None = None) -> ad.AnnData:
        counts, labels, markers = synthetic_counts(**vars(self))
        adata = ad.AnnData(X=counts, obs=pd.DataFrame(index=[f"cell{i}" for i in range(self.n_cells)]),
                           var=pd.DataFrame(index=[f"gene{j}" for j in range(self.n_genes)]))
        adata.uns["markers"] = {t: list(adata.var_names[m]) for t, m in markers.items()}
        return with_labels(adata, labels, normalised=False)


def synthetic_counts(n_cells: int, n_genes: int, n_types: int, n_markers: int, fold_change: float,
                     dispersion: float, mean_count: float, seed: int) -> tuple[sp.csr_matrix, np.ndarray, dict]:
    """Counts (CSR, cells × genes), labels `type0`…, and the planted marker columns per type."""
    if min(n_cells, n_genes, n_types) < 1 or n_types * n_markers > n_genes:
        raise DataError("synthetic: need n_cells, n_genes, n_types ≥ 1 and n_types × n_markers ≤ n_genes")
    rng = np.random.default_rng(seed)
    base = rng.lognormal(np.log(mean_count), 1.0, n_genes)
    labels = np.array([f"type{i}" for i in rng.integers(0, n_types, n_cells)])
    marker_cols = rng.choice(n_genes, size=(n_types, n_markers), replace=False)
    type_means = np.tile(base, (n_types, 1))
    for t in range(n_types):
        type_means[t, marker_cols[t]] *= fold_change
    library = rng.lognormal(0.0, 0.3, n_cells)
    type_index = np.char.lstrip(labels.astype(str), "type").astype(int)
    rows = []
    for start in range(0, n_cells, 4096):  # bounded memory for 10^5 cells
        stop = min(start + 4096, n_cells)
        mu = library[start:stop, None] * type_means[type_index[start:stop]]
        lam = rng.gamma(1.0 / dispersion, mu * dispersion)
        rows.append(sp.csr_matrix(rng.poisson(lam).astype(np.float32)))
    markers = {f"type{t}": marker_cols[t] for t in range(n_types)}
    return sp.vstack(rows, format="csr"), labels, markers
