"""The poster's "evaluation of different types of scRNA-seq classifiers": every classifier on the same clusters.

One long table (classifier × cluster × measure) from the attack tables the pipeline already wrote, and one figure
with a panel per measure: single-gene flips per mode, max-change signature sizes per mode, CGD genes needed at low
and high intensity (α = ε). A classifier that was not attacked with some attack simply has no value there.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import SymLogNorm

from vulnbench.core.io import atomic_path, read_table, write_table

#: CGD intensities the poster compares
CGD_LOW, CGD_HIGH = 0.3, 1.5


def _ok(table: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """The rows of attacked clusters; `columns` exist even when every job of the table stopped on bad input."""
    table = table.reindex(columns=list(dict.fromkeys([*table.columns, "cluster", *columns])))
    return table[table["status"] == "ok"] if "status" in table else table


def comparison_table(tables: Mapping[str, str | Path]) -> pd.DataFrame:
    """Long table: classifier, cluster, measure ("single_gene <mode>", "max_change signature <mode>",
    "cgd genes α=ε=<x>"), value; from whichever of the attack tables exist."""
    parts = []
    if "single_gene" in tables and Path(tables["single_gene"]).is_file():
        sg = _ok(read_table(tables["single_gene"]), "mode", "n_genes_flipping")
        parts.append(pd.DataFrame({"classifier": sg["classifier"], "cluster": sg["cluster"],
                                   "measure": "single-gene flips · " + sg["mode"].astype(str),
                                   "value": sg["n_genes_flipping"].astype(float)}))
    if "max_change" in tables and Path(tables["max_change"]).is_file():
        mc = _ok(read_table(tables["max_change"]), "mode", "signature_size")
        parts.append(pd.DataFrame({"classifier": mc["classifier"], "cluster": mc["cluster"],
                                   "measure": "max-change signature · " + mc["mode"].astype(str),
                                   "value": mc["signature_size"].astype(float)}))
    if "cgd" in tables and Path(tables["cgd"]).is_file():
        cgd = _ok(read_table(tables["cgd"]), "alpha", "epsilon", "switched", "nbModifiedGenes")
        for intensity in (CGD_LOW, CGD_HIGH):
            rows = cgd[np.isclose(cgd["alpha"].astype(float), intensity)
                       & np.isclose(cgd["epsilon"].astype(float), intensity)]
            # genes modified until the switch; no switch within the gene list → NaN (shown as "no switch")
            value = np.where(rows["switched"].astype(bool), rows["nbModifiedGenes"].astype(float), np.nan)
            parts.append(pd.DataFrame({"classifier": rows["classifier"], "cluster": rows["cluster"],
                                       "measure": f"CGD genes to switch · α=ε={intensity:g}", "value": value}))
    if not parts:
        return pd.DataFrame(columns=["classifier", "cluster", "measure", "value"])
    return pd.concat(parts, ignore_index=True)


def plot_comparison(table: pd.DataFrame, out: str | Path) -> None:
    """One heat-map per measure: clusters (rows) × classifiers (columns), values written in the cells."""
    measures = list(dict.fromkeys(table["measure"])) or ["(no results)"]
    classifiers = sorted(table["classifier"].unique()) if len(table) else []
    clusters = sorted(table["cluster"].unique()) if len(table) else []
    n_cols = min(4, len(measures))
    n_rows = int(np.ceil(len(measures) / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.2 * n_cols + 1.5, 0.32 * max(4, len(clusters)) * n_rows + 1.2),
                             squeeze=False)
    for ax in axes.ravel()[len(measures):]:
        ax.axis("off")
    for ax, measure in zip(axes.ravel(), measures, strict=False):
        grid = (table[table["measure"] == measure].pivot_table(index="cluster", columns="classifier", values="value",
                                                              aggfunc="first", dropna=False)
                .reindex(index=clusters, columns=classifiers))
        values = grid.to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        norm = SymLogNorm(linthresh=1.0, vmin=0, vmax=max(1.0, finite.max() if finite.size else 1.0))
        ax.imshow(np.where(np.isfinite(values), values, np.nan), cmap="viridis", aspect="auto", norm=norm)
        for (i, j), v in np.ndenumerate(values):
            attacked = measure in table["measure"].values and ((table["measure"] == measure)
                                                              & (table["classifier"] == classifiers[j])).any()
            text = f"{v:g}" if np.isfinite(v) else ("✗" if attacked else "")
            dark = np.isfinite(v) and norm(v) < 0.6  # white text on the dark end of viridis, black on the bright end
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
        ax.set_title(measure, fontsize=8)
        ax.set_xticks(range(len(classifiers)), classifiers, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(clusters)), clusters if ax in axes[:, 0] else [""] * len(clusters), fontsize=7)
    fig.suptitle("Classifiers compared on the same clusters (✗: attacked, no switch; blank: not attacked)",
                 fontsize=10)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)


def run_comparison(tables: Mapping[str, str | Path], out_table: str | Path, out_figure: str | Path) -> None:
    table = comparison_table(tables)
    write_table(out_table, table)
    plot_comparison(table, out_figure)
