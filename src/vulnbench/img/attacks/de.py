"""Differential-evolution attacks on a melanoma classifier: 3-pixel, colour balance, rotation + translation (§4–§7).

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
same result. Seeded always (`rng=seed`), so runs repeat.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
from scipy.optimize import differential_evolution
from scipy.special import expit

from vulnbench.core.errors import ConfigError, DataError
from vulnbench.core.registry import Registry
from vulnbench.img.attacks import render
from vulnbench.img.base import MELANOMA, ImageModel
from vulnbench.img.metrics import melanoma_indicator

log = logging.getLogger(__name__)

#: scipy settings of upstream's `differential_evolution` call (spec §4)
UPSTREAM_POPSIZE = 20  # a multiplier: population = popsize × number of parameters
UPSTREAM_MAXITER = 600  # never reached upstream: the callback stops first
DE_SETTINGS: dict[str, Any] = {"strategy": "best1bin", "mutation": (0.5, 1), "recombination": 0.7,
                               "init": "latinhypercube", "tol": 1e-5, "atol": 0.0, "updating": "deferred"}
Objective = Literal["probability", "margin"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)


# --------------------------------------------------------------------------------------------------------------------
# the three attacks


@dataclass(frozen=True)
class DEAttack:
    """How one attack searches: DE bounds for an image, a batched renderer, whether fixed mode searches integers."""

    bounds: Callable[..., list[tuple[float, float]]]  # (height, width, options, parity) → [(lo, hi), ...]
    render: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (image, (S, N) params) → (S, H, W, 3) uint8
    integral_in_fixed_mode: bool


@dataclass(frozen=True)
class AttackOptions:
    n_pixels: int = 3
    delta: float = 0.1
    max_translation: float | None = None
    symmetric: bool = False


#: attack names users put in the config
DE_ATTACKS: Registry[DEAttack] = Registry("DE attack")
DE_ATTACKS.register("pixel")(DEAttack(
    lambda h, w, o, parity: render.pixel_bounds(h, w, o.n_pixels, parity), render.render_pixels, True))
DE_ATTACKS.register("color")(DEAttack(lambda h, w, o, parity: render.color_bounds(o.delta), render.render_color, False))
DE_ATTACKS.register("rotation")(DEAttack(
    lambda h, w, o, parity: render.rotation_bounds(min(h, w), o.max_translation, o.symmetric),
    render.render_rotation_translation, False))


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


def softmax32(logits: np.ndarray) -> np.ndarray:
    """Softmax in float32, as upstream's NumPy softmax of float32 logits: what makes confident images saturate at
    exactly 1.0 (spec §4 "Saturation")."""
    z = np.asarray(logits, dtype=np.float32)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class _Scorer:
    """The DE objective: renders candidates, scores them in batches, counts every image scored and remembers the
    lowest-energy candidate with its logits (so fixed mode needs no forward pass to report the result)."""

    def __init__(self, model: ImageModel, image: np.ndarray, attack: DEAttack, objective: str,
                 batch_size: int) -> None:
        self.model, self.image, self.attack = model, image, attack
        self.original, self.target = MELANOMA, 1 - MELANOMA  # set from the clean prediction before the search
        self.objective, self.batch_size = objective, batch_size
        self.n_forward = 0
        self.best_energy, self.best_x, self.best_logits = np.inf, np.empty(0), np.empty(0)

    def logits(self, images: np.ndarray) -> np.ndarray:
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
                   batch_size: int, popsize: int | None) -> None:
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


def _check_image(image: np.ndarray, model: ImageModel) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.shape != (model.image_size, model.image_size, 3):
        raise DataError(f"attacked image must be uint8 ({model.image_size}, {model.image_size}, 3) for this model; "
                        f"got {array.dtype} {array.shape}")
    return array


def de_attack(model: ImageModel, image: np.ndarray, attack: str, *, n_pixels: int = 3, delta: float = 0.1,
              max_translation: float | None = None, symmetric: bool = False, popsize: int | None = None,
              max_generations: int = 20, stop_confidence: float = 0.9, objective: Objective = "probability",
              vectorized: bool = True, parity: bool = False, seed: int = 0, batch_size: int = 64) -> DEResult:
    """Attack one image away from the class the model predicts (the target is the other of the two classes).

    popsize: scipy's multiplier (None → upstream's 20), so the population is popsize × number of parameters.
    objective: "probability" = P(original class) (upstream; saturates on confident images), "margin" =
    logit[original] − logit[target] (non-saturating). vectorized: one batched model call per generation (chunked by
    batch_size) instead of one forward per candidate; same result either way.
    """
    spec = DE_ATTACKS.get(attack)
    _check_options(model, objective, stop_confidence, max_generations, batch_size, popsize)
    image = _check_image(image, model)
    if parity and symmetric:
        raise ConfigError("symmetric translation is a fixed-mode option; parity keeps upstream's 0..max_translation")
    options = AttackOptions(n_pixels=n_pixels, delta=delta, max_translation=max_translation, symmetric=symmetric)
    try:
        bounds = spec.bounds(image.shape[0], image.shape[1], options, parity)
    except ValueError as error:
        raise ConfigError(f"{attack} attack: {error}") from None

    scorer = _Scorer(model, image, spec, objective, batch_size)
    clean = softmax32(scorer.logits(image[None]))[0]
    original = int(np.argmax(clean))
    scorer.original, scorer.target = original, 1 - original
    seen: dict[str, Any] = {"stage": 0, "class": original, "probability": float(clean[original])}

    def fixed_stop(intermediate_result: Any) -> bool:
        return scorer.target_probability(float(intermediate_result.fun)) > stop_confidence

    def upstream_callback(intermediate_result: Any) -> bool:
        # upstream re-renders and re-scores the best member every generation (one extra forward)
        seen["stage"] += 1
        probabilities = softmax32(scorer.logits(spec.render(image, np.asarray(intermediate_result.x)[None])))[0]
        seen["class"] = int(np.argmax(probabilities))
        seen["probability"] = float(probabilities[seen["class"]])
        flipped = seen["class"] != original and seen["probability"] > stop_confidence
        return flipped or seen["stage"] > max_generations

    result = differential_evolution(
        scorer, bounds, **DE_SETTINGS, popsize=UPSTREAM_POPSIZE if popsize is None else popsize,
        maxiter=UPSTREAM_MAXITER if parity else max_generations, polish=parity, rng=seed,
        callback=upstream_callback if parity else fixed_stop, vectorized=vectorized,
        integrality=[spec.integral_in_fixed_mode and not parity] * len(bounds))
    best_x = np.asarray(result.x, dtype=np.float64)

    if parity:
        adversarial_class, adversarial_confidence = seen["class"], seen["probability"]
        target_probability = adversarial_confidence if adversarial_class != original else 1.0 - adversarial_confidence
    else:
        logits = scorer.best_logits if np.array_equal(best_x, scorer.best_x) else scorer.logits(
            spec.render(image, best_x[None]))[0]
        probabilities = softmax32(logits[None])[0]
        adversarial_class = int(np.argmax(probabilities))
        target_probability = float(probabilities[1 - original])
    success = adversarial_class != original
    return DEResult(
        attack=attack, objective=objective, parity=parity, success=success,
        confident_success=success and target_probability > stop_confidence, original_class=original,
        original_confidence=float(clean[original]), adversarial_class=adversarial_class,
        adversarial_probability=target_probability, params=best_x, n_forward=scorer.n_forward,
        n_generations=int(result.nit), energy=float(result.fun), message=str(result.message),
        image=spec.render(image, best_x[None])[0])


# --------------------------------------------------------------------------------------------------------------------
# a set of images


def image_seed(seed: int, index: int) -> int:
    """Each image's own DE seed, independent of which other images (shards) are attacked alongside."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def attack_images(model: ImageModel, images: np.ndarray, labels: Sequence[Any], attack: str, *, seed: int = 0,
                  **options: Any) -> tuple[list[dict[str, Any]], list[np.ndarray | None]]:
    """Attack every image labelled melanoma that the model predicts as melanoma (upstream's rule); skip the rest.

    Returns one record per image (outcome "success" | "failed" | "skipped"; a skip's reason is "not melanoma" or
    "incorrect class") and the adversarial images (the best candidate also when the attack failed; None if skipped).
    `options` are `de_attack`'s keyword arguments. A record's n_forward is its own attack's count; the single batched
    clean scoring of all images that decides the skips is not in it.
    """

    array = np.asarray(images)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise DataError(f"images must be uint8 (n, H, W, 3); got {array.dtype} {array.shape}")
    if len(labels) != len(array):
        raise DataError(f"{len(labels)} labels for {len(array)} images")
    DE_ATTACKS.get(attack)
    is_melanoma = melanoma_indicator(labels).astype(bool)
    clean = softmax32(model.logits(array)) if len(array) else np.empty((0, 2))
    records: list[dict[str, Any]] = []
    adversarials: list[np.ndarray | None] = []
    for index in range(len(array)):
        predicted = int(np.argmax(clean[index]))
        record: dict[str, Any] = {"image": index, "attack": attack, "reason": None,
                                  "original_class": model.classes[predicted],
                                  "original_probability": float(clean[index, predicted])}
        if not is_melanoma[index] or predicted != MELANOMA:
            record.update(outcome="skipped", reason="not melanoma" if not is_melanoma[index] else "incorrect class",
                          adversarial_class=None, adversarial_probability=None, confident_success=False,
                          n_forward=0, n_generations=0, params=None)
            records.append(record)
            adversarials.append(None)
            continue
        result = de_attack(model, array[index], attack, seed=image_seed(seed, index), **options)
        record.update(outcome="success" if result.success else "failed",
                      adversarial_class=model.classes[result.adversarial_class],
                      adversarial_probability=result.adversarial_probability,
                      confident_success=result.confident_success, n_forward=result.n_forward,
                      n_generations=result.n_generations, params=result.params.tolist())
        log.info("%s attack on image %d: %s (P(target) %.3f after %d generations, %d forwards)", attack, index,
                 record["outcome"], result.adversarial_probability, result.n_generations, result.n_forward)
        records.append(record)
        adversarials.append(result.image)
    return records, adversarials
