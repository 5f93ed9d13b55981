"""Batched renderers of the three DE attacks (a whole population per call) and their one-candidate PIL references.

Every renderer takes one uint8 image (H, W, 3) and a population of parameter vectors (S, N) and returns the S
perturbed uint8 images (S, H, W, 3) — the 8-bit space upstream perturbs. The batched versions reproduce
the upstream (PIL / NumPy) rendering bit for bit, so parity-mode scores do not depend on which path rendered them:

* pixel: params = d × (row, col, R, G, B), truncated to int; later pixels overwrite earlier ones.
* colour: per-channel multipliers; float64 multiply, > 255 → 255, truncate to uint8.
* rotation + translation: PIL `transform(AFFINE, (1, 0, tx, 0, 1, ty), NEAREST)` then `rotate(θ)`
  (counter-clockwise, nearest, black corners, no expand). The batched path composes the two nearest-neighbour maps
  into one gather per candidate, using PIL's own arithmetic: the shift goes through PIL's `ImagingScaleAffine`
  (double-precision running sums, truncation), the rotation through `affine_fixed` (16.16 fixed point, arithmetic
  shift) and the 0/90/180/270° fast paths through `transpose`. That makes it exactly equal to PIL, not merely close.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

#: one perturbed pixel = (row, col, R, G, B)
PIXEL_FIELDS = 5
#: upstream's attacked image size and translation bound at that size
UPSTREAM_SIZE = 299
UPSTREAM_MAX_TRANSLATION = 50.0
#: PIL's fixed-point affine path needs every mapped corner within ±32768 px (Geometry.c `check_fixed`)
FIXED_POINT_LIMIT = 32768.0
_ONE = 1 << 16
#: candidates per rotation-rendering chunk: larger chunks page-fault on fresh (S, H, W) index arrays (≈ 4x slower)
ROTATION_CHUNK = 8  # 1.0 in PIL's 16.16 fixed point


# --------------------------------------------------------------------------------------------------------------------
# validation and bounds


def check_image(image: np.ndarray) -> np.ndarray:
    """One uint8 RGB image (H, W, 3), or a ValueError saying what it is instead."""
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"expected one uint8 image of shape (H, W, 3), got {array.dtype} {array.shape}")
    return array


def _population(params: np.ndarray, n_params: int | None, what: str) -> np.ndarray:
    array = np.atleast_2d(np.asarray(params, dtype=np.float64))
    if array.ndim != 2 or (n_params is not None and array.shape[1] != n_params):
        raise ValueError(f"{what}: expected parameters of shape (S, {n_params}), got {np.shape(params)}")
    return array


def default_max_translation(size: int) -> float:
    """Upstream's 50 px at 299 px, scaled to the image size (a translation of the same fraction of the image)."""
    return UPSTREAM_MAX_TRANSLATION * size / UPSTREAM_SIZE


def pixel_bounds(height: int, width: int, n_pixels: int = 3, parity: bool = False) -> list[tuple[float, float]]:
    """DE bounds of the pixel attack. Parity: upstream's [0, size] and [0, 255] (DE samples [lo, hi), so truncation
    never reaches 255 or the last row/column+1 except through polish); fixed: inclusive integer bounds for
    `integrality` ([0, size − 1], [0, 255])."""
    if n_pixels < 1:
        raise ValueError(f"n_pixels must be >= 1, got {n_pixels}")
    if parity:
        one = [(0.0, float(height)), (0.0, float(width)), (0.0, 255.0), (0.0, 255.0), (0.0, 255.0)]
    else:
        one = [(0.0, float(height - 1)), (0.0, float(width - 1)), (0.0, 255.0), (0.0, 255.0), (0.0, 255.0)]
    return one * n_pixels


def color_bounds(delta: float = 0.1) -> list[tuple[float, float]]:
    """Per-channel multipliers in [1 − δ, 1 + δ] (upstream δ = 0.1)."""
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    return [(1.0 - delta, 1.0 + delta)] * 3


def rotation_bounds(size: int, max_translation: float | None = None,
                    symmetric: bool = False) -> list[tuple[float, float]]:
    """(θ in [0, 360), tx, ty): translation 0..max (upstream, content moves left/up only) or ±max (symmetric)."""
    limit = default_max_translation(size) if max_translation is None else float(max_translation)
    if limit < 0:
        raise ValueError(f"max_translation must be >= 0, got {limit}")
    low = -limit if symmetric else 0.0
    return [(0.0, 360.0), (low, limit), (low, limit)]


