"""scType (Ianevski et al., Nat Commun 2022): marker-set scores, written from the published method and its R code.

A cell's score for a type is the sum of its weighted marker z-scores over the type's positive markers / √|P| minus
the same over its negative markers / √|N|; the weights favour genes that mark few types. There is no training:
`fit` only fixes the gene list and the marker vocabulary.
"""

from __future__ import annotations

import importlib.util
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from vulnbench.core.errors import ConfigError, DataError
from vulnbench.sc import rbridge
from vulnbench.sc.classifiers._rbackend import RBackendMixin
from vulnbench.sc.classifiers.base import PerCellClassifier, Perturbation
from vulnbench.sc.expression import ExpressionInput, as_expression, as_labels

log = logging.getLogger(__name__)

#: the project's own PBMC marker table, looked up under resources/ of the repository (or of the working directory)
BUILTIN_TABLES = {"pbmc": "sctype_pbmc_markers.tsv"}
#: scType's scoring file, as the scType repository names it
SCTYPE_R_FILE = "sctype_score_.R"
#: label of a cluster whose best summed score is below n_cells / 4 (and of cells no type can score)
UNKNOWN = "Unknown"
ASSIGNMENTS = ("cell", "cluster")
#: float64 elements of one stacked batch of perturbed marker columns (128 MB)
PERTURBED_BATCH_ELEMENTS = 1 << 24
#: warn when fewer than this fraction of a type's positive markers are in the data
MIN_MARKER_FRACTION = 0.5


@dataclass(frozen=True)
class MarkerSets:
    """Cell types in table order with their positive and negative marker symbols.

    Duplicates inside a list are kept on purpose: they count in the marker weights; scoring de-duplicates.
    """

    cell_types: tuple[str, ...]
    positive: tuple[tuple[str, ...], ...]
    negative: tuple[tuple[str, ...], ...]
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for attr in ("cell_types", "sources"):
            object.__setattr__(self, attr, tuple(str(v) for v in getattr(self, attr)))
        for attr in ("positive", "negative"):
            object.__setattr__(self, attr, tuple(tuple(str(g) for g in genes) for genes in getattr(self, attr)))
        n = len(self.cell_types)
        if n == 0:
            raise DataError("marker sets: no cell types")
        if len(self.positive) != n or len(self.negative) != n or len(self.sources) not in (0, n):
            raise DataError(f"marker sets: {n} cell types but {len(self.positive)} positive, "
                            f"{len(self.negative)} negative and {len(self.sources)} source entries")
        duplicated = sorted({t for t, k in Counter(self.cell_types).items() if k > 1})
        if duplicated:
            raise DataError(f"marker sets: duplicated cell type(s): {', '.join(duplicated[:5])}")

    def __len__(self) -> int:
        return len(self.cell_types)

    @classmethod
    def from_table(cls, path: str | Path) -> MarkerSets:
        """TSV with columns `cell_type`, `positive`, `negative` (comma-separated symbols) and optional `source`.

        Symbols are taken as written (only surrounding spaces are stripped); empty cells are empty lists.
        """
        path = Path(path)
        try:
            frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise DataError(f"cannot read marker table {path}: {exc}") from None
        missing = [c for c in ("cell_type", "positive", "negative") if c not in frame.columns]
        if missing:
            raise DataError(f"marker table {path} lacks column(s) {', '.join(missing)} "
                            f"(has: {', '.join(map(str, frame.columns))})")
        return cls(
            cell_types=tuple(frame["cell_type"]),
            positive=tuple(_split_symbols(v) for v in frame["positive"]),
            negative=tuple(_split_symbols(v) for v in frame["negative"]),
            sources=tuple(frame["source"]) if "source" in frame.columns else (),
        )

    @classmethod
    def from_sctype_db(cls, xlsx_path: str | Path, tissue: str = "Immune system") -> MarkerSets:
        """One tissue of ScTypeDB_full.xlsx / ScTypeDB_short.xlsx (see `from_sctype_frame` for the clean-up)."""
        if importlib.util.find_spec("openpyxl") is None:
            raise DataError("reading a ScTypeDB .xlsx file needs the openpyxl package, which is not installed")
        path = Path(xlsx_path)
        if not path.is_file():
            raise DataError(f"ScTypeDB file {path} not found")
        try:
            frame = pd.read_excel(path, dtype=str, keep_default_na=False, engine="openpyxl")
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"cannot read ScTypeDB file {path}: {exc}") from None
        return cls.from_sctype_frame(frame, tissue, origin=path.name)

    @classmethod
    def from_sctype_frame(cls, frame: pd.DataFrame, tissue: str = "Immune system",
                          origin: str = "ScTypeDB") -> MarkerSets:
        """Rows of one tissue with `gene_sets_prepare`'s token clean-up but **without HGNChelper**.

        Tokens are stripped of spaces, split on ",", "NA" and "" dropped, upper-cased, sorted and de-duplicated;
        aliases are not mapped to approved symbols (CD16 stays CD16, HLA-DR stays HLA-DR), so the sets differ from
        upstream's wherever the DB uses an alias.
        """
        needed = ["tissueType", "cellName", "geneSymbolmore1", "geneSymbolmore2"]
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise DataError(f"{origin}: missing column(s) {', '.join(missing)}")
        rows = frame.loc[frame["tissueType"].astype(str) == tissue]
        if rows.empty:
            tissues = ", ".join(sorted(frame["tissueType"].astype(str).unique())[:20])
            raise DataError(f"{origin}: no rows for tissue {tissue!r} (tissues: {tissues})")
        return cls(
            cell_types=tuple(rows["cellName"].astype(str)),
            positive=tuple(_db_tokens(v) for v in rows["geneSymbolmore1"]),
            negative=tuple(_db_tokens(v) for v in rows["geneSymbolmore2"]),
            sources=(f"{origin}, tissue {tissue} (symbols upper-cased, not HGNC-mapped)",) * len(rows),
        )


