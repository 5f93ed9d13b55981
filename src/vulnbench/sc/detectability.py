"""Detectability panel: would an analyst see an attack that fools the classifier?

One cluster of the held-out cells is attacked four ways (single-gene, max-change, CGD with a small and a large
step). For each attacked copy we report what the classifier now says and how far the cluster moved in the PCA
space of the original data relative to its own spread ("visibility"): an attack that flips the label with
visibility ≪ 1 hides inside the cluster's natural variation; one with visibility > 1 moves the cluster further
than its own radius and shows up in any standard PCA / UMAP / marker inspection.
"""

from __future__ import annotations

import inspect
import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scipy.sparse as sp
from matplotlib.lines import Line2D
from sklearn.decomposition import PCA

from vulnbench.core.errors import ConfigError, DataError
from vulnbench.core.io import atomic_path, write_table
from vulnbench.core.jobs import use_threads
from vulnbench.sc.attacks._cgd import cgd
from vulnbench.sc.attacks._max_change import max_change
from vulnbench.sc.attacks._signature import ranked_genes
from vulnbench.sc.attacks._single_gene import single_gene
from vulnbench.sc.classifiers.base import PerCellClassifier, plurality
from vulnbench.sc.data.prepare import check_clusters, read_prepared
from vulnbench.sc.expression import as_expression, as_labels, target_mask
from vulnbench.sc.modifications import GeneStats, Modification, modify
from vulnbench.sc.oracle import make_oracle

log = logging.getLogger(__name__)

#: the 14 Seurat PBMC markers of the adverSCarial vignettes, in the tutorial's order
CLASSIC_MARKERS: tuple[str, ...] = ("IL7R", "CCR7", "CD14", "LYZ", "S100A4", "MS4A1", "CD8A", "FCGR3A", "MS4A7",
                                    "GNLY", "NKG7", "FCER1A", "CST3", "PPBP")
#: table order; "original" is the unmodified reference (visibility 0 by construction)
ATTACK_ORDER = ("original", "single_gene", "max_change", "cgd_low", "cgd_high")
N_PCS = 30
N_NEIGHBORS = 15
#: dot-plot genes when none of the requested markers are in the data (e.g. synthetic data)
FALLBACK_MARKERS = 12
TABLE_COLUMNS = ["target", "n_cells", "baseline_label", "attack", "detail", "new_label", "flipped", "copy_label",
                 "n_genes_modified", "frac_genes_modified", "mean_abs_change", "shift", "radius", "visibility",
                 "reference_cluster", "reference_visibility", "runtime_s"]
COLOUR_OTHERS, COLOUR_BEFORE, COLOUR_AFTER = "#d4d4d4", "#4c78a8", "#d62728"


@dataclass
class DetectabilityResult:
    """The table, the attacked copies (same cells as `original`; only the target rows differ) and plot inputs."""

    table: pd.DataFrame
    original: ad.AnnData
    modified: dict[str, ad.AnnData]
    labels: np.ndarray
    target: str
    baseline_label: str
    pca: PCA
    markers: list[str]
    markers_source: str
    max_change_genes: list[str]
    seed: int
    titles: dict[str, str] = field(default_factory=dict)

    @property
    def target_rows(self) -> np.ndarray:
        return np.flatnonzero(self.labels == self.target)

    def row(self, attack: str) -> pd.Series:
        return self.table.loc[self.table["attack"] == attack].iloc[0]


# -- measures -------------------------------------------------------------------------------------------------


def fit_pca(adata: ad.AnnData, n_comps: int = N_PCS, seed: int = 0) -> PCA:
    """PCA of the original (log-normalised) data; every copy is projected into this one space."""
    matrix = as_expression(adata).matrix
    n_comps = min(int(n_comps), min(matrix.shape) - 1)
    if n_comps < 1:
        raise DataError(f"PCA needs at least 2 cells and 2 genes, got {matrix.shape[0]} × {matrix.shape[1]}")
    # arpack takes sparse input with implicit centring (no densified copy) and is seeded through v0
    return PCA(n_components=n_comps, svd_solver="arpack", random_state=seed).fit(matrix)


def _rows(matrix: Any, rows: np.ndarray) -> np.ndarray:
    block = matrix[rows]
    return np.asarray(block.toarray() if sp.issparse(block) else block, dtype=np.float64)