# --------------------------------------------------------------------------------------------------------------------
# pixel attack


def decode_pixels(params: np.ndarray, height: int, width: int) -> np.ndarray:
    """(S, 5d) floats → (S, d, 5) ints by truncation (upstream `astype(int)`).

    Rows/columns are clipped to the last pixel: upstream raised IndexError when polish probed the upper bound;
    everything DE itself samples is unaffected."""
    population = _population(params, None, "pixel attack")
    if population.shape[1] % PIXEL_FIELDS:
        raise ValueError(f"pixel attack: expected 5·d parameters (row, col, R, G, B per pixel), got "
                         f"{population.shape[1]}")
    decoded = population.astype(np.int64).reshape(len(population), -1, PIXEL_FIELDS)
    decoded[..., 0] = np.clip(decoded[..., 0], 0, height - 1)
    decoded[..., 1] = np.clip(decoded[..., 1], 0, width - 1)
    decoded[..., 2:] = np.clip(decoded[..., 2:], 0, 255)
    return decoded


def render_pixels(image: np.ndarray, params: np.ndarray) -> np.ndarray:
    """(S, 5d) → (S, H, W, 3): each candidate's d pixels set to their RGB values, written in order (later wins)."""
    base = check_image(image)
    height, width = base.shape[:2]
    decoded = decode_pixels(params, height, width)
    out = np.repeat(base[None], len(decoded), axis=0)
    candidates = np.arange(len(decoded))
    for j in range(decoded.shape[1]):  # d is tiny; the order makes later pixels overwrite earlier ones
        out[candidates, decoded[:, j, 0], decoded[:, j, 1]] = decoded[:, j, 2:].astype(np.uint8)
    return out


def pil_pixels(image: np.ndarray, params: Sequence[float]) -> np.ndarray:
    """Reference for one candidate, as upstream: the PIL image as an array, pixel triples assigned one by one."""
    array = np.array(Image.fromarray(check_image(image)))
    pixels = np.asarray(params, dtype=np.float64).astype(int).reshape(-1, PIXEL_FIELDS)
    for row, col, red, green, blue in pixels:
        array[row, col] = (red, green, blue)
    return array


# --------------------------------------------------------------------------------------------------------------------
# colour-balance attack


def render_color(image: np.ndarray, multipliers: np.ndarray) -> np.ndarray:
    """(S, 3) channel multipliers → (S, H, W, 3): float64 multiply, values > 255 set to 255, truncated to uint8.
    Float64 matters: e.g. 200 × 1.005 must truncate exactly as upstream's NumPy did."""
    base = check_image(image)
    population = _population(multipliers, 3, "colour attack")
    scaled = base[None].astype(np.float64) * population[:, None, None, :]
    np.minimum(scaled, 255.0, out=scaled)
    return scaled.astype(np.uint8)


def pil_color(image: np.ndarray, multipliers: Sequence[float]) -> np.ndarray:
    """Reference for one candidate, as upstream: `np.array(img) * m`, `[> 255] = 255`, `astype(uint8)`."""
    array = np.array(Image.fromarray(check_image(image)))
    scaled = array * np.asarray(multipliers, dtype=np.float64)
    scaled[scaled > 255] = 255
    return np.array(Image.fromarray(scaled.astype(np.uint8)))


# --------------------------------------------------------------------------------------------------------------------
# rotation + translation attack


def _coord(values: np.ndarray) -> np.ndarray:
    """PIL's COORD macro: negative → −1 (outside), otherwise truncation."""
    return np.where(values < 0.0, -1, np.floor(np.maximum(values, 0.0))).astype(np.int64)


def _scale_table(start: float, step: float, n: int) -> np.ndarray:
    """Source indices of PIL's `ImagingScaleAffine` along one axis: a running double sum, exactly as in C."""
    running = np.empty(n, dtype=np.float64)
    running[0] = start
    running[1:] = step
    return _coord(np.add.accumulate(running))  # accumulate is sequential: same roundings as `xo += a[0]`


def _translation_tables(width: int, height: int, tx: float, ty: float) -> tuple[np.ndarray, np.ndarray]:
    """PIL `transform(AFFINE, (1, 0, tx, 0, 1, ty), NEAREST)`: output column x reads input column tables[0][x]."""
    return _scale_table(tx + 1.0 * 0.5, 1.0, width), _scale_table(ty + 1.0 * 0.5, 1.0, height)


