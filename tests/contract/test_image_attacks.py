"""Contract suite run over every registered image attack: adding one to the registry adds it here.

Each attack runs on a small batch of 32 px images against a tiny CNN whose decision boundary sits among them (some
images are called melanoma and attacked, others skipped); black-box attacks see the model through `logits` only.
Checked: the declaration (every parameter typed, defaulted and documented, the forward budget declared), the shapes
of records and adversarial images, determinism under a seed, every forward pass counted, the forward budget kept,
and every adversarial image within the attack's declared constraint.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vulnbench.core.errors import ConfigError
from vulnbench.core.params import value_matches
from vulnbench.img.attacks import IMAGE_ATTACKS, ImageAttack, attack_images
from vulnbench.img.attacks.base import BUDGET
from vulnbench.img.base import CLASSES, DifferentiableImageModel, ImageModel, normalize, to_unit_tensor

SIZE, N_IMAGES, SEED = 32, 6, 7
#: settings that keep an attack to seconds (applied to whichever of them an attack declares)
FAST = {"popsize": 2, "max_generations": 2}
#: a budget every attack can work within (FGSM needs 2 per image) but the DE attacks would exceed with FAST
BUDGET_PER_IMAGE = 7
RECORD_KEYS = {"image", "attack", "outcome", "reason", "original_class", "original_probability", "adversarial_class",
               "adversarial_probability", "confident_success", "n_forward", "n_generations", "params"}


class BoundaryCNN:
    """A fixed random CNN (float64 inside, so its logits do not depend on the batch) whose class boundary is moved
    to the median image of `images`: about half are called melanoma."""

    classes = CLASSES
    device = "cpu"

    def __init__(self, images: np.ndarray, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.image_size = SIZE
        self.net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, stride=2, padding=1),
                                 nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2)).double().eval()
        gaps = np.sort(self.logits(images) @ np.array([1.0, -1.0]))
        spread = max(float(gaps[-1] - gaps[0]), 1e-6)
        with torch.no_grad():
            head = self.net[-1]
            head.weight.mul_(8.0 / spread)
            head.bias.mul_(8.0 / spread)
            gaps = np.sort(self.logits(images) @ np.array([1.0, -1.0]))
            head.bias[0] -= float(np.median(gaps))

    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.double()).float()

    def logits(self, images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.forward_normalized(normalize(to_unit_tensor(images))).numpy()


class BlackBox:
    """Only `logits`: what an external model offers."""

    def __init__(self, model: ImageModel) -> None:
        self.model, self.classes, self.image_size = model, model.classes, model.image_size

    def logits(self, images: np.ndarray) -> np.ndarray:
        return self.model.logits(images)


class Counted:
    """Counts every image the model scores, through `logits` and through gradient passes."""

    def __init__(self, model: BoundaryCNN | BlackBox, white_box: bool) -> None:
        self.model, self.classes, self.image_size, self.n_forward = model, model.classes, model.image_size, 0
        if white_box:
            self.device = "cpu"
            self.forward_normalized = self._forward_normalized

    def _forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        self.n_forward += len(x)
        return self.model.forward_normalized(x)

    def logits(self, images: np.ndarray) -> np.ndarray:
        self.n_forward += len(images)
        return self.model.logits(images)


def lesion_images(n: int = N_IMAGES, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """Skin-coloured squares with a dark round lesion and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(0.3 * size, 0.7 * size, 2)
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(0.15 * size, 0.35 * size) ** 2
        lesion = rng.uniform(40, 140, 3)
        drawn = np.where(inside[..., None], lesion, np.array([205, 165, 140])) + rng.normal(0, 12, (size, size, 3))
        images[i] = np.clip(drawn, 0, 255)
    return images


def fast_params(spec: ImageAttack, **extra: object) -> dict:
    return {**{k: v for k, v in FAST.items() if k in spec.declared}, **extra}


def run(spec: ImageAttack, images: np.ndarray, model: BoundaryCNN, seed: int = SEED, **params: object) -> tuple:
    counted = Counted(model if spec.white_box else BlackBox(model), spec.white_box)
    records, adversarials = attack_images(counted, images, ["melanoma"] * len(images), spec.name, seed=seed,
                                          **fast_params(spec, **params))
    return records, adversarials, counted.n_forward


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return lesion_images()


