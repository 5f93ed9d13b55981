"""Figures. Each is read at a glance: labelled axes, counts written in the cells, one panel per classifier."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import SymLogNorm

from vulnbench.io import atomic_path


def count_heatmap(table: pd.DataFrame, value: str, output: str | Path, title: str) -> None:
    """Clusters × modes heatmap of `value`, one panel per (dataset, classifier); failed cells marked ✗."""
    panels = table.groupby(["dataset", "classifier"], sort=True)
    n = panels.ngroups
    clusters = sorted(table["cluster"].unique())
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
        status = frame.pivot_table(index="cluster", columns="mode", values="status", aggfunc="first")
        status = status.reindex(index=clusters, columns=modes)
        image = ax.imshow(grid.to_numpy(dtype=float), cmap="YlOrRd", norm=norm, aspect="auto")
        for i, j in np.ndindex(grid.shape):
            cell, state = grid.iat[i, j], status.iat[i, j]
            if state == "failed":
                text, colour = "✗", "black"
            elif pd.isna(cell):
                text, colour = "–", "grey"
            else:
                text, colour = f"{int(cell)}", "white" if norm(cell) > 0.6 else "black"
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=9)
        ax.set_xticks(range(len(modes)), modes, rotation=35, ha="right")
        ax.set_yticks(range(len(clusters)), clusters)
        ax.set_title(f"{classifier} ({dataset})")
        ax.set_xlabel("modification mode")
    axes[0][0].set_ylabel("attacked cluster")
    fig.colorbar(image, ax=axes[0].tolist(), label=value.replace("_", " ") + " (log scale)", shrink=0.8)
    fig.suptitle(title)
    with atomic_path(output) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def run_plot(attack: str, table: str | Path, output: str | Path) -> None:
    from vulnbench.sc.attacks import ATTACKS

    spec = ATTACKS.get(attack)
    frame = pd.read_csv(table, sep="\t")
    count_heatmap(frame, spec.figure_value, output, spec.figure_title)