def _rotation_matrix(width: int, height: int, theta: float) -> tuple[str, tuple[float, ...]]:
    """What PIL's `rotate(θ)` does for this angle: ('transpose', kind) fast paths or ('affine', 6 coefficients)."""
    angle = theta % 360.0
    if angle == 0:
        return "transpose", (0.0,)
    if angle == 180:
        return "transpose", (180.0,)
    if angle in (90, 270) and width == height:
        return "transpose", (angle,)
    center_x, center_y = width / 2, height / 2
    radians = -math.radians(angle)
    a, b, d, e = (round(math.cos(radians), 15), round(math.sin(radians), 15), round(-math.sin(radians), 15),
                  round(math.cos(radians), 15))
    c = a * (-center_x) + b * (-center_y) + 0.0 + center_x
    f = d * (-center_x) + e * (-center_y) + 0.0 + center_y
    return "affine", (a, b, c, d, e, f)


def _fix(value: float) -> int:
    """PIL's FIX: 16.16 fixed point, FLOOR(v · 65536 + 0.5)."""
    return math.floor(value * 65536.0 + 0.5)


def _fixed_coefficients(width: int, height: int, theta: float) -> tuple[int, ...] | None:
    """Integer coefficients (A0, A1, A2, A3, A4, A5) such that the source of output (x, y) is
    ((A2 + x·A0 + y·A1) >> 16, (A5 + x·A3 + y·A4) >> 16), or None for PIL's rare scale-only path."""
    kind, values = _rotation_matrix(width, height, theta)
    if kind == "transpose":  # exact integer maps of PIL's transposes
        half, last_x, last_y = _ONE // 2, (2 * width - 1) * _ONE // 2, (2 * height - 1) * _ONE // 2
        return {
            0.0: (_ONE, 0, half, 0, _ONE, half),  # identity
            180.0: (-_ONE, 0, last_x, 0, -_ONE, last_y),  # (W−1−x, H−1−y)
            90.0: (0, -_ONE, last_x, _ONE, 0, half),  # counter-clockwise: out[y, x] = in[x, W−1−y]
            270.0: (0, _ONE, half, -_ONE, 0, last_y),
        }[values[0]]
    a0, a1, a2, a3, a4, a5 = values
    if a1 == 0 and a3 == 0:  # PIL takes `ImagingScaleAffine` (double arithmetic) for these
        return None
    for x, y in ((0, 0), (width, height), (0, height), (width, 0)):
        if abs(x * a0 + y * a1 + a2) >= FIXED_POINT_LIMIT or abs(x * a3 + y * a4 + a5) >= FIXED_POINT_LIMIT:
            raise ValueError(f"rotation: a {width}x{height} image is beyond PIL's fixed-point path; not supported")
    return (_fix(a0), _fix(a1), _fix(a2 + a0 * 0.5 + a1 * 0.5), _fix(a3), _fix(a4), _fix(a5 + a3 * 0.5 + a4 * 0.5))


def _inside(rows: np.ndarray, cols: np.ndarray, height: int, width: int) -> np.ndarray:
    """0 <= rows < height and 0 <= cols < width in two comparisons (negative int32 viewed as uint32 is huge)."""
    return (rows.view(np.uint32) < height) & (cols.view(np.uint32) < width)


