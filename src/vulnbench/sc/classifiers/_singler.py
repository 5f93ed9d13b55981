"""SingleR (Aran et al., Nat Immunol 2019): Spearman correlation to a labelled reference, quantile scores, fine-tuning.

Written from the published method (no upstream code). Two backends give the same outputs:

* ``backend="native"``: a NumPy port. Fit: per-label median profiles M_l; for every ordered label pair (a, b) the
  markers are the top N genes by M_a − M_b (only positive differences, ties to the lower gene index),
  N = `de_n` or round(500 · (2/3)^log2(L)); the feature set F is the union of all markers. Predict: Spearman
  correlation of the cell with every reference cell of a label on F (scaled ranks, ρ = 1 − 2‖a − b‖²), the
  label's score is the `quantile` (type 7) of those correlations; fine-tuning then re-scores only the labels
  within `tune_thresh` of the best, on the markers between them, until the kept set stops shrinking.
* ``backend="r"``: R's `SingleR::SingleR(test, ref, labels, ...)` through `vulnbench.sc.rbridge`, on the same
  reference (the training cells) and test cells, both handed over as genes × cells log-expression matrices;
  R objects are rebuilt on every call, so the fitted model pickles. Needs R with SingleR
  (`apt-get install r-bioc-singler`; scran too for `de_method` "wilcox" / "t").

Outputs. `predict_proba` returns SingleR's `scores` (the initial per-label quantile scores, before fine-tuning;
correlations, not probabilities: rows do not sum to 1). `predict` returns SingleR's `labels` (after fine-tuning),
which is what attacks see. Pruning (`prune`) only adds `pruned_labels` to `annotate()`, exactly as R's
`pruned.labels` column: a pruned cell gets "NA" (adverSCarial's non-label) there. Pruning thresholds are
medians/MADs over the *query* cells, so pruned labels depend on which cells are classified together; the
per-cell `labels` do not, which is why `predict` (and `cell_independent = True`) use them.

Parity: on synthetic data and on CHETAH's head-and-neck example (7,943 genes, 180 reference cells, 9 types) the
native port reproduces R SingleR 2.0.0's labels, pruned labels and classic markers exactly, scores and delta.next to
~1e-14 (initial scores use SingleR's k-nearest-neighbour interpolation of the quantile, fine-tuning its direct one).

Labels are sorted in C (byte) order, as `classes_`; the R backend runs SingleR under `LC_COLLATE=C` so that
score columns and tie-breaking (first maximum) use the same order.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from vulnbench.core.errors import ConfigError
from vulnbench.sc import rbridge
from vulnbench.sc.classifiers._rbackend import RBackendMixin
from vulnbench.sc.classifiers.base import PerCellClassifier, Perturbation
from vulnbench.sc.expression import ExpressionInput, as_expression

log = logging.getLogger(__name__)

DE_METHODS = ("classic", "wilcox", "t")
#: label of a pruned cell in `annotate()["pruned_labels"]` (R's NA; adverSCarial's non-label)
PRUNED = "NA"
#: correlations held at once while scoring (float64 → 32 MB)
CHUNK_ELEMENTS = 1 << 22
#: squared-norm floor of a scaled-rank vector (a constant cell keeps all-zero scaled ranks)
NORM_FLOOR = 1e-8
#: delta.next when a round has a single label (R's sentinel)
NO_NEXT = -1000.0


class SingleR(RBackendMixin, PerCellClassifier):
    """SingleR with the training cells as reference (no aggregation: `aggr.ref = FALSE`, R's default)."""

    name = "singler"
    capabilities = PerCellClassifier.capabilities | {"reference_based", "correlation_scores"}
    r_packages = ("SingleR",)
    cell_independent = True  # `labels` and `scores` of a cell only involve that cell and the fixed reference

    def __init__(self, backend: str = "native", de_method: str = "classic", de_n: int | None = None,
                 quantile: float = 0.8, fine_tune: bool = True, tune_thresh: float = 0.05, prune: bool = True,
                 seed: int = 0) -> None:
        """Keyword parameters, as a config sets them.

        Args:
            backend: native (NumPy port, classic markers only) or r: Bioconductor SingleR through rpy2
            de_method: marker selection per label pair: classic (median difference); wilcox and t need backend r +
                scran
            de_n: marker genes per ordered label pair; null: round(500·(2/3)^log2(number of labels))
            quantile: quantile of a cell's correlations with a label's reference cells used as that label's score
            fine_tune: iteratively re-score the top labels on the markers between them only
            tune_thresh: fine-tuning keeps labels whose score is within this of the best (correlation units)
            prune: also compute pruned labels ('NA' for low-confidence cells); attacks use the unpruned labels
            seed: R set.seed before SingleR (backend r; unused by native); defaults to the top-level seed
        """
        self.backend = backend
        self.de_method = de_method
        self.de_n = de_n
        self.quantile = quantile
        self.fine_tune = fine_tune
        self.tune_thresh = tune_thresh
        self.prune = prune
        self.seed = seed

    # -- fitting ------------------------------------------------------------------------------------
    def required_r_packages(self) -> tuple[str, ...]:
        return self.r_packages + (("scran",) if self.de_method != "classic" else ())

    def _check_params(self) -> None:
        if self.de_method not in DE_METHODS:
            raise ConfigError(f"singler: unknown de_method {self.de_method!r} (choose from {', '.join(DE_METHODS)})")
        if self.backend == "native" and self.de_method != "classic":
            raise ConfigError(f"singler: the native backend implements de_method='classic' only; use backend='r' "
                              f"for {self.de_method!r} (needs R package scran)")
        if self.de_n is not None and int(self.de_n) < 1:
            raise ConfigError(f"singler: de_n must be ≥ 1 or None, got {self.de_n}")
        if not 0.0 <= float(self.quantile) <= 1.0:
            raise ConfigError(f"singler: quantile must be in [0, 1], got {self.quantile}")
        if float(self.tune_thresh) < 0:
            raise ConfigError(f"singler: tune_thresh must be ≥ 0, got {self.tune_thresh}")

    def _fit(self, matrix: np.ndarray, y: np.ndarray) -> None:
        self._check_params()
        codes = np.searchsorted(self.classes_, y)
        self._check_backend()
        self.__dict__.pop("_r_reference_cache", None)
        if self.backend == "r":
            self.reference_ = np.asarray(matrix, dtype=np.float32)
            self.reference_labels_ = np.asarray(y, dtype=str)
            return
        n_labels = len(self.classes_)
        medians = np.vstack([np.median(matrix[codes == k].astype(np.float64), axis=0) for k in range(n_labels)])
        self.n_markers_ = _default_n_markers(n_labels) if self.de_n is None else int(self.de_n)
        pair_markers = _classic_markers(medians, min(self.n_markers_, matrix.shape[1]))
        self.features_ = np.unique(np.concatenate([m for row in pair_markers for m in row] + [np.empty(0, int)]))
        position = np.full(matrix.shape[1], -1)
        position[self.features_] = np.arange(self.features_.size)
        # markers[a][b] as positions within features_ (what fine-tuning subsets), in selection order
        self.markers_ = [[position[m] for m in row] for row in pair_markers]
        self.ref_codes_ = codes
        self.ref_values_ = np.ascontiguousarray(matrix[:, self.features_], dtype=np.float32)
        self.ref_scaled_ = _scaled_ranks(self.ref_values_)
        log.info("singler: %d labels, %d markers per pair, %d feature genes, %d reference cells", n_labels,
                 self.n_markers_, self.features_.size, len(codes))

    def marker_genes(self) -> dict[str, dict[str, list[str]]]:
        """The native backend's classic markers by name: `[a][b]` = genes up in a versus b (R's `de.genes`)."""
        if self.backend != "native":
            raise ConfigError("singler: marker_genes() is computed by the native backend only (R keeps its own)")
        names = np.asarray(self.genes_)[self.features_]
        return {a: {b: names[self.markers_[i][j]].tolist() for j, b in enumerate(self.classes_)}
                for i, a in enumerate(self.classes_)}

    # -- prediction ---------------------------------------------------------------------------------
    def _predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        if self.backend == "r":
            return self._run_r(matrix)["scores"]
        return self._run_native(matrix, tune=False)["scores"]

    def _predict_labels(self, matrix: np.ndarray) -> np.ndarray:
        if self.backend == "r":
            return self._run_r(matrix)["labels"]
        return self.classes_[self._run_native(matrix, tune=bool(self.fine_tune))["best"]]

    def annotate(self, X: ExpressionInput) -> pd.DataFrame:
        """SingleR's full result per cell: `labels`, `pruned_labels` ("NA" when pruned), `delta_next`, and
        `scores.<label>` columns (initial scores). Pruning looks at all cells of X together, as in R."""

        cells = as_expression(X).cells
        matrix = self.align(X)
        if self.backend == "r":
            result = self._run_r(matrix)
            labels, delta, scores = result["labels"], result["delta_next"], result["scores"]
            pruned = result["pruned_labels"]
        else:
            result = self._run_native(matrix, tune=bool(self.fine_tune))
            labels, delta, scores = self.classes_[result["best"]], result["delta"], result["scores"]
            pruned = np.where(_pruned(scores, result["best"], delta), PRUNED, labels) if self.prune else labels
        frame = pd.DataFrame({"labels": labels, "pruned_labels": pruned, "delta_next": delta}, index=cells)
        for k, label in enumerate(self.classes_):
            frame[f"scores.{label}"] = scores[:, k]
        return frame

    # -- native backend -----------------------------------------------------------------------------
    def predict_proba_perturbed(self, block: np.ndarray, perturbations: Sequence[Perturbation]) -> np.ndarray:
        if self.backend == "r":
            return super().predict_proba_perturbed(block, perturbations)
        return self._native_perturbed(block, perturbations, labels=False)

    def predict_labels_perturbed(self, block: np.ndarray, perturbations: Sequence[Perturbation]) -> np.ndarray:
        if self.backend == "r":  # every perturbation goes to R: one R call per stacked batch
            return super().predict_labels_perturbed(block, perturbations)
        return self._native_perturbed(block, perturbations, labels=True)

    def _native_perturbed(self, block: np.ndarray, perturbations: Sequence[Perturbation],
                          labels: bool) -> np.ndarray:
        """Only the feature genes matter to SingleR: stack copies of the feature columns alone, and answer
        perturbations that touch no feature gene with the unperturbed result."""
        tune = labels and bool(self.fine_tune)

        def run(matrix: np.ndarray) -> np.ndarray:
            result = self._run_native(matrix, tune=tune, on_features=True)
            return self.classes_[result["best"]] if labels else result["scores"]

        position = np.full(len(self.genes_), -1)
        position[self.features_] = np.arange(self.features_.size)
        sub = np.ascontiguousarray(block[:, self.features_])
        mapped, touched = [], []
        for i, (cols, values) in enumerate(perturbations):
            pos = position[np.asarray(cols, dtype=np.intp)]
            keep = pos >= 0
            if keep.any():
                values = np.asarray(values)
                mapped.append((pos[keep], values[:, keep] if values.ndim == 2 else values[keep]))
                touched.append(i)
        out = np.repeat(run(sub)[None], len(perturbations), axis=0)
        if mapped:
            width = None if labels else len(self.classes_)
            out[touched] = self._map_perturbed(sub, mapped, run, width, out.dtype)
        return out

    def _run_native(self, matrix: np.ndarray, tune: bool, on_features: bool = False) -> dict[str, np.ndarray]:
        """Initial scores, best label index and delta.next, in row chunks of bounded memory.

        `matrix` holds all model genes, or only the feature genes (in `features_` order) when `on_features`.
        """
        n_cells = matrix.shape[0]
        scores = np.empty((n_cells, len(self.classes_)))
        best = np.empty(n_cells, dtype=np.intp)
        delta = np.empty(n_cells)
        step = max(1, CHUNK_ELEMENTS // max(1, len(self.ref_codes_), self.features_.size))
        cache: dict[bytes, list[np.ndarray]] = {}
        for start in range(0, n_cells, step):
            rows = slice(start, min(start + step, n_cells))
            values = np.asarray(matrix[rows] if on_features else matrix[rows][:, self.features_], dtype=np.float32)
            scores[rows] = self._initial_scores(_scaled_ranks(values))
            if tune:
                best[rows], delta[rows] = self._fine_tune(values, scores[rows], cache)
            else:
                best[rows], delta[rows] = _best_and_delta(scores[rows])
        return {"scores": scores, "best": best, "delta": delta}

    def _initial_scores(self, scaled: np.ndarray) -> np.ndarray:
        """Per label: the `quantile` of the correlations with that label's reference cells on all features."""
        out = np.empty((scaled.shape[0], len(self.classes_)))
        for k in range(len(self.classes_)):
            rho = _correlations(scaled, self.ref_scaled_[self.ref_codes_ == k])
            out[:, k] = _top_quantile(rho, float(self.quantile))
        return out

    def _fine_tune(self, values: np.ndarray, scores: np.ndarray,
                   cache: dict[bytes, list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """SingleR's fine-tuning, for many cells at once: cells sharing a kept-label set are re-scored together."""
        n_labels = scores.shape[1]
        thresh = float(self.tune_thresh)
        best, delta = _best_and_delta(scores)
        in_use = scores >= (scores.max(axis=1) - thresh)[:, None]
        size = in_use.sum(axis=1)
        # one label left, or all labels kept (re-scoring on all markers changes nothing): keep the initial call
        active = (size > 1) & (size < n_labels)
        while active.any():
            rows = np.flatnonzero(active)
            masks, group = np.unique(in_use[rows], axis=0, return_inverse=True)
            for g, mask in enumerate(masks):
                sel = rows[group.ravel() == g]
                labels = np.flatnonzero(mask)
                genes = np.unique(np.concatenate([self.markers_[a][b] for a in labels for b in labels]))
                refs = self._tuning_reference(labels, genes, cache)
                test = _scaled_ranks(values[np.ix_(sel, genes)])
                new = np.column_stack([_quantile(_correlations(test, ref), float(self.quantile)) for ref in refs])
                round_best, round_delta = _best_and_delta(new)
                best[sel], delta[sel] = labels[round_best], round_delta
                keep = new >= (new.max(axis=1) - thresh)[:, None]
                kept = keep.sum(axis=1)
                in_use[sel] = False
                in_use[np.ix_(sel, labels)] = keep
                active[sel] = (kept < labels.size) & (kept > 1)  # stop when unchanged or a single label is left
        return best, delta

    def _tuning_reference(self, labels: np.ndarray, genes: np.ndarray,
                          cache: dict[bytes, list[np.ndarray]]) -> list[np.ndarray]:
        """Scaled ranks of each kept label's reference cells re-ranked on the fine-tuning genes (cached per call)."""
        key = labels.tobytes() + b"|" + genes.tobytes()
        if key not in cache:
            sub = self.ref_values_[:, genes]
            cache[key] = [_scaled_ranks(sub[self.ref_codes_ == k]) for k in labels]
        return cache[key]

    # -- R backend ----------------------------------------------------------------------------------
    def _r_reference(self) -> Any:
        """The reference as an R matrix, built once per model object (not pickled: R objects live in this process)."""

        cached = self.__dict__.get("_r_reference_cache")
        if cached is None:
            cached = rbridge.r_matrix(np.asarray(self.reference_, dtype=np.float64).T, [str(g) for g in self.genes_],
                                      [f"ref{i}" for i in range(self.reference_.shape[0])])
            self.__dict__["_r_reference_cache"] = cached
        return cached

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_r_reference_cache"}

    def _run_r(self, matrix: np.ndarray) -> dict[str, np.ndarray]:
        """One `SingleR::SingleR` call on the stored reference and these cells; numpy results only."""

        self._check_backend()
        genes = [str(g) for g in self.genes_]
        # plain genes × cells matrices (SingleR reads them as log-expression): building two SingleCellExperiments
        # (`rbridge.to_sce`) would add ~0.2 s to every call without changing the result
        test = rbridge.r_matrix(np.asarray(matrix, dtype=np.float64).T, genes,
                                [f"cell{i}" for i in range(matrix.shape[0])])
        ref = self._r_reference()
        collation = rbridge.call_r("Sys.getlocale", "LC_COLLATE")[0]
        rbridge.call_r("Sys.setlocale", "LC_COLLATE", "C")
        try:
            result = rbridge.call_r(
                "SingleR::SingleR", test, ref, self.reference_labels_, _raw=True, _seed=self.seed,
                **{"de.method": self.de_method, "de.n": None if self.de_n is None else int(self.de_n),
                   "quantile": float(self.quantile), "fine.tune": bool(self.fine_tune),
                   "tune.thresh": float(self.tune_thresh), "prune": bool(self.prune)},
            )
        finally:
            rbridge.call_r("Sys.setlocale", "LC_COLLATE", collation)
        columns = rbridge.dframe_columns(result)
        scores = columns["scores"]
        labels = np.asarray(columns["labels"], dtype=object).astype(str)
        pruned = columns.get("pruned.labels")
        pruned = labels if pruned is None else np.array([PRUNED if p is None else str(p) for p in pruned])
        return {"scores": scores[list(self.classes_)].to_numpy(dtype=np.float64), "labels": labels,
                "pruned_labels": pruned, "delta_next": np.asarray(columns["delta.next"], dtype=np.float64)}


# -- helpers (module level: pickled models hold no functions or R objects) ----------------------------
def _default_n_markers(n_labels: int) -> int:
    """round(500 · (2/3)^log2(L)), rounding halves away from zero as C++ `std::round`."""
    return math.floor(500.0 * (2.0 / 3.0) ** (math.log(n_labels) / math.log(2.0)) + 0.5)


def _classic_markers(medians: np.ndarray, n: int) -> list[list[np.ndarray]]:
    """markers[a][b]: the n genes with the largest M_a − M_b, kept only while positive; ties → lower gene."""
    n_labels, n_genes = medians.shape
    order_index = np.arange(n_genes)
    out = [[np.empty(0, dtype=np.intp) for _ in range(n_labels)] for _ in range(n_labels)]
    for a in range(n_labels):
        for b in range(n_labels):
            if a == b:
                continue
            diff = medians[a] - medians[b]
            top = np.lexsort((order_index, -diff))[:n]
            out[a][b] = top[diff[top] > 0].astype(np.intp)
    return out


def _scaled_ranks(values: np.ndarray) -> np.ndarray:
    """Per row: average ranks (ties share their mean rank), centred, scaled to norm 1/2 (all-zero if constant)."""
    values = np.asarray(values)
    n_rows, n = values.shape
    if n == 0:
        return np.zeros((n_rows, 0))
    order = np.argsort(values, axis=1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=1)
    starts = np.ones((n_rows, n), dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = np.ones((n_rows, n), dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    position = np.arange(n)
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, position, n - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty((n_rows, n))
    np.put_along_axis(ranks, order, (first + last) / 2.0 - (n - 1) / 2.0, axis=1)
    norm = 2.0 * np.sqrt(np.maximum((ranks * ranks).sum(axis=1), NORM_FLOOR))
    return ranks / norm[:, None]


def _correlations(test: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Spearman ρ = 1 − 2‖a − b‖² between scaled-rank rows (cells × reference cells)."""
    squared = (test * test).sum(axis=1)[:, None] + (ref * ref).sum(axis=1)[None, :] - 2.0 * (test @ ref.T)
    return 1.0 - 2.0 * np.maximum(squared, 0.0)


def _quantile(rho: np.ndarray, q: float) -> np.ndarray:
    """Type-7 quantile per row, interpolated as SingleR's fine-tuning does (left/right order statistics)."""
    n = rho.shape[1]
    if n == 1 or q == 1.0:
        return rho.max(axis=1)
    prod = (n - 1) * q
    left, right = math.floor(prod), math.ceil(prod)
    part = np.partition(rho, sorted({left, right}), axis=1)
    if left == right:
        return part[:, right]
    return part[:, right] * (prod - left) + part[:, left] * (right - prod)


def _top_quantile(rho: np.ndarray, q: float) -> np.ndarray:
    """The same quantile as SingleR's initial scores compute it: from the k nearest reference cells,
    k = ceil((n − 1)(1 − q)) + 1, interpolating between the k-th and (k−1)-th largest correlations."""
    n = rho.shape[1]
    prod = (n - 1) * (1.0 - q)
    k = math.ceil(prod) + 1
    if k <= 1:
        return rho.max(axis=1)
    k = min(k, n)
    # the k largest, descending: ascending positions n − k (k-th largest) and n − k + 1 ((k−1)-th largest)
    part = np.partition(rho, [n - k, n - k + 1], axis=1)
    last, nxt = part[:, n - k], part[:, n - k + 1]
    return ((k - 1) - prod) * nxt + (prod - (k - 2)) * last


def _best_and_delta(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First maximum and its margin over the next best (R's −1000 sentinel when there is no other label)."""
    best = np.argmax(scores, axis=1)
    if scores.shape[1] < 2:
        return best, np.full(scores.shape[0], NO_NEXT)
    top_two = np.partition(scores, scores.shape[1] - 2, axis=1)[:, -2:]
    return best, top_two[:, 1] - top_two[:, 0]


def _pruned(scores: np.ndarray, best: np.ndarray, delta_next: np.ndarray, nmads: float = 3.0) -> np.ndarray:
    """R's `pruneScores` defaults: delta from the row median below median − nmads·MAD of its label, or
    delta.next < 0. Thresholds come from the cells passing the delta.next test, per assigned label."""
    delta_med = scores[np.arange(len(best)), best] - np.median(scores, axis=1)
    keep = delta_next >= 0
    for label in np.unique(best[keep]):
        idx = np.flatnonzero(keep & (best == label))
        current = delta_med[idx]
        centre = np.median(current)
        mad = 1.4826 * np.median(np.abs(current - centre))
        keep[idx] &= current >= centre - nmads * mad
    return ~keep