def visibility(pca: PCA, original_rows: np.ndarray, modified_rows: np.ndarray) -> tuple[float, float, float]:
    """(visibility, shift, radius) of one cluster: centroid shift in PCA space over the cluster's RMS radius.

    0 = the centroid did not move; > 1 = it moved by more than the cluster's own spread. Both copies are projected
    with the same PCA (fitted on the original data), so the number is comparable across attacks. Caveat: only the
    part of a change inside the original's top components counts, and the radius sums the spread of all of them,
    so a change along genes the PCs barely load on scores low however large it is (see
    `nearest_cluster_visibility` for the scale of a real cell-type difference).
    """
    before = pca.transform(np.asarray(original_rows, dtype=np.float64))
    after = pca.transform(np.asarray(modified_rows, dtype=np.float64))
    centroid = before.mean(axis=0)
    shift = float(np.linalg.norm(after.mean(axis=0) - centroid))
    radius = float(np.sqrt(np.mean(np.sum((before - centroid) ** 2, axis=1))))
    if radius == 0.0:  # a one-cell (or constant) cluster has no spread to compare with
        return (0.0 if shift == 0.0 else float("inf")), shift, radius
    return shift / radius, shift, radius


def nearest_cluster_visibility(pca: PCA, matrix: Any, labels: np.ndarray, target: str) -> tuple[str, float]:
    """The yardstick: visibility of moving the target onto the centroid of the nearest other cluster.

    The RMS radius sums the spread over all components while a shift is one direction, so even a real cell-type
    difference can score below 1; this number says what "as visible as being another cell type" means here.
    """
    projected = pca.transform(_rows(matrix, np.arange(matrix.shape[0])))
    inside = labels == target
    centroid = projected[inside].mean(axis=0)
    radius = float(np.sqrt(np.mean(np.sum((projected[inside] - centroid) ** 2, axis=1))))
    others = sorted(set(labels) - {target})
    if not others:
        return "", float("nan")
    distances = [float(np.linalg.norm(projected[labels == c].mean(axis=0) - centroid)) for c in others]
    nearest = int(np.argmin(distances))
    return others[nearest], (distances[nearest] / radius if radius > 0 else float("inf"))


def change_summary(original_rows: np.ndarray, modified_rows: np.ndarray) -> tuple[int, float]:
    """(genes with at least one changed value, mean |Δ| over the changed values) on the target cells."""
    delta = np.asarray(modified_rows, dtype=np.float64) - np.asarray(original_rows, dtype=np.float64)
    changed = delta != 0
    n_genes = int(changed.any(axis=0).sum())
    return n_genes, float(np.abs(delta[changed]).mean()) if changed.any() else 0.0


def cluster_label(model: Any, adata: ad.AnnData, labels: np.ndarray, target: str) -> str:
    """What the model says about the cluster on this copy (the attacks' own oracle, nothing modified)."""
    oracle = make_oracle(model, as_expression(adata), labels, target, Modification("fixed"))
    return oracle.baseline.label


# -- the four attacks -----------------------------------------------------------------------------------------


@dataclass
class _Attacked:
    name: str
    copy: ad.AnnData
    new_label: str
    detail: str
    title: str
    runtime_s: float


def _single_gene(adata: ad.AnnData, labels: np.ndarray, target: str, model: Any, method: str, seed: int,
                 stats: GeneStats, baseline: str) -> _Attacked:
    started = time.perf_counter()
    found = single_gene(adata, labels, target, model, method=method, return_first_found=True, seed=seed,
                        stats=stats)
    if not len(found):
        return _Attacked("single_gene", adata.copy(), baseline, f"no single gene flips ({method}); unmodified",
                         f"single-gene ({method})\nno flip found: unmodified", time.perf_counter() - started)
    genes = str(found["gene"].iloc[0]).split("__")
    copy = modify(adata, genes, labels, target, method=method, seed=seed)
    shown = ",".join(genes)
    return _Attacked("single_gene", copy, str(found["new_label"].iloc[0]), f"{shown} → {method}",
                     f"single-gene: {shown} → {method}", time.perf_counter() - started)