def rotation_source_map(height: int, width: int, thetas: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Where PIL's `rotate(θ)` reads each output pixel: int32 (rows, cols) of shape (S, H, W); outside = any value
    beyond the image (PIL leaves those pixels black)."""
    thetas = [float(t) for t in thetas]
    coefficients = [_fixed_coefficients(width, height, theta) for theta in thetas]  # 6 integers per candidate
    table = np.array([c if c is not None else (0,) * 6 for c in coefficients], dtype=np.int32).reshape(-1, 6, 1, 1)
    ys = np.arange(height, dtype=np.int32).reshape(1, height, 1)
    xs = np.arange(width, dtype=np.int32).reshape(1, 1, width)
    # |values| stay far below 2**31 for images PIL's fixed-point path accepts; `>>` is PIL's arithmetic shift
    cols = ((table[:, 2] + ys * table[:, 1]) + xs * table[:, 0]) >> 16
    rows = ((table[:, 5] + ys * table[:, 4]) + xs * table[:, 3]) >> 16
    for i in [i for i, c in enumerate(coefficients) if c is None]:
        # angles within ~1e-14° of 0/180 but not exactly 0/180: PIL's double-precision scale path
        a0, _, a2, _, a4, a5 = _rotation_matrix(width, height, thetas[i])[1]
        cols[i] = _scale_table(a2 + a0 * 0.5, a0, width)[None, :]
        rows[i] = _scale_table(a5 + a4 * 0.5, a4, height)[:, None]
    return rows, cols


def rotation_translation_source_index(height: int, width: int, params: np.ndarray) -> np.ndarray:
    """The composed inverse map of shift-then-rotate per candidate (θ, tx, ty) as flat source indices (S, H, W)
    into the image's H·W pixels; H·W marks "outside" (black)."""
    population = _population(params, 3, "rotation attack")
    n_candidates, n_pixels = len(population), height * width
    rot_rows, rot_cols = rotation_source_map(height, width, population[:, 0])
    inside = _inside(rot_rows, rot_cols, height, width)
    tables = [_translation_tables(width, height, tx, ty) for tx, ty in population[:, 1:]]  # 2 short rows each
    shift_cols = np.stack([t[0] for t in tables]).astype(np.int32)  # (S, W)
    shift_rows = np.stack([t[1] for t in tables]).astype(np.int32)  # (S, H)
    offsets = np.arange(n_candidates, dtype=np.int32).reshape(-1, 1, 1)
    cols = np.take(shift_cols, np.where(inside, rot_cols, 0) + offsets * width)
    rows = np.take(shift_rows, np.where(inside, rot_rows, 0) + offsets * height)
    inside &= _inside(rows, cols, height, width)
    return np.where(inside, rows * width + cols, n_pixels)


def rotation_source_index(height: int, width: int, theta: float) -> np.ndarray:
    """PIL `rotate(θ)` alone as flat source indices (H, W); H·W marks "outside" (black)."""
    rows, cols = rotation_source_map(height, width, [theta])
    return np.where(_inside(rows[0], cols[0], height, width), rows[0] * width + cols[0], height * width)


def gather(images: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Nearest-neighbour resampling by flat source indices (H·W = black).

    image (H, W, 3) with index (S, H, W) → (S, H, W, 3): one image, many maps (a DE population);
    images (S, H, W, 3) with index (H, W) → (S, H, W, 3): many images, one map (a systematic transform)."""
    if images.ndim == 3:
        flat = np.concatenate([images.reshape(-1, 3), np.zeros((1, 3), np.uint8)])  # sentinel black pixel
        return np.take(flat, index, axis=0)
    flat = np.concatenate([images.reshape(len(images), -1, 3), np.zeros((len(images), 1, 3), np.uint8)], axis=1)
    return np.take(flat, index.reshape(-1), axis=1).reshape(images.shape)


def render_rotation_translation(image: np.ndarray, params: np.ndarray) -> np.ndarray:
    """(S, 3) = (θ degrees, tx, ty) → (S, H, W, 3), equal to `pil_rotation_translation` for every candidate."""
    base = check_image(image)
    population = _population(params, 3, "rotation attack")
    out = np.empty((len(population), *base.shape), dtype=np.uint8)
    for start in range(0, len(population), ROTATION_CHUNK):  # chunks keep the index arrays cache-sized
        chunk = population[start : start + ROTATION_CHUNK]
        out[start : start + len(chunk)] = gather(base, rotation_translation_source_index(*base.shape[:2], chunk))
    return out


def pil_rotation_translation(image: np.ndarray, params: Sequence[float]) -> np.ndarray:
    """Reference for one candidate, upstream's PIL calls: affine shift (nearest, black fill), then rotate(θ)."""
    theta, tx, ty = (float(v) for v in params)
    pil_image = Image.fromarray(check_image(image))
    shifted = pil_image.transform(pil_image.size, Image.AFFINE, (1, 0, tx, 0, 1, ty), resample=Image.NEAREST)
    return np.array(shifted.rotate(theta))


def pil_rotate(image: np.ndarray, theta: float) -> np.ndarray:
    """PIL `rotate(θ)` of one image (nearest, black corners, no expand): the systematic sweep's reference."""
    return np.array(Image.fromarray(check_image(image)).rotate(float(theta)))
