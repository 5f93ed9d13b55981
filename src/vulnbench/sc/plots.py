"""Figures. Each is read at a glance: labelled axes, counts written in the cells, one panel per classifier."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import SymLogNorm

from vulnbench.core.errors import ConfigError, DataError
from vulnbench.core.io import atomic_path, read_table
from vulnbench.sc.attacks import ATTACKS


def count_heatmap(table: pd.DataFrame, value: str, output: str | Path, title: str,
                  xlabel: str = "modification mode") -> None:
    """Clusters × modes heatmap of `value`, one panel per (dataset, classifier); failed cells marked ✗, cells of a
    job that failed as a whole (a row without cluster, written after a failed run) marked !."""
    table = table.reindex(columns=list(dict.fromkeys([*table.columns, "cluster", value])))
    whole_jobs = table[table["cluster"].isna() & (table["status"] != "ok")]
    panels = table.groupby(["dataset", "classifier"], sort=True)
    n = panels.ngroups
    clusters = sorted(table["cluster"].dropna().astype(str).unique()) or ["(all clusters)"]
    modes = list(dict.fromkeys(table["mode"]))
    width = max(4.0, 0.9 * len(modes) + 2.5)
    height = max(3.0, 0.38 * len(clusters) + 1.8)
    fig, axes = plt.subplots(1, n, figsize=(width * n + 1.5, height), squeeze=False, sharey=True)
    vmax = max(1.0, float(pd.to_numeric(table[value], errors="coerce").max(skipna=True) or 1.0))
    # counts span 0 to thousands: a log scale keeps the 1s and 2s visible next to the aberrant modes
    norm = SymLogNorm(linthresh=1.0, vmin=0.0, vmax=vmax, base=10)
    image = None
    for ax, ((dataset, classifier), frame) in zip(axes[0], panels, strict=True):
        grid = frame.pivot_table(index="cluster", columns="mode", values=value, aggfunc="first")
        grid = grid.reindex(index=clusters, columns=modes)
        grid = grid.where(grid >= 0)  # -1 = nothing found: shown as "–"
        status = frame.pivot_table(index="cluster", columns="mode", values="status", aggfunc="first")
        status = status.reindex(index=clusters, columns=modes)
        failed_jobs = whole_jobs[(whole_jobs["dataset"] == dataset) & (whole_jobs["classifier"] == classifier)]
        for mode in failed_jobs["mode"]:
            status[mode] = status[mode].where(status[mode].notna(), "job failed")
        image = ax.imshow(grid.to_numpy(dtype=float), cmap="YlOrRd", norm=norm, aspect="auto")
        for i, j in np.ndindex(grid.shape):
            cell, state = grid.iat[i, j], status.iat[i, j]
            if state == "failed":
                text, colour = "✗", "black"
            elif state == "job failed":
                text, colour = "!", "red"
            elif pd.isna(cell):
                text, colour = "–", "grey"
            else:
                text, colour = f"{int(cell)}", "white" if norm(cell) > 0.6 else "black"
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=9)
        ax.set_xticks(range(len(modes)), modes, rotation=35, ha="right")
        ax.set_yticks(range(len(clusters)), clusters)
        ax.set_title(f"{classifier} ({dataset})")
        ax.set_xlabel(xlabel)
    axes[0][0].set_ylabel("attacked cluster")
    fig.colorbar(image, ax=axes[0].tolist(), label=value.replace("_", " ") + " (log scale)", shrink=0.8)
    note = "\n! : the job failed or did not run (see the table's reason column)" if len(whole_jobs) else ""
    fig.suptitle(title + note, y=1.0, va="bottom")  # above the panel titles, whatever the figure's height
    _save(fig, output)


def _ok_rows(table: pd.DataFrame, figure: str) -> pd.DataFrame:
    """The rows with a result; a figure of none is an error naming the figure, not an IndexError."""

    ok = table[table["status"] == "ok"].copy()
    if ok.empty:
        raise DataError(f"figure {figure}: no row of the table has status ok (see its reason column)")
    return ok


def _panels(table: pd.DataFrame, title: str, height: float = 3.6):
    groups = list(table.groupby(["dataset", "classifier"], sort=True))
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups) + 1.5, height), squeeze=False)
    fig.suptitle(title, y=1.03)
    return fig, axes[0], groups


def _save(fig: plt.Figure, output: str | Path) -> None:
    with atomic_path(output) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def cgd_genes_needed(table: pd.DataFrame, output: str | Path) -> None:
    """Genes CGD modified before the cluster switched, against the step size; a cross: never switched."""
    table = _ok_rows(table, "cgd genes_needed")
    same = bool((table["alpha"] == table["epsilon"]).all())
    table["step"] = table["alpha"] if same else table["alpha"].astype(str) + " / " + table["epsilon"].astype(str)
    fig, axes, groups = _panels(table, "CGD: genes modified until the cluster switches label")
    for ax, ((dataset, classifier), frame) in zip(axes, groups, strict=True):
        for i, (cluster, rows) in enumerate(frame.groupby("cluster", sort=True)):
            rows = rows.sort_values("step")
            colour = plt.cm.tab10(i % 10)
            ax.plot(rows["step"], rows["nbModifiedGenes"], color=colour, marker="o", label=cluster)
            failed = rows[~rows["switched"].astype(bool)]
            ax.scatter(failed["step"], failed["nbModifiedGenes"], color=colour, marker="x", s=80, zorder=3)
        ax.set_title(f"{classifier} ({dataset})")
        ax.set_xlabel("α = ε" if same else "α / ε")
        ax.set_ylabel("genes modified")
        ax.grid(alpha=0.3)
    axes[-1].legend(title="attacked cluster (× = no switch)", fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    _save(fig, output)


def cgd_trajectory(table: pd.DataFrame, output: str | Path) -> None:
    """Fraction of the cluster's cells with the original (solid) and the new (dashed) label, gene by gene.

    Drawn for the strongest step of the grid, one panel per classifier, one colour per cluster.
    """

    table = _ok_rows(table, "cgd trajectory")
    strongest = (table["alpha"] + table["epsilon"]).max()
    table = table[(table["alpha"] + table["epsilon"]) == strongest]
    alpha, epsilon = table["alpha"].iloc[0], table["epsilon"].iloc[0]
    fig, axes, groups = _panels(table, f"CGD trajectory (α = {alpha:g}, ε = {epsilon:g}): solid = original label, "
                                       "dashed = new label", height=3.8)
    for ax, ((dataset, classifier), frame) in zip(axes, groups, strict=True):
        for i, row in enumerate(frame.sort_values("cluster").itertuples()):
            points = np.asarray(json.loads(row.trajectory), dtype=float)
            colour = plt.cm.tab10(i % 10)
            ax.plot(points[:, 0], points[:, 1], color=colour, label=f"{row.cluster} → {row.targType}")
            ax.plot(points[:, 0], points[:, 2], color=colour, linestyle="--")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"{classifier} ({dataset})")
        ax.set_xlabel("genes tested")
        ax.set_ylabel("fraction of the cluster's cells")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left", title="cluster → new label")
    _save(fig, output)


def run_plot(attack: str, figure: str, table: str | Path, output: str | Path) -> None:
    """One figure of one attack's table, as the attack's registry entry describes it."""
    figures = ATTACKS.get(attack).figures
    if figure not in figures:
        raise ConfigError(f"attack {attack!r} has no figure {figure!r} (figures: {', '.join(figures)})")
    spec = figures[figure]
    globals()[spec.function](read_table(table), output=output, **spec.kwargs)