def _max_change(adata: ad.AnnData, labels: np.ndarray, target: str, model: Any, method: str, seed: int,
                stats: GeneStats) -> tuple[_Attacked, list[str]]:
    started = time.perf_counter()
    result = max_change(adata, labels, target, model, method=method, seed=seed, stats=stats)
    copy = modify(adata, result.genes, labels, target, method=method, seed=seed) if result.genes else adata.copy()
    new_label = result.final_label or result.baseline_label
    detail = f"{len(result.genes)} of {result.n_candidates} genes → {method}"
    return (_Attacked("max_change", copy, new_label, detail, f"max-change: {len(result.genes)} genes → {method}",
                      time.perf_counter() - started), list(result.genes))


def _cgd(adata: ad.AnnData, labels: np.ndarray, target: str, model: Any, name: str, step: float,
         genes: list[str], seed: int) -> _Attacked:
    started = time.perf_counter()
    result = cgd(adata, labels, target, model, genes=genes, alpha=step, epsilon=step, seed=seed)
    new_label = plurality(result.mod_cell_types)[0]
    detail = f"α=ε={step:g}: {len(result.modified_genes)} of {len(genes)} signature genes moved"
    title = f"CGD α=ε={step:g}: {len(result.modified_genes)} genes"
    return _Attacked(name, result.X, new_label, detail, title, time.perf_counter() - started)


def detectability(
    adata: ad.AnnData,
    labels: Sequence[str] | np.ndarray,
    target: str,
    model: Any,
    *,
    single_gene_method: str = "perc99",
    max_change_method: str = "perc99",
    cgd_low: float = 0.3,
    cgd_high: float = 1.5,
    cgd_genes: int = 100,
    seed: int = 0,
    markers: Sequence[str] = CLASSIC_MARKERS,
) -> DetectabilityResult:
    """Attack cluster `target` four ways and measure, for each copy, the new label and how visible the change is.

    single-gene: the first gene found (dichotomic search) modified alone; max-change: its whole gene set modified;
    CGD low / high: α = ε = `cgd_low` / `cgd_high` on the top `cgd_genes` signature genes. `adata` holds the
    cells to attack (the held-out split, log-normalised); `labels` are their clusters. The table has one row per
    copy (original first): the model's new label, genes changed, mean |Δ| per changed value and visibility.

    Args:
        single_gene_method: modification of the single-gene copy (the first flipping gene, modified alone)
        max_change_method: modification applied to the whole max-change gene set
        cgd_low: α = ε of the low-intensity CGD copy
        cgd_high: α = ε of the high-intensity CGD copy (at least cgd_low)
        cgd_genes: number of top signature genes both CGD copies walk through
        seed: seed of the four attacks and the PCA (its own default 0; the top-level seed is not used)
        markers: genes of the DotPlot (default: 14 classic PBMC markers; top signature genes if none is present)
    """
    if not 0 < float(cgd_low) <= float(cgd_high):
        raise ConfigError(f"cgd_low and cgd_high must satisfy 0 < cgd_low ≤ cgd_high, got {cgd_low}, {cgd_high}")
    if int(cgd_genes) < 1:
        raise ConfigError(f"cgd_genes must be at least 1, got {cgd_genes}")
    expression = as_expression(adata)
    labels = as_labels(labels, expression.n_cells)
    target = str(target)
    rows = np.flatnonzero(target_mask(labels, target))
    stats = GeneStats(expression)  # shared by single-gene and max-change (quantiles computed once)
    baseline = cluster_label(model, adata, labels, target)
    signature = ranked_genes(adata, labels, int(cgd_genes), "signature", seed, stats)

    single = _single_gene(adata, labels, target, model, single_gene_method, seed, stats, baseline)
    most, max_genes = _max_change(adata, labels, target, model, max_change_method, seed, stats)
    attacked = [
        _Attacked("original", adata, baseline, "unmodified", "original", 0.0),
        single,
        most,
        _cgd(adata, labels, target, model, "cgd_low", float(cgd_low), signature, seed),
        _cgd(adata, labels, target, model, "cgd_high", float(cgd_high), signature, seed),
    ]

    pca = fit_pca(adata, seed=seed)
    before = _rows(expression.matrix, rows)
    reference_cluster, reference = nearest_cluster_visibility(pca, expression.matrix, labels, target)
    records = []
    for attack in attacked:
        after = _rows(as_expression(attack.copy).matrix, rows)
        vis, shift, radius = visibility(pca, before, after)
        n_modified, mean_change = change_summary(before, after)
        copy_label = baseline if attack.name == "original" else cluster_label(model, attack.copy, labels, target)
        if copy_label != attack.new_label:
            log.warning("%s: the attack reports %r but its modified copy is classified %r", attack.name,
                        attack.new_label, copy_label)
        records.append({"target": target, "n_cells": int(rows.size), "baseline_label": baseline,
                        "attack": attack.name, "detail": attack.detail, "new_label": attack.new_label,
                        "flipped": attack.new_label != baseline, "copy_label": copy_label,
                        "n_genes_modified": n_modified, "frac_genes_modified": n_modified / expression.n_genes,
                        "mean_abs_change": mean_change, "shift": shift, "radius": radius, "visibility": vis,
                        "reference_cluster": reference_cluster, "reference_visibility": reference,
                        "runtime_s": attack.runtime_s})
        log.info("detectability %s on %r: %s → %s, %d genes, visibility %.3f", attack.name, target, baseline,
                 attack.new_label, n_modified, vis)

    present = [g for g in dict.fromkeys(map(str, markers)) if g in expression.genes]
    source = "classic PBMC markers" if tuple(markers) == CLASSIC_MARKERS else "requested markers"
    if not present:
        present = signature[:FALLBACK_MARKERS]
        source = "top signature genes (none of the markers is in the data)"
        log.warning("detectability: none of the %d markers is in the data; the dot plot shows %s", len(markers),
                    source)
    return DetectabilityResult(
        table=pd.DataFrame(records, columns=TABLE_COLUMNS), original=adata,
        modified={a.name: a.copy for a in attacked if a.name != "original"}, labels=labels, target=target,
        baseline_label=baseline, pca=pca, markers=present, markers_source=source, max_change_genes=max_genes,
        seed=int(seed), titles={a.name: a.title for a in attacked})


