"""`synthetic_lesions`: seeded, clearly synthetic dermoscopy-like images for tests and offline benchmarks.

ISIC images cannot be shipped or downloaded in CI, yet the image arm needs data on which a small CNN learns
something real but not everything. Each lesion is drawn in its own rotated, scaled coordinate frame:

* naevus-like: round/oval, symmetric, smooth border, one even brown (darker towards the centre);
* melanoma-like: asymmetric (low radial harmonics), irregular border (high radial harmonics), several colours
  (dark brown, black, blue-grey veil, reddish) in off-centre blotches.

The classes overlap on purpose. Every lesion has a latent "malignant appearance" z ~ N(±μ, 1) with
Φ(μ) = 1 − difficulty/2, so no classifier can beat Φ(μ) (0.825 at the default 0.35); each visual cue reads z through
its own noise, so some naevi come out irregular or two-toned and some melanomas fairly regular. Nuisance factors
(skin tone, lighting, vignette, hair, size, position, rotation) vary independently of the class. About a fifth of the
images are a second "photo" of an earlier lesion (same shape and colours, new rotation, position, lighting and
hair), so random image-level splits would leak lesions between train and test.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from PIL import Image, ImageDraw

from vulnbench.core.errors import ConfigError

#: label strings as the classifiers expect them (vulnbench.img.base.CLASSES)
MELANOMA_LABEL, NEVUS_LABEL = "melanoma", "nevus"
#: share of images that are a second photo of a lesion already drawn
REPEAT_FRACTION = 0.2

#: patient skin tones, light to medium (RGB)
SKIN_TONES = np.array([[238, 200, 178], [228, 184, 156], [216, 166, 136], [200, 148, 116], [182, 128, 96]], float)
LIGHT_BROWN = np.array([170, 118, 92], float)
BROWN = np.array([122, 80, 62], float)
DARK_BROWN = np.array([76, 48, 40], float)
#: melanoma colours beyond dark brown, with how opaque each is drawn (a blue-grey veil is hazy)
EXTRA_COLOURS = {
    "black": (np.array([36, 28, 30], float), 0.95),
    "blue_grey": (np.array([96, 110, 138], float), 0.75),
    "reddish": (np.array([176, 82, 82], float), 0.7),
}
HAIR_COLOUR = np.array([44, 32, 26], float)


@dataclass(frozen=True)
class SyntheticLesionBatch:
    """Generated images with what the generator knows about them (masks are for sanity checks only)."""

    images: np.ndarray  # (n, H, W, 3) uint8
    labels: np.ndarray  # (n,) str: melanoma / nevus
    lesion_ids: np.ndarray  # (n,) str; a repeated lesion appears twice
    masks: np.ndarray  # (n, H, W) bool: lesion pixels (before hair is drawn over them)
    appearance: np.ndarray  # (n,) float: the latent malignant appearance Φ(z) in [0, 1]


def synthetic_lesions(n_images: int, image_size: int, seed: int, melanoma_fraction: float = 0.4,
                      difficulty: float = 0.35) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (n, S, S, 3) uint8, labels "melanoma"/"nevus", lesion ids): see the module docstring."""
    batch = generate_synthetic_lesions(n_images, image_size, seed, melanoma_fraction, difficulty)
    return batch.images, batch.labels, batch.lesion_ids


