"""The differential-evolution engine of the black-box image attacks (pixel, colour, rotation, one module
each); an attack module gives it a `DESearch` (its bounds and batched renderer).

Upstream minimised P(original class) with scipy's `differential_evolution`, rendering and scoring one candidate per
forward pass, and stopped from a callback that re-scored the best member. Two modes here:

* parity (`parity=True`): upstream's decode bounds, L-BFGS-B polish (its evaluations scored and counted), and the
  callback's extra forward per generation with its off-by-one limit (`stage > max_generations`, i.e.
  max_generations + 1 generations); success = the class the last callback saw.
* fixed (default): no polish, integer search for the pixel attack, the stop rule read from the best energy scipy
  already has (`intermediate_result.fun`; "P(target) > c" ⇔ "energy < threshold" with two classes), at most
  `max_generations` generations, success checked at the final best member.

Both modes use deferred updating, so the vectorised objective (a whole population rendered and scored in one batched
call per generation) and the scalar one (one candidate per forward, as upstream) walk the same RNG path and give the
same result. Seeded always (`rng=seed`), so runs repeat. A forward-pass budget (`max_forward`) caps the generations
(fixed mode) and, in either mode, stops the search before the model would score one image too many.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
from scipy.optimize import differential_evolution
from scipy.special import expit

from vulnbench.core.errors import ConfigError, DataError
from vulnbench.img.attacks.base import AttackedImage, softmax32
from vulnbench.img.base import MELANOMA, ImageModel

#: scipy settings of upstream's `differential_evolution` call
UPSTREAM_POPSIZE = 20  # a multiplier: population = popsize × number of parameters
UPSTREAM_MAXITER = 600  # never reached upstream: the callback stops first
DE_SETTINGS: dict[str, Any] = {"strategy": "best1bin", "mutation": (0.5, 1), "recombination": 0.7,
                               "init": "latinhypercube", "tol": 1e-5, "atol": 0.0, "updating": "deferred"}
Objective = Literal["probability", "margin"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)


# --------------------------------------------------------------------------------------------------------------------
# what an attack module gives the engine, and the settings every DE attack shares


@dataclass(frozen=True)
class DESearch:
    """How one attack searches: DE bounds for an image, a batched renderer, whether fixed mode searches integers."""

    name: str
    bounds: Callable[[int, int, bool], list[tuple[float, float]]]  # (height, width, parity) → [(lo, hi), ...]
    render: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (image, (S, N) params) → (S, H, W, 3) uint8
    integral_in_fixed_mode: bool


def de_settings(*, popsize: int | None = None, max_generations: int = 20, stop_confidence: float = 0.9,
                objective: Objective = "probability", vectorized: bool = True, parity: bool = False,
                max_forward: int | None = None) -> None:
    """The differential-evolution settings every DE attack takes beside its own geometry (`de_attack`'s keywords).

    Args:
        popsize: scipy's population multiplier: population = popsize × number of parameters (null: upstream's 20)
        max_generations: generations at most (parity mode: upstream's off-by-one, max_generations + 1)
        stop_confidence: stop once P(target class) exceeds it (in [0.5, 1]; a success above it is 'confident')
        objective: probability: P(original class), as upstream (saturates on confident images); margin: logit gap
        vectorized: render and score a whole population per model call (same result as one candidate per call)
        parity: upstream's search (half-open bounds, L-BFGS-B polish, the callback's extra forward per generation)
        max_forward: forward-pass budget per image (null: none beyond popsize and max_generations)
    """


class BudgetSpent(Exception):
    """The next model call would score more images than the forward-pass budget allows (stops the search)."""


@dataclass(frozen=True)
class DEResult:
    """One image's attack. Probabilities are float32 softmax values as upstream computed them."""

    attack: str
    objective: str
    parity: bool
    success: bool  # argmax flipped at the final best member (parity: at the last callback's member, as upstream)
    confident_success: bool  # flipped with P(adversarial class) > stop_confidence
    original_class: int
    original_confidence: float  # P(original class) of the clean image
    adversarial_class: int
    adversarial_probability: float  # P(target class) at the final best member
    params: np.ndarray  # best x (parity: after polish, as upstream saved it)
    n_forward: int  # images scored: clean image + objective (incl. polish) + parity callbacks + any re-score
    n_generations: int
    energy: float  # best objective value
    message: str  # why scipy stopped
    image: np.ndarray  # adversarial uint8 (H, W, 3) rendered from `params`


# --------------------------------------------------------------------------------------------------------------------
# scoring