# -- figures --------------------------------------------------------------------------------------------------


def union_umap(result: DetectabilityResult) -> dict[str, np.ndarray]:
    """One UMAP of the original cells plus every attacked copy of the target cluster, in the original PCA space.

    Why the union and not `sc.tl.ingest`: ingest places each query cell at (and then relaxes around) the position
    of its nearest *reference* cells, so a modified cell can only ever land on the existing manifold — even an
    absurd expression profile would be drawn inside some real cluster, hiding exactly what this panel is meant to
    show. Fitting neighbours + UMAP on original ∪ modified lets attacked cells form their own island when they are
    far from every real cell. The PCA stays the one fitted on the original data, as for the visibility number.
    Returns "original" (all cells) and, per attack, the target cells' coordinates.
    """
    import scanpy as sc

    rows = result.target_rows
    blocks = {"original": as_expression(result.original).matrix}
    blocks.update({name: _rows(as_expression(copy).matrix, rows) for name, copy in result.modified.items()})
    coords = [result.pca.transform(_rows(blocks["original"], np.arange(result.original.n_obs)))]
    coords += [result.pca.transform(block) for name, block in blocks.items() if name != "original"]
    union = ad.AnnData(np.zeros((sum(len(c) for c in coords), 1), dtype=np.float32))
    union.obsm["X_pca"] = np.vstack(coords).astype(np.float32)
    with warnings.catch_warnings():  # scanpy edits its own CSR graph in place; harmless at this size
        warnings.simplefilter("ignore", sp.SparseEfficiencyWarning)
        sc.pp.neighbors(union, use_rep="X_pca", n_neighbors=min(N_NEIGHBORS, union.n_obs - 1),
                        random_state=result.seed)
        sc.tl.umap(union, random_state=result.seed)
    embedding = union.obsm["X_umap"]
    out, start = {}, 0
    for name, block in zip(blocks, coords, strict=True):
        out[name] = embedding[start : start + len(block)]
        start += len(block)
    return out


def _short(label: str, width: int = 24) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def _verdict(row: pd.Series) -> str:
    if row["attack"] == "original":
        return f"model: {_short(row['new_label'])}"
    return (f"model: {_short(row['new_label'])} (FLIPPED)" if row["flipped"]
            else f"model: {_short(row['new_label'])} (kept)")


