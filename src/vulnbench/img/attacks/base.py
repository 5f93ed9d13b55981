"""The image-attack contract, the one registry of image attacks, and the loop that runs any of them on a batch.

An image attack is one module that registers one function with `@image_attack(name, …)`:

    @image_attack("mine", description="…", white_box=False, order=50, constraint=within_mine)
    def mine(model, images, seeds, *, strength: float = 0.1, max_forward: int | None = None) -> list[AttackedImage]:
        \"\"\"What it does.

        Args:
            strength: one line saying what the parameter means
            max_forward: forward-pass budget per image (null: no budget beyond the attack's own limits)
        \"\"\"

* `model` is an `ImageModel` (a `DifferentiableImageModel` when `white_box`), `images` the uint8 (S, H, W, 3) images
  to attack (each predicted as the class it is attacked away from), `seeds` one seed per image (an image's result
  does not depend on which other images share its batch).
* Its keyword parameters with defaults are its config parameters: type hints check config values (`Literal` for
  choices), the docstring's `Args:` gives each one its one-line meaning (the config reference is generated from
  them). `settings` adds the keyword parameters of a shared declaration (the DE engine's), passed the same way.
  Every attack takes `max_forward`, the forward-pass budget per image.
* It returns one `AttackedImage` per image: the adversarial uint8 image, the class the model gives it, P(target),
  and `n_forward`, every image the model scored for it. It raises `VulnbenchError` on a problem: a `ConfigError`
  (parameters or model unfit for the attack) stops the whole job, any other (a degenerate image, unusable logits)
  becomes that image's record with outcome "failed" and its `reason`, and the job goes on.
* `constraint(clean, adversarial, params)` states the perturbation's bound (pixels changed, L∞, …): None when an
  adversarial image keeps to it, else what it broke. The contract tests hold every registered attack to it.

`order` places the attack in tables and figures (`attack_order`); `batched` attacks (FGSM) get all images in one
call, the others one image per call.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from vulnbench.core.errors import ConfigError, DataError, VulnbenchError
from vulnbench.core.params import Parameter, check_params, declared_parameters
from vulnbench.core.registry import Registry
from vulnbench.img.base import MELANOMA, DifferentiableImageModel, ImageModel
from vulnbench.img.metrics import melanoma_indicator

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: arguments every attack function takes positionally; its keyword parameters are its config parameters
POSITIONAL = ("model", "images", "seeds")
#: the forward-pass budget every attack takes (per image; None: none beyond the attack's own limits)
BUDGET = "max_forward"
#: sort key of an attack registered without an `order` (after the built-in ones)
DEFAULT_ORDER = 100

Constraint = Callable[[np.ndarray, np.ndarray, Mapping[str, Any]], "str | None"]


@dataclass(frozen=True)
class AttackedImage:
    """What an attack returns for one image it attacked."""

    success: bool  # the model's class changed
    adversarial: np.ndarray  # uint8 (H, W, 3): the best candidate found (also when the class did not change)
    adversarial_class: int
    adversarial_probability: float  # P(the class attacked towards) of the adversarial image
    confident_success: bool  # changed with P(target) above the attack's confidence
    n_forward: int  # images the model scored for this image (the clean one included)
    n_generations: int = 0
    params: list[float] | None = None  # the perturbation's parameters (DE: the best member)
    extra: Mapping[str, Any] = field(default_factory=dict)  # further record fields (FGSM: linf_levels)


def softmax32(logits: np.ndarray) -> np.ndarray:
    """Softmax in float32, as upstream's NumPy softmax of float32 logits: what makes confident images saturate at
    exactly 1.0 (upstream's saturation)."""
    z = np.asarray(logits, dtype=np.float32)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax64(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable)."""
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class ImageAttack:
    """A registered image attack: its function and what the pipeline needs to know about it."""

    name: str
    function: Callable[..., list[AttackedImage]]
    description: str
    #: needs gradients (a DifferentiableImageModel); never planned on black boxes
    white_box: bool
    #: the perturbation's bound: None when (clean, adversarial) under these parameters keeps to it, else what broke
    constraint: Constraint
    #: position in tables and figures
    order: int = DEFAULT_ORDER
    #: a declaration whose keyword parameters the attack also takes (the DE engine's settings)
    settings: Callable[..., Any] | None = None
    #: all images in one call (FGSM: one gradient pass per batch) instead of one image per call
    batched: bool = False
    #: logits → probabilities of the clean scoring that records report (DE: upstream's float32 softmax)
    probabilities: Callable[[np.ndarray], np.ndarray] = softmax64
    #: parameter name → a check of a config value beyond its type (raises ConfigError / ValueError)
    checks: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)

    @property
    def declared(self) -> dict[str, Parameter]:
        """Its config parameters (default, type hint, meaning): the function's own, then the shared settings'."""
        own = declared_parameters(self.function, exclude=POSITIONAL)
        shared = declared_parameters(self.settings) if self.settings is not None else {}
        return {**own, **{k: v for k, v in shared.items() if k not in own}}

    @property
    def parameters(self) -> dict[str, Any]:
        """Config parameter → default."""
        return {name: p.default for name, p in self.declared.items()}


def check_max_forward(value: Any) -> None:
    """A forward-pass budget is a positive integer or null."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"must be a positive integer or null, got {value!r}")


#: the one registry of image attacks: the modules of `vulnbench.img.attacks` (and plugins) register here
IMAGE_ATTACKS: Registry[ImageAttack] = Registry("image attack")


def image_attack(name: str, *, description: str, constraint: Constraint, white_box: bool = False,
                 order: int = DEFAULT_ORDER, settings: Callable[..., Any] | None = None, batched: bool = False,
                 probabilities: Callable[[np.ndarray], np.ndarray] = softmax64,
                 checks: Mapping[str, Callable[[Any], Any]] | None = None) -> Callable[[Callable[..., Any]],
                                                                                      Callable[..., Any]]:
    """Register an attack function under `name` (see the module docstring for the contract it must keep)."""

    def decorator(function: Callable[..., Any]) -> Callable[..., Any]:
        spec = ImageAttack(name, function, description, white_box, constraint, order, settings, batched,
                           probabilities, {BUDGET: check_max_forward, **(checks or {})})
        positional = list(inspect.signature(function).parameters)[: len(POSITIONAL)]
        if tuple(positional) != POSITIONAL:
            raise TypeError(f"image attack {name!r}: takes {positional}, expected ({', '.join(POSITIONAL)}, *, …)")
        if BUDGET not in spec.declared:
            raise TypeError(f"image attack {name!r}: declares no {BUDGET} (the forward-pass budget per image)")
        IMAGE_ATTACKS.register(name)(spec)
        return function

    return decorator


def attack_order(names: Sequence[str] | None = None) -> list[str]:
    """Registered attacks in table and figure order (`names`: only those, unknown ones last by name)."""
    chosen = list(IMAGE_ATTACKS) if names is None else list(dict.fromkeys(names))
    return sorted(chosen, key=lambda name: (IMAGE_ATTACKS.get(name).order if name in IMAGE_ATTACKS else math.inf,
                                            name))


# --------------------------------------------------------------------------------------------------------------------
# running an attack on a set of images


class CountingModel:
    """A model that counts the images it scores (logits and, for a white box, gradient passes)."""

    def __init__(self, model: ImageModel) -> None:
        self.model, self.n_forward = model, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def logits(self, images: np.ndarray) -> np.ndarray:
        self.n_forward += len(images)
        return self.model.logits(images)


class CountingDifferentiableModel(CountingModel):
    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        self.n_forward += len(x)
        return self.model.forward_normalized(x)  # type: ignore[attr-defined]


def counting(model: ImageModel) -> CountingModel:
    """The model behind a counter of the images it scores (white boxes stay white boxes)."""
    if isinstance(model, DifferentiableImageModel):
        return CountingDifferentiableModel(model)
    return CountingModel(model)


def image_seed(seed: int, index: int) -> int:
    """Each image's own seed, independent of which other images (shards) are attacked alongside."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def check_images(images: np.ndarray, labels: Sequence[Any]) -> np.ndarray:
    array = np.asarray(images)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise DataError(f"images must be uint8 (n, H, W, 3); got {array.dtype} {array.shape}")
    if len(labels) != len(array):
        raise DataError(f"{len(labels)} labels for {len(array)} images")
    return array


def _empty_record(index: int, attack: str) -> dict[str, Any]:
    return {"image": index, "attack": attack, "reason": None, "original_class": None, "original_probability": None,
            "outcome": None, "adversarial_class": None, "adversarial_probability": None, "confident_success": False,
            "n_forward": 0, "n_generations": 0, "params": None}


def attack_images(model: ImageModel, images: np.ndarray, labels: Sequence[Any], attack: str, *, seed: int = 0,
                  **params: Any) -> tuple[list[dict[str, Any]], list[np.ndarray | None]]:
    """Run one registered attack on every image labelled melanoma that the model predicts as melanoma (upstream's
    rule); skip the rest.

    Returns one record per image (outcome "success" | "failed" | "skipped"; a skip's reason is "not melanoma" or
    "incorrect class", a failure's reason the error that stopped the attack on that image) and the adversarial
    images (the best candidate also when the attack did not flip the class; None if skipped or stopped by an
    error). `params` are the attack's config parameters; image i is attacked with seed `image_seed(seed, i)`. A
    record's n_forward is its own attack's count; the single batched clean scoring that decides the skips is not in
    it. A ConfigError (parameters or model unfit for the attack) is raised: it is the job's, not an image's.
    """

    spec = IMAGE_ATTACKS.get(attack)
    check_params(f"image attack {attack!r}", params, extra=spec.declared)
    array = check_images(images, labels)
    if spec.white_box and not isinstance(model, DifferentiableImageModel):
        raise ConfigError(f"image attack {attack!r} needs gradients; {type(model).__name__} is a black box")
    is_melanoma = melanoma_indicator(labels).astype(bool)
    logits = np.asarray(model.logits(array)) if len(array) else np.empty((0, 2), np.float32)
    clean = spec.probabilities(logits) if len(array) else logits
    records: list[dict[str, Any]] = []
    adversarials: list[np.ndarray | None] = [None] * len(array)
    chosen = []
    for index in range(len(array)):
        record = _empty_record(index, attack)
        records.append(record)
        if not np.isfinite(logits[index]).all():
            record.update(outcome="failed", reason="the model returned non-finite logits for the clean image")
            continue
        predicted = int(np.argmax(clean[index]))
        record.update(original_class=model.classes[predicted], original_probability=float(clean[index, predicted]))
        if not is_melanoma[index] or predicted != MELANOMA:
            record.update(outcome="skipped", reason="not melanoma" if not is_melanoma[index] else "incorrect class")
        else:
            chosen.append(index)

    counted = counting(model)
    groups = [chosen] if spec.batched and chosen else [[index] for index in chosen]
    for group in groups:
        for index, outcome in zip(group, _attack_group(spec, counted, array, group, seed, params), strict=True):
            record = records[index]
            if isinstance(outcome, Failure):
                record.update(outcome="failed", reason=outcome.reason, n_forward=outcome.n_forward)
                log.warning("%s attack on image %d failed: %s", attack, index, outcome.reason)
                continue
            record.update(outcome="success" if outcome.success else "failed",
                          adversarial_class=model.classes[outcome.adversarial_class],
                          adversarial_probability=outcome.adversarial_probability,
                          confident_success=outcome.confident_success, n_forward=outcome.n_forward,
                          n_generations=outcome.n_generations, params=outcome.params, **outcome.extra)
            adversarials[index] = outcome.adversarial
            log.info("%s attack on image %d: %s (P(target) %.3f, %d generations, %d forwards)", attack, index,
                     record["outcome"], outcome.adversarial_probability, outcome.n_generations, outcome.n_forward)
    return records, adversarials


@dataclass(frozen=True)
class Failure:
    """An image the attack stopped on: the error's one line and the images scored for it until then."""

    reason: str
    n_forward: int


def _attack_group(spec: ImageAttack, model: CountingModel, images: np.ndarray, group: list[int], seed: int,
                  params: Mapping[str, Any]) -> list[AttackedImage | Failure]:
    """The attack's results for these images, or per image the error that stopped it (a batch that fails is retried
    image by image, so that one bad image does not take the others with it)."""
    start = model.n_forward
    try:
        results = spec.function(model, images[group], [image_seed(seed, i) for i in group], **params)
    except ConfigError:
        raise
    except VulnbenchError as error:
        if len(group) > 1:
            return [outcome for index in group
                    for outcome in _attack_group(spec, model, images, [index], seed, params)]
        return [Failure(str(error), model.n_forward - start)]
    if len(results) != len(group):
        raise DataError(f"image attack {spec.name!r} returned {len(results)} results for {len(group)} images")
    return list(results)