def generate_synthetic_lesions(n_images: int, image_size: int, seed: int, melanoma_fraction: float = 0.4,
                               difficulty: float = 0.35) -> SyntheticLesionBatch:
    """`synthetic_lesions` plus lesion masks and latent appearance, for tests and figures."""
    _check(n_images, image_size, melanoma_fraction, difficulty)
    rng = np.random.default_rng(seed)
    n_melanoma = round(n_images * melanoma_fraction)
    photos: list[tuple[int, int, str]] = []  # (lesion index, photo index, label)
    lesion_labels: list[str] = []
    for label, n_class in ((MELANOMA_LABEL, n_melanoma), (NEVUS_LABEL, n_images - n_melanoma)):
        n_repeats = int(n_class * REPEAT_FRACTION)
        n_lesions = n_class - n_repeats
        first = len(lesion_labels)
        lesion_labels += [label] * n_lesions
        photos += [(first + i, 0, label) for i in range(n_lesions)]
        repeated = rng.choice(n_lesions, size=n_repeats, replace=False) if n_repeats else []
        photos += [(first + int(i), 1, label) for i in repeated]
    # lesion numbers in random order, so an id says nothing about the class
    renumber = rng.permutation(len(lesion_labels))
    order = rng.permutation(len(photos))

    # Φ(μ) = 1 − difficulty/2 is the best accuracy any classifier can reach; μ capped where it is ≈ 1 anyway
    mu = min(4.0, NormalDist().inv_cdf(1.0 - max(difficulty, 1e-6) / 2.0)) if difficulty < 1 else 0.0
    images = np.empty((n_images, image_size, image_size, 3), np.uint8)
    masks = np.empty((n_images, image_size, image_size), bool)
    appearance = np.empty(n_images)
    labels = np.empty(n_images, dtype=object)
    lesion_ids = np.empty(n_images, dtype=object)
    for out, index in enumerate(order):
        lesion, photo, label = photos[index]
        number = int(renumber[lesion])
        # per-lesion and per-photo streams: a second photo reuses the lesion, not the first photo's nuisances
        lesion_rng = np.random.default_rng([seed, number])
        photo_rng = np.random.default_rng([seed, number, photo + 1])
        shape = _draw_lesion(lesion_rng, mu if label == MELANOMA_LABEL else -mu)
        images[out], masks[out] = _render(shape, photo_rng, image_size)
        appearance[out] = shape.appearance
        labels[out] = label
        lesion_ids[out] = f"lesion_{number:05d}"
    return SyntheticLesionBatch(images, labels.astype(str), lesion_ids.astype(str), masks, appearance)


def _check(n_images: int, image_size: int, melanoma_fraction: float, difficulty: float) -> None:
    if int(n_images) != n_images or n_images < 1:
        raise ConfigError(f"synthetic_lesions: n_images must be a positive integer, got {n_images!r}")
    if int(image_size) != image_size or image_size < 16:
        raise ConfigError(f"synthetic_lesions: image_size must be an integer ≥ 16, got {image_size!r}")
    if not 0.0 <= melanoma_fraction <= 1.0:
        raise ConfigError(f"synthetic_lesions: melanoma_fraction must be in [0, 1], got {melanoma_fraction!r}")
    if not 0.0 <= difficulty <= 1.0:
        raise ConfigError(f"synthetic_lesions: difficulty must be in [0, 1], got {difficulty!r}")


