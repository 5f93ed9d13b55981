"""What the image attacks hold: a two-class image model that scores batches of 8-bit RGB images.

Images travel as uint8 arrays (S, H, W, 3) in [0, 255], the space every black-box perturbation lives in (upstream
perturbs the resized 8-bit PIL image). A model scores a whole batch in one call: the DE attacks render a whole
population and hand it over at once. Gradient attacks (FGSM) additionally need `TorchImageModel.forward01`, the
differentiable path from float pixels in [0, 1].
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import torch

#: class order of torchvision's ImageFolder on {melanoma, nevus}: index 0 = melanoma (as upstream)
CLASSES: tuple[str, ...] = ("melanoma", "nevus")
MELANOMA, NEVUS = 0, 1
#: ImageNet normalisation used by every upstream transform
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@runtime_checkable
class ImageModel(Protocol):
    """A black box: uint8 images in, logits out. External models (ONNX) only offer this."""

    classes: tuple[str, ...]
    image_size: int

    def logits(self, images: np.ndarray) -> np.ndarray:
        """(S, H, W, 3) uint8 → (S, n_classes) float32 logits, batched internally to bound memory."""
        ...


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@runtime_checkable
class DifferentiableImageModel(ImageModel, Protocol):
    """A white box (a torch model of ours): what gradient attacks such as FGSM need besides `logits`."""

    device: str

    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        """(S, 3, H, W) ImageNet-normalised float32 tensor → (S, n_classes) logits, differentiable (eval mode)."""
        ...


def to_unit_tensor(images: np.ndarray, device: str = "cpu") -> torch.Tensor:
    """uint8 (S, H, W, 3) → float32 (S, 3, H, W) in [0, 1] (torchvision's ToTensor, batched)."""
    import torch

    array = np.asarray(images)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"expected uint8 images of shape (S, H, W, 3), got {array.dtype} {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array)).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def normalize(x01: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels → ImageNet-normalised (torchvision's Normalize, batched, differentiable)."""
    import torch

    mean = torch.tensor(IMAGENET_MEAN, dtype=x01.dtype, device=x01.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x01.dtype, device=x01.device).view(1, 3, 1, 1)
    return (x01 - mean) / std


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised → [0, 1] pixels (no clamping: callers decide)."""
    import torch

    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return x * std + mean
