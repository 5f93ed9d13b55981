"""CHETAH (de Kanter et al., NAR 2019): hierarchical correlation to reference profiles with a confidence stop rule.

Written from the published method (no upstream code). With the defaults (fc gene selection, fixed 200 genes,
Spearman, average linkage) it reproduces the stored result of the package example: all labels, and every per-node
correlation, profile score and confidence score to ~1e-15.

Outline. Profiles R_t = mean reference expression of type t. The types are split recursively (depth-first, pre-order;
root = Node0) by average-linkage clustering on 1 − |Spearman(R_a, R_b)| cut into two groups; branch 1 is the group
holding the first type. At each node every type t gets its own genes G_t (largest |R_t − mean of the other branch's
profiles|) and a profile score PS_t(x) = F_t(c) − (1 − F_ob(c)) of the cell's correlation c with R_t on G_t, where F_t
and F_ob are the empirical CDFs of the same correlation over the reference cells of t and of the other branch. The
confidence CS_t = PS_t − mean PS of the other branch. A cell goes to the node's argmax-PS type while CS ≥ `thresh`,
else it stops: "Unassigned" at the root, "Node{k}" at internal node k.

Genes: upstream restricts the reference to the genes shared with each input at prediction time (so the tree and the
gene selection can change with the input). Here the model is fitted once on the training genes and inputs are aligned
to them by the base class (absent genes become zeros), which matches upstream whenever the input has every training
gene — the case of the fixture and of the benchmark's train/test splits of one dataset. The base class hands over
float32 matrices; all sums are done in float64, and parity holds on the fixture through that path.

Scores: CHETAH has no per-type probability. `predict_proba` normalises a per-type "path score" (`_path_scores`) that is
≥ 0 exactly for the label CHETAH gives, so its argmax is CHETAH's label whenever the cell is assigned to a leaf.
`thresh` is only used at prediction time (changing it after `fit` is CHETAH's `Classify`; see also `rethreshold`).

`backend="r"` runs the Bioconductor package (`CHETAH::CHETAHclassifier` with the training cells as `ref_cells`) through
`vulnbench.sc.rbridge`; labels are R's, and the per-node tables R stores feed the same score and detail code. The native
tree is still fitted, and R's node tables are matched to it by leaf names (a mismatch is an error, not a silent
remapping).

Only fc + Spearman + average linkage with fixed gene numbers is checked against upstream; pearson / cosine, the other
linkages, `only_pos` and `fix_ngenes=False` follow the spec's description but are unverified. `max_cells_per_type` is a
vulnbench option (the spec's advice to subsample large reference types), not upstream's `subsample`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import squareform
from scipy.stats import rankdata

from vulnbench.core.errors import ConfigError, DataError
from vulnbench.sc import rbridge
from vulnbench.sc.classifiers._rbackend import RBackendMixin
from vulnbench.sc.classifiers.base import PerCellClassifier
from vulnbench.sc.expression import ExpressionInput, as_expression

#: scipy names of the R `hclust` linkages implemented (sub-trees of these are stable under re-clustering)
LINKAGES = {"average": "average", "single": "single", "complete": "complete", "mcquitty": "weighted"}
COR_METHODS = ("spearman", "pearson", "cosine")
UNASSIGNED = "Unassigned"
#: path-score margin of branch 2 when its best PS ties branch 1's (CHETAH's first maximum is in branch 1)
TIE_MARGIN = 1e-9

#: R side of the `r` backend: classify, then return labels and the per-node tables of int_colData(x)$CHETAH
_R_CHETAH = """function(input, ref, thresh, n_genes, cor_method, clust_method, fix_ngenes, only_pos, fc_thresh) {
  out <- CHETAH::CHETAHclassifier(input = input, ref_cells = ref, ref_ct = "celltypes", thresh = thresh,
    n_genes = n_genes, cor_method = cor_method, clust_method = clust_method, fix_ngenes = fix_ngenes,
    only_pos = only_pos, fc_thresh = fc_thresh)
  ch <- SingleCellExperiment::int_colData(out)$CHETAH
  tables <- function(d) lapply(as.list(d), function(x) as.matrix(as.data.frame(x, optional = TRUE)))
  list(labels = as.character(out$celltype_CHETAH), prof = tables(ch$prof_scores), conf = tables(ch$conf_scores),
       cor = tables(ch$correlations))
}"""

#: one node's (correlations, profile scores, confidence scores), each cells × node leaves
Scores = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass
class _Node:
    """One split of the tree. Leaves are type indices (into `types_`), branch 1 first, each in profile order."""

    index: int
    leaves: np.ndarray  # type indices, branch 1 then branch 2
    n_branch1: int
    genes: list[np.ndarray]  # per leaf: selected gene columns, in selection order
    reference: list[np.ndarray]  # per leaf: the profile on its genes, transformed for the correlation (see _prepare)
    cor_t: list[np.ndarray]  # per leaf: sorted correlations of the leaf's reference cells
    cor_ob: list[np.ndarray]  # per leaf: sorted correlations of the other branch's reference cells


class Chetah(RBackendMixin, PerCellClassifier):
    """CHETAH with a fixed reference (the training cells); per-cell labels may be "Unassigned" or "Node{k}"."""

    name = "chetah"
    capabilities = PerCellClassifier.capabilities | {"hierarchical", "unassigned"}
    cell_independent = True  # each cell is correlated with fixed reference profiles on fixed genes
    extra_labels = ("Unassigned", "Node*")
    r_packages = ("CHETAH", "SingleCellExperiment")

    def __init__(self, thresh: float = 0.1, n_genes: int = 200, cor_method: str = "spearman",
                 clust_method: str = "average", gs_method: str = "fc", fix_ngenes: bool = True,
                 only_pos: bool = False, fc_thresh: float = 1.5, max_cells_per_type: int | None = None,
                 seed: int = 0, backend: str = "native") -> None:
        """Keyword parameters, as a config sets them.

        Args:
            thresh: confidence threshold: a cell below it stops at an inner node ('Unassigned' / 'NodeK')
            n_genes: genes selected per type at each tree node (when fix_ngenes is true)
            cor_method: correlation of a cell with the reference profiles: spearman, pearson or cosine
            clust_method: linkage of the tree of reference types: average, single, complete or mcquitty
            gs_method: gene-selection method; only 'fc' (fold change) is implemented
            fix_ngenes: true: top n_genes by |Δ| per type and node; false: every gene with |Δ| > fc_thresh
            only_pos: rank genes by Δ (higher in the type) instead of |Δ|
            fc_thresh: |Δ| threshold (log-expression difference) when fix_ngenes is false; halved until a gene passes
            max_cells_per_type: reference (training) cells kept per type by seeded subsampling; null: all
            seed: seed of the max_cells_per_type subsampling; defaults to the top-level seed
            backend: native (NumPy port) or r: Bioconductor CHETAH through rpy2
        """
        self.thresh = thresh
        self.n_genes = n_genes
        self.cor_method = cor_method
        self.clust_method = clust_method
        self.gs_method = gs_method
        self.fix_ngenes = fix_ngenes
        self.only_pos = only_pos
        self.fc_thresh = fc_thresh
        self.max_cells_per_type = max_cells_per_type
        self.seed = seed
        self.backend = backend

    # -- fitting ------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if self.gs_method != "fc":
            raise ConfigError(f"chetah: gs_method {self.gs_method!r} is not implemented (only 'fc')")
        if self.cor_method not in COR_METHODS:
            raise ConfigError(f"chetah: cor_method {self.cor_method!r} is not implemented "
                              f"(choose from {', '.join(COR_METHODS)})")
        if self.clust_method not in LINKAGES:
            raise ConfigError(f"chetah: clust_method {self.clust_method!r} is not implemented "
                              f"(choose from {', '.join(LINKAGES)})")
        if int(self.n_genes) < 1:
            raise ConfigError(f"chetah: n_genes must be ≥ 1, got {self.n_genes}")
        if not self.fix_ngenes and not self.fc_thresh > 0:
            raise ConfigError(f"chetah: fc_thresh must be > 0, got {self.fc_thresh}")
        if self.max_cells_per_type is not None and int(self.max_cells_per_type) < 1:
            raise ConfigError(f"chetah: max_cells_per_type must be ≥ 1 or None, got {self.max_cells_per_type}")

    def _fit(self, matrix: np.ndarray, y: np.ndarray) -> None:
        self._check_params()
        self._check_backend()
        bad = [t for t in pd.unique(y) if "Node" in t or UNASSIGNED in t or t.strip() == ""]
        if bad:
            raise DataError(f"chetah: cell type names must not be blank or contain 'Node'/'Unassigned': {bad[:3]}")
        ref = np.asarray(matrix)  # float32 from the base class; every reduction below is done in float64
        self.types_ = np.asarray(pd.unique(y), dtype=str)  # first appearance: fixes the node numbering
        codes = pd.Index(self.types_).get_indexer(y)
        if self.max_cells_per_type is not None:
            keep = _subsample(codes, int(self.max_cells_per_type), np.random.default_rng(self.seed))
            ref, codes = ref[keep], codes[keep]
        self.profiles_ = np.vstack([ref[codes == t].mean(axis=0, dtype=np.float64) for t in range(len(self.types_))])
        ranked = _rank_rows(self.profiles_)
        self.type_distance_ = 1.0 - np.abs(_pearson_rows(ranked, ranked))
        self.nodes_: list[_Node] = []
        self._split(np.arange(len(self.types_)), ref, codes)
        if self.backend == "r":  # R rebuilds everything from the reference at every call
            self.reference_ = np.asarray(ref, dtype=np.float32)
            self.reference_labels_ = self.types_[codes]
        # positions of each leaf type in `classes_` (the base class's sorted order)
        self.class_of_type_ = pd.Index(self.classes_).get_indexer(self.types_)

    def _split(self, types: np.ndarray, ref: np.ndarray, codes: np.ndarray) -> None:
        """Pre-order recursion: number this node, score it, then split branch 1 and branch 2."""
        index = len(self.nodes_)
        branch1, branch2 = self._cut(types)
        self.nodes_.append(self._score_node(index, branch1, branch2, ref, codes))
        for branch in (branch1, branch2):
            if len(branch) > 1:
                self._split(branch, ref, codes)

    def _cut(self, types: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Two groups of the linkage tree (cut at k = 2); branch 1 holds the first type; both keep profile order."""
        if len(types) == 2:
            return types[:1], types[1:]
        dist = self.type_distance_[np.ix_(types, types)]
        np.fill_diagonal(dist, 0.0)
        tree = linkage(squareform(dist, checks=False), method=LINKAGES[self.clust_method])
        members = _members(tree, int(tree[-1, 0]), len(types))
        in_first = np.isin(np.arange(len(types)), members)
        if not in_first[0]:
            in_first = ~in_first
        return types[in_first], types[~in_first]

    def _score_node(self, index: int, branch1: np.ndarray, branch2: np.ndarray, ref: np.ndarray,
                    codes: np.ndarray) -> _Node:
        leaves = np.concatenate([branch1, branch2])
        genes, reference, cor_t, cor_ob = [], [], [], []
        for pos, t in enumerate(leaves):
            other = branch2 if pos < len(branch1) else branch1
            delta = self.profiles_[t] - self.profiles_[other].mean(axis=0)
            selected = self._select_genes(delta)
            prepared = _prepare(self.profiles_[t, selected][None, :], self.cor_method)[0]
            genes.append(selected)
            reference.append(prepared)
            for rows, store in ((codes == t, cor_t), (np.isin(codes, other), cor_ob)):
                store.append(np.sort(self._correlate(ref[np.ix_(np.flatnonzero(rows), selected)], prepared)))
        return _Node(index, leaves, len(branch1), genes, reference, cor_t, cor_ob)

    def _select_genes(self, delta: np.ndarray) -> np.ndarray:
        """fc selection: the top `n_genes` by |Δ| (Δ with only_pos), ties in gene order; or all above fc_thresh."""
        key = delta if self.only_pos else np.abs(delta)
        if self.fix_ngenes:
            return np.argsort(-key, kind="stable")[: int(self.n_genes)]
        cut = float(self.fc_thresh)
        if not (key > 0).any():
            raise DataError("chetah: two reference profiles are identical; no gene separates them")
        while not (key > cut).any():
            cut /= 2
        return np.flatnonzero(key > cut)

    def _correlate(self, values: np.ndarray, prepared: np.ndarray) -> np.ndarray:
        return _correlate_prepared(_prepare(values, self.cor_method), prepared)

    # -- scoring ------------------------------------------------------------------------------------
    def _node_scores(self, matrix: np.ndarray) -> list[Scores]:
        """Per node: (correlations, profile scores, confidence scores) of every cell, each cells × node leaves."""
        if getattr(self, "backend", "native") == "r":
            return self._run_r(matrix)[1]
        return [self._score_node_cells(matrix, node) for node in self.nodes_]

    def _run_r(self, matrix: np.ndarray) -> tuple[np.ndarray, list[Scores]]:
        """One `CHETAHclassifier` call: R's labels and its per-node tables in the native node / leaf order."""

        self._check_backend()
        genes = [str(g) for g in self.genes_]
        test = rbridge.to_sce(np.asarray(matrix, dtype=np.float64), genes,
                              [f"cell{i}" for i in range(matrix.shape[0])], assay="counts")
        ref = rbridge.to_sce(self.reference_, genes, [f"ref{i}" for i in range(len(self.reference_))],
                             assay="counts", coldata=pd.DataFrame({"celltypes": self.reference_labels_}))
        result = rbridge.call_function(
            rbridge.evaluate(_R_CHETAH), test, ref, float(self.thresh), int(self.n_genes), self.cor_method,
            self.clust_method, bool(self.fix_ngenes), bool(self.only_pos), float(self.fc_thresh),
            _label="CHETAH::CHETAHclassifier")
        tables = []
        for node in self.nodes_:
            key = f"Node{node.index}"
            leaves = list(self.types_[node.leaves])
            triple = []
            for part in ("cor", "prof", "conf"):
                frame = result[part].get(key) if isinstance(result[part], dict) else None
                if not isinstance(frame, pd.DataFrame) or set(frame.columns) != set(leaves):
                    raise DataError(f"chetah: R's CHETAH tree differs from the native one at {key} "
                                    f"(expected leaves {leaves})")
                triple.append(frame[leaves].to_numpy(dtype=np.float64))
            tables.append((triple[0], triple[1], triple[2]))
        return np.asarray(result["labels"], dtype=object).astype(str), tables

    def _score_node_cells(self, matrix: np.ndarray, node: _Node) -> Scores:
        x = np.asarray(matrix)  # gathered per gene set, then ranked / converted to float64 by _prepare
        cor = np.empty((x.shape[0], len(node.leaves)))
        prof = np.empty_like(cor)
        for pos in range(len(node.leaves)):
            c = self._correlate(x[:, node.genes[pos]], node.reference[pos])
            cor[:, pos] = c
            prof[:, pos] = _ecdf(node.cor_t[pos], c) - (1.0 - _ecdf(node.cor_ob[pos], c))
        b1 = node.n_branch1
        conf = np.empty_like(prof)
        conf[:, :b1] = prof[:, :b1] - prof[:, b1:].mean(axis=1, keepdims=True)
        conf[:, b1:] = prof[:, b1:] - prof[:, :b1].mean(axis=1, keepdims=True)
        return cor, prof, conf

    def _classify(self, n_cells: int, scores_of: Callable[[_Node, np.ndarray], Scores], thresh: float
                  ) -> tuple[np.ndarray, np.ndarray]:
        """The stop rule. `scores_of(node, rows)` gives the node's scores of those cells (computed or looked up).

        Returns (leaf type index or −1, node where the cell stopped or −1).
        """
        current = np.zeros(n_cells, dtype=np.intp)
        stopped = np.full(n_cells, -1, dtype=np.intp)
        for node in self.nodes_:
            rows = np.flatnonzero(stopped < 0) if node.index == 0 else np.flatnonzero(
                np.isin(current, node.leaves) & (stopped < 0))
            if rows.size == 0:
                continue
            _cor, prof, conf = scores_of(node, rows)
            best = np.argmax(prof, axis=1)  # first maximum in node column order
            ok = conf[np.arange(rows.size), best] >= thresh
            current[rows[ok]] = node.leaves[best[ok]]
            stopped[rows[~ok]] = node.index
            current[rows[~ok]] = -1
        return current, stopped

    def _classify_tables(self, scores: list[Scores], thresh: float) -> tuple[np.ndarray, np.ndarray]:
        def scores_of(node: _Node, rows: np.ndarray) -> Scores:
            cor, prof, conf = scores[node.index]
            return cor[rows], prof[rows], conf[rows]

        return self._classify(scores[0][1].shape[0], scores_of, thresh)

    def _labels(self, current: np.ndarray, stopped: np.ndarray) -> np.ndarray:
        names = np.array([*self.types_, UNASSIGNED] + [f"Node{k.index}" for k in self.nodes_[1:]], dtype=object)
        codes = np.where(stopped < 0, current, np.where(stopped == 0, len(self.types_),
                                                        len(self.types_) + stopped))
        return names[codes].astype(str)

    def _path_scores(self, scores: list[Scores], thresh: float) -> np.ndarray:
        """How far each cell is from CHETAH labelling it t: cells × types_, ≥ 0 exactly for the assigned leaf.

        At a node the cell moves into the branch holding its best-PS leaf if that leaf's CS ≥ thresh. For a branch B
        the term is min(max_B PS − max_other PS, CS of B's best leaf − thresh); s_t = the minimum of the terms of t's
        branches along its root-to-leaf path. On an exact PS tie CHETAH takes the first maximum, which lies in branch
        1, so branch 2 then gets −TIE_MARGIN instead of 0.
        """
        n = scores[0][1].shape[0]
        path = np.full((n, len(self.types_)), np.inf)
        rows = np.arange(n)
        for node, (_cor, prof, conf) in zip(self.nodes_, scores, strict=True):
            b1 = node.n_branch1
            best1 = np.argmax(prof[:, :b1], axis=1)
            best2 = b1 + np.argmax(prof[:, b1:], axis=1)
            top1, top2 = prof[rows, best1], prof[rows, best2]
            term1 = np.minimum(top1 - top2, conf[rows, best1] - thresh)
            term2 = np.minimum(np.where(top2 == top1, -TIE_MARGIN, top2 - top1), conf[rows, best2] - thresh)
            for leaves, term in ((node.leaves[:b1], term1), (node.leaves[b1:], term2)):
                path[:, leaves] = np.minimum(path[:, leaves], term[:, None])
        return path

    def _predict_labels(self, matrix: np.ndarray) -> np.ndarray:
        """Each node scores only the cells that reach it (the root scores all)."""
        if getattr(self, "backend", "native") == "r":
            return self._run_r(matrix)[0]
        x = np.asarray(matrix)

        def scores_of(node: _Node, rows: np.ndarray) -> Scores:
            return self._score_node_cells(x[rows], node)

        return self._labels(*self._classify(x.shape[0], scores_of, float(self.thresh)))

    def _predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        """Per-cell shares of the shifted path scores, in `classes_` order; rows sum to 1.

        p_t = (s_t + c) / Σ_u (s_u + c) with c = 2 + max(thresh, 0) (s_t ≥ −c), so the order of p_t is the order of
        the path scores s_t (`_path_scores`): the argmax is CHETAH's label for assigned cells, and for stopped cells
        the leaf the cell is closest to reaching.
        """
        thresh = float(self.thresh)
        path = self._path_scores(self._node_scores(matrix), thresh)
        shifted = np.maximum(path + 2.0 + max(thresh, 0.0), 0.0)
        proba = np.zeros((matrix.shape[0], len(self.classes_)))
        proba[:, self.class_of_type_] = shifted / shifted.sum(axis=1, keepdims=True)
        return proba

    # -- CHETAH's own outputs -----------------------------------------------------------------------
    def classify_detail(self, X: ExpressionInput, thresh: float | None = None) -> dict[str, Any]:
        """Labels plus CHETAH's per-node tables (cells × node leaves, branch 1 then branch 2), as upstream stores them.

        Keys: "labels" (Series), "correlations", "prof_scores", "conf_scores" (lists of DataFrames, one per node),
        "path_scores" (cells × types in first-appearance order), "nodes" (per node: (branch 1 types, branch 2 types)).
        """
        cells = as_expression(X).cells
        thresh = float(self.thresh if thresh is None else thresh)
        scores = self._node_scores(self.align(X))
        tables: dict[str, list[pd.DataFrame]] = {"correlations": [], "prof_scores": [], "conf_scores": []}
        for node, triple in zip(self.nodes_, scores, strict=True):
            columns = list(self.types_[node.leaves])
            for key, values in zip(tables, triple, strict=True):
                tables[key].append(pd.DataFrame(values, index=cells, columns=columns))
        labels = pd.Series(self._labels(*self._classify_tables(scores, thresh)), index=cells, name="celltype_CHETAH")
        return {"labels": labels, **tables,
                "path_scores": pd.DataFrame(self._path_scores(scores, thresh), index=cells, columns=self.types_),
                "nodes": [(self.types_[n.leaves[: n.n_branch1]].tolist(), self.types_[n.leaves[n.n_branch1:]].tolist())
                          for n in self.nodes_]}

    def rethreshold(self, detail: dict[str, Any], thresh: float) -> pd.Series:
        """CHETAH's `Classify`: new labels from a `classify_detail` result at another threshold, without rescoring."""
        triples = [(c.to_numpy(), p.to_numpy(), s.to_numpy()) for c, p, s in
                   zip(detail["correlations"], detail["prof_scores"], detail["conf_scores"], strict=True)]
        labels = self._labels(*self._classify_tables(triples, float(thresh)))
        return pd.Series(labels, index=detail["labels"].index, name="celltype_CHETAH")

    def selected_genes(self) -> list[dict[str, list[str]]]:
        """Per node (0-based), per leaf type: the selected genes in selection order."""
        return [{str(self.types_[t]): list(self.genes_[g]) for t, g in zip(n.leaves, n.genes, strict=True)}
                for n in self.nodes_]


