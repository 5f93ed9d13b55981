"""Attacks of the dermoscopy arm (spec image-attacks §3–§9): DE pixel / colour / rotation attacks, FGSM and the
systematic-perturbation sweep. Images are uint8 (H, W, 3); every renderer works on a whole population at once."""

from __future__ import annotations

from vulnbench.img.attacks.de import DE_ATTACKS, DEResult, attack_images, de_attack
from vulnbench.img.attacks.fgsm import fgsm
from vulnbench.img.attacks.render import (
    pil_color,
    pil_pixels,
    pil_rotation_translation,
    render_color,
    render_pixels,
    render_rotation_translation,
)
from vulnbench.img.attacks.systematic import SystematicTransform, apply_transform, systematic_transforms

__all__ = [
    "DE_ATTACKS",
    "DEResult",
    "SystematicTransform",
    "apply_transform",
    "attack_images",
    "de_attack",
    "fgsm",
    "pil_color",
    "pil_pixels",
    "pil_rotation_translation",
    "render_color",
    "render_pixels",
    "render_rotation_translation",
    "systematic_transforms",
]