def plot_umaps(result: DetectabilityResult, path: str | Path) -> None:
    """1 × 5 UMAPs (original, single-gene, max-change, CGD low, CGD high) of one embedding; target highlighted."""
    embedding = union_umap(result)
    rows = result.target_rows
    others = np.setdiff1d(np.arange(result.original.n_obs), rows)
    base = embedding["original"]
    fig, axes = plt.subplots(1, len(ATTACK_ORDER), figsize=(4.1 * len(ATTACK_ORDER), 4.9), sharex=True,
                             sharey=True)
    point = max(4.0, min(18.0, 3000.0 / max(1, result.original.n_obs)))
    for ax, name in zip(axes, ATTACK_ORDER, strict=True):
        row = result.row(name)
        ax.scatter(base[others, 0], base[others, 1], s=point, c=COLOUR_OTHERS, linewidths=0, rasterized=True)
        if name == "original":
            ax.scatter(base[rows, 0], base[rows, 1], s=point * 1.6, c=COLOUR_BEFORE, linewidths=0)
        else:
            ax.scatter(base[rows, 0], base[rows, 1], s=point * 1.6, facecolors="none", edgecolors=COLOUR_BEFORE,
                       linewidths=0.6, alpha=0.6)
            ax.scatter(embedding[name][:, 0], embedding[name][:, 1], s=point * 1.6, c=COLOUR_AFTER, linewidths=0)
        ax.set_title(f"{result.titles[name]}\n{_verdict(row)}\nvisibility {row['visibility']:.2f}", fontsize=10.5)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("UMAP 1")
    axes[0].set_ylabel("UMAP 2")
    handles = [Line2D([], [], ls="", marker="o", color=COLOUR_OTHERS, label="other clusters"),
               Line2D([], [], ls="", marker="o", color=COLOUR_BEFORE, label=f"{result.target}, original"),
               Line2D([], [], ls="", marker="o", mfc="none", mec=COLOUR_BEFORE,
                      label=f"{result.target}, original position"),
               Line2D([], [], ls="", marker="o", color=COLOUR_AFTER, label=f"{result.target}, after the attack")]
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False, fontsize=10, bbox_to_anchor=(0.5, -0.04))
    reference = result.row("original")
    fig.suptitle(f"Attacked cluster {result.target!r} ({rows.size} cells; model says {result.baseline_label!r}); "
                 "one UMAP fitted on original + attacked cells.\nVisibility = centroid shift in PCA space / cluster "
                 "RMS radius (0: invisible, >1: moved beyond its own spread); for scale, moving it onto the nearest "
                 f"other cluster ({reference['reference_cluster']}) = {reference['reference_visibility']:.2f}",
                 fontsize=11.5)
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    _save(fig, path)


