"""FGSM against the model's own prediction, batched: one forward + backward per batch.

No upstream FGSM code exists; the code it was "adapted from" (sarathknv) steps in ImageNet-normalised space without
clamping there. Two spaces:

* "normalized" (seed-compatible): x_norm + eps · sign(∇) in normalised units, de-normalised, clipped to [0, 1]. A step
  of eps in normalised space moves channel c by eps · σ_c in [0, 1] units (σ ≈ 0.22): ≈ 4.4× less than the same eps
  in pixel space. The seed's integer slider value k corresponds to eps = k/255.
* "pixel" (standard): an L∞ step of eps in [0, 1] pixel space, clamped to [0, 1] (config gives eps as k/255).

Either way the result is rounded to uint8 (what is saved and re-scored), so success is judged on the saved image.
Each adversarial image is re-scored on its own (its probabilities do not depend on the batch it was made in): two
forward passes per image in all, the gradient pass and the re-scoring.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch.nn import functional

from vulnbench.core.errors import ConfigError, DataError
from vulnbench.img.attacks.base import AttackedImage, image_attack
from vulnbench.img.base import IMAGENET_STD, DifferentiableImageModel, denormalize, normalize, softmax, to_unit_tensor

Space = Literal["normalized", "pixel"]
SPACES: tuple[str, ...] = get_args(Space)
#: images the model scores per attacked image: the gradient pass and the re-scoring of the uint8 result
FORWARDS_PER_IMAGE = 2
#: P(target) above which a flip counts as confident (as the DE attacks' default stop_confidence)
CONFIDENT = 0.9


def _check(images: np.ndarray, eps: float, space: str, batch_size: int) -> np.ndarray:
    if space not in SPACES:
        raise ConfigError(f"fgsm space: unknown {space!r} (known: {', '.join(SPACES)})")
    if not np.isfinite(eps) or eps < 0:
        raise ConfigError(f"fgsm eps must be a finite number >= 0 (in [0, 1] units, e.g. 8/255); got {eps}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    array = np.asarray(images)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise DataError(f"fgsm images must be uint8 (S, H, W, 3); got {array.dtype} {array.shape}")
    return array


def _step(model: DifferentiableImageModel, chunk: np.ndarray, eps: float, space: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch: (adversarial uint8, clean logits)."""
    x01 = to_unit_tensor(chunk, model.device)
    x = (normalize(x01) if space == "normalized" else x01).detach().requires_grad_(True)
    logits = model.forward_normalized(x if space == "normalized" else normalize(x))
    own_prediction = logits.argmax(dim=1).detach()
    # summed, not averaged: the sign is the same, and a mean over a big batch cannot underflow small gradients to 0
    loss = functional.cross_entropy(logits, own_prediction, reduction="sum")
    (gradient,) = torch.autograd.grad(loss, x)
    with torch.no_grad():
        stepped = x + eps * gradient.sign()
        adversarial01 = (denormalize(stepped) if space == "normalized" else stepped).clamp(0.0, 1.0)
        adversarial = (adversarial01 * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return adversarial, logits.detach().float().cpu().numpy()


def fgsm(model: DifferentiableImageModel, images: np.ndarray, eps: float, space: str = "normalized",
         batch_size: int = 64) -> tuple[np.ndarray, dict[str, Any]]:
    """One signed-gradient step away from the model's own prediction for each image.

    Returns the adversarial uint8 images (S, H, W, 3) and info: original/adversarial class and their probabilities
    (adversarial ones from re-scoring the uint8 result), `flipped`, and the L∞ change in 8-bit levels per image."""
    array = _check(images, eps, space, batch_size)
    adversarial = np.empty_like(array)
    clean_logits = np.empty((len(array), len(model.classes)), dtype=np.float32)
    for start in range(0, len(array), batch_size):
        chunk = array[start : start + batch_size]
        adversarial[start : start + len(chunk)], clean_logits[start : start + len(chunk)] = _step(
            model, chunk, float(eps), space)
    clean = softmax(clean_logits)
    after = softmax(np.concatenate([model.logits(one[None]) for one in adversarial])) if len(array) else clean
    original, adversarial_class = clean.argmax(axis=1), after.argmax(axis=1)
    rows = np.arange(len(array))
    info = {
        "space": space,
        "eps": float(eps),
        "original_class": original,
        "original_probability": clean[rows, original],
        "adversarial_class": adversarial_class,
        "adversarial_probability": after[rows, adversarial_class],
        "probabilities": after,
        "flipped": original != adversarial_class,
        "linf_levels": np.abs(adversarial.astype(np.int16) - array.astype(np.int16)).reshape(len(array), -1).max(
            axis=1, initial=0),
    }
    return adversarial, info


def within_eps(clean: np.ndarray, adversarial: np.ndarray, params: Mapping[str, Any]) -> str | None:
    """L∞ in 8-bit levels at most eps_levels (pixel space) or eps_levels × the largest ImageNet σ (normalised space),
    rounded up."""
    scale = max(IMAGENET_STD) if params["space"] == "normalized" else 1.0
    bound = math.ceil(float(params["eps_levels"]) * scale)
    linf = int(np.abs(np.asarray(adversarial, np.int16) - np.asarray(clean, np.int16)).max(initial=0))
    return None if linf <= bound else f"L∞ {linf} levels exceeds {bound} (eps_levels {params['eps_levels']})"


@image_attack("fgsm", description="one signed-gradient step of eps_levels/255 (normalised or pixel space)",
              constraint=within_eps, white_box=True, order=10, batched=True)
def fgsm_attack(model: DifferentiableImageModel, images: np.ndarray, seeds: Sequence[int], *, eps_levels: float = 8,
                space: Space = "normalized", max_forward: int | None = None) -> list[AttackedImage]:
    """One signed-gradient step away from the model's own prediction for every image (draws no random numbers).

    Args:
        eps_levels: step in 8-bit levels, i.e. eps = eps_levels / 255
        space: normalized: the step in ImageNet-normalised units (the seed's convention); pixel: an L∞ step in pixels
        max_forward: forward-pass budget per image (FGSM needs 2: the gradient pass and the re-scoring)
    """
    if max_forward is not None and max_forward < FORWARDS_PER_IMAGE:
        raise ConfigError(f"fgsm needs {FORWARDS_PER_IMAGE} forward passes per image (gradient, re-scoring); "
                          f"max_forward is {max_forward}")
    if not len(images):
        return []
    adversarial, info = fgsm(model, images, float(eps_levels) / 255.0, str(space))
    out = []
    for k in range(len(images)):
        flipped = bool(info["flipped"][k])
        target_probability = float(1.0 - info["probabilities"][k][0])
        out.append(AttackedImage(
            success=flipped, adversarial=adversarial[k], adversarial_class=int(info["adversarial_class"][k]),
            adversarial_probability=target_probability, confident_success=flipped and target_probability > CONFIDENT,
            n_forward=FORWARDS_PER_IMAGE, extra={"linf_levels": int(info["linf_levels"][k])}))
    return out