def _split_symbols(cell: Any) -> tuple[str, ...]:
    if cell is None or (not isinstance(cell, str) and pd.isna(cell)):
        return ()
    return tuple(token.strip() for token in str(cell).split(",") if token.strip())


def _db_tokens(cell: Any) -> tuple[str, ...]:
    """`gene_sets_prepare`'s clean-up steps 1, 3, 4, with the symbol map of step 2 replaced by the identity (its
    de-duplication kept)."""
    if cell is None or (not isinstance(cell, str) and pd.isna(cell)):
        return ()
    tokens = [t.upper() for t in "".join(str(cell).split()).split(",") if t not in ("NA", "")]
    unique = dict.fromkeys(sorted(t for t in tokens if t != "NA"))
    return tuple(part for token in unique for part in token.split("///") if part)


def marker_weights(sets: MarkerSets) -> dict[str, float]:
    """w_g = (K − n_g)/(K − 1): n_g counts g over all positive lists (duplicates included), K = number of types.

    Computed on the full sets, before restricting to the genes of the data. With K = 1 the source range is
    empty and every weight is 0.5 (the midpoint rule of the R rescale upstream uses).
    """
    k = len(sets.cell_types)
    counts = Counter(gene for genes in sets.positive for gene in genes)
    if k == 1:
        return dict.fromkeys(counts, 0.5)
    return {gene: (k - n) / (k - 1) for gene, n in counts.items()}


@dataclass(frozen=True)
class _Plan:
    """The marker genes present in a gene list, as column positions and types × genes indicator matrices."""

    columns: np.ndarray  # positions in the data of the genes used (union of present positive and negative markers)
    weights: np.ndarray  # w_g for positive markers, 1 for genes used only as negative markers
    positive: np.ndarray  # types × used genes, 1 where the gene is in P_t (unique)
    negative: np.ndarray  # types × used genes, 1 where the gene is in N_t (unique)
    cell_types: tuple[str, ...]