@dataclass(frozen=True)
class _Waves:
    """A smooth random field: a sum of plane waves, evaluable anywhere in the lesion's own frame."""

    frequencies: np.ndarray  # (J, 2) cycles per lesion radius
    phases: np.ndarray  # (J,)
    amplitudes: np.ndarray  # (J,)

    @classmethod
    def draw(cls, rng: np.random.Generator, n_waves: int, low: float, high: float) -> _Waves:
        angle = rng.uniform(0, 2 * np.pi, n_waves)
        radius = rng.uniform(low, high, n_waves)
        frequencies = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
        return cls(frequencies, rng.uniform(0, 2 * np.pi, n_waves), rng.uniform(0.5, 1.0, n_waves))

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Unit-variance float32 field at coordinates u, v (any shape), all waves at once."""
        # broadcasting, not BLAS: these products are tiny work, but OpenBLAS threads stall on a busy machine
        frequencies = (2 * np.pi * self.frequencies).astype(np.float32)
        argument = frequencies[:, :1] * u.reshape(1, -1).astype(np.float32)
        argument += frequencies[:, 1:] * v.reshape(1, -1).astype(np.float32)
        argument += self.phases.astype(np.float32)[:, None]
        weights = (self.amplitudes / np.sqrt(0.5 * np.sum(self.amplitudes**2))).astype(np.float32)
        return np.einsum("j,jn->n", weights, np.cos(argument)).reshape(u.shape)  # einsum: no BLAS threads


@dataclass(frozen=True)
class _Lesion:
    """Everything that stays the same between two photos of one lesion."""

    appearance: float
    radius: float  # fraction of the image side
    aspect: float
    harmonics: np.ndarray  # (K,) radial harmonic amplitudes, k = 1..K
    harmonic_phases: np.ndarray
    edge_width: float
    base_colour: np.ndarray
    centre_darkening: float
    blotches: list[tuple[np.ndarray, float, _Waves, float]]  # (colour, opacity, field, area fraction)
    blotch_bias: np.ndarray  # (2,) pushes blotches to one side: asymmetric colour
    blotch_centrality: float  # pulls blotches to the centre: symmetric colour
    texture: _Waves
    network: _Waves  # zero crossings of a fine field: the reticular pigment network; wider band = atypical
    network_strength: float
    skin: np.ndarray


def _draw_lesion(rng: np.random.Generator, class_mean: float) -> _Lesion:
    """Shape and colours read the latent z through independent noise, so cues disagree now and then."""
    normal = NormalDist()
    z = class_mean + rng.normal()

    def cue() -> float:
        return normal.cdf(z + 0.6 * rng.normal())

    shape_cue, border_cue, colour_cue, size_cue = cue(), cue(), cue(), cue()
    n_harmonics = 16
    k = np.arange(1, n_harmonics + 1)
    asymmetry = 0.02 + 0.16 * shape_cue**1.5
    irregularity = 0.008 + 0.075 * border_cue**1.5
    # lobes and notches rather than a regular star: amplitudes fall steeply with the harmonic number
    harmonics = np.where(k <= 3, asymmetry / k**0.5, irregularity * (4 / k) ** 1.3) * rng.normal(size=n_harmonics)
    harmonics[0] *= 0.5  # k = 1 mostly shifts the outline; keep it from dominating

    n_extra = int(np.clip(np.round(4.2 * colour_cue - 0.9 + 0.7 * rng.normal()), 0, 4))
    extra_names = list(rng.permutation(list(EXTRA_COLOURS)))
    blotches = []
    for i in range(n_extra):
        colour, opacity = (DARK_BROWN, 0.9) if i == 0 else EXTRA_COLOURS[extra_names[i - 1]]
        field = _Waves.draw(rng, 6, 0.25, 0.9 + 0.6 * colour_cue)
        blotches.append((colour * rng.uniform(0.9, 1.1), opacity, field, rng.uniform(0.12, 0.3)))
    bias_angle = rng.uniform(0, 2 * np.pi)
    bias = (0.3 + 1.6 * colour_cue) * np.array([np.cos(bias_angle), np.sin(bias_angle)])
    # naevus-like lesions keep their darker part in the middle (two-toned but symmetric)
    centrality = 2.0 * (1.0 - colour_cue) ** 2
    return _Lesion(
        appearance=normal.cdf(z),
        radius=rng.uniform(0.14, 0.25) + 0.07 * size_cue,
        aspect=rng.uniform(0.65, 1.0),
        harmonics=harmonics,
        harmonic_phases=rng.uniform(0, 2 * np.pi, n_harmonics),
        edge_width=rng.uniform(0.02, 0.1),
        base_colour=LIGHT_BROWN + rng.uniform(0.25, 1.0) * (BROWN - LIGHT_BROWN) + rng.normal(0, 2.5, 3),
        centre_darkening=rng.uniform(0.0, 0.25),
        blotches=blotches,
        blotch_bias=bias,
        blotch_centrality=centrality,
        texture=_Waves.draw(rng, 12, 1.5, 4.0),
        network=_Waves.draw(rng, 10, 4.0, 4.6 + 4.0 * border_cue),
        network_strength=rng.uniform(0.08, 0.2),
        skin=SKIN_TONES[rng.integers(len(SKIN_TONES))] + rng.normal(0, 5, 3),
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for sharp edges far from the border


def _render(lesion: _Lesion, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One photo: the lesion placed, rotated, lit and partly covered by hair; vectorised over pixels."""
    # float32 throughout (Python-float scalars keep it so): half the memory traffic of float64
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32) + np.float32(0.5)
    centre_row, centre_col = (float(c) for c in size * (0.5 + rng.uniform(-0.1, 0.1, 2)))
    radius = size * lesion.radius * rng.uniform(0.92, 1.08)
    rotation = rng.uniform(0, 2 * np.pi)
    mirror = float(rng.choice([-1.0, 1.0]))
    dx, dy = (cols - centre_col) / radius, (rows - centre_row) / radius
    cos_r, sin_r = float(np.cos(rotation)), float(np.sin(rotation))
    u = cos_r * dx + sin_r * dy
    v = mirror * (-sin_r * dx + cos_r * dy)

    # outline r(θ) = ellipse(θ)·(1 + Σ_k a_k cos(kθ + φ_k)); the harmonic sum is Re Σ c_k e^{ikθ}, by Horner
    distance = np.hypot(u, v)
    direction = (u + 1j * v).astype(np.complex64) / np.maximum(distance, np.float32(1e-6))
    coefficients = (lesion.harmonics * np.exp(1j * lesion.harmonic_phases)).astype(np.complex64)
    series = np.zeros_like(direction)
    for coefficient in coefficients[::-1]:
        series = (series + coefficient) * direction
    rho = np.hypot(u, v / np.float32(lesion.aspect)) / np.clip(1.0 + series.real, 0.35, None)
    alpha = _sigmoid((1.0 - rho) / float(0.25 * lesion.edge_width))

    colour = np.empty((size, size, 3), np.float32)
    colour[:] = lesion.base_colour.astype(np.float32)
    colour *= (1.0 - float(lesion.centre_darkening) * np.clip(1.0 - rho, 0, 1))[..., None]
    bias = (float(lesion.blotch_bias[0]) * u + float(lesion.blotch_bias[1]) * v
            + float(lesion.blotch_centrality) * (0.5 - distance))
    for blotch_colour, opacity, field, area in lesion.blotches:
        threshold = NormalDist().inv_cdf(1.0 - area)
        weight = float(opacity) * _sigmoid((field(u, v) + bias - threshold) / 0.25) * np.clip(1.3 - rho, 0, 1)
        colour += weight[..., None] * (blotch_colour.astype(np.float32) - colour)
    colour *= (1.0 + 0.04 * lesion.texture(u, v))[..., None]
    # the network is only drawn where its mesh is coarse enough not to alias into noise
    mesh_pixels = radius / np.abs(lesion.network.frequencies).max()
    visible = float(np.clip((mesh_pixels - 2.5) / 3.0, 0.0, 1.0))
    if visible > 0:
        lines = np.exp(-((lesion.network(u, v) / 0.5) ** 2))
        strength = visible * float(lesion.network_strength)
        colour *= (1.0 - strength * lines * np.clip(1.1 - rho, 0, 1))[..., None]

    skin_field = _Waves.draw(rng, 10, 0.15, 0.6)
    skin = lesion.skin.astype(np.float32) * (1.0 + 0.025 * skin_field(dx, dy))[..., None]
    image = skin + alpha[..., None] * (colour - skin)

    image = _draw_hair(image, rng, size)
    corner = np.hypot(rows - size / 2, cols - size / 2) / float(size / np.sqrt(2))
    vignette = 1.0 - float(rng.uniform(0.05, 0.4)) * corner**3
    lighting = (rng.uniform(0.85, 1.12) * (1.0 + rng.normal(0, 0.03, 3))).astype(np.float32)
    image = image * vignette[..., None] * lighting + rng.normal(0, 2.0, image.shape).astype(np.float32)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), alpha > 0.5


def _draw_hair(image: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """A few dark curved strokes (quadratic Béziers), drawn as an antialiased coverage mask with PIL."""
    n_hairs = rng.poisson(1.3)
    if not n_hairs:
        return image
    scale = 4  # draw large, shrink: cheap antialiasing for thin strokes
    canvas = Image.new("L", (size * scale, size * scale), 0)
    draw = ImageDraw.Draw(canvas)
    t = np.linspace(0, 1, 24)[:, None]
    for _ in range(n_hairs):
        start, control, end = rng.uniform(-0.1, 1.1, (3, 2)) * size * scale
        points = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end
        width = max(1, round(scale * size / 160 * rng.uniform(0.6, 1.4)))
        draw.line([tuple(p) for p in points], fill=int(255 * rng.uniform(0.6, 0.95)), width=width, joint="curve")
    coverage = np.asarray(canvas.resize((size, size), Image.Resampling.BOX), np.float32)[..., None] / 255.0
    return image + coverage * ((HAIR_COLOUR * rng.uniform(0.7, 1.3)).astype(np.float32) - image)
