"""Attacks of the dermoscopy arm: one module per attack, each registering itself in the
one registry `IMAGE_ATTACKS` (`vulnbench.img.attacks.base` holds the contract), plus the renderers and the
systematic-perturbation sweep. Images are uint8 (H, W, 3); every renderer works on a whole population at once.

Importing this package imports every attack module, so that the registry is complete: add an attack as one module
here and one import below (a plugin module registers itself the same way when the config names it).
"""

from __future__ import annotations

from vulnbench.img.attacks.base import (
    IMAGE_ATTACKS,
    AttackedImage,
    ImageAttack,
    attack_images,
    attack_order,
    image_attack,
    image_seed,
    softmax32,
)
from vulnbench.img.attacks.color import color
from vulnbench.img.attacks.de import DEResult, DESearch, de_attack, de_settings
from vulnbench.img.attacks.fgsm import fgsm, fgsm_attack
from vulnbench.img.attacks.pixel import pixel
from vulnbench.img.attacks.render import (
    pil_color,
    pil_pixels,
    pil_rotation_translation,
    render_color,
    render_pixels,
    render_rotation_translation,
)
from vulnbench.img.attacks.rotation import rotation
from vulnbench.img.attacks.systematic import SystematicTransform, apply_transform, systematic_transforms

__all__ = [
    "IMAGE_ATTACKS",
    "AttackedImage",
    "DEResult",
    "DESearch",
    "ImageAttack",
    "SystematicTransform",
    "apply_transform",
    "attack_images",
    "attack_order",
    "color",
    "de_attack",
    "de_settings",
    "fgsm",
    "fgsm_attack",
    "image_attack",
    "image_seed",
    "pil_color",
    "pil_pixels",
    "pil_rotation_translation",
    "pixel",
    "render_color",
    "render_pixels",
    "render_rotation_translation",
    "rotation",
    "softmax32",
    "systematic_transforms",
]
