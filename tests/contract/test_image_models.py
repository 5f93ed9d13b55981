"""Contract suite run over every registered image model: adding one to the registry adds it here.

Each model is built at a tiny size (no weights file, nothing downloaded) and must score uint8 (S, H, W, 3) images as
(S, 2) finite logits in the class order (melanoma, nevus), with probabilities that sum to 1, the same logits for the
same seed, and — for our torch models — the differentiable path gradient attacks use.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from vulnbench.img.base import CLASSES, DifferentiableImageModel, ImageModel, normalize, softmax, to_unit_tensor
from vulnbench.img.models import ARCHITECTURES, IMAGE_MODELS, build_image_model, export_onnx

N_IMAGES = 3


def onnx_file(folder: Path, seed: int) -> dict[str, Any]:
    """The onnx entry opens an external file: export a tiny MobileNet of ours to one (no download)."""
    path = folder / f"tiny_{seed}.onnx"
    if not path.exists():
        export_onnx(build_image_model("mobilenet_v3_small", image_size=32, seed=seed), path)
    return {"path": str(path)}


#: model name → (image size, builder keywords for a tiny, fast build given a scratch folder and a seed); a model not
#: listed is built as `builder(image_size=32, seed=seed)`
TINY: dict[str, tuple[int, Callable[[Path, int], dict[str, Any]]]] = {
    "inception_v3": (75, lambda folder, seed: {"image_size": 75, "init_weights": False, "seed": seed}),  # its minimum
    "mobilenet_v3_small": (32, lambda folder, seed: {"image_size": 32, "seed": seed}),
    "onnx": (32, onnx_file),
}


def tiny(name: str, folder: Path, seed: int) -> tuple[ImageModel, int]:
    size, keywords = TINY.get(name, (32, lambda folder, seed: {"image_size": 32, "seed": seed}))
    return build_image_model(name, **keywords(folder, seed)), size


def images(size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (N_IMAGES, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("image_models")


@pytest.fixture(scope="module", params=IMAGE_MODELS.names())
def built(request, folder) -> tuple[str, ImageModel, int]:
    model, size = tiny(request.param, folder, seed=0)
    return request.param, model, size


def test_logits_have_the_contract_shape_and_classes(built) -> None:
    _, model, size = built
    assert isinstance(model, ImageModel) and tuple(model.classes) == CLASSES and model.image_size == size
    logits = np.asarray(model.logits(images(size)))
    assert logits.shape == (N_IMAGES, len(CLASSES)) and np.isfinite(logits).all()
    assert logits.dtype == np.float32


def test_probabilities_sum_to_one(built) -> None:
    _, model, size = built
    scorer = getattr(model, "predict_proba", None)
    probabilities = scorer(images(size)) if scorer is not None else softmax(model.logits(images(size)))
    assert probabilities.shape == (N_IMAGES, len(CLASSES)) and (probabilities >= 0).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)


def test_the_same_seed_builds_the_same_model(built, folder) -> None:
    name, model, size = built
    again, _ = tiny(name, folder, seed=0)
    np.testing.assert_array_equal(model.logits(images(size, seed=1)), again.logits(images(size, seed=1)))
    if name in ARCHITECTURES:  # ours: the seed decides the initial weights
        other, _ = tiny(name, folder, seed=1)
        assert not np.array_equal(model.logits(images(size, seed=1)), other.logits(images(size, seed=1)))


def test_scores_do_not_depend_on_the_batch_beyond_float_noise(built) -> None:
    _, model, size = built
    batch = images(size, seed=2)
    alone = np.concatenate([model.logits(one[None]) for one in batch])
    np.testing.assert_allclose(model.logits(batch), alone, rtol=1e-4, atol=1e-4)


def test_our_architectures_offer_the_gradient_path(built) -> None:
    name, model, size = built
    if name not in ARCHITECTURES:
        pytest.skip(f"{name} is an external black box: only the DE attacks run on it, no gradient path")
    assert isinstance(model, DifferentiableImageModel)
    x = normalize(to_unit_tensor(images(size))).requires_grad_(True)
    logits = model.forward_normalized(x)
    assert tuple(logits.shape) == (N_IMAGES, len(CLASSES))
    (gradient,) = torch.autograd.grad(logits[:, 0].sum(), x)
    assert gradient.shape == x.shape and torch.isfinite(gradient).all() and gradient.abs().sum() > 0
    np.testing.assert_allclose(logits.detach().numpy(), model.logits(images(size)), rtol=1e-4, atol=1e-4)
