"""The colour-balance attack: one multiplier per RGB channel in [1 − δ, 1 + δ], found by differential
evolution (`vulnbench.img.attacks.de`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vulnbench.img.attacks import render
from vulnbench.img.attacks.base import AttackedImage, image_attack, softmax32
from vulnbench.img.attacks.de import DESearch, de_images, de_settings
from vulnbench.img.base import ImageModel


def color_search(delta: float = 0.1) -> DESearch:
    return DESearch("color", lambda height, width, parity: render.color_bounds(delta), render.render_color, False)


def within_delta(clean: np.ndarray, adversarial: np.ndarray, params: Mapping[str, Any]) -> str | None:
    """Every channel value lies between the clean one scaled by 1 − δ and by 1 + δ (truncated, capped at 255)."""
    value = np.asarray(clean).astype(np.float64)
    low = np.trunc(value * (1.0 - float(params["delta"])))
    high = np.minimum(255.0, np.trunc(value * (1.0 + float(params["delta"]))))
    outside = int(((adversarial < low) | (adversarial > high)).sum())
    return None if not outside else f"{outside} channel values outside [1 − δ, 1 + δ] × clean (δ = {params['delta']})"


@image_attack("color", description="colour-balance multipliers in [1 − δ, 1 + δ] (differential evolution)",
              constraint=within_delta, order=30, settings=de_settings, probabilities=softmax32)
def color(model: ImageModel, images: np.ndarray, seeds: Sequence[int], *, delta: float = 0.1,
          **settings: Any) -> list[AttackedImage]:
    """Scale each colour channel of each image by its own multiplier in [1 − delta, 1 + delta].

    Args:
        delta: largest relative change of a channel, in (0, 1) (upstream: 0.1)
    """
    return de_images(model, images, seeds, color_search(delta), **settings)
