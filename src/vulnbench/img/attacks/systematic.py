"""The systematic-perturbation sweep: fixed transforms applied to every evaluation image.

No upstream code exists; the paper's table reports accuracy after 45°/180° rotation and ±5/±10/±50 shifts of one
colour channel. Whether "±5" meant 8-bit offsets or percent is open, so both kinds exist:
"additive" = clip(x_c + δ, 0, 255); "percent" = x_c × (1 + δ/100) with the colour attack's rounding (float64, > 255
→ 255, truncate). Rotations are PIL's `rotate` (nearest, black corners, no expand), reproduced exactly by one
precomputed index map applied to the whole batch; 180° is lossless.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import numpy as np

from vulnbench.core.errors import ConfigError, DataError
from vulnbench.img.attacks.render import gather, rotation_source_index

CHANNELS = ("R", "G", "B")
DELTAS = (-50, -10, -5, 5, 10, 50)
ROTATIONS = (45.0, 180.0)
OFFSET_KINDS = ("additive", "percent")

ImageTransform = Callable[[np.ndarray], np.ndarray]


class SystematicTransform(NamedTuple):
    """One row of the sweep: name, the channel shifted (None for identity/rotations), its δ, and the batched fn."""

    name: str
    channel: str | None
    delta: float | None
    fn: ImageTransform


def identity(images: np.ndarray) -> np.ndarray:
    return images.copy()


def rotate(images: np.ndarray, theta: float) -> np.ndarray:
    """PIL `rotate(θ)` (counter-clockwise, nearest, black corners) of every image, as one gather."""
    return gather(images, rotation_source_index(images.shape[1], images.shape[2], theta))


def shift_channel(images: np.ndarray, channel: int, delta: float) -> np.ndarray:
    """clip(x_c + δ, 0, 255) on one channel (an 8-bit offset)."""
    out = images.copy()
    out[..., channel] = np.clip(images[..., channel].astype(np.int16) + int(delta), 0, 255).astype(np.uint8)
    return out


def scale_channel(images: np.ndarray, channel: int, delta: float) -> np.ndarray:
    """x_c × (1 + δ/100) on one channel: float64, > 255 → 255, truncated (as the colour attack renders)."""
    out = images.copy()
    scaled = images[..., channel].astype(np.float64) * (1.0 + delta / 100.0)
    out[..., channel] = np.minimum(scaled, 255.0).astype(np.uint8)
    return out


def systematic_transforms(offset_kind: str = "additive") -> list[SystematicTransform]:
    """identity, rotate_45, rotate_180, then per channel and δ: "R-50", …, "B+50" (percent: "R-50%", …)."""
    if offset_kind not in OFFSET_KINDS:
        raise ConfigError(f"offset_kind: unknown {offset_kind!r} (known: {', '.join(OFFSET_KINDS)})")
    transforms = [SystematicTransform("identity", None, None, identity)]
    transforms += [SystematicTransform(f"rotate_{theta:g}", None, None, partial(rotate, theta=theta))
                   for theta in ROTATIONS]
    shift, suffix = (shift_channel, "") if offset_kind == "additive" else (scale_channel, "%")
    for index, channel in enumerate(CHANNELS):
        transforms += [SystematicTransform(f"{channel}{delta:+d}{suffix}", channel, float(delta),
                                           partial(shift, channel=index, delta=delta)) for delta in DELTAS]
    return transforms


def apply_transform(images: np.ndarray, fn: ImageTransform, batch_size: int = 256) -> np.ndarray:
    """fn over uint8 images (S, H, W, 3) in batches (bounds the float/int temporaries); returns uint8 (S, H, W, 3)."""
    array = np.asarray(images)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise DataError(f"images must be uint8 (S, H, W, 3); got {array.dtype} {array.shape}")
    out = np.empty_like(array)
    for start in range(0, len(array), batch_size):
        out[start : start + batch_size] = fn(array[start : start + batch_size])
    return out
