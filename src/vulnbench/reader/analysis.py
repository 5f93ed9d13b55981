"""Do attacks that fool the CNN also fool dermatologists? Reader AUCs with confidence intervals and a logistic test.

With binary answers a reader's ROC has one operating point, so AUC = (sensitivity + specificity) / 2 (the
Mann–Whitney AUC with ties counted ½). Intervals: DeLong's method is the main one; a seeded stratified bootstrap is
reported beside it. Pooled rows contain every reader's answer to the same images, which are not independent: their
DeLong variance is Obuchowski's (1997) clustered form with the image as cluster, and their bootstrap resamples
images, not answers. The effect test follows the study's design: logistic regression of a correct answer
on reader and truth (fixed effects) plus "adversarial", with the Wald p of "adversarial".
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit, logit
from scipy.stats import norm, rankdata

from vulnbench.core.errors import ConfigError, DataError
from vulnbench.core.io import atomic_path, write_json, write_table
from vulnbench.reader.answers import (
    ANSWER_COLUMNS,
    SIMULATED_MARKER,
    VERSION_PREFIX,
    read_answer_file,
    version_line,
)
from vulnbench.reader.study import ADVERSARIAL, CLEAN, POOLED, check_reader_name, load_study

log = logging.getLogger(__name__)


# -- answers ---------------------------------------------------------------------------------------------------------
def read_answers(study_dir: str | Path, answers_dir: str | Path) -> pd.DataFrame:
    """All readers' answers joined with the manifest: one row per (reader, image).

    Columns: reader, image, answer (0 benign / 1 malignant), response_time_ms, timestamp, source, condition, truth,
    order, melanoma (truth as 0/1), adversarial (0/1), correct (0/1). The reader is the CSV's file name. A torn last
    line or a repeated answer is left out and logged (see `vulnbench.reader.answers`); answers to another study, or
    simulated readers mixed with real ones, are errors.
    """
    study = load_study(study_dir)
    known = frozenset(study.images)
    files = sorted(Path(answers_dir).glob("*.csv"))
    if not files:
        raise DataError(f"no reader answer files (*.csv) in {answers_dir}")
    frames = []
    kinds: dict[bool, list[str]] = {True: [], False: []}
    for path in files:
        try:
            reader = check_reader_name(path.stem)
        except ConfigError as error:
            raise DataError(f"{path}: {error}") from None
        parsed = read_answer_file(path, known, study.study_id)
        kinds[parsed.simulated].append(path.name)
        answers = parsed.frame
        if answers.empty:
            log.warning("%s holds no answers yet: skipped", path)
            continue
        if len(answers) < len(known):
            log.info("reader %s answered %d of %d images", reader, len(answers), len(known))
        answers.insert(0, "reader", reader)
        frames.append(answers)
    if kinds[True] and kinds[False]:
        raise DataError(f"{answers_dir} mixes simulated readers ({', '.join(kinds[True][:2])}) with real ones "
                        f"({', '.join(kinds[False][:2])}): analyse them apart")
    if not frames:
        raise DataError(f"the answer files in {answers_dir} hold no answers")
    frame = pd.concat(frames, ignore_index=True).merge(study.manifest, on="image", how="left", validate="many_to_one")
    frame["answer"] = frame["answer"].astype(int)
    frame["response_time_ms"] = frame["response_time_ms"].astype(float)
    frame["melanoma"] = (frame["truth"] == "melanoma").astype(int)
    frame["adversarial"] = (frame["condition"] != CLEAN).astype(int)
    frame["correct"] = (frame["answer"] == frame["melanoma"]).astype(int)
    return frame


# -- AUC and its intervals -------------------------------------------------------------------------------------------
def delong_auc(scores: Sequence[float] | np.ndarray, positive: Sequence[bool] | np.ndarray,
               clusters: Sequence[Any] | np.ndarray | None = None) -> tuple[float, float]:
    """(AUC, variance) of one ROC by DeLong's structural components, computed from midranks (no pair loop).

    V10ᵢ = share of negatives a positive outranks (ties ½), V01ⱼ = share of positives that outrank a negative;
    var = s²(V10)/m + s²(V01)/n. With `clusters` (e.g. the image when several readers rate it) the components are
    summed per cluster (Obuchowski 1997); singleton clusters give DeLong's variance exactly. NaN when a class is
    missing (AUC undefined) or has one member (variance undefined).
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    x, y = scores[positive], scores[~positive]
    m, n = len(x), len(y)
    if m == 0 or n == 0:
        return math.nan, math.nan
    combined = rankdata(np.concatenate([x, y]))
    v10 = (combined[:m] - rankdata(x)) / n
    v01 = 1.0 - (combined[m:] - rankdata(y)) / m
    auc = float(v10.mean())
    if clusters is None:
        if m < 2 or n < 2:
            return auc, math.nan
        return auc, float(v10.var(ddof=1) / m + v01.var(ddof=1) / n)
    codes = np.unique(np.asarray(clusters), return_inverse=True)[1].ravel()
    k = int(codes.max()) + 1
    m_i = np.bincount(codes[positive], minlength=k)
    n_i = np.bincount(codes[~positive], minlength=k)
    dev10 = np.bincount(codes[positive], weights=v10, minlength=k) - m_i * auc
    dev01 = np.bincount(codes[~positive], weights=v01, minlength=k) - n_i * auc
    k10, k01 = int((m_i > 0).sum()), int((n_i > 0).sum())
    if k10 < 2 or k01 < 2:
        return auc, math.nan
    s10 = k10 / ((k10 - 1) * m) * float(dev10 @ dev10)
    s01 = k01 / ((k01 - 1) * n) * float(dev01 @ dev01)
    s11 = k / (k - 1) * float(dev10 @ dev01)
    return auc, s10 / m + s01 / n + 2.0 * s11 / (m * n)


