"""The n-pixel attack: a few pixels set to any colour, positions and colours found by differential
evolution (`vulnbench.img.attacks.de`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vulnbench.img.attacks import render
from vulnbench.img.attacks.base import AttackedImage, image_attack, softmax32
from vulnbench.img.attacks.de import DESearch, de_images, de_settings
from vulnbench.img.base import ImageModel


def pixel_search(n_pixels: int = 3) -> DESearch:
    """(row, col, R, G, B) per pixel; fixed mode searches integers."""
    return DESearch("pixel", lambda height, width, parity: render.pixel_bounds(height, width, n_pixels, parity),
                    render.render_pixels, True)


def within_n_pixels(clean: np.ndarray, adversarial: np.ndarray, params: Mapping[str, Any]) -> str | None:
    """At most n_pixels pixels differ from the clean image."""
    changed = int((np.asarray(clean) != np.asarray(adversarial)).any(axis=-1).sum())
    return None if changed <= int(params["n_pixels"]) else f"{changed} pixels changed, n_pixels is {params['n_pixels']}"


@image_attack("pixel", description="n-pixel attack (differential evolution)", constraint=within_n_pixels, order=20,
              settings=de_settings, probabilities=softmax32)
def pixel(model: ImageModel, images: np.ndarray, seeds: Sequence[int], *, n_pixels: int = 3,
          **settings: Any) -> list[AttackedImage]:
    """Set n_pixels pixels of each image to any colour; where and which colour, differential evolution decides.

    Args:
        n_pixels: pixels changed per image (upstream: 3)
    """
    return de_images(model, images, seeds, pixel_search(n_pixels), **settings)
