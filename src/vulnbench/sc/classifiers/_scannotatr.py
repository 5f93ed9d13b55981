"""scAnnotatR (Nguyen & Griss 2022) as adverSCarial trained it: one binary linear SVM per cell type.

Per type: marker genes chosen by Wilcoxon tests (one-vs-rest and one-vs-each other type, minimum p per gene,
|mean difference| > 0.5, the 20 most significant), the marker columns z-scored over the training cells, the
majority class down-sampled (caret `sampling = "down"`), a linear C-SVM (C = 1) on re-standardised features
(kernlab `scaled = TRUE`) and Platt-scaled probabilities fitted on decision values of an internal 3-fold CV
(kernlab `prob.model = TRUE`). At prediction every marker gene is z-scored over *all query cells*, so a cell's
probabilities depend on the other cells: `cell_independent = False`, and the cluster call needs the whole data.

`backend="r"` keeps the marker selection and trains the models with the Bioconductor package itself
(`scAnnotatR::train_classifier` per type, parents first, on a SingleCellExperiment with a `logcounts` assay, R seeded),
then scores with `scAnnotatR::classify_cells(classifiers = <the models>)` on the marker genes (the only rows it reads).
The trained R models are kept as R-serialised bytes, so the Python model still pickles.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats
from scipy.special import expit
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import SVC

from vulnbench.core.errors import ConfigError, DataError
from vulnbench.sc import rbridge
from vulnbench.sc.classifiers._rbackend import RBackendMixin
from vulnbench.sc.classifiers.base import PerCellClassifier, Perturbation, plurality
from vulnbench.sc.expression import Expression, ExpressionInput, as_expression, as_labels

log = logging.getLogger(__name__)

#: R side of the `r` backend (SCE input, logcounts assay, models passed as `classifiers = list(...)`)
_R_TRAIN = """function(sce, cell_type, markers, tag, parent_cell, parent_classifier, zscore) {
  if (is.null(parent_cell)) parent_cell <- NA_character_
  scAnnotatR::train_classifier(train_obj = sce, assay = "logcounts", cell_type = cell_type, marker_genes = markers,
    tag_slot = tag, parent_cell = parent_cell, parent_classifier = parent_classifier, zscore = zscore)
}"""
_R_CLASSIFY = """function(sce, models) {
  out <- scAnnotatR::classify_cells(classify_obj = sce, assay = "logcounts", classifiers = models,
    path_to_models = tempdir())
  cd <- SummarizedExperiment::colData(out)
  as.data.frame(cd[, grepl("_p$", colnames(cd)), drop = FALSE], optional = TRUE)
}"""
#: label of a cell no model accepts (scAnnotatR's `predicted_cell_type` / `most_probable_cell_type`)
UNKNOWN = "unknown"
#: Seurat `ScaleData(scale.max = 10)`: the paper chose markers on these values
SEURAT_SCALE_MAX = 10.0
#: cells × genes × labels elements per chunk of the marker search (float64: 64 MB at most per temporary)
CHUNK_ELEMENTS = 1 << 23
#: R's `wilcox.test` computes exact p-values below this group size when there are no ties
EXACT_BELOW = 50


class ScAnnotatR(RBackendMixin, PerCellClassifier):
    """One binary model per type; a cell gets the most probable accepted type, or "unknown".

    `hierarchy` maps a child type to its parent type (scAnnotatR's parent/child models): the parent model is
    trained on the parent's cells and all its descendants' cells, the child model only on cells the parent
    model accepts, and at prediction a child is evaluated only on cells its parent accepted. Parents need not
    be labels of the data (internal nodes such as "T cells"); they are then added to `classes_`.
    """

    name = "scannotatr"
    extra_labels = (UNKNOWN,)
    #: "multilabel": one independent binary model per type, so a row of probabilities need not sum to 1
    capabilities = (PerCellClassifier.capabilities - {"cell_independent"}) | {"unassigned", "multilabel"}
    cell_independent = False  # query-wide z-scoring of the marker genes
    r_packages = ("scAnnotatR", "SingleCellExperiment")

    def __init__(self, n_markers: int = 20, min_mean_diff: float = 0.5, scale_markers: bool = True,
                 threshold: float = 0.5, downsample: bool = True, zscore: bool = True, C: float = 1.0,
                 calibration_folds: int = 3, hierarchy: Mapping[str, str] | None = None, seed: int = 0,
                 backend: str = "native") -> None:
        """Keyword parameters, as a config sets them.

        Args:
            n_markers: marker genes per type's SVM (the most significant Wilcoxon genes)
            min_mean_diff: a marker's |mean log-expression difference| must exceed this
            scale_markers: select markers on Seurat-ScaleData-standardised values (as the paper did)
            threshold: probability at which a type's model accepts a cell (else 'unknown'); also gates children
            downsample: down-sample the majority class before training each type's SVM
            zscore: z-score marker columns (over training cells when fitting, over all query cells at prediction)
            C: cost parameter of each linear C-SVM
            calibration_folds: internal cross-validation folds of the Platt-scaled probabilities
            hierarchy: {child type: parent type}; a child's model only sees cells its parent accepts
            seed: seed of down-sampling and calibration folds (R set.seed for backend r); defaults to the top-level
                seed
            backend: native (Python port) or r: train and score with Bioconductor scAnnotatR through rpy2
        """
        self.n_markers = n_markers
        self.min_mean_diff = min_mean_diff
        self.scale_markers = scale_markers
        self.threshold = threshold
        self.downsample = downsample
        self.zscore = zscore
        self.C = C
        self.calibration_folds = calibration_folds
        self.hierarchy = hierarchy
        self.seed = seed
        self.backend = backend

    # -- fitting ------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if not isinstance(self.n_markers, numbers.Integral) or self.n_markers < 1:
            raise ConfigError(f"scannotatr: n_markers must be a positive integer, got {self.n_markers!r}")
        if not self.min_mean_diff >= 0:
            raise ConfigError(f"scannotatr: min_mean_diff must be ≥ 0, got {self.min_mean_diff!r}")
        if not 0 <= self.threshold <= 1:
            raise ConfigError(f"scannotatr: threshold must be in [0, 1], got {self.threshold!r}")
        if not self.C > 0:
            raise ConfigError(f"scannotatr: C must be positive, got {self.C!r}")
        if not isinstance(self.calibration_folds, numbers.Integral) or self.calibration_folds < 2:
            raise ConfigError(f"scannotatr: calibration_folds must be an integer ≥ 2, got {self.calibration_folds!r}")
        if self.hierarchy is not None and not isinstance(self.hierarchy, Mapping):
            raise ConfigError("scannotatr: hierarchy must map child type → parent type")

    def _vocabulary(self, y: np.ndarray) -> np.ndarray:
        """The labels plus the hierarchy's internal nodes (parents that are no label), alphabetical."""
        self._check_params()
        self._check_backend()
        parents = _check_hierarchy(self.hierarchy or {}, set(np.unique(y)))
        return np.array(sorted(set(np.unique(y)) | set(parents) | set(parents.values())))

    def _fit(self, matrix: np.ndarray, y: np.ndarray) -> None:
        labels = list(pd.unique(y))  # first appearance: the order of the paper's training loop
        parents = _check_hierarchy(self.hierarchy or {}, set(labels))
        index = {t: i for i, t in enumerate(self.classes_)}
        self.parent_index_ = np.array([index[parents[t]] if t in parents else -1 for t in self.classes_])
        self.order_ = np.array([index[t] for t in _parents_first(list(self.classes_), parents)])
        subtree = {t: _subtree_labels(t, parents, labels) for t in self.classes_}

        chosen = select_markers(matrix, y, subtree, self.n_markers, self.min_mean_diff, self.scale_markers)
        self.markers_ = {str(t): list(self.genes_[cols]) for t, cols in chosen.items()}
        union = np.unique(np.concatenate(list(chosen.values())))
        self.marker_cols_ = union
        self.marker_genes_ = pd.Index(self.genes_[union])
        self.model_cols_ = [np.searchsorted(union, chosen[t]) for t in self.classes_]

        if self.backend == "r":
            self._fit_r(matrix, y, subtree)
            return
        n_types = len(self.classes_)
        self.coef_ = np.zeros((len(union), n_types))
        self.intercept_ = np.zeros(n_types)
        self.platt_ = np.zeros((n_types, 2))
        self.train_sizes_: dict[str, tuple[int, int]] = {}
        for k in self.order_:
            t = self.classes_[k]
            cols = chosen[t]
            keep = np.ones(len(y), dtype=bool)
            if self.parent_index_[k] >= 0:  # only cells the parent model accepts (the others: "not applicable")
                keep = self._binary_proba(matrix, self.parent_index_[k]) >= self.threshold
            positive = np.isin(y, subtree[t])
            if (positive & ~keep).any():
                log.warning("scannotatr: %d %s cells are rejected by the %s model and left out of its training",
                            int((positive & ~keep).sum()), t, self.classes_[self.parent_index_[k]])
            x, target = matrix[:, cols][keep].astype(np.float64), positive[keep]
            if not target.any() or target.all():
                raise DataError(f"scannotatr: the {t} model needs cells of both classes, got {int(target.sum())} "
                                f"{t} and {int((~target).sum())} other cells")
            if self.zscore:
                x = zscore_columns(x)
            rng = np.random.default_rng([self.seed, int(k)])
            rows = downsample(target, rng) if self.downsample else np.arange(len(target))
            w, b, platt = fit_binary_svm(x[rows], target[rows], self.C, self.calibration_folds, rng)
            self.coef_[self.model_cols_[k], k] = w
            self.intercept_[k] = b
            self.platt_[k] = platt
            self.train_sizes_[str(t)] = (int(target[rows].sum()), int((~target[rows]).sum()))
        log.info("scannotatr: %d models on %d marker genes (%s)", n_types, len(union),
                 ", ".join(f"{t}: {len(m)}" for t, m in self.markers_.items()))

    def _fit_r(self, matrix: np.ndarray, y: np.ndarray, subtree: Mapping[str, list[str]]) -> None:
        """`scAnnotatR::train_classifier` per type (parents first, each given its parent model), R seeded."""
        import rpy2.rinterface as ri


        tags = {f"tag{k}": np.where(np.isin(y, subtree[self.classes_[k]]), self.classes_[k], "other")
                for k in self.order_}
        sce = rbridge.to_sce(matrix[:, self.marker_cols_], [str(g) for g in self.marker_genes_],
                             [f"cell{i}" for i in range(len(y))], assay="logcounts", coldata=pd.DataFrame(tags))
        train = rbridge.evaluate(_R_TRAIN)
        models: dict[int, object] = {}
        rbridge.set_seed(self.seed)
        for k in self.order_:
            parent = self.parent_index_[k]
            models[k] = rbridge.call_function(
                train, sce, str(self.classes_[k]), list(self.markers_[str(self.classes_[k])]), f"tag{k}",
                str(self.classes_[parent]) if parent >= 0 else None, models[parent] if parent >= 0 else None,
                bool(self.zscore), _raw=True, _label="scAnnotatR::train_classifier")
        listed = ri.ListSexpVector([models[k] for k in self.order_])
        self.r_models_ = rbridge.serialize(listed)

    def _evaluate_r(self, markers: np.ndarray) -> np.ndarray:
        """`classify_cells` on the marker genes of these cells: P(yes) per model (NaN where not evaluated)."""

        sce = rbridge.to_sce(np.asarray(markers, dtype=np.float64), [str(g) for g in self.marker_genes_],
                             [f"cell{i}" for i in range(len(markers))], assay="logcounts")
        result = rbridge.call_function(rbridge.evaluate(_R_CLASSIFY), sce, rbridge.unserialize(self.r_models_),
                                       _label="scAnnotatR::classify_cells")
        frame = result if isinstance(result, pd.DataFrame) else pd.DataFrame(result)
        proba = np.full((len(markers), len(self.classes_)), np.nan)
        for k, label in enumerate(self.classes_):
            column = f"{str(label).replace(' ', '_')}_p"
            if column in frame.columns:
                proba[:, k] = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
        return proba

    def _binary_proba(self, matrix: np.ndarray, k: int) -> np.ndarray:
        """P(yes) of one fitted model on the training cells (z-scored over all of them), for its children."""
        cols = self.model_cols_[k]
        x = matrix[:, self.marker_cols_[cols]].astype(np.float64)
        x = zscore_columns(x) if self.zscore else x
        return platt_proba(x @ self.coef_[cols, k] + self.intercept_[k], *self.platt_[k])

    # -- prediction ---------------------------------------------------------------------------------
    def evaluate(self, markers: np.ndarray) -> np.ndarray:
        """P(yes) per model, cells × `classes_`, from the raw marker columns (cells × `marker_genes_`).

        The markers are z-scored over these cells (the whole query); a child model's probability is NaN
        where its parent did not accept the cell (scAnnotatR leaves those cells unevaluated).
        """
        if getattr(self, "backend", "native") == "r":
            return self._evaluate_r(markers)
        x = np.asarray(markers, dtype=np.float64)
        if self.zscore:
            x = zscore_columns(x)
        proba = platt_proba(x @ self.coef_ + self.intercept_, self.platt_[:, 0], self.platt_[:, 1])
        for k in self.order_:  # parents first, so a parent's NaN propagates to its descendants
            parent = self.parent_index_[k]
            if parent >= 0:
                proba[~(proba[:, parent] >= self.threshold), k] = np.nan
        return proba

    def most_probable(self, proba: np.ndarray) -> np.ndarray:
        """`most_probable_cell_type`: the best root model if it accepts the cell, then down the tree while
        the best child model accepts it; "unknown" when no root model does."""
        p = np.where(np.isnan(proba), -np.inf, proba)
        rows = np.arange(len(p))
        roots = np.flatnonzero(self.parent_index_ < 0)
        best = roots[np.argmax(p[:, roots], axis=1)]
        current = np.where(p[rows, best] >= self.threshold, best, -1)
        for _ in range(len(self.classes_)):  # one level deeper per pass
            moved = False
            for parent in np.unique(self.parent_index_[self.parent_index_ >= 0]):
                here = np.flatnonzero(current == parent)
                if here.size == 0:
                    continue
                children = np.flatnonzero(self.parent_index_ == parent)
                child = children[np.argmax(p[np.ix_(here, children)], axis=1)]
                accept = p[here, child] >= self.threshold
                current[here[accept]] = child[accept]
                moved |= bool(accept.any())
            if not moved:
                break
        out = np.full(len(p), UNKNOWN, dtype=object)
        out[current >= 0] = self.classes_[current[current >= 0]]
        return out.astype(str)

    def predicted_cell_type(self, proba: np.ndarray) -> np.ndarray:
        """`predicted_cell_type`: every accepting model, parents first, joined with "/" ("unknown" if none)."""
        positive = proba >= self.threshold
        names = self.classes_[self.order_]
        return np.array(["/".join(names[row]) or UNKNOWN for row in positive[:, self.order_]], dtype=str)

    def classify_cells(self, X: ExpressionInput) -> pd.DataFrame:
        """scAnnotatR's `classify_cells` metadata: `<type>_p`, `<type>_class`, predicted and most probable type."""
        expr = as_expression(X)
        proba = self.evaluate(self._marker_block(expr))
        table = pd.DataFrame(index=expr.cells)
        for k in self.order_:
            key = str(self.classes_[k]).replace(" ", "_")
            table[f"{key}_p"] = proba[:, k]
            table[f"{key}_class"] = np.where(np.isnan(proba[:, k]), None,
                                             np.where(proba[:, k] >= self.threshold, "yes", "no"))
        table["predicted_cell_type"] = self.predicted_cell_type(proba)
        table["most_probable_cell_type"] = self.most_probable(proba)
        return table

    def _predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        """P(yes) per type with the matrix as the query (unevaluated child models: 0). Rows need not sum to 1."""
        return np.nan_to_num(self.evaluate(matrix[:, self.marker_cols_]), nan=0.0)

    def _predict_labels(self, matrix: np.ndarray) -> np.ndarray:
        return self.most_probable(self.evaluate(matrix[:, self.marker_cols_]))

    def __call__(self, X: ExpressionInput, clusters: Sequence[str], target: str) -> tuple[str, float]:
        """adverSCarial's wrapper: plurality of `most_probable_cell_type` over the target cluster, every cell
        of X taking part in the z-scores; reads only the marker columns (what makes repeated calls cheap)."""
        expr = as_expression(X)
        mask = as_labels(clusters, expr.n_cells) == str(target)
        if not mask.any():
            return "UNDETERMINED", 1.0
        return plurality(self.most_probable(self.evaluate(self._marker_block(expr)))[mask])

    def _marker_block(self, expr: Expression) -> np.ndarray:
        """The marker columns of X, dense; from CSR by one pass over its column indices (no column slicing)."""
        positions = expr.genes.get_indexer(self.marker_genes_)
        present = positions >= 0
        if not present.any():
            raise DataError(f"{self.name}: none of the {len(positions)} marker genes are in the data")
        if not present.all():
            log.warning("%s: %d of %d marker genes missing from the data, set to 0", self.name,
                        int((~present).sum()), len(positions))
        out = np.zeros((expr.n_cells, len(positions)), dtype=np.float32)  # as `align`: same scores as `predict`
        matrix = expr.matrix
        if sp.issparse(matrix):
            lookup = np.full(expr.n_genes, -1, dtype=np.int32)
            lookup[positions[present]] = np.flatnonzero(present)
            column = lookup[matrix.indices]
            hits = np.flatnonzero(column >= 0)
            rows = np.searchsorted(matrix.indptr, hits, side="right") - 1
            np.add.at(out, (rows, column[hits]), matrix.data[hits])  # duplicate entries add up, as in scipy
        else:
            out[:, present] = matrix[:, positions[present]]
        return out

    def predict_proba_perturbed(self, block: np.ndarray, perturbations: Sequence[Perturbation]) -> np.ndarray:
        """Each perturbed copy of `block` scored as a query of its own, i.e. `_predict_proba(modified block)`.

        The attacks do not take this path for a cell-dependent model (the oracle calls `model(X, clusters,
        target)` on the whole dataset); it is exact for what it computes and touches the marker columns only.
        """
        out = np.empty((len(perturbations), block.shape[0], len(self.classes_)))
        for i, markers in enumerate(self._perturbed_markers(block, perturbations)):
            out[i] = np.nan_to_num(self.evaluate(markers), nan=0.0)
        return out

    def predict_labels_perturbed(self, block: np.ndarray, perturbations: Sequence[Perturbation]) -> np.ndarray:
        out = np.empty((len(perturbations), block.shape[0]), dtype=object)
        for i, markers in enumerate(self._perturbed_markers(block, perturbations)):
            out[i] = self.most_probable(self.evaluate(markers))
        return out

    def _perturbed_markers(self, block: np.ndarray, perturbations: Sequence[Perturbation]) -> Iterator[np.ndarray]:
        """The marker columns of each perturbed copy; values pass through the block's dtype, as an assignment."""
        to_marker = np.full(len(self.genes_), -1)
        to_marker[self.marker_cols_] = np.arange(len(self.marker_cols_))
        base = np.asarray(block[:, self.marker_cols_], dtype=np.float64)
        for cols, values in perturbations:
            where = to_marker[np.asarray(cols, dtype=np.intp)]
            keep = where >= 0
            if not keep.any():
                yield base
                continue
            markers = base.copy()
            markers[:, where[keep]] = np.asarray(values, dtype=block.dtype)[..., keep]
            yield markers


# -- training pieces ----------------------------------------------------------------------------------
def zscore_columns(x: np.ndarray) -> np.ndarray:
    """(x − mean) / sd per column, sd over n − 1 as R's `sd`; constant columns (or one cell) become 0."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) == 0:
        return x.copy()
    constant = x.max(axis=0) == x.min(axis=0)
    sd = x.std(axis=0, ddof=1) if len(x) > 1 else np.ones(x.shape[1])
    z = (x - x.mean(axis=0)) / np.where(constant | ~(sd > 0), 1.0, sd)
    z[:, constant] = 0.0
    return z


def downsample(target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row indices of a balanced subset, as caret's `downSample`: each class drawn without replacement down to
    the minority size (the minority class is kept whole); positives first, as caret orders by factor level."""
    positive, negative = np.flatnonzero(target), np.flatnonzero(~np.asarray(target, dtype=bool))
    size = min(positive.size, negative.size)
    return np.concatenate([rng.choice(positive, size, replace=False), rng.choice(negative, size, replace=False)])


def fit_binary_svm(x: np.ndarray, target: np.ndarray, C: float, folds: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, float, tuple[float, float]]:
    """kernlab `ksvm(kernel = "vanilladot", C, prob.model = TRUE)` folded into one linear function.

    Returns weights and intercept on the (z-scored) input scale, and Platt's (A, B): P(yes) = 1 / (1 + exp(A f + B)).
    ksvm re-standardises the features (`scaled = TRUE`; off for all columns if any is constant) and fits
    Platt's sigmoid on decision values from an internal CV while the returned SVM uses all rows — which is
    `SVC(kernel="linear")` (libsvm: hinge loss, unpenalised bias) plus our CV, not `CalibratedClassifierCV`'s
    default ensemble of fold models nor `SVC(probability=True)`'s fixed 5 folds.
    """
    y = np.asarray(target, dtype=int)
    mean = x.mean(axis=0)
    scale = x.std(axis=0, ddof=1) if len(x) > 1 else np.zeros(x.shape[1])
    if not (scale > 0).all():
        mean, scale = np.zeros(x.shape[1]), np.ones(x.shape[1])
    xs = (x - mean) / scale
    svm = _svc(C).fit(xs, y)
    minority = int(min(y.sum(), (1 - y).sum()))
    n_splits = min(folds, minority)
    if n_splits >= 2:
        decision = np.empty(len(y))
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=int(rng.integers(2**31)))
        for train, test in splitter.split(xs, y):
            decision[test] = _svc(C).fit(xs[train], y[train]).decision_function(xs[test])
    else:  # a single cell of one class: no CV possible, calibrate on the training decision values
        log.warning("scannotatr: %d cell(s) in the smaller class, Platt scaling fitted without CV", minority)
        decision = svm.decision_function(xs)
    w = svm.coef_.ravel() / scale
    b = float(svm.intercept_[0] - w @ mean)
    return w, b, fit_platt(decision, y.astype(bool))