def _plan(genes: Iterable[Any], sets: MarkerSets, uppercase: bool = True) -> _Plan:
    names = [str(g).upper() if uppercase else str(g) for g in genes]
    position: dict[str, int] = {}
    for i, name in enumerate(names):
        position.setdefault(name, i)
    if len(position) < len(names):
        log.warning("sctype: %d gene name(s) repeat after upper-casing; the first occurrence is used",
                    len(names) - len(position))
    pos_sets = [sorted({position[g] for g in genes_t if g in position}) for genes_t in sets.positive]
    neg_sets = [sorted({position[g] for g in genes_t if g in position}) for genes_t in sets.negative]
    positive_union = sorted(set().union(*pos_sets))
    used = sorted(set(positive_union).union(*neg_sets))
    index = {col: k for k, col in enumerate(used)}
    n_types = len(sets.cell_types)
    positive = np.zeros((n_types, len(used)))
    negative = np.zeros((n_types, len(used)))
    for t in range(n_types):
        positive[t, [index[c] for c in pos_sets[t]]] = 1.0
        negative[t, [index[c] for c in neg_sets[t]]] = 1.0
    weights = np.ones(len(used))
    w = marker_weights(sets)
    for col in positive_union:
        weights[index[col]] = w[names[col]]
    return _Plan(np.asarray(used, dtype=np.intp), weights, positive, negative, sets.cell_types)


