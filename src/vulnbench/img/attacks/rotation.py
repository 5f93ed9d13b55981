"""The rotation + translation attack: an angle in [0, 360) and a shift, found by differential evolution
(`vulnbench.img.attacks.de`); nearest-neighbour, black corners, as PIL renders it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vulnbench.core.errors import ConfigError
from vulnbench.img.attacks import render
from vulnbench.img.attacks.base import AttackedImage, image_attack, softmax32
from vulnbench.img.attacks.de import DESearch, de_images, de_settings
from vulnbench.img.base import ImageModel


def rotation_search(max_translation: float | None = None, symmetric: bool = False) -> DESearch:
    """(θ, tx, ty)."""
    return DESearch("rotation", lambda height, width, parity: render.rotation_bounds(
        min(height, width), max_translation, symmetric), render.render_rotation_translation, False)


def _colours(image: np.ndarray) -> np.ndarray:
    rgb = np.asarray(image).reshape(-1, 3).astype(np.int64)
    return (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]


def moved_pixels_only(clean: np.ndarray, adversarial: np.ndarray, params: Mapping[str, Any]) -> str | None:
    """A rotated and shifted image only holds the clean image's colours and the black fill."""
    foreign = int((~np.isin(_colours(adversarial), np.append(_colours(clean), 0))).sum())
    return None if not foreign else f"{foreign} pixels hold a colour the clean image does not have"


@image_attack("rotation", description="rotation + translation (differential evolution)",
              constraint=moved_pixels_only, order=40, settings=de_settings, probabilities=softmax32)
def rotation(model: ImageModel, images: np.ndarray, seeds: Sequence[int], *, max_translation: float | None = None,
             symmetric: bool = False, **settings: Any) -> list[AttackedImage]:
    """Rotate each image counter-clockwise by θ in [0, 360) and shift it by (tx, ty).

    Args:
        max_translation: largest shift in px (null: upstream's 50 px at 299 px, scaled to the image size)
        symmetric: shift by ±max_translation (fixed mode only) instead of upstream's 0..max_translation
    """
    if symmetric and settings.get("parity"):
        raise ConfigError("symmetric translation is a fixed-mode option; parity keeps upstream's 0..max_translation")
    return de_images(model, images, seeds, rotation_search(max_translation, symmetric), **settings)