def _svc(C: float) -> SVC:
    return SVC(kernel="linear", C=C, tol=1e-3, shrinking=True, cache_size=40)


def fit_platt(decision: np.ndarray, target: np.ndarray, max_iter: int = 100) -> tuple[float, float]:
    """Platt's sigmoid by the Newton method with backtracking of Lin, Lin & Weng (2007), as libsvm/kernlab.

    Targets are Platt's smoothed labels ((N+ + 1)/(N+ + 2) and 1/(N- + 2)), which keeps A finite on separable data.
    """
    f = np.asarray(decision, dtype=np.float64)
    n_pos = float(np.sum(target))
    n_neg = float(len(f) - n_pos)
    t = np.where(target, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(a: float, b: float) -> float:
        z = f * a + b
        return float(np.sum(np.logaddexp(0.0, z) - (1 - t) * z))

    a, b = 0.0, float(np.log((n_neg + 1) / (n_pos + 1)))
    value = loss(a, b)
    for _ in range(max_iter):
        p = expit(-(f * a + b))  # P(yes)
        d2 = p * (1 - p)
        h11, h22, h21 = 1e-12 + np.sum(f * f * d2), 1e-12 + np.sum(d2), np.sum(f * d2)
        d1 = t - p
        g1, g2 = np.sum(f * d1), np.sum(d1)
        if abs(g1) < 1e-5 and abs(g2) < 1e-5:
            break
        det = h11 * h22 - h21 * h21
        da, db = -(h22 * g1 - h21 * g2) / det, -(-h21 * g1 + h11 * g2) / det
        slope = g1 * da + g2 * db
        step = 1.0
        while step >= 1e-10:
            new = loss(a + step * da, b + step * db)
            if new < value + 1e-4 * step * slope:
                a, b, value = a + step * da, b + step * db, new
                break
            step /= 2
        else:
            log.debug("scannotatr: Platt line search failed, keeping A=%g B=%g", a, b)
            break
    return a, b


def platt_proba(decision: np.ndarray, a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    return expit(-(decision * a + b))


# -- marker selection (the adverSCarial notebooks' procedure) -----------------------------------------
def select_markers(matrix: np.ndarray, y: np.ndarray, groups: Mapping[str, Sequence[str]], n_markers: int,
                   min_mean_diff: float, scale: bool = True) -> dict[str, np.ndarray]:
    """Marker columns per model: the `n_markers` most significant genes with |mean difference| > min_mean_diff.

    For model t (cells whose label is in `groups[t]`) each gene gets the smallest two-sided Wilcoxon p over
    t-vs-rest and t-vs-each other label (labels in order of first appearance; a later comparison replaces the
    kept one only when strictly smaller) and the mean difference of that comparison; genes are ranked by p
    (ties: data order). p follows R's `wilcox.test`: normal approximation with continuity and tie correction,
    exact when both groups have < 50 cells and there are no ties. With `scale`, genes are first standardised
    as Seurat's `ScaleData` (the paper selected markers on `scale.data`). All comparisons come from one
    sort per gene (`RankTable`); genes whose |mean difference| is ≤ the threshold in every comparison are never tested.
    """
    labels = list(pd.unique(y))
    code = pd.Index(labels).get_indexer(y)
    n_cells, n_genes = matrix.shape
    onehot = np.zeros((n_cells, len(labels)))
    onehot[np.arange(n_cells), code] = 1.0
    counts = onehot.sum(axis=0)

    # one comparison = (codes in A, codes in B); t-vs-rest first, then t-vs-each label outside the group
    plans: dict[str, list[tuple[tuple[int, ...], tuple[int, ...]]]] = {}
    for t, members in groups.items():
        inside = tuple(sorted(labels.index(m) for m in members))
        outside = tuple(i for i in range(len(labels)) if i not in inside)
        plans[t] = [(inside, outside)] + [(inside, (o,)) for o in outside]
    distinct = {_pair_key(a, b): (a, b) for plan in plans.values() for a, b in plan}
    logp = {key: np.zeros(n_genes) for key in distinct}
    diff = {(a, b): np.zeros(n_genes) for plan in plans.values() for a, b in plan}

    step = max(1, CHUNK_ELEMENTS // (n_cells * len(labels)))
    for start in range(0, n_genes, step):
        chunk = slice(start, min(start + step, n_genes))
        x = np.asarray(matrix[:, chunk], dtype=np.float64)
        if scale:
            x = np.minimum(zscore_columns(x), SEURAT_SCALE_MAX)
        sums = onehot.T @ x
        needed = np.zeros(x.shape[1], dtype=bool)
        for a, b in diff:
            d = sums[list(a)].sum(0) / counts[list(a)].sum() - sums[list(b)].sum(0) / counts[list(b)].sum()
            diff[(a, b)][chunk] = d
            needed |= np.abs(d) > min_mean_diff
        if not needed.any():
            continue
        genes = np.flatnonzero(needed)
        tested = x[:, genes]
        order = np.argsort(tested, axis=0, kind="stable")
        values = np.ascontiguousarray(np.take_along_axis(tested, order, axis=0).T)  # genes × cells, sorted
        table = RankTable(values, np.ascontiguousarray(code[order].T), len(labels))
        for key, (a, b) in distinct.items():
            logp[key][start + genes] = table.logp(a, b, counts)

    chosen: dict[str, np.ndarray] = {}
    for t, plan in plans.items():
        best = logp[_pair_key(*plan[0])].copy()
        best_diff = diff[plan[0]].copy()
        for a, b in plan[1:]:
            lower = logp[_pair_key(a, b)] < best
            best[lower] = logp[_pair_key(a, b)][lower]
            best_diff[lower] = diff[(a, b)][lower]
        candidates = np.flatnonzero(np.abs(best_diff) > min_mean_diff)
        if candidates.size == 0:
            raise DataError(f"scannotatr: no gene separates {t} with |mean difference| > {min_mean_diff}")
        chosen[t] = np.sort(candidates[np.argsort(best[candidates], kind="stable")][:n_markers])
    return chosen


def _pair_key(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A two-sided test is symmetric: (A, B) and (B, A) share one p-value."""
    return (a, b) if a <= b else (b, a)


class RankTable:
    """Mann–Whitney U of every label against every other label, per gene, from one sort per gene.

    U[g, a, b] = #{(i in a, j in b): x_i > x_j} + ½ #{ties}; it is additive over labels, so the U of any two
    disjoint unions of labels (t-vs-rest, internal tree nodes) is a sum of entries. Only runs of tied values
    longer than one are kept for the tie corrections.
    """

    def __init__(self, values: np.ndarray, codes: np.ndarray, n_labels: int) -> None:
        self.values, self.codes, self.n_labels = values, codes, n_labels  # genes × cells, sorted per gene
        n_genes, n_cells = values.shape
        new_run = np.ones(values.shape, dtype=bool)
        new_run[:, 1:] = values[:, 1:] != values[:, :-1]
        flat = new_run.ravel()
        run = np.cumsum(flat) - 1
        starts = np.flatnonzero(flat)
        first = np.flatnonzero(starts % n_cells == 0)  # each gene's first run
        count = np.bincount(run * n_labels + codes.ravel(), minlength=len(starts) * n_labels)
        count = count.reshape(len(starts), n_labels).astype(np.float64)  # cells of each label per run
        below = np.cumsum(count, axis=0) - count
        below -= np.repeat(below[first], np.diff(np.append(first, len(starts))), axis=0)  # within the gene
        half_rank = below + count / 2  # per run: label-b cells below it, ties counting ½
        self.u = np.empty((n_genes, n_labels, n_labels))
        for a in range(n_labels):
            self.u[:, a, :] = np.add.reduceat(count[:, a, None] * half_rank, first, axis=0)
        tied = count.sum(axis=1) > 1
        self.tied_count, self.tied_gene = count[tied], (starts[tied] // n_cells)

    def logp(self, a: tuple[int, ...], b: tuple[int, ...], sizes: np.ndarray) -> np.ndarray:
        """log p of R's two-sided `wilcox.test(x[A], x[B])` per gene (normal approximation with continuity
        and tie corrections; exact when both groups have < 50 cells and a gene has no ties)."""
        n_genes = self.u.shape[0]
        n_a, n_b = float(sizes[list(a)].sum()), float(sizes[list(b)].sum())
        n = n_a + n_b
        u = self.u[:, list(a)][:, :, list(b)].sum(axis=(1, 2))
        t = self.tied_count[:, list(a) + list(b)].sum(axis=1)
        ties = np.bincount(self.tied_gene, weights=t**3 - t, minlength=n_genes)
        sigma = np.sqrt(n_a * n_b / 12 * ((n + 1) - ties / (n * (n - 1))))
        centred = u - n_a * n_b / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (centred - 0.5 * np.sign(centred)) / sigma
        out = np.minimum(0.0, np.log(2) + stats.norm.logcdf(-np.abs(z)))
        out[~(sigma > 0)] = 0.0  # every value tied: no evidence (R: NaN)
        if n_a < EXACT_BELOW and n_b < EXACT_BELOW:
            exact = np.flatnonzero(ties == 0)
            if exact.size:
                out[exact] = np.log(self._exact_p(exact, a, b))
        return out

    def _exact_p(self, genes: np.ndarray, a: tuple[int, ...], b: tuple[int, ...]) -> np.ndarray:
        side = np.zeros(self.n_labels, dtype=np.int8)
        side[list(a)], side[list(b)] = 1, 2
        member, values = side[self.codes[genes]], self.values[genes]
        sample_a = values[member == 1].reshape(len(genes), -1)
        sample_b = values[member == 2].reshape(len(genes), -1)
        return np.minimum(1.0, stats.mannwhitneyu(sample_a, sample_b, axis=1, method="exact").pvalue)


# -- hierarchy ----------------------------------------------------------------------------------------
def _check_hierarchy(hierarchy: Mapping[str, str], labels: set[str]) -> dict[str, str]:
    parents = {str(child): str(parent) for child, parent in hierarchy.items()}
    for child, parent in parents.items():
        if child == parent:
            raise ConfigError(f"scannotatr: hierarchy makes {child!r} its own parent")
        seen = {child}
        while parent in parents:
            if parent in seen:
                raise ConfigError(f"scannotatr: hierarchy has a cycle through {parent!r}")
            seen.add(parent)
            parent = parents[parent]
    for node in set(parents) | set(parents.values()):
        if not _subtree_labels(node, parents, labels):
            raise ConfigError(f"scannotatr: hierarchy type {node!r} has no training cells (nor descendants with any)")
    return parents


def _subtree_labels(node: str, parents: Mapping[str, str], labels: Sequence[str] | set[str]) -> list[str]:
    """Labels at or below `node`: the cells a model for `node` calls "yes" (in the labels' order)."""
    out = []
    for label in labels:
        current: str | None = label
        while current is not None and current != node:
            current = parents.get(current)
        if current == node:
            out.append(label)
    return out


def _parents_first(nodes: list[str], parents: Mapping[str, str]) -> list[str]:
    depth = {}
    for node in nodes:
        d, current = 0, node
        while current in parents:
            d, current = d + 1, parents[current]
        depth[node] = d
    return sorted(nodes, key=lambda n: (depth[n], nodes.index(n)))