def _z_scores(x: np.ndarray, scaled: bool) -> np.ndarray:
    """Input as given, or per-gene (x − mean)/sd over the cells as R's `scale`: sd on n − 1, NaN values left out
    of both statistics, zero variance → NaN."""
    if scaled:
        return np.array(x, dtype=np.float64, copy=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        missing = np.isnan(x)
        if missing.any():
            mean = np.where(missing, 0.0, x).sum(axis=0) / (~missing).sum(axis=0)
        else:
            mean = x.sum(axis=0) / x.shape[0]
        centred = x - mean
        valid = ~np.isnan(centred)
        squares = np.where(valid, centred * centred, 0.0).sum(axis=0)
        sd = np.sqrt(squares / np.maximum(1, valid.sum(axis=0) - 1))
        return centred / sd


def _indicator_sums(indicator: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Σ_{g: indicator} z per type and cell (types × cells), with R's sum semantics for NaN and ±Inf."""
    finite = np.isfinite(z)
    if finite.all():
        return indicator @ z.T
    total = indicator @ np.where(finite, z, 0.0).T
    nan = indicator @ np.isnan(z).T.astype(np.float64) > 0
    up = indicator @ (z == np.inf).T.astype(np.float64) > 0
    down = indicator @ (z == -np.inf).T.astype(np.float64) > 0
    total[up] = np.inf
    total[down] = -np.inf
    total[nan | (up & down)] = np.nan
    return total


def _score(plan: _Plan, x_used: np.ndarray, scaled: bool) -> np.ndarray:
    """S (types × cells) from the used marker columns (cells × used genes), as `sctype_score` steps 3–5.

    The positive term of a type without present positive markers is 0/0 = NaN (the row is NaN); a NaN negative
    term — no present negative markers, or a NaN z-score among them — counts as 0, as upstream does.
    """
    z = _z_scores(np.asarray(x_used, dtype=np.float64), scaled) * plan.weights
    with np.errstate(divide="ignore", invalid="ignore"):
        first = _indicator_sums(plan.positive, z) / np.sqrt(plan.positive.sum(axis=1))[:, None]
        second = -_indicator_sums(plan.negative, z) / np.sqrt(plan.negative.sum(axis=1))[:, None]
    second[np.isnan(second)] = 0.0
    return first + second


def sctype_scores(matrix: Any, genes: Sequence[Any] | None, sets: MarkerSets, scaled: bool = True, *,
                  gene_names_to_uppercase: bool = True, cells: Sequence[Any] | None = None) -> pd.DataFrame:
    """scType's `es.max`: types × cells scores of a cells × genes matrix, all-NaN types dropped.

    `scaled=True` takes the values as z-scores (e.g. Seurat `scale.data`); `scaled=False` z-scores each gene over
    the cells given. A DataFrame supplies `genes` (columns) and `cells` (index) itself when they are None.
    """
    if isinstance(matrix, pd.DataFrame):
        genes = matrix.columns if genes is None else genes
        cells = matrix.index if cells is None else cells
        matrix = matrix.to_numpy()
    if genes is None:
        raise DataError("sctype_scores: gene names are needed to match the markers")
    if matrix.ndim != 2 or matrix.shape[1] != len(genes):
        raise DataError(f"sctype_scores: matrix of shape {matrix.shape} does not match {len(genes)} gene names")
    plan = _plan(genes, sets, gene_names_to_uppercase)
    used = matrix[:, plan.columns]
    used = used.toarray() if sp.issparse(used) else np.asarray(used)
    scores = _score(plan, used, scaled)
    frame = pd.DataFrame(scores, index=pd.Index(plan.cell_types, name="cell_type"),
                         columns=pd.RangeIndex(matrix.shape[0]) if cells is None else pd.Index(cells))
    return frame.loc[~frame.isna().all(axis=1)]


def _cluster_label(scores: np.ndarray, classes: np.ndarray) -> str:
    """README rule on one cluster's cells × types scores: best summed type, "Unknown" below n_cells / 4."""
    totals = scores.sum(axis=0)
    totals[np.isnan(totals)] = -np.inf  # upstream's sort drops NA sums (types dropped from es.max)
    best = int(np.argmax(totals))
    if np.isneginf(totals[best]) or totals[best] < scores.shape[0] / 4:
        return UNKNOWN
    return str(classes[best])


def sctype_cluster_labels(scores: pd.DataFrame, clusters: Sequence[Any]) -> pd.Series:
    """Cluster-level assignment from `sctype_scores` output (types × cells): cluster → label."""
    labels = as_labels(clusters, scores.shape[1])
    values = scores.to_numpy(dtype=np.float64).T
    classes = np.asarray(scores.index, dtype=str)
    order = list(dict.fromkeys(labels))
    return pd.Series({c: _cluster_label(values[labels == c], classes) for c in order}, name="sctype", dtype=object)


def _r_gene_lists(names: Sequence[str], genes: Sequence[Sequence[str]]) -> Any:
    """A named R list of character vectors (empty ones stay `character(0)`, as scType's own gene sets)."""
    import rpy2.rinterface as ri

    listed = ri.ListSexpVector([ri.StrSexpVector(list(g)) for g in genes])
    listed.do_slot_assign("names", ri.StrSexpVector([str(n) for n in names]))
    return listed


def _sctype_r_file(r_source: str | Path | None) -> Path:
    """The local copy of scType's sctype_score_.R (GPL-3: never shipped with vulnbench)."""
    candidates = ([Path(r_source)] if r_source is not None
                  else [Path.cwd() / "resources" / "sctype" / SCTYPE_R_FILE,
                        Path(__file__).resolve().parents[4] / "resources" / "sctype" / SCTYPE_R_FILE])
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(f"sctype backend 'r' needs scType's {SCTYPE_R_FILE}: set r_source to a local copy, or fetch it "
                      f"with `snakemake resources/sctype/{SCTYPE_R_FILE}` (needs internet; looked for "
                      f"{', '.join(map(str, candidates))})")


def _builtin_table(name: str) -> Path:
    file = BUILTIN_TABLES[name]
    candidates = [Path(__file__).resolve().parents[4] / "resources" / file, Path.cwd() / "resources" / file]
    for path in candidates:
        if path.is_file():
            return path
    raise DataError(f"sctype: marker table {name!r} not found (looked for {', '.join(map(str, candidates))})")


def load_markers(markers: str | Path | MarkerSets, tissue: str = "Immune system") -> MarkerSets:
    """`"pbmc"` (the project table), a TSV marker table, a ScTypeDB .xlsx (one `tissue`), or ready MarkerSets."""
    if isinstance(markers, MarkerSets):
        return markers
    if isinstance(markers, str) and markers in BUILTIN_TABLES:
        path = _builtin_table(markers)
    else:
        path = Path(markers)
        if not path.is_file():
            known = ", ".join(f"{k!r}" for k in BUILTIN_TABLES)
            raise DataError(f"sctype: marker file {path} not found (built-in tables: {known})")
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        return MarkerSets.from_sctype_db(path, tissue)
    return MarkerSets.from_table(path)


class ScType(RBackendMixin, PerCellClassifier):
    """scType marker scoring as a per-cell classifier; `classes_` are the marker types in table order.

    `predict_proba` gives the raw scores (not probabilities; types upstream would drop from `es.max` — no present
    positive marker, or a zero-variance one with `scaled=False` — score −inf so no argmax picks them). Per-cell
    labels are the argmax ("Unknown" when no type can be scored); `assignment="cluster"` makes `__call__` use the
    README's cluster-sum rule instead of the plurality of per-cell labels.

    `backend="r"` scores with scType's own `sctype_score` (sourced from `r_source`, a local copy of scType's
    `sctype_score_.R`, or from `resources/sctype/sctype_score_.R` where the `download_resource` rule puts it) on the
    same marker sets; everything around the scores (labels, cluster rule, batching of perturbed copies) is shared.
    """

    name = "sctype"
    extra_labels = ("Unknown",)
    capabilities = (PerCellClassifier.capabilities - {"cell_independent"}) | {"marker_based", "training_free"}
    r_packages = ("scales",)  # the only package sctype_score calls

    def __init__(self, markers: str | Path | MarkerSets = "pbmc", tissue: str = "Immune system", scaled: bool = False,
                 assignment: str = "cell", gene_names_to_uppercase: bool = True, backend: str = "native",
                 r_source: str | Path | None = None) -> None:
        """Keyword parameters, as a config sets them.

        Args:
            markers: pbmc (resources/sctype_pbmc_markers.tsv), a marker TSV, or a ScTypeDB .xlsx (see tissue)
            tissue: tissue whose marker sets are read from a ScTypeDB .xlsx (ignored for TSV tables)
            scaled: true: the input is already z-scored; false: z-score each marker gene over the query cells
            assignment: cell: plurality of per-cell argmax labels; cluster: best summed score, 'Unknown' below n/4
            gene_names_to_uppercase: upper-case the data's gene names before matching them to the markers
            backend: native (Python port) or r: scType's own sctype_score through rpy2
            r_source: scType's sctype_score_.R for backend r (null: resources/sctype/sctype_score_.R)
        """
        self.markers = markers
        self.tissue = tissue
        self.scaled = scaled
        self.assignment = assignment
        self.gene_names_to_uppercase = gene_names_to_uppercase
        self.backend = backend
        self.r_source = r_source

    @property
    def cell_independent(self) -> bool:  # type: ignore[override]
        """Only z-scores given as input leave each cell's scores independent of the other query cells."""
        return bool(self.scaled)

    def fit(self, X: ExpressionInput, labels: Sequence[str] | None = None) -> Self:
        """Fix the gene list and the marker vocabulary; `labels` are optional and unused (nothing is trained)."""
        self._check_assignment()
        self._check_backend()
        if self.backend == "r":
            self.r_source_ = str(_sctype_r_file(self.r_source))

            rbridge.source_file(self.r_source_, "sctype_score")  # fail now, not at the first prediction
        expr = as_expression(X)
        if labels is not None:
            as_labels(labels, expr.n_cells, name="labels")
        self.marker_sets_ = load_markers(self.markers, self.tissue)
        self.genes_ = expr.genes
        self.classes_ = np.array(self.marker_sets_.cell_types, dtype=str)
        self._fit(np.empty((0, expr.n_genes), dtype=np.float32), np.empty(0, dtype=str))
        return self

    def _fit(self, matrix: np.ndarray, y: np.ndarray) -> None:
        """No training: index the markers present among the genes and warn about types lacking most of theirs."""
        self.plan_ = _plan(self.genes_, self.marker_sets_, self.gene_names_to_uppercase)
        present = self.plan_.positive.sum(axis=1).astype(int)
        total = np.array([len(set(genes)) for genes in self.marker_sets_.positive])
        self.marker_coverage_ = {str(t): (int(p), int(n))
                                 for t, p, n in zip(self.classes_, present, total, strict=True)}
        if present.sum() == 0:
            raise DataError(f"sctype: none of the {int(total.sum())} positive marker genes are in the data "
                            f"(data genes look like: {', '.join(map(str, self.genes_[:3]))})")
        short = [f"{t} {p}/{n}" for t, (p, n) in self.marker_coverage_.items() if p < MIN_MARKER_FRACTION * n]
        if short:
            log.warning("sctype: fewer than half of the positive markers are in the data for %d of %d types "
                        "(types with none are never predicted): %s", len(short), len(self.classes_),
                        ", ".join(short[:10]) + (", …" if len(short) > 10 else ""))

    def _scores(self, used: np.ndarray) -> np.ndarray:
        """Cells × types scores from the used marker columns; NaN (an es.max row upstream drops) → −inf."""
        if getattr(self, "backend", "native") == "r":
            return self._r_scores(used)
        scores = _score(self.plan_, np.asarray(used, dtype=np.float64), bool(self.scaled)).T
        scores[np.isnan(scores)] = -np.inf
        return scores

    def _r_scores(self, used: np.ndarray) -> np.ndarray:
        """scType's `sctype_score(M, scaled, gs, gs2)` on the used marker genes (the rest cannot change a score)."""

        function = rbridge.source_file(self.r_source_, "sctype_score")
        genes = [str(g) for g in self.genes_[self.plan_.columns]]
        matrix = rbridge.r_matrix(np.asarray(used, dtype=np.float64).T, genes, [f"c{i}" for i in range(len(used))])
        sets = self.marker_sets_
        es = rbridge.call_function(
            function, matrix, scaled=bool(self.scaled), gs=_r_gene_lists(sets.cell_types, sets.positive),
            gs2=_r_gene_lists(sets.cell_types, sets.negative),
            gene_names_to_uppercase=bool(self.gene_names_to_uppercase), _label="sctype_score")
        frame = es if isinstance(es, pd.DataFrame) else pd.DataFrame(np.atleast_2d(es))
        # rows R dropped (no usable marker) are types no cell can get: −inf, as the native scores
        scores = frame.reindex(index=list(self.classes_)).to_numpy(dtype=np.float64).T
        scores[np.isnan(scores)] = -np.inf
        return scores

    def _labels(self, scores: np.ndarray) -> np.ndarray:
        best = np.argmax(scores, axis=-1)
        return np.where(np.isneginf(np.max(scores, axis=-1)), UNKNOWN, self.classes_[best])

    def _predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        return self._scores(np.asarray(matrix)[:, self.plan_.columns])

    def _predict_labels(self, matrix: np.ndarray) -> np.ndarray:
        return self._labels(self._predict_proba(matrix))

    def predict_proba_perturbed(self, block: np.ndarray, perturbations: Sequence[Perturbation]) -> np.ndarray:
        """Only marker columns matter: perturb those. With `scaled=False` each copy is z-scored on its own."""
        columns = self.plan_.columns
        used = np.asarray(block, dtype=np.float32)[:, columns]
        lookup = np.full(block.shape[1], -1, dtype=np.intp)
        lookup[columns] = np.arange(len(columns))
        edits = []
        for cols, values in perturbations:
            target = lookup[np.asarray(cols, dtype=np.intp)]
            keep = target >= 0
            edits.append((target[keep], np.asarray(values, dtype=np.float32)[..., keep]))
        n_cells, n_used = used.shape
        out = np.empty((len(edits), n_cells, len(self.classes_)))
        per_batch = max(1, PERTURBED_BATCH_ELEMENTS // max(1, n_cells * n_used)) if self.scaled else 1
        for start in range(0, len(edits), per_batch):
            chunk = edits[start : start + per_batch]
            stacked = np.repeat(used[None, :, :], len(chunk), axis=0)
            for i, (cols, values) in enumerate(chunk):
                stacked[i][:, cols] = values
            if self.scaled:
                out[start : start + len(chunk)] = self._scores(stacked.reshape(-1, n_used)).reshape(
                    len(chunk), n_cells, -1)
            else:
                out[start] = self._scores(stacked[0])
        return out

    def predict_labels_perturbed(self, block: np.ndarray, perturbations: Sequence[Perturbation]) -> np.ndarray:
        return self._labels(self.predict_proba_perturbed(block, perturbations))

    def __call__(self, X: ExpressionInput, clusters: Sequence[str], target: str) -> tuple[str, float]:
        """`assignment="cell"`: plurality of per-cell argmax labels (adverSCarial); "cluster": summed scores."""
        self._check_assignment()
        if self.assignment == "cell":
            return super().__call__(X, clusters, target)
        expr = as_expression(X)
        mask = as_labels(clusters, expr.n_cells) == str(target)
        if not mask.any():
            return "UNDETERMINED", 1.0
        if self.cell_independent:
            scores = self._predict_proba(self.align(X, rows=mask))
        else:
            scores = self._predict_proba(self.align(X))[mask]
        return _cluster_label(scores, self.classes_), 1.0

    def _check_assignment(self) -> None:
        if self.assignment not in ASSIGNMENTS:
            raise ConfigError(f"sctype: assignment must be one of {', '.join(ASSIGNMENTS)}, got {self.assignment!r}")
