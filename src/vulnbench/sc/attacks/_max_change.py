"""Max-change attack: the largest gene set that can be modified on a cluster without changing its label."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vulnbench.core.errors import ConfigError
from vulnbench.sc.attacks._single_gene import candidate_genes, interleaved_halves
from vulnbench.sc.expression import ExpressionInput, as_expression, as_labels, target_mask
from vulnbench.sc.modifications import GeneStats, Modification
from vulnbench.sc.oracle import ClusterOracle, Prediction, make_oracle

log = logging.getLogger(__name__)


@dataclass
class MaxChangeResult:
    """`genes`: modifiable together without a flip; `signature`: every other gene of the data."""

    genes: list[str]
    signature: list[str]
    baseline_label: str
    final_label: str
    verified: bool | None
    n_candidates: int
    n_evaluations: int
    n_calls: int
    runtime_s: float
    attrs: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.genes)


def max_change(
    X: ExpressionInput,
    clusters: Sequence[str],
    target: str,
    classifier: Any,
    *,
    method: str = "perc99",
    fixed_value: float = 3,
    fct: Callable[..., object] | None = None,
    max_split_size: int = 1,
    genes: Sequence[str] | None = None,
    exclude_genes: Iterable[str] = (),
    seed: int | None = None,
    deterministic: bool = False,
    legacy: bool = False,
    stats: GeneStats | None = None,
    progress: bool = False,
) -> MaxChangeResult:
    """Greedy dichotomic accumulation (adverSCarial's `advMaxChange`).

    The candidates are split into interleaved halves, in a seeded random order (or fixed with
    `deterministic=True`); a half joins the set when the set plus that half keeps the baseline label, else it
    is split again down to `max_split_size`. By default the accepted set stays applied and only the new half
    is modified per call (no redundant "half alone" call), and a final call verifies the returned set.
    `legacy=True` reproduces upstream: each half is first tested alone, and the whole set is re-modified
    (with fresh random values) at every call.

    Args:
        method: modification of the target cells' genes: perc1, perc99, random, positive_aberrant, negative_aberrant,
            decile±X, fixed
        fixed_value: value the genes take with method 'fixed' (expression units, log-normalised)
        fct: Python function for the *_fct modification modes (not settable in a config file)
        max_split_size: a half that changes the label is split down to this size; smaller failing halves are dropped
        genes: candidate genes to test (null: every gene of the data)
        exclude_genes: genes never modified or tested (e.g. known markers)
        seed: seed of the attack's random draws; null: the job's own seed (top-level seed, job, cluster)
        deterministic: fixed order of the two halves at each split instead of a seeded random order
        legacy: upstream advMaxChange: test halves alone, re-modify the whole set at each call, no final check
    """
    started = time.perf_counter()
    if int(max_split_size) < 1:
        max_split_size = 1  # upstream raises values below 1 to 1
    expression = as_expression(X)
    labels = as_labels(clusters, expression.n_cells)
    target_mask(labels, target)
    modification = Modification(method, fixed_value, fct, legacy)
    order_seed, value_seed = np.random.SeedSequence(seed).spawn(2)
    order_rng = np.random.default_rng(order_seed)
    oracle = make_oracle(classifier, expression, labels, target, modification, stats,
                         seed=int(value_seed.generate_state(1)[0]))
    candidates = candidate_genes(expression.genes, genes, exclude_genes)
    if candidates.size == 0:
        raise ConfigError("max_change: no candidate genes left after exclusions")
    baseline = oracle.baseline
    grower = _LegacyGrowth if legacy else _Growth
    accepted = grower(oracle, baseline, int(max_split_size), order_rng, deterministic).run(candidates)
    # upstream makes no final call; by default the committed set is classified once more to verify it
    final = None if legacy else oracle.evaluate([np.empty(0, dtype=np.intp)])[0]
    names = expression.genes
    in_set = np.zeros(expression.n_genes, dtype=bool)
    in_set[accepted] = True
    result = MaxChangeResult(
        genes=list(names[np.sort(accepted)]),
        signature=list(names[~in_set]),
        baseline_label=baseline.label,
        final_label=final.label if final else "",
        verified=final.label == baseline.label if final else None,
        n_candidates=int(candidates.size),
        n_evaluations=oracle.n_evaluations,
        n_calls=oracle.n_calls,
        runtime_s=time.perf_counter() - started,
    )
    log.info("max_change %s on %r: %d of %d genes modifiable (verified: %s), %d evaluations, %.2fs", method,
             target, len(result.genes), candidates.size, result.verified, oracle.n_evaluations, result.runtime_s)
    return result


class _Growth:
    """Default accumulation: the accepted set is committed in the oracle; each call adds one half."""

    def __init__(self, oracle: ClusterOracle, baseline: Prediction, max_split_size: int,
                 rng: np.random.Generator, deterministic: bool) -> None:
        self.oracle, self.baseline, self.max_split_size = oracle, baseline, max_split_size
        self.rng, self.deterministic = rng, deterministic
        self.accepted: list[np.ndarray] = []

    def halves(self, genes: np.ndarray) -> list[np.ndarray]:
        halves = [h for _, h in interleaved_halves(genes, ())]
        if not self.deterministic and len(halves) == 2 and self.rng.random() < 0.5:
            halves.reverse()
        return halves

    def run(self, candidates: np.ndarray) -> np.ndarray:
        self.grow(candidates)
        return np.concatenate(self.accepted) if self.accepted else np.empty(0, dtype=np.intp)

    def grow(self, genes: np.ndarray) -> None:
        for half in self.halves(genes):
            if self.keeps_label(half):
                self.accepted.append(half)
            elif half.size > self.max_split_size:
                self.grow(half)

    def keeps_label(self, half: np.ndarray) -> bool:
        if self.oracle.evaluate([half])[0].label != self.baseline.label:
            return False
        self.oracle.commit(0)
        return True


class _LegacyGrowth(_Growth):
    """Upstream: test the half alone, then the union (fresh modification of every gene at every call)."""

    def keeps_label(self, half: np.ndarray) -> bool:
        if self.oracle.evaluate([half])[0].label != self.baseline.label:
            return False
        if not self.accepted:
            return True
        union = np.concatenate([*self.accepted, half])
        return self.oracle.evaluate([union])[0].label == self.baseline.label