class _Scorer:
    """The DE objective: renders candidates, scores them in batches, counts every image scored and remembers the
    lowest-energy candidate with its logits (so fixed mode needs no forward pass to report the result)."""

    def __init__(self, model: ImageModel, image: np.ndarray, attack: DESearch, objective: str,
                 batch_size: int, max_forward: int | None = None) -> None:
        self.model, self.image, self.attack = model, image, attack
        self.original, self.target = MELANOMA, 1 - MELANOMA  # set from the clean prediction before the search
        self.objective, self.batch_size, self.max_forward = objective, batch_size, max_forward
        self.n_forward = 0
        self.best_energy, self.best_x, self.best_logits = np.inf, np.empty(0), np.empty(0)

    def affords(self, n: int) -> bool:
        return self.max_forward is None or self.n_forward + n <= self.max_forward

    def logits(self, images: np.ndarray) -> np.ndarray:
        if not self.affords(len(images)):
            raise BudgetSpent
        out = np.asarray(self.model.logits(images), dtype=np.float32)
        self.n_forward += len(images)
        if out.shape != (len(images), 2) or not np.isfinite(out).all():
            raise DataError(f"model returned unusable logits (shape {out.shape}, NaN/inf present: "
                            f"{not np.isfinite(out).all()}); expected finite (S, 2)")
        return out

    def energies_of(self, logits: np.ndarray) -> np.ndarray:
        if self.objective == "probability":
            return softmax32(logits)[:, self.original].astype(np.float64)
        return logits[:, self.original].astype(np.float64) - logits[:, self.target].astype(np.float64)

    def target_probability(self, energy: float) -> float:
        """P(target) implied by an energy (two classes): what the stop rule compares with the confidence."""
        return 1.0 - energy if self.objective == "probability" else float(expit(-energy))

    def energies(self, population: np.ndarray) -> np.ndarray:
        out = np.empty(len(population))
        for start in range(0, len(population), self.batch_size):  # chunks only bound memory
            chunk = population[start : start + self.batch_size]
            if not self.affords(len(chunk)):  # score what the budget allows (as one by one would), then stop
                left = int(self.max_forward or 0) - self.n_forward
                if left > 0:
                    self.energies(chunk[:left])
                raise BudgetSpent
            logits = self.logits(self.attack.render(self.image, chunk))
            out[start : start + len(chunk)] = energies = self.energies_of(logits)
            best = int(np.argmin(energies))
            if energies[best] < self.best_energy:
                self.best_energy, self.best_x, self.best_logits = energies[best], chunk[best].copy(), logits[best]
        return out

    def __call__(self, x: np.ndarray) -> np.ndarray | float:
        """scipy's objective: x (N,) → scalar (scalar mode, polish) or (N, S) → (S,) (vectorised mode)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            return float(self.energies(x[None])[0])
        return self.energies(x.T)


# --------------------------------------------------------------------------------------------------------------------
# one image


def _check_options(model: ImageModel, objective: str, stop_confidence: float, max_generations: int,
                   batch_size: int, popsize: int | None, max_forward: int | None) -> None:
    if len(model.classes) != 2:
        raise ConfigError(f"DE attacks need a two-class model (melanoma, nevus); got classes {model.classes}")
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective: unknown {objective!r} (known: {', '.join(OBJECTIVES)})")
    if not 0.5 <= stop_confidence <= 1.0:
        raise ConfigError(f"stop_confidence must be in [0.5, 1] so that stopping implies a flip; got {stop_confidence}")
    if max_generations < 1:
        raise ConfigError(f"max_generations must be >= 1, got {max_generations}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if popsize is not None and popsize < 1:
        raise ConfigError(f"popsize must be >= 1, got {popsize}")
    if max_forward is not None and max_forward < 1:
        raise ConfigError(f"max_forward must be >= 1 or null, got {max_forward}")


def _check_image(image: np.ndarray, model: ImageModel) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.shape != (model.image_size, model.image_size, 3):
        raise DataError(f"attacked image must be uint8 ({model.image_size}, {model.image_size}, 3) for this model; "
                        f"got {array.dtype} {array.shape}")
    return array


def de_attack(model: ImageModel, image: np.ndarray, search: DESearch, *, popsize: int | None = None,
              max_generations: int = 20, stop_confidence: float = 0.9, objective: Objective = "probability",
              vectorized: bool = True, parity: bool = False, seed: int = 0, batch_size: int = 64,
              max_forward: int | None = None) -> DEResult:
    """Attack one image away from the class the model predicts (the target is the other of the two classes).

    popsize: scipy's multiplier (None → upstream's 20), so the population is popsize × number of parameters.
    objective: "probability" = P(original class) (upstream; saturates on confident images), "margin" =
    logit[original] − logit[target] (non-saturating). vectorized: one batched model call per generation (chunked by
    batch_size) instead of one forward per candidate; same result either way. max_forward: the search stops before
    the model would score more images (the clean one included); the result is then the best candidate scored.
    """
    _check_options(model, objective, stop_confidence, max_generations, batch_size, popsize, max_forward)
    image = _check_image(image, model)
    try:
        bounds = search.bounds(image.shape[0], image.shape[1], parity)
    except ValueError as error:
        raise ConfigError(f"{search.name} attack: {error}") from None

    scorer = _Scorer(model, image, search, objective, batch_size, max_forward)
    clean = softmax32(scorer.logits(image[None]))[0]
    original = int(np.argmax(clean))
    scorer.original, scorer.target = original, 1 - original
    seen: dict[str, Any] = {"stage": 0, "class": original, "probability": float(clean[original]), "generations": 0}

    def fixed_stop(intermediate_result: Any) -> bool:
        seen["generations"] += 1
        return scorer.target_probability(float(intermediate_result.fun)) > stop_confidence

    def upstream_callback(intermediate_result: Any) -> bool:
        # upstream re-renders and re-scores the best member every generation (one extra forward)
        seen["generations"] += 1
        seen["stage"] += 1
        probabilities = softmax32(scorer.logits(search.render(image, np.asarray(intermediate_result.x)[None])))[0]
        seen["class"] = int(np.argmax(probabilities))
        seen["probability"] = float(probabilities[seen["class"]])
        flipped = seen["class"] != original and seen["probability"] > stop_confidence
        return flipped or seen["stage"] > max_generations

    try:
        result = differential_evolution(
            scorer, bounds, **DE_SETTINGS, popsize=UPSTREAM_POPSIZE if popsize is None else popsize,
            maxiter=UPSTREAM_MAXITER if parity else max_generations, polish=parity, rng=seed,
            callback=upstream_callback if parity else fixed_stop, vectorized=vectorized,
            integrality=[search.integral_in_fixed_mode and not parity] * len(bounds))
    except BudgetSpent:
        return _budget_result(search, image, scorer, objective, parity, stop_confidence, original, clean,
                              seen["generations"])
    best_x = np.asarray(result.x, dtype=np.float64)

    if parity:
        adversarial_class, adversarial_confidence = seen["class"], seen["probability"]
        target_probability = adversarial_confidence if adversarial_class != original else 1.0 - adversarial_confidence
    else:
        if np.array_equal(best_x, scorer.best_x):
            logits = scorer.best_logits
        elif scorer.affords(1):
            logits = scorer.logits(search.render(image, best_x[None]))[0]
        else:  # no forward left to score scipy's member: report the best candidate scored
            best_x, logits = scorer.best_x, scorer.best_logits
        probabilities = softmax32(logits[None])[0]
        adversarial_class = int(np.argmax(probabilities))
        target_probability = float(probabilities[1 - original])
    return _result(search, scorer, objective, parity, stop_confidence, original, clean, adversarial_class,
                   target_probability, best_x, n_generations=int(result.nit), energy=float(result.fun),
                   message=str(result.message), image=search.render(image, best_x[None])[0])


def _budget_result(search: DESearch, image: np.ndarray, scorer: _Scorer, objective: str, parity: bool,
                   stop_confidence: float, original: int, clean: np.ndarray, generations: int) -> DEResult:
    """The result of a search the forward-pass budget stopped: the best candidate scored (the clean image if none)."""
    if scorer.best_x.size:
        best_x, probabilities = scorer.best_x, softmax32(scorer.best_logits[None])[0]
        adversarial = search.render(image, best_x[None])[0]
    else:
        best_x, probabilities, adversarial = scorer.best_x, clean, image.copy()
    adversarial_class = int(np.argmax(probabilities))
    return _result(search, scorer, objective, parity, stop_confidence, original, clean, adversarial_class,
                   float(probabilities[1 - original]), best_x, n_generations=generations,
                   energy=float(scorer.best_energy), message="forward-pass budget spent", image=adversarial)


def _result(search: DESearch, scorer: _Scorer, objective: str, parity: bool, stop_confidence: float, original: int,
            clean: np.ndarray, adversarial_class: int, target_probability: float, best_x: np.ndarray, *,
            n_generations: int, energy: float, message: str, image: np.ndarray) -> DEResult:
    """A finished and a budget-stopped search report alike: success is a changed class, a confident success one
    whose target-class probability also exceeds `stop_confidence`."""
    success = adversarial_class != original
    return DEResult(
        attack=search.name, objective=objective, parity=parity, success=success,
        confident_success=success and target_probability > stop_confidence, original_class=original,
        original_confidence=float(clean[original]), adversarial_class=adversarial_class,
        adversarial_probability=target_probability, params=best_x, n_forward=scorer.n_forward,
        n_generations=n_generations, energy=energy, message=message, image=image)


# --------------------------------------------------------------------------------------------------------------------
# a batch of images, for an attack module's registered function


def de_images(model: ImageModel, images: np.ndarray, seeds: Sequence[int], search: DESearch,
              **settings: Any) -> list[AttackedImage]:
    """`de_attack` on each image with its own seed (`settings`: `de_settings`' keywords), as the contract's records."""
    if len(seeds) != len(images):
        raise DataError(f"{len(seeds)} seeds for {len(images)} images")
    out = []
    for image, seed in zip(images, seeds, strict=True):
        result = de_attack(model, image, search, seed=int(seed), **settings)
        out.append(AttackedImage(
            success=result.success, adversarial=result.image, adversarial_class=result.adversarial_class,
            adversarial_probability=result.adversarial_probability, confident_success=result.confident_success,
            n_forward=result.n_forward, n_generations=result.n_generations, params=result.params.tolist()))
    return out