# -- helpers -----------------------------------------------------------------------------------------
def _subsample(codes: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices keeping at most `limit` random cells per type, in the original order."""
    keep = []
    for t in np.unique(codes):
        rows = np.flatnonzero(codes == t)
        keep.append(rows if rows.size <= limit else rng.choice(rows, limit, replace=False))
    return np.sort(np.concatenate(keep))


def _members(tree: np.ndarray, cluster: int, n: int) -> list[int]:
    """Original observations under a cluster id of a scipy linkage matrix."""
    stack, out = [cluster], []
    while stack:
        c = stack.pop()
        if c < n:
            out.append(c)
        else:
            stack.extend(int(v) for v in tree[c - n, :2])
    return out


def _rank_rows(values: np.ndarray) -> np.ndarray:
    return rankdata(values, method="average", axis=1)


def _prepare(values: np.ndarray, method: str) -> np.ndarray:
    """Rows turned into vectors whose normalised dot product is the correlation: ranks/centring per method."""
    rows = _rank_rows(values) if method == "spearman" else np.array(values, dtype=np.float64)
    if method != "cosine":
        rows = rows - rows.mean(axis=1, keepdims=True)
    return rows


def _correlate_prepared(rows: np.ndarray, prepared: np.ndarray) -> np.ndarray:
    """Correlation of each prepared row with one prepared vector; zero variance (R's NA) gives 0."""
    num = (rows * prepared).sum(axis=1)
    den = np.sqrt((rows * rows).sum(axis=1) * (prepared * prepared).sum())
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation between every row of a and every row of b (0 where a row is constant)."""
    ac = a - a.mean(axis=1, keepdims=True)
    bc = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt(np.outer((ac * ac).sum(axis=1), (bc * bc).sum(axis=1)))
    num = ac @ bc.T
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _ecdf(sorted_values: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Fraction of `sorted_values` ≤ v (R's `ecdf`)."""
    return np.searchsorted(sorted_values, v, side="right") / sorted_values.size
