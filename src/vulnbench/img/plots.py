"""Figures of the dermoscopy arm, from the aggregated tables (and the saved adversarial PNGs for the panels)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from PIL import Image

from vulnbench.core.errors import ConfigError
from vulnbench.core.io import atomic_path, read_table
from vulnbench.img.attacks import attack_order

log = logging.getLogger(__name__)

#: figure name → what it shows (results/figures/img_<name>.png)
IMAGE_FIGURES = {
    "attacks": "success rate per attack × model with 95 % Clopper–Pearson intervals (Supplementary Table 2)",
    "confidence": "original melanoma confidence vs adversarial naevus probability (the paper's Fig. 1n histogram)",
    "panels": "original / adversarial / amplified difference for one successful example per attack",
    "perturbations": "accuracy under rotations and per-channel shifts (Supplementary Figure 1)",
}


def _save(fig: plt.Figure, out: str | Path) -> None:
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=130, bbox_inches="tight", format="png")
    plt.close(fig)


def _job_label(row: pd.Series) -> str:
    """"fgsm eps_levels=4, space=pixel": the attack and its grid cell (the table's `mode`; the pid for a job that
    failed as a whole, whose parameters were never written)."""
    mode = row.get("mode")
    mode = str(row["pid"]) if mode is None or pd.isna(mode) else str(mode)
    return str(row["attack"]) if mode == "default" else f"{row['attack']} {mode}"


def plot_attacks(table: pd.DataFrame, out: str | Path) -> None:
    """Grouped bars: one group per attack job, one bar per model, error bars = Clopper–Pearson 95 %; a job that
    failed as a whole (a status row written after a failed run) is marked ✗ instead of a bar."""
    frame = table.reindex(columns=list(dict.fromkeys([*table.columns, "status", "success_rate", "success_lo",
                                                       "success_hi", "n_success", "n_attacked"])))
    frame["status"] = frame["status"].fillna("ok")
    frame["job"] = frame.apply(_job_label, axis=1)
    position = {name: k for k, name in enumerate(attack_order(frame["attack"].astype(str)))}
    jobs = list(dict.fromkeys(sorted(frame["job"], key=lambda j: (position[j.split()[0]], j))))
    models = list(dict.fromkeys(frame["model"]))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(jobs) * max(1, len(models)) / 2 + 3), 4.2))
    width = 0.8 / max(1, len(models))
    for k, model in enumerate(models):
        sub = frame[frame["model"] == model].set_index("job").reindex(jobs)
        rate = sub["success_rate"].to_numpy(dtype=float)
        low = rate - sub["success_lo"].to_numpy(dtype=float)
        high = sub["success_hi"].to_numpy(dtype=float) - rate
        x = np.arange(len(jobs)) + (k - (len(models) - 1) / 2) * width
        ax.bar(x, rate, width, label=model, yerr=np.nan_to_num(np.vstack([low, high])), capsize=2)
        for xi, n_ok, n, status in zip(x, sub["n_success"], sub["n_attacked"], sub["status"], strict=True):
            if pd.notna(status) and status != "ok":
                ax.text(xi, 0.01, "✗", ha="center", va="bottom", fontsize=9, color="red")
            elif pd.notna(n):  # "0/0": the model classified none of the melanomas correctly, nothing to attack
                ax.text(xi, 1.02, f"{int(n_ok)}/{int(n)}", ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_xticks(np.arange(len(jobs)), jobs, rotation=35, ha="right", fontsize=8)
    ax.set_ylim(0, 1.18)
    ax.set_ylabel("successful attacks / attacked melanomas")
    failed = " (✗: the job failed or did not run)" if (frame["status"] != "ok").any() else ""
    ax.set_title("Attacks that turned a correctly classified melanoma into 'nevus'" + failed)
    ax.legend(title="model", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, out)


def plot_confidence(records: pd.DataFrame, out: str | Path) -> None:
    """Per attack: 2-D histogram of the clean P(melanoma) vs the adversarial P(nevus), log colour scale."""
    attacked = records[records["outcome"] != "skipped"].copy()
    attacks = attack_order(attacked["attack"].astype(str)) or ["(none)"]
    fig, axes = plt.subplots(1, len(attacks), figsize=(3.3 * len(attacks) + 0.8, 3.4), squeeze=False)
    bins = np.linspace(0.5, 1.0, 11), np.linspace(0.0, 1.0, 11)
    image = None
    for ax, attack in zip(axes[0], attacks, strict=True):
        sub = attacked[attacked["attack"] == attack]
        x = sub["original_probability"].to_numpy(dtype=float)
        y = sub["adversarial_probability"].to_numpy(dtype=float)
        counts, _, _ = np.histogram2d(x, y, bins=bins)
        image = ax.pcolormesh(bins[0], bins[1], np.where(counts.T > 0, counts.T, np.nan), cmap="viridis",
                              norm=LogNorm(vmin=1, vmax=max(2.0, counts.max())))
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_title(f"{attack} (n = {len(sub)})", fontsize=10)
        ax.set_xlabel("clean P(melanoma)")
        ax.set_xlim(0.5, 1.0)
        ax.set_ylim(0.0, 1.0)
    axes[0][0].set_ylabel("P(nevus) after the attack")
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), label="images (log scale)", shrink=0.9)
    fig.suptitle("Above the dashed line the attack succeeded", fontsize=10, y=1.02)
    _save(fig, out)


def plot_panels(records: pd.DataFrame, manifests: Mapping[str, str | Path], out: str | Path) -> None:
    """One row per attack: original, adversarial and |difference| (amplified to the full range)."""
    chosen = []
    ok = records[(records["outcome"] == "success") & records["adversarial_path"].notna()] if (
        "adversarial_path" in records) else records.iloc[:0]
    for attack in attack_order(ok["attack"].astype(str)):
        sub = ok[ok["attack"] == attack]
        if len(sub):
            chosen.append(sub.sort_values("adversarial_probability", ascending=False).iloc[0])
    fig, axes = plt.subplots(max(1, len(chosen)), 3, figsize=(7.6, 2.8 * max(1, len(chosen))), squeeze=False)
    if not chosen:
        for ax in axes[0]:
            ax.axis("off")
        axes[0][1].text(0.5, 0.5, "no successful attack to show", ha="center", va="center")
    for row, record in zip(axes, chosen, strict=False):
        original_path = Path(manifests[record["dataset"]]).parent / "images" / f"{record['image']}.png"
        adversarial_path = Path(record["adversarial_path"])
        with Image.open(original_path) as a, Image.open(adversarial_path) as b:
            original = np.asarray(a.convert("RGB")).astype(np.int16)
            adversarial = np.asarray(b.convert("RGB")).astype(np.int16)
        difference = np.abs(adversarial - original).max(axis=2)
        row[0].imshow(original.astype(np.uint8))
        row[0].set_title(f"original\nP(melanoma) {record['original_probability']:.2f}", fontsize=8)
        row[1].imshow(adversarial.astype(np.uint8))
        row[1].set_title(f"{record['attack']} on {record['model']}\nP(nevus) {record['adversarial_probability']:.2f}",
                         fontsize=8)
        shown = row[2].imshow(difference, cmap="magma", vmin=0, vmax=max(1, int(difference.max())))
        row[2].set_title(f"|difference|\nmax {int(difference.max())} of 255 levels", fontsize=8)
        fig.colorbar(shown, ax=row[2], fraction=0.046)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    _save(fig, out)


def plot_perturbations(table: pd.DataFrame, out: str | Path) -> None:
    """Accuracy per transform (identity, rotations, ±δ per channel), one line per model."""
    order = list(dict.fromkeys(table["transform"]))
    fig, ax = plt.subplots(figsize=(max(7.0, 0.38 * len(order) + 2), 4.0))
    for model, sub in table.groupby("model", sort=False):
        sub = sub.set_index("transform").reindex(order)
        ax.plot(np.arange(len(order)), sub["accuracy"], marker="o", ms=4, label=model)
    identity = table[table["transform"] == "identity"]["accuracy"]
    if len(identity):
        ax.axhspan(identity.min(), identity.max(), color="grey", alpha=0.15, label="unperturbed (range)")
    ax.set_xticks(np.arange(len(order)), order, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("accuracy on the test split (threshold 0.5)")
    ax.set_ylim(0, 1.02)
    ax.set_title("Systematic perturbations: rotation and per-channel colour shifts")
    ax.legend(fontsize=8, loc="lower left")
    _save(fig, out)


def run_img_plot(figure: str, attacks: str | Path, records: str | Path, perturbations: str | Path,
                 manifests: Mapping[str, str | Path], out: str | Path) -> None:
    if figure not in IMAGE_FIGURES:
        raise ConfigError(f"unknown image figure {figure!r} (known: {', '.join(IMAGE_FIGURES)})")
    if figure == "attacks":
        plot_attacks(read_table(attacks), out)
    elif figure == "confidence":
        plot_confidence(read_table(records), out)
    elif figure == "panels":
        plot_panels(read_table(records), manifests, out)
    else:
        plot_perturbations(read_table(perturbations), out)
