"""scRF: the paper's random forest (randomForest defaults: 500 trees, mtry = floor(sqrt(n_genes)))."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import RandomForestClassifier

from vulnbench.sc.classifiers.base import PerCellClassifier


class ScRF(PerCellClassifier):
    name = "scrf"
    capabilities = PerCellClassifier.capabilities | {"tree"}

    def __init__(self, n_estimators: int = 500, max_features: str | float = "sqrt", min_samples_leaf: int = 1,
                 n_jobs: int = -1, seed: int = 0) -> None:
        """Keyword parameters, as a config sets them.

        Args:
            n_estimators: number of trees of the random forest
            max_features: genes tried per split: sqrt = floor(sqrt(n_genes)) (randomForest's mtry) or a fraction
            min_samples_leaf: minimum number of training cells in a leaf
            n_jobs: parallel jobs for fitting (-1: all cores); if unset the train rule uses its thread count
            seed: random_state of the forest (bootstraps, split genes); defaults to the top-level seed
        """
        self.n_estimators = n_estimators
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self.n_jobs = n_jobs
        self.seed = seed

    def _fit(self, matrix: np.ndarray, y: np.ndarray) -> None:
        self.forest_ = RandomForestClassifier(
            n_estimators=self.n_estimators,
            max_features=self.max_features,
            min_samples_leaf=self.min_samples_leaf,
            n_jobs=self.n_jobs,
            random_state=self.seed,
        ).fit(matrix, y)
        assert list(self.forest_.classes_) == list(self.classes_)

    def _predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        """Mean of the trees' leaf class fractions, as `RandomForestClassifier.predict_proba`.

        Walks the fitted trees directly: scikit-learn's per-tree input validation costs ~8x more than the
        prediction itself for the small batches attacks send (one cluster, one candidate).
        """
        x = np.ascontiguousarray(matrix, dtype=np.float32)
        total = np.zeros((x.shape[0], len(self.classes_)))
        for tree in self.forest_.estimators_:
            leaf = tree.tree_.predict(x)
            leaf = leaf[:, 0, :] if leaf.ndim == 3 else leaf
            total += leaf / leaf.sum(axis=1, keepdims=True)
        return total / len(self.forest_.estimators_)