def normal_ci(auc: float, variance: float, level: float = 0.95) -> tuple[float, float]:
    """AUC ± z·SE, clipped to [0, 1] (as pROC)."""
    if not (math.isfinite(auc) and math.isfinite(variance)):
        return math.nan, math.nan
    half = norm.ppf(0.5 + level / 2) * math.sqrt(max(variance, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


def bootstrap_auc_ci(scores: Sequence[float] | np.ndarray, positive: Sequence[bool] | np.ndarray,
                     clusters: Sequence[Any] | np.ndarray | None = None, n_boot: int = 2000,
                     seed: int | Sequence[int] = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of a stratified bootstrap: positives and negatives (or clusters) resampled separately.

    Vectorised over replicates: each replicate is a vector of draw counts per cluster, turned into counts per
    distinct score value, and AUC_b = cₚᵀ Ψ cₙ / (Σcₚ Σcₙ) with Ψ the ½-tie comparison of distinct values.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return math.nan, math.nan
    values, value_index = np.unique(scores, return_inverse=True)
    codes = (np.arange(len(scores)) if clusters is None
             else np.unique(np.asarray(clusters), return_inverse=True)[1].ravel())
    k = int(codes.max()) + 1
    pos_counts = np.zeros((k, len(values)))
    neg_counts = np.zeros((k, len(values)))
    np.add.at(pos_counts, (codes[positive], value_index[positive]), 1.0)
    np.add.at(neg_counts, (codes[~positive], value_index[~positive]), 1.0)
    has_pos, has_neg = pos_counts.sum(1) > 0, neg_counts.sum(1) > 0
    rng = np.random.default_rng(seed)
    weights = np.zeros((int(n_boot), k))
    for stratum in (has_pos & ~has_neg, has_neg & ~has_pos, has_pos & has_neg):
        members = np.flatnonzero(stratum)
        if len(members):
            weights[:, members] = rng.multinomial(len(members), np.full(len(members), 1.0 / len(members)),
                                                  size=int(n_boot))
    psi = (values[:, None] > values[None, :]) + 0.5 * (values[:, None] == values[None, :])
    drawn_pos, drawn_neg = weights @ pos_counts, weights @ neg_counts
    with np.errstate(invalid="ignore", divide="ignore"):
        aucs = ((drawn_pos @ psi) * drawn_neg).sum(1) / (drawn_pos.sum(1) * drawn_neg.sum(1))
    aucs = aucs[np.isfinite(aucs)]
    low, high = np.quantile(aucs, [0.5 - level / 2, 0.5 + level / 2])
    return float(low), float(high)


def _condition_sets(frame: pd.DataFrame) -> list[tuple[str, np.ndarray]]:
    """Clean images; adversarial images (all attacks, then each); an adversarial set also takes the clean naevi
    as its negatives, since attacked images are melanomas only (their AUC would otherwise be undefined)."""
    condition = frame["condition"].to_numpy()
    clean_nevi = (condition == CLEAN) & ~frame["melanoma"].to_numpy(dtype=bool)
    attacks = sorted(set(condition) - {CLEAN})
    sets = [(CLEAN, condition == CLEAN), (ADVERSARIAL, (condition != CLEAN) | clean_nevi)]
    return sets + [(attack, (condition == attack) | clean_nevi) for attack in attacks]


def reader_auc(frame: pd.DataFrame, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Per reader and pooled × condition set (clean, adversarial = all attacks, each attack): n, AUC, intervals.

    Columns: reader, condition_set, n, n_melanoma, n_nevus, auc, se, ci_low, ci_high (DeLong; clustered by image
    for the pooled rows), boot_low, boot_high (stratified bootstrap), sensitivity, specificity,
    median_response_time_ms, ci_method. Each group's bootstrap has its own seed derived from `seed`.
    """
    readers = [*sorted(frame["reader"].unique()), POOLED]
    sets = _condition_sets(frame)
    rows = []
    for reader_index, reader in enumerate(readers):
        of_reader = np.ones(len(frame), dtype=bool) if reader == POOLED else (frame["reader"] == reader).to_numpy()
        for set_index, (condition_set, in_set) in enumerate(sets):
            part = frame[of_reader & in_set]
            if part.empty:
                continue
            answers = part["answer"].to_numpy(dtype=float)
            melanoma = part["melanoma"].to_numpy(dtype=bool)
            clusters = part["image"].to_numpy() if reader == POOLED else None
            auc, variance = delong_auc(answers, melanoma, clusters)
            ci_low, ci_high = normal_ci(auc, variance, level)
            boot_low, boot_high = bootstrap_auc_ci(answers, melanoma, clusters, n_boot=n_boot,
                                                   seed=(seed, reader_index, set_index), level=level)
            rows.append({
                "reader": reader, "condition_set": condition_set, "n": len(part),
                "n_melanoma": int(melanoma.sum()), "n_nevus": int((~melanoma).sum()),
                "auc": auc, "se": math.sqrt(variance) if math.isfinite(variance) else math.nan,
                "ci_low": ci_low, "ci_high": ci_high, "boot_low": boot_low, "boot_high": boot_high,
                "sensitivity": float(answers[melanoma].mean()) if melanoma.any() else math.nan,
                "specificity": float(1.0 - answers[~melanoma].mean()) if (~melanoma).any() else math.nan,
                "median_response_time_ms": float(part["response_time_ms"].median()),
                "ci_method": "delong_clustered_by_image" if reader == POOLED else "delong",
            })
    table = pd.DataFrame(rows)
    undefined = table.loc[table["auc"].isna(), ["reader", "condition_set"]]
    if not undefined.empty:
        log.warning("AUC undefined (one truth class only) for %d reader × condition rows, e.g. %s",
                    len(undefined), tuple(undefined.iloc[0]))
    return table


# -- effect of the attacks on readers --------------------------------------------------------------------------------
@dataclass(frozen=True)
class EffectTest:
    """Logistic regression correct ~ C(reader) + C(truth) + adversarial, fitted as a binomial GLM."""

    formula: str
    #: term, coef (log-odds), se, z, p (Wald), ci_low, ci_high
    coefficients: pd.DataFrame
    coef_adversarial: float
    p_adversarial: float
    odds_ratio_adversarial: float
    n: int
    n_readers: int
    cov_type: str

    def summary(self) -> dict[str, Any]:
        return {"formula": self.formula, "coef_adversarial": self.coef_adversarial,
                "odds_ratio_adversarial": self.odds_ratio_adversarial, "p_adversarial": self.p_adversarial,
                "n": self.n, "n_readers": self.n_readers, "cov_type": self.cov_type}


def effect_test(frame: pd.DataFrame, cluster: str | None = None) -> EffectTest:
    """Does an image being adversarial change the odds that a reader is right? Wald p of "adversarial".

    Readers and truth enter as fixed effects (reader skill, and sensitivity ≠ specificity). `cluster="image"` gives
    image-clustered (sandwich) standard errors, since every reader sees the same images; default: model-based.
    """
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    if frame["adversarial"].nunique() < 2:
        raise DataError("effect test needs answers on both clean and adversarial images")
    terms = [f"C({column})" for column in ("reader", "truth") if frame[column].nunique() > 1]
    formula = "correct ~ " + " + ".join([*terms, "adversarial"])
    data = frame[["correct", "reader", "truth", "adversarial", "image"]].copy()
    model = smf.glm(formula, data=data, family=sm.families.Binomial())
    if cluster is None:
        result, cov_type = model.fit(), "nonrobust"
    elif cluster in data.columns:
        groups = pd.factorize(data[cluster])[0]
        result, cov_type = model.fit(cov_type="cluster", cov_kwds={"groups": groups}), f"cluster({cluster})"
    else:
        raise ConfigError(f"unknown cluster column {cluster!r} for the effect test (use 'image' or 'reader')")
    intervals = result.conf_int()
    coefficients = pd.DataFrame({
        "term": result.params.index, "coef": result.params.to_numpy(), "se": result.bse.to_numpy(),
        "z": result.tvalues.to_numpy(), "p": result.pvalues.to_numpy(),
        "ci_low": intervals[0].to_numpy(), "ci_high": intervals[1].to_numpy(),
    })
    coef = float(result.params["adversarial"])
    return EffectTest(formula=formula, coefficients=coefficients, coef_adversarial=coef,
                      p_adversarial=float(result.pvalues["adversarial"]), odds_ratio_adversarial=math.exp(coef),
                      n=int(result.nobs), n_readers=int(frame["reader"].nunique()), cov_type=cov_type)


# -- figure ----------------------------------------------------------------------------------------------------------
def plot_reader_auc(table: pd.DataFrame, path: str | Path) -> None:
    """AUC ± 95 % DeLong CI per reader, clean and adversarial side by side, the pooled estimate last."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    readers = list(dict.fromkeys(table["reader"]))
    readers = [r for r in readers if r != POOLED] + ([POOLED] if POOLED in readers else [])
    styles = {CLEAN: ("#1f77b4", "o", "clean images"),
              ADVERSARIAL: ("#d62728", "s", "adversarial images (all attacks)")}
    fig, ax = plt.subplots(figsize=(max(5.5, 0.75 * len(readers) + 2.5), 4.2))
    for offset, (condition_set, (colour, marker, label)) in zip((-0.14, 0.14), styles.items(), strict=True):
        rows = table[table["condition_set"] == condition_set].set_index("reader").reindex(readers)
        x = np.arange(len(readers)) + offset
        auc = rows["auc"].to_numpy(dtype=float)
        error = np.vstack([auc - rows["ci_low"].to_numpy(dtype=float), rows["ci_high"].to_numpy(dtype=float) - auc])
        n = rows["n"].dropna()
        per_reader = f"{int(n.iloc[0])} per reader" if len(n) > 1 and (n.iloc[:-1] == n.iloc[0]).all() else ""
        ax.errorbar(x, auc, yerr=error, fmt=marker, color=colour, capsize=4, markersize=7, lw=1.6,
                    label=f"{label}{', n = ' + per_reader if per_reader else ''}")
    ax.axhline(0.5, color="grey", ls="--", lw=1)
    ax.text(len(readers) - 0.5, 0.5, "chance", color="grey", ha="right", va="bottom", fontsize=9)
    if POOLED in readers and len(readers) > 1:
        ax.axvline(len(readers) - 1.5, color="#999999", lw=0.8)
    labels = ["pooled\n(all readers)" if r == POOLED else r for r in readers]
    ax.set_xticks(range(len(readers)), labels)
    ax.set_xlim(-0.6, len(readers) - 0.4)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("reader")
    ax.set_ylabel("AUC of the benign/malignant answer")
    ax.set_title("Readers: clean vs adversarial images (AUC, 95 % DeLong CI)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower left", fontsize=9, framealpha=0.9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


# -- simulated readers -----------------------------------------------------------------------------------------------
def simulate_readers(study_dir: str | Path, answers_dir: str | Path, n_readers: int = 5, seed: int = 0,
                     sensitivity: float = 0.8, specificity: float = 0.75,
                     adversarial_effect: float = 0.0) -> list[Path]:
    """Write answer CSVs of simulated readers sim01, sim02, … (the pipeline's default run and the tests).

    They go to a folder of their own, marked as simulated (a real reader's server refuses to write there, the
    analysis refuses to mix the two): a folder that holds anything of a real reader is refused, so a simulation can
    never overwrite a reader's answers.

    A simulated reader is right with probability `sensitivity` on melanomas and `specificity` on naevi;
    `adversarial_effect` is added to the log-odds of being right on adversarial images (negative = fooled).
    Response times are log-normal around 2.5 s. Same seed → byte-identical files.
    """
    if int(n_readers) < 1:
        raise ConfigError(f"n_readers must be at least 1, got {n_readers}")
    for name, value in (("sensitivity", sensitivity), ("specificity", specificity)):
        if not 0.0 < float(value) < 1.0:
            raise ConfigError(f"{name} must lie strictly between 0 and 1, got {value}")
    if not math.isfinite(adversarial_effect):
        raise ConfigError(f"adversarial_effect must be finite, got {adversarial_effect}")
    study = load_study(study_dir)
    manifest = study.manifest
    melanoma = (manifest["truth"] == "melanoma").to_numpy()
    adversarial = (manifest["condition"] != CLEAN).to_numpy()
    p_correct = expit(logit(np.where(melanoma, sensitivity, specificity)) + adversarial_effect * adversarial)
    rng = np.random.default_rng(seed)
    correct = rng.random((int(n_readers), len(manifest))) < p_correct
    answers = np.where(correct, melanoma, ~melanoma).astype(int)
    times = rng.lognormal(mean=math.log(2500.0), sigma=0.5, size=answers.shape)
    answers_dir = Path(answers_dir)
    _check_simulation_folder(answers_dir, study.directory)
    answers_dir.mkdir(parents=True, exist_ok=True)
    (answers_dir / SIMULATED_MARKER).write_text("simulated readers (vulnbench reader-study simulate): rewritten on "
                                                "every run, never a real reader's folder\n", encoding="utf-8")
    start = datetime(2020, 1, 1, tzinfo=UTC)
    written = []
    for index in range(int(n_readers)):
        path = answers_dir / f"sim{index + 1:02d}.csv"
        clock = start + timedelta(days=index) + pd.to_timedelta(np.cumsum(times[index]), unit="ms")
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
            handle.write(version_line(study.study_id, path.stem, simulated=True) + "\n")
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(ANSWER_COLUMNS)
            for image, answer, rt, stamp in zip(manifest["image"], answers[index], times[index], clock, strict=True):
                writer.writerow([image, int(answer), f"{rt:.1f}", stamp.isoformat(timespec="milliseconds")])
        written.append(path)
    log.info("simulated %d readers (sensitivity %.2f, specificity %.2f, adversarial effect %+.2f) in %s",
             n_readers, sensitivity, specificity, adversarial_effect, answers_dir)
    return written


def _check_simulation_folder(folder: Path, study_dir: Path) -> None:
    """Only an absent or empty folder, or one a simulation wrote (marker + simulated files), may take simulated
    readers."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ConfigError(f"simulated answers folder {folder} is not a folder")
    real = []
    for entry in sorted(folder.iterdir()):
        if entry.name == SIMULATED_MARKER:
            continue
        if entry.suffix == ".csv" and entry.is_file() and _is_simulated_file(entry):
            continue
        real.append(entry.name)
    if real:
        raise DataError(f"{folder} holds real readers' files ({', '.join(real[:3])}); simulated readers go to a folder "
                        f"of their own, e.g. --answers {study_dir.parent / (study_dir.name + '_simulated')}")


def _is_simulated_file(path: Path) -> bool:
    with open(path, "rb") as handle:
        first = handle.readline(300).decode("utf-8", "replace")
    return first.startswith(VERSION_PREFIX) and "; simulated=yes" in first


def analyse_study(study_dir: str | Path, answers_dir: str | Path, out_auc: str | Path, out_effect: str | Path,
                  out_effect_summary: str | Path, out_figure: str | Path, out_answers: str | Path | None = None,
                  n_boot: int = 2000, seed: int = 0) -> tuple[pd.DataFrame, EffectTest]:
    """Everything the study's analysis writes: per-reader AUCs with CIs, the logistic effect test (plain and
    clustered by image), the AUC figure and optionally the joined answers."""

    frame = read_answers(study_dir, answers_dir)
    table = reader_auc(frame, n_boot=n_boot, seed=seed)
    test = effect_test(frame)
    clustered = effect_test(frame, cluster="image")
    if out_answers is not None:
        write_table(out_answers, frame)
    write_table(out_auc, table)
    write_table(out_effect, test.coefficients)
    write_json(out_effect_summary, {**test.summary(), "clustered_by_image": clustered.summary()})
    plot_reader_auc(table, out_figure)
    return table, test