def marker_summary(adata: ad.AnnData, labels: np.ndarray, genes: Sequence[str],
                   clusters: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(mean expression, fraction of cells > 0), each clusters × genes: the two channels of a dot plot."""
    expression = as_expression(adata)
    cols = expression.gene_indices(list(genes))
    block = _rows(expression.matrix[:, cols], np.arange(expression.n_cells))
    means = np.vstack([block[labels == c].mean(axis=0) for c in clusters])
    fractions = np.vstack([(block[labels == c] > 0).mean(axis=0) for c in clusters])
    return means, fractions


def plot_dotplot(result: DetectabilityResult, path: str | Path) -> None:
    """Marker dot plot of every cluster before and after the max-change attack, on one shared colour scale.

    One scale for both panels (not scanpy's per-panel standardisation), so a change of colour is a real change
    of expression; markers the attack modified are starred and the attacked cluster is marked.
    """
    clusters = sorted(set(result.labels))
    genes = result.markers
    after = result.modified["max_change"]
    panels = [("original", *marker_summary(result.original, result.labels, genes, clusters)),
              ("after max-change", *marker_summary(after, result.labels, genes, clusters))]
    vmax = max(float(np.nanmax(p[1])) for p in panels) or 1.0
    modified = set(result.max_change_genes)
    row = result.row("max_change")
    width = max(4.5, 0.42 * len(genes) + 1.6)
    height = max(3.2, 0.42 * len(clusters) + 2.2)
    fig = plt.figure(figsize=(2 * width + 3.4, height))
    grid = fig.add_gridspec(2, 3, width_ratios=[width, width, 0.9], height_ratios=[1, 1.6], wspace=0.08)
    first = fig.add_subplot(grid[:, 0])
    axes = [first, fig.add_subplot(grid[:, 1], sharey=first)]
    key, bar = fig.add_subplot(grid[0, 2]), fig.add_subplot(grid[1, 2])
    xs, ys = np.meshgrid(np.arange(len(genes)), np.arange(len(clusters)))
    image = None
    for ax, (name, means, fractions) in zip(axes, panels, strict=True):
        image = ax.scatter(xs.ravel(), ys.ravel(), s=fractions.ravel() * 220 + 2, c=means.ravel(), cmap="Reds",
                           vmin=0.0, vmax=vmax, edgecolors="#555555", linewidths=0.4)
        ticks = [f"{g}*" if name != "original" and g in modified else g for g in genes]
        ax.set_xticks(range(len(genes)), ticks, rotation=60, ha="right")
        ax.set_xlim(-0.6, len(genes) - 0.4)
        ax.set_ylim(len(clusters) - 0.5, -0.5)
        target_y = clusters.index(result.target)
        ax.axhspan(target_y - 0.45, target_y + 0.45, color="#fff2b3", zorder=0)
        ax.set_xlabel(f"marker genes ({result.markers_source})")
        title = "original" if name == "original" else (
            f"after max-change ({row['detail']})\n{_verdict(row)}; * = marker modified by the attack")
        ax.set_title(title, fontsize=10.5)
    axes[0].set_yticks(range(len(clusters)), [f"▶ {c}" if c == result.target else c for c in clusters])
    axes[0].set_ylabel("cluster (yellow band: attacked)")
    axes[1].tick_params(labelleft=False)
    sizes = [0.25, 0.5, 1.0]
    handles = [key.scatter([], [], s=f * 220 + 2, c="white", edgecolors="#555555", label=f"{int(f * 100)}%")
               for f in sizes]
    key.axis("off")
    key.legend(handles=handles, title="cells > 0", loc="upper left", frameon=False, labelspacing=1.2)
    bar.set_box_aspect(6)
    fig.colorbar(image, cax=bar, label="mean log-normalised\nexpression")
    fig.suptitle(f"Marker expression per cluster before / after the max-change attack on {result.target!r}",
                 fontsize=12)
    _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


# -- pipeline stage -------------------------------------------------------------------------------------------


def detectability_parameters() -> dict[str, Any]:
    """Keyword parameters a config may set, with their defaults."""
    return {name: p.default for name, p in inspect.signature(detectability).parameters.items()
            if p.kind is p.KEYWORD_ONLY}


def largest_cluster(labels: np.ndarray) -> str:
    """The most populous cluster (ties: alphabetical), the default target: its visibility is the most stable."""
    counts = pd.Series(labels).value_counts()
    return str(counts[counts == counts.max()].sort_index().index[0])


def run_detectability(prepared_h5ad: str | Path, model_pkl: str | Path, target: str | None,
                      params: Mapping[str, Any], out_table: str | Path, out_umap: str | Path,
                      out_dotplot: str | Path, threads: int | None = None) -> None:
    """Detectability of the four attacks on one cluster of the test split: TSV table and both figures.

    torch runs on one thread whatever `threads` says: every model call scores one cluster, and thread
    synchronisation then costs more than it saves (pbmc68k_reduced, scMLP, 2 busy cores: 28 s with 2 threads,
    2 s with 1). `threads` caps numba's threads (UMAP) instead.
    """

    use_threads(1)
    if threads:
        import numba

        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    known = detectability_parameters()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(f"detectability: unknown parameter(s) {', '.join(unknown)} (known: {', '.join(known)})")
    data = read_prepared(prepared_h5ad, split="test")
    if data.n_obs == 0:
        raise DataError(f"{prepared_h5ad} has no test cells")
    labels = data.obs["label"].astype(str).to_numpy()
    chosen = largest_cluster(labels) if target is None else check_clusters([str(target)], labels, "detectability")[0]
    model = PerCellClassifier.load(model_pkl)
    started = time.perf_counter()
    result = detectability(data, labels, chosen, model, **dict(params))
    write_table(out_table, result.table)
    plot_umaps(result, out_umap)
    plot_dotplot(result, out_dotplot)
    log.info("detectability on %r done in %.1fs", chosen, time.perf_counter() - started)