@pytest.fixture(scope="module")
def model(images: np.ndarray) -> BoundaryCNN:
    model = BoundaryCNN(images)
    called = model.logits(images).argmax(axis=1) == 0
    assert 0 < called.sum() < len(images), "the boundary must fall among the images"
    return model


@pytest.fixture(scope="module", params=IMAGE_ATTACKS.names())
def attacked(request, images, model) -> tuple[ImageAttack, list, list, int]:
    spec = IMAGE_ATTACKS.get(request.param)
    return (spec, *run(spec, images, model))


@pytest.mark.parametrize("name", IMAGE_ATTACKS.names())
def test_parameters_are_declared_typed_and_documented(name: str) -> None:
    spec = IMAGE_ATTACKS.get(name)
    assert spec.name == name and spec.description
    assert BUDGET in spec.declared and spec.declared[BUDGET].default is None
    for parameter in spec.declared.values():
        assert parameter.meaning, f"{name}: parameter {parameter.name!r} has no `Args:` line in its docstring"
        assert parameter.hint is not None, f"{name}: parameter {parameter.name!r} has no type hint"
        assert value_matches(parameter.default, parameter.expected), f"{name}: {parameter.name}'s default"


def test_records_and_images_have_the_contract_shapes(attacked, images) -> None:
    spec, records, adversarials, _ = attacked
    assert len(records) == len(adversarials) == len(images)
    assert [r["image"] for r in records] == list(range(len(images)))
    for record, adversarial in zip(records, adversarials, strict=True):
        assert set(record) >= RECORD_KEYS and record["attack"] == spec.name
        assert record["outcome"] in ("success", "failed", "skipped")
        if record["outcome"] == "skipped":
            assert adversarial is None and record["n_forward"] == 0
            continue
        assert record["reason"] is None, record["reason"]
        assert adversarial.dtype == np.uint8 and adversarial.shape == images.shape[1:]
        assert record["adversarial_class"] in CLASSES and 0.0 <= record["adversarial_probability"] <= 1.0
        assert (record["outcome"] == "success") == (record["adversarial_class"] != record["original_class"])
    assert any(r["outcome"] != "skipped" for r in records), "nothing was attacked: the checks would prove nothing"


def test_the_same_seed_repeats_every_number(attacked, images, model) -> None:
    spec, records, adversarials, _ = attacked
    again, again_images, _ = run(spec, images, model)
    assert again == records
    for first, second in zip(adversarials, again_images, strict=True):
        assert (first is None and second is None) or np.array_equal(first, second)


def test_every_forward_pass_is_counted(attacked, images) -> None:
    _, records, _, n_forward = attacked
    # the one batched clean scoring that decides which images are attacked, then each image's own count
    assert n_forward == len(images) + sum(r["n_forward"] for r in records)


def test_the_forward_budget_is_kept(attacked, images, model) -> None:
    spec = attacked[0]
    records, _, n_forward = run(spec, images, model, **{BUDGET: BUDGET_PER_IMAGE})
    attacked_records = [r for r in records if r["outcome"] != "skipped"]
    assert attacked_records and all(0 < r["n_forward"] <= BUDGET_PER_IMAGE for r in attacked_records)
    assert n_forward <= len(images) + BUDGET_PER_IMAGE * len(attacked_records)


def test_adversarial_images_keep_to_the_declared_constraint(attacked, images) -> None:
    spec, records, adversarials, _ = attacked
    params = {**spec.parameters, **fast_params(spec)}
    for clean, record, adversarial in zip(images, records, adversarials, strict=True):
        if adversarial is not None:
            assert spec.constraint(clean, adversarial, params) is None, record


def test_white_box_attacks_refuse_black_boxes_and_the_others_need_none(attacked, images, model) -> None:
    spec = attacked[0]
    if spec.white_box:
        with pytest.raises(ConfigError, match="needs gradients"):
            attack_images(BlackBox(model), images, ["melanoma"] * len(images), spec.name, **fast_params(spec))
    else:
        assert not isinstance(BlackBox(model), DifferentiableImageModel)  # and `attacked` ran on one
