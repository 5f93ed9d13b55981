"""Clean-performance and attack-success statistics of the dermoscopy arm (Suppl. Table 1-style numbers with CIs)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from vulnbench.core.errors import DataError
from vulnbench.img.base import CLASSES, MELANOMA

#: bootstrap replicates scored per vectorised chunk (bounds memory at chunk × distinct scores)
BOOTSTRAP_CHUNK = 256


def melanoma_indicator(labels: Sequence[Any]) -> np.ndarray:
    """Labels ('melanoma'/'nevus' or class indices, 0 = melanoma) → 1 for melanoma, 0 for naevus."""
    values = np.asarray(labels)
    if values.dtype.kind in "iub":
        bad = sorted(set(values.astype(int).tolist()) - set(range(len(CLASSES))))
        if bad:
            raise DataError(f"labels: class index {bad[0]} out of range (0 = melanoma, 1 = nevus)")
        return (values.astype(int) == MELANOMA).astype(np.int8)
    values = values.astype(str)
    unknown = sorted(set(values.tolist()) - set(CLASSES))
    if unknown:
        raise DataError(f"labels: unknown label {unknown[0]!r} (expected one of {', '.join(CLASSES)})")
    return (values == CLASSES[MELANOMA]).astype(np.int8)


def _bootstrap_auc(scores: np.ndarray, positive: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """AUCs of `n_boot` stratified resamples (positives and negatives resampled separately), all vectorised.

    Each resample is reduced to weights over the distinct scores; AUC = Σ_u w⁺(u)·(W⁻(<u) + ½·w⁻(u)) / (n⁺n⁻), the
    Mann–Whitney count with ties as one half — the same value roc_auc_score gives.
    """
    rng = np.random.default_rng(seed)
    distinct, code = np.unique(scores, return_inverse=True)
    pos_code, neg_code = code[positive == 1], code[positive == 0]
    n_pos, n_neg, n_distinct = len(pos_code), len(neg_code), len(distinct)
    aucs = np.empty(n_boot)
    for start in range(0, n_boot, BOOTSTRAP_CHUNK):
        chunk = min(BOOTSTRAP_CHUNK, n_boot - start)
        rows = np.arange(chunk)[:, None] * n_distinct
        pos = pos_code[rng.integers(0, n_pos, size=(chunk, n_pos))]
        neg = neg_code[rng.integers(0, n_neg, size=(chunk, n_neg))]
        w_pos = np.bincount((rows + pos).ravel(), minlength=chunk * n_distinct).reshape(chunk, n_distinct)
        w_neg = np.bincount((rows + neg).ravel(), minlength=chunk * n_distinct).reshape(chunk, n_distinct)
        below = np.cumsum(w_neg, axis=1) - w_neg
        aucs[start : start + chunk] = (w_pos * (below + 0.5 * w_neg)).sum(axis=1) / (n_pos * n_neg)
    return aucs


def classification_metrics(p_melanoma: Sequence[float], labels: Sequence[Any], threshold: float = 0.5,
                           n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """AUC (melanoma positive) with a seeded stratified-bootstrap 95 % CI, and sensitivity/specificity/accuracy
    at P(melanoma) >= threshold (upstream's 0.5 rule). One class only → NaN AUC and a warning, not a crash."""
    from sklearn.metrics import roc_auc_score

    scores = np.asarray(p_melanoma, dtype=np.float64).ravel()
    positive = melanoma_indicator(labels).ravel()
    if len(scores) != len(positive):
        raise DataError(f"classification metrics: {len(scores)} probabilities but {len(positive)} labels")
    if len(scores) == 0:
        raise DataError("classification metrics: no predictions")
    if not np.isfinite(scores).all():
        raise DataError(f"classification metrics: {int((~np.isfinite(scores)).sum())} non-finite P(melanoma) values")
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    called = scores >= threshold
    true_pos = int((called & (positive == 1)).sum())
    true_neg = int((~called & (positive == 0)).sum())
    result: dict[str, Any] = {
        "n": len(scores), "n_melanoma": n_pos, "n_nevus": n_neg, "threshold": float(threshold),
        "auc": float("nan"), "auc_lo": float("nan"), "auc_hi": float("nan"),
        "sensitivity": true_pos / n_pos if n_pos else float("nan"),
        "specificity": true_neg / n_neg if n_neg else float("nan"),
        "accuracy": (true_pos + true_neg) / len(scores),
    }
    if n_pos == 0 or n_neg == 0:
        warnings.warn(f"classification metrics: only one class present ({n_pos} melanoma, {n_neg} nevus); "
                      f"AUC undefined", RuntimeWarning, stacklevel=2)
        return result
    result["auc"] = float(roc_auc_score(positive, scores))
    if n_boot > 0:
        aucs = _bootstrap_auc(scores, positive, n_boot, seed)
        result["auc_lo"], result["auc_hi"] = (float(q) for q in np.percentile(aucs, [2.5, 97.5]))
    return result


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact binomial (1 − alpha) CI of a success rate k/n (e.g. attack success); n = 0 gives (0, 1)."""
    from scipy.stats import beta

    if not 0 <= k <= n:
        raise ValueError(f"clopper_pearson: need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    lo = float(beta.ppf(alpha / 2, k, n - k + 1)) if k > 0 else 0.0
    hi = float(beta.ppf(1 - alpha / 2, k + 1, n - k)) if k < n else 1.0
    return lo, hi
