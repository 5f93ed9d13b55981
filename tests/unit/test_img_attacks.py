"""Dermoscopy attacks: batched renderers vs PIL, the DE engine (modes, budget, stop rule, saturation), FGSM, the
contract's run (failed images and jobs, registry order) and the systematic sweep, on tiny deterministic torch models
(no data, no GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vulnbench.core.errors import ConfigError, DataError
from vulnbench.core.grid import make_pid
from vulnbench.core.io import read_json, write_json
from vulnbench.img.attacks import (
    IMAGE_ATTACKS,
    apply_transform,
    attack_images,
    attack_order,
    de_attack,
    fgsm,
    pil_color,
    pil_pixels,
    pil_rotation_translation,
    render_color,
    render_pixels,
    render_rotation_translation,
    systematic_transforms,
)
from vulnbench.img.attacks.color import color_search
from vulnbench.img.attacks.pixel import pixel_search
from vulnbench.img.attacks.render import (
    color_bounds,
    pil_rotate,
    pixel_bounds,
    rotation_bounds,
)
from vulnbench.img.attacks.rotation import rotation, rotation_search
from vulnbench.img.base import CLASSES, IMAGENET_STD, DifferentiableImageModel, denormalize, normalize, to_unit_tensor
from vulnbench.img.plots import _job_label
from vulnbench.img.stages import img_attack_tables, run_image_attack

SEARCHES = {"pixel": pixel_search(), "color": color_search(), "rotation": rotation_search()}


class TinyCNN:
    """A two-layer CNN; float64 inside so that its float32 logits do not depend on the batch composition (float32
    CPU convolutions differ by ~1e-8 between batch sizes), which the vectorised-vs-scalar DE comparison needs."""

    classes = CLASSES

    def __init__(self, image_size: int = 32, seed: int = 0, dtype: torch.dtype = torch.float64) -> None:
        torch.manual_seed(seed)
        self.image_size, self.device, self.dtype = image_size, "cpu", dtype
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                                 nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)).to(dtype).eval()

    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.dtype)).float()

    def logits(self, images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.forward_normalized(normalize(to_unit_tensor(images))).numpy()


class RedChannelModel:
    """logit(melanoma) − logit(nevus) = scale · (mean red in [0, 1] − threshold): the colour attack's multiplier on
    red moves it predictably, which makes stop-rule and saturation behaviour exact to reason about."""

    classes = CLASSES
    device = "cpu"

    def __init__(self, image_size: int, scale: float, threshold: float) -> None:
        self.image_size, self.scale, self.threshold = image_size, scale, threshold

    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        red = denormalize(x.double())[:, 0].mean(dim=(1, 2))
        gap = self.scale * (red - self.threshold)
        return torch.stack([gap, torch.zeros_like(gap)], dim=1).float()

    def logits(self, images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.forward_normalized(normalize(to_unit_tensor(images))).numpy()


def random_image(size: int, seed: int = 0, low: int = 0, high: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, (size, size, 3), dtype=np.uint8)


def red_model_for(image: np.ndarray, scale: float, clean_gap: float) -> RedChannelModel:
    red = image[..., 0].astype(np.float64).mean() / 255.0
    return RedChannelModel(image.shape[0], scale, red - clean_gap / scale)


def test_test_models_satisfy_the_protocol() -> None:
    assert isinstance(TinyCNN(), DifferentiableImageModel)
    assert isinstance(RedChannelModel(8, 1.0, 0.5), DifferentiableImageModel)


# --------------------------------------------------------------------------------------------------------------------
# renderers vs PIL


def test_render_pixels_equals_pil_reference() -> None:
    image = random_image(48)
    rng = np.random.default_rng(1)
    low, high = np.array(pixel_bounds(48, 48, n_pixels=3, parity=True)).T
    params = rng.uniform(low, high, size=(200, 15))
    params[0, 5:7] = params[0, 0:2]  # a repeated location
    out = render_pixels(image, params)
    assert out.shape == (200, 48, 48, 3) and out.dtype == np.uint8
    for candidate, row in zip(out, params, strict=True):
        np.testing.assert_array_equal(candidate, pil_pixels(image, row))
    changed = (out != image).any(axis=-1).reshape(200, -1).sum(axis=1)
    assert changed.max() <= 3 and changed.min() >= 0


def test_pixel_decode_truncates_and_later_pixels_overwrite_earlier_ones() -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    params = np.array([[2.99, 3.99, 10.9, 20.5, 254.99, 2.0, 3.0, 7.0, 8.0, 9.0, 5.5, 0.2, 1.0, 2.0, 3.0]])
    out = render_pixels(image, params)[0]
    np.testing.assert_array_equal(out[2, 3], [7, 8, 9])  # second pixel at the same (row, col) wins
    np.testing.assert_array_equal(out[5, 0], [1, 2, 3])  # 5.5 → row 5, 0.2 → col 0
    assert (out != 0).any(axis=-1).sum() == 2
    reverse = render_pixels(image, params[:, [5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 10, 11, 12, 13, 14]])[0]
    np.testing.assert_array_equal(reverse[2, 3], [10, 20, 254])  # truncation: 10.9 → 10, 254.99 → 254


def test_render_color_equals_pil_reference() -> None:
    image = random_image(40, seed=2)
    multipliers = np.random.default_rng(3).uniform(0.9, 1.1, size=(100, 3))
    out = render_color(image, multipliers)
    for candidate, row in zip(out, multipliers, strict=True):
        np.testing.assert_array_equal(candidate, pil_color(image, row))


def test_color_clips_at_255_and_truncates_in_float64() -> None:
    image = np.array([[[250, 200, 101]]], dtype=np.uint8)
    out = render_color(image, np.array([[1.1, 1.005, 0.95], [0.9, 1.0, 1.0]]))
    np.testing.assert_array_equal(out[0, 0, 0], [255, 200, 95])  # 275 → 255; 200·1.005 = 200.99999… → 200; 95.95 → 95
    np.testing.assert_array_equal(out[1, 0, 0], [225, 200, 101])
    assert color_bounds(0.1) == [(0.9, 1.1)] * 3


@pytest.mark.parametrize(("size", "symmetric"), [(32, True), (37, False), (64, True)])
def test_render_rotation_translation_equals_pil_exactly(size: int, symmetric: bool) -> None:
    image = random_image(size, seed=size)
    rng = np.random.default_rng(size)
    low, high = np.array(rotation_bounds(size, symmetric=symmetric)).T
    params = rng.uniform(low, high, size=(80, 3))
    params[:8, 0] = [0.0, 90.0, 180.0, 270.0, 360.0, -90.0, 45.0, 1e-15]  # PIL's fast paths and near-misses
    # shifts at and next to PIL's truncation boundaries (tx + 0.5 integral)
    params[8:14, 1:] = [[0.0, 0.0], [2.5, 3.5], [2.4999999, 3.5000001], [-0.5, -1.4999999], [0.5, 0.5],
                        [low[1], high[2]]]
    out = render_rotation_translation(image, params)
    for candidate, row in zip(out, params, strict=True):
        np.testing.assert_array_equal(candidate, pil_rotation_translation(image, row))  # all pixels, not 99.9 %


def test_render_rotation_equals_pil_on_a_non_square_image() -> None:
    image = np.random.default_rng(4).integers(0, 256, (21, 30, 3), dtype=np.uint8)
    params = np.c_[np.random.default_rng(5).uniform(0, 360, 30), np.full(30, 3.3), np.full(30, 1.7)]
    params[0, 0] = 90.0  # not a transpose for a non-square image
    out = render_rotation_translation(image, params)
    for candidate, row in zip(out, params, strict=True):
        np.testing.assert_array_equal(candidate, pil_rotation_translation(image, row))


def test_rotation_is_counter_clockwise_and_translation_moves_content_left_and_up() -> None:
    image = random_image(16, seed=6)
    quarter = render_rotation_translation(image, np.array([[90.0, 0.0, 0.0]]))[0]
    np.testing.assert_array_equal(quarter[::-1, 0], image[0])  # top row (left → right) = left column (bottom → top)
    shifted = render_rotation_translation(image, np.array([[0.0, 5.0, 2.0]]))[0]
    np.testing.assert_array_equal(shifted[:-2, :-5], image[2:, 5:])
    assert not shifted[-2:].any() and not shifted[:, -5:].any()  # black fill


def test_rotation_bounds_scale_the_upstream_50_px() -> None:
    assert rotation_bounds(299) == [(0.0, 360.0), (0.0, 50.0), (0.0, 50.0)]
    assert rotation_bounds(64, symmetric=True)[1] == pytest.approx((-50 * 64 / 299, 50 * 64 / 299))
    assert rotation_bounds(64, max_translation=5) == [(0.0, 360.0), (0.0, 5.0), (0.0, 5.0)]


# --------------------------------------------------------------------------------------------------------------------
# differential evolution


@pytest.mark.parametrize("attack", ["pixel", "color", "rotation"])
def test_vectorized_and_scalar_de_find_the_same_result(attack: str) -> None:
    model, image = TinyCNN(24), random_image(24, seed=7)
    kwargs = {"popsize": 2 if attack == "pixel" else 4, "max_generations": 3, "objective": "margin", "seed": 11}
    batched = de_attack(model, image, SEARCHES[attack], vectorized=True, batch_size=16, **kwargs)
    scalar = de_attack(model, image, SEARCHES[attack], vectorized=False, **kwargs)
    np.testing.assert_array_equal(batched.params, scalar.params)
    assert (batched.success, batched.n_generations, batched.n_forward, batched.energy) == (
        scalar.success, scalar.n_generations, scalar.n_forward, scalar.energy)
    np.testing.assert_array_equal(batched.image, scalar.image)
    if attack == "pixel":  # fixed mode searches integers within [0, size − 1]
        assert np.array_equal(batched.params, np.round(batched.params)) and batched.params[0::5].max() <= 23


def test_n_forward_follows_the_budget_formula() -> None:
    model, image = TinyCNN(24), random_image(24, seed=8)
    n_params, popsize, generations = 3, 5, 4
    population = popsize * n_params
    # stop_confidence 1 never fires; the margin objective does not converge within 4 generations
    color = SEARCHES["color"]
    fixed = de_attack(model, image, color, popsize=popsize, max_generations=generations, stop_confidence=1.0,
                      objective="margin")
    assert fixed.n_generations == generations
    assert fixed.n_forward == 1 + population * (1 + generations)  # clean image + initial population + generations
    parity = de_attack(model, image, color, popsize=popsize, max_generations=generations, stop_confidence=1.0,
                       objective="margin", parity=True)
    assert parity.n_generations == generations + 1  # the seed's `stage > max_stage`
    callbacks, polish = generations + 1, n_params + 1  # polish: zero finite-difference gradient → N + 1 evaluations
    assert parity.n_forward == 1 + population * (1 + parity.n_generations) + callbacks + polish


def test_stop_rule_fires_after_the_first_generation_in_both_modes() -> None:
    image = random_image(16, seed=9, low=60, high=200)
    model = red_model_for(image, scale=100.0, clean_gap=0.4)  # P(melanoma) ≈ 0.6; red × 0.9 → P(nevus) ≈ 0.99
    fixed = de_attack(model, image, SEARCHES["color"], popsize=5, max_generations=6)
    assert fixed.original_class == 0 and 0.55 < fixed.original_confidence < 0.65
    assert fixed.n_generations == 1 and fixed.success and fixed.confident_success
    assert fixed.adversarial_probability > 0.9 and fixed.params[0] < 1.0
    assert fixed.message == "callback function requested stop early"
    parity = de_attack(model, image, SEARCHES["color"], popsize=5, max_generations=6, parity=True)
    assert parity.n_generations == fixed.n_generations and parity.confident_success  # the seed's callback agrees
    assert parity.n_forward == fixed.n_forward + parity.n_generations + 4  # + callback forwards + polish (N + 1)
    margin = de_attack(model, image, SEARCHES["color"], popsize=5, max_generations=6, objective="margin")
    assert margin.n_generations == 1 and np.array_equal(margin.params, fixed.params)  # same ranking, same path
    unreachable = de_attack(model, image, SEARCHES["color"], popsize=5, max_generations=6, stop_confidence=1.0,
                            objective="margin")
    assert unreachable.n_generations == 6 and not unreachable.confident_success


def test_probability_objective_saturates_where_the_margin_keeps_searching() -> None:
    image = random_image(16, seed=10, low=60, high=200)
    model = red_model_for(image, scale=400.0, clean_gap=60.0)  # gap ≥ 20 for every multiplier in [0.9, 1.1]
    probability = de_attack(model, image, SEARCHES["color"], popsize=5, max_generations=5)
    assert probability.n_generations == 1  # every float32 P(melanoma) is exactly 1 → std 0 → "converged"
    assert probability.energy == 1.0 and not probability.success
    margin = de_attack(model, image, SEARCHES["color"], popsize=5, max_generations=5, objective="margin")
    assert margin.n_generations == 5 and not margin.success
    assert margin.energy < 60.0 - 15.0  # it walked red down towards the bound (gap 60 → ≈ 40)


def test_attack_images_attacks_only_correctly_predicted_melanomas() -> None:
    image = random_image(16, seed=12, low=60, high=200)
    model = red_model_for(image, scale=100.0, clean_gap=0.4)
    dark = (image * np.array([0.5, 1.0, 1.0])).astype(np.uint8)  # less red → predicted nevus
    images = np.stack([image, image, dark])
    records, adversarials = attack_images(model, images, ["melanoma", "nevus", "melanoma"], "color", popsize=5,
                                          max_generations=3)
    assert [r["outcome"] for r in records] == ["success", "skipped", "skipped"]
    assert [r["reason"] for r in records] == [None, "not melanoma", "incorrect class"]
    assert records[0]["adversarial_class"] == "nevus" and records[0]["n_forward"] > 0
    assert records[2]["original_class"] == "nevus" and records[1]["n_forward"] == 0
    assert adversarials[1] is None and adversarials[2] is None
    np.testing.assert_array_equal(adversarials[0], render_color(image, np.array([records[0]["params"]]))[0])


def test_bad_attack_names_and_options_are_config_errors() -> None:
    model, image = TinyCNN(16), random_image(16)
    with pytest.raises(ConfigError, match="did you mean 'color'"):
        attack_images(model, image[None], ["melanoma"], "colour")
    with pytest.raises(ConfigError, match=r"unknown parameter 'n_pixel'.*did you mean 'n_pixels'"):
        attack_images(model, image[None], ["melanoma"], "pixel", n_pixel=2)
    with pytest.raises(ConfigError, match="objective"):
        de_attack(model, image, SEARCHES["color"], objective="logit")
    with pytest.raises(ConfigError, match="stop_confidence"):
        de_attack(model, image, SEARCHES["color"], stop_confidence=0.3)
    with pytest.raises(ConfigError, match="symmetric"):
        rotation(model, image[None], [0], symmetric=True, parity=True)


def test_pixel_bounds_parity_is_upstreams_half_open_range_fixed_is_inclusive() -> None:
    assert pixel_bounds(299, 299, n_pixels=1, parity=True) == [(0, 299), (0, 299), (0, 255), (0, 255), (0, 255)]
    assert pixel_bounds(299, 299, n_pixels=2)[:2] == [(0, 298), (0, 298)] and len(pixel_bounds(299, 299, 2)) == 10


# --------------------------------------------------------------------------------------------------------------------
# FGSM


def blob_images(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Skin-coloured squares with a round lesion: dark (melanoma, 0) or light brown (nevus, 1), plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    yy, xx = np.mgrid[:size, :size]
    images = np.empty((n, size, size, 3), np.uint8)
    for i, label in enumerate(labels):
        cy, cx = rng.uniform(0.3 * size, 0.7 * size, 2)
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(0.15 * size, 0.3 * size) ** 2
        lesion = np.array([70, 45, 40] if label == 0 else [140, 100, 80]) + rng.normal(0, 10, 3)
        skin = np.array([200, 160, 140]) + rng.normal(0, 8, 3)
        drawn = np.where(inside[..., None], lesion, skin) + rng.normal(0, 6, (size, size, 3))
        images[i] = np.clip(drawn, 0, 255)
    return images, labels


@pytest.fixture(scope="module")
def trained_cnn() -> TinyCNN:
    model = TinyCNN(24, seed=0, dtype=torch.float32)
    images, labels = blob_images(128, 24, seed=0)
    x, y = normalize(to_unit_tensor(images)), torch.from_numpy(labels)
    optimiser = torch.optim.Adam(model.net.parameters(), lr=2e-2)
    model.net.train()
    for _ in range(30):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model.net(x), y).backward()
        optimiser.step()
    model.net.eval()
    return model


def test_fgsm_in_pixel_space_flips_a_trained_model_within_eps(trained_cnn: TinyCNN) -> None:
    images, labels = blob_images(32, 24, seed=1)
    logits = trained_cnn.logits(images)
    assert (logits.argmax(axis=1) == labels).mean() >= 0.9  # it learnt the task
    least_sure = int(np.argmin(np.abs(logits[:, 0] - logits[:, 1])))
    adversarial, info = fgsm(trained_cnn, images, eps=16 / 255, space="pixel")
    assert info["flipped"][least_sure]
    assert trained_cnn.logits(adversarial[least_sure : least_sure + 1]).argmax() != logits[least_sure].argmax()
    difference = np.abs(adversarial.astype(int) - images.astype(int))
    assert difference.max() <= 16 and info["linf_levels"].max() == 16


def test_fgsm_in_normalized_space_steps_sigma_times_smaller(trained_cnn: TinyCNN) -> None:
    images, _ = blob_images(8, 24, seed=2)
    adversarial, info = fgsm(trained_cnn, images, eps=8 / 255, space="normalized")
    difference = np.abs(adversarial.astype(int) - images.astype(int)).max(axis=(0, 1, 2))
    expected = [round(8 * sigma) for sigma in IMAGENET_STD]  # 8/255 normalised = 8·σ_c levels ≈ 1.8
    np.testing.assert_array_equal(difference, expected)
    assert info["space"] == "normalized" and info["flipped"].dtype == bool


def test_fgsm_rejects_an_unknown_space(trained_cnn: TinyCNN) -> None:
    with pytest.raises(ConfigError, match="fgsm space"):
        fgsm(trained_cnn, np.zeros((1, 24, 24, 3), np.uint8), 0.1, space="lab")


# --------------------------------------------------------------------------------------------------------------------
# systematic sweep


def test_systematic_transforms_are_the_spec_table() -> None:
    transforms = systematic_transforms()
    names = [t.name for t in transforms]
    assert len(transforms) == 3 + 3 * 6 and names[:3] == ["identity", "rotate_45", "rotate_180"]
    assert names[3:9] == ["R-50", "R-10", "R-5", "R+5", "R+10", "R+50"] and names[-1] == "B+50"
    assert systematic_transforms("percent")[3].name == "R-50%"
    with pytest.raises(ConfigError, match="offset_kind"):
        systematic_transforms("multiplicative")


def test_rotations_match_pil_and_180_twice_is_identity() -> None:
    images = np.random.default_rng(13).integers(0, 256, (4, 33, 33, 3), dtype=np.uint8)
    by_name = {t.name: t.fn for t in systematic_transforms()}
    half_turn = apply_transform(images, by_name["rotate_180"], batch_size=3)
    np.testing.assert_array_equal(apply_transform(half_turn, by_name["rotate_180"]), images)
    assert not np.array_equal(half_turn, images)
    eighth = apply_transform(images, by_name["rotate_45"])
    for rotated, image in zip(eighth, images, strict=True):
        np.testing.assert_array_equal(rotated, pil_rotate(image, 45.0))
    assert not eighth[:, 0, 0].any()  # black corners


def test_channel_offsets_invert_away_from_the_clip_boundary() -> None:
    images = np.random.default_rng(14).integers(50, 206, (3, 8, 8, 3), dtype=np.uint8)
    transforms = systematic_transforms()
    by_key = {(t.channel, t.delta): t.fn for t in transforms if t.channel is not None}
    for (channel, delta), fn in by_key.items():
        shifted = apply_transform(images, fn)
        channel_index = "RGB".index(channel)
        np.testing.assert_array_equal(shifted[..., channel_index].astype(int),
                                      images[..., channel_index].astype(int) + int(delta))
        np.testing.assert_array_equal(np.delete(shifted, channel_index, -1), np.delete(images, channel_index, -1))
        np.testing.assert_array_equal(apply_transform(shifted, by_key[(channel, -delta)]), images)
    clipped = apply_transform(np.full((1, 2, 2, 3), 240, np.uint8), by_key[("G", 50.0)])
    np.testing.assert_array_equal(clipped[0, 0, 0], [240, 255, 240])


def test_percent_offsets_scale_one_channel() -> None:
    by_name = {t.name: t.fn for t in systematic_transforms("percent")}
    pixel = np.array([[[[200, 250, 101]]]], dtype=np.uint8)
    np.testing.assert_array_equal(by_name["R+5%"](pixel)[0, 0, 0], [210, 250, 101])
    np.testing.assert_array_equal(by_name["G+10%"](pixel)[0, 0, 0], [200, 255, 101])  # 275 → 255
    np.testing.assert_array_equal(by_name["B-5%"](pixel)[0, 0, 0], [200, 250, 95])  # 95.95 → 95


def test_attack_table_labels_each_job_by_its_grid_cell(tmp_path):
    """Keys and values with "_" (eps_levels, n_pixels) must not be split apart in tables and figure labels."""
    cells = {"fgsm": ({"eps_levels": 4, "space": "pixel"}, {}), "pixel": ({"n_pixels": 3}, {"popsize": 4}),
             "color": ({}, {"popsize": 10})}
    paths = []
    for attack, (grid, fixed) in cells.items():
        path = tmp_path / "synthetic_lesions" / "tiny" / attack / make_pid(grid) / "result.json"
        path.parent.mkdir(parents=True)
        job = {"arm": "img", "dataset": "synthetic_lesions", "model": "tiny", "attack": attack,
               "pid": make_pid(grid), "grid": grid, "params": {**fixed, **grid}}
        write_json(path, {"job": job, "records": [], "summary": {"n_attacked": 1, "n_success": 0}})
        paths.append(path)
    table, _ = img_attack_tables(paths)
    assert table["mode"].tolist() == ["eps_levels=4, space=pixel", "n_pixels=3", "default"]
    assert [_job_label(row) for _, row in table.iterrows()] == ["fgsm eps_levels=4, space=pixel",
                                                               "pixel n_pixels=3", "color"]
    # the identity comes from the result, not its path
    moved = tmp_path / "elsewhere.json"
    moved.write_bytes(paths[1].read_bytes())
    assert img_attack_tables([moved])[0][["model", "attack", "pid"]].values.tolist() == [["tiny", "pixel",
                                                                                           "n_pixels~3"]]


# --------------------------------------------------------------------------------------------------------------------
# the contract's run: budgets, failures of one image and of a whole job, registry order


@pytest.mark.parametrize("parity", [False, True])
@pytest.mark.parametrize("budget", [1, 7, 40])
def test_a_forward_budget_stops_de_in_both_modes_alike_vectorized_or_not(parity: bool, budget: int) -> None:
    model, image = TinyCNN(24), random_image(24, seed=15)
    kwargs = {"popsize": 4, "max_generations": 6, "stop_confidence": 1.0, "objective": "margin", "seed": 3,
              "parity": parity, "max_forward": budget}
    batched = de_attack(model, image, SEARCHES["color"], vectorized=True, batch_size=5, **kwargs)
    scalar = de_attack(model, image, SEARCHES["color"], vectorized=False, **kwargs)
    assert batched.n_forward <= budget and scalar.n_forward == batched.n_forward
    np.testing.assert_array_equal(batched.params, scalar.params)
    np.testing.assert_array_equal(batched.image, scalar.image)
    unlimited = de_attack(model, image, SEARCHES["color"], **{**kwargs, "max_forward": None})
    assert batched.message == "forward-pass budget spent" and unlimited.n_forward > budget
    assert batched.energy >= unlimited.energy


def test_a_budget_the_search_fits_in_changes_nothing() -> None:
    model, image = TinyCNN(24), random_image(24, seed=16)
    kwargs = {"popsize": 4, "max_generations": 3, "objective": "margin", "seed": 5}
    free = de_attack(model, image, SEARCHES["pixel"], **kwargs)
    capped = de_attack(model, image, SEARCHES["pixel"], max_forward=free.n_forward, **kwargs)
    np.testing.assert_array_equal(free.params, capped.params)
    assert (free.n_forward, free.message, free.energy) == (capped.n_forward, capped.message, capped.energy)


class RefusesDarkImages:
    """Scores batches, but raises DataError on a lone near-black image (a degenerate input for this model)."""

    def __init__(self, model: RedChannelModel) -> None:
        self.inner, self.classes, self.image_size, self.device = model, model.classes, model.image_size, "cpu"

    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.forward_normalized(x)

    def logits(self, images: np.ndarray) -> np.ndarray:
        if len(images) == 1 and images.mean() < 30:
            raise DataError("degenerate image: nearly black")
        return self.inner.logits(images)


@pytest.mark.parametrize("attack", ["fgsm", "pixel", "color", "rotation"])
def test_an_image_the_attack_stops_on_is_a_failed_record_and_the_others_go_on(attack: str) -> None:
    image = random_image(16, seed=12, low=60, high=200)
    dark = random_image(16, seed=13, low=0, high=20)
    model = RefusesDarkImages(red_model_for(image, scale=100.0, clean_gap=0.4))
    model.inner.threshold = float(dark[..., 0].mean() / 255.0) - 0.5  # both called melanoma
    params = {} if attack == "fgsm" else {"popsize": 2, "max_generations": 2}
    records, adversarials = attack_images(model, np.stack([image, dark, image]), ["melanoma"] * 3, attack, **params)
    assert [r["outcome"] for r in records][1] == "failed" and records[1]["reason"] == "degenerate image: nearly black"
    assert adversarials[1] is None and records[1]["adversarial_class"] is None
    assert all(r["reason"] is None and r["outcome"] in ("success", "failed") for r in (records[0], records[2]))
    assert adversarials[0] is not None and adversarials[2] is not None
    if attack == "fgsm":  # retried image by image after the batch failed: the same step as in one batch
        np.testing.assert_array_equal(adversarials[0], adversarials[2])


def test_non_finite_clean_logits_fail_that_image_only() -> None:
    image = random_image(16, seed=12, low=60, high=200)
    model = red_model_for(image, scale=100.0, clean_gap=0.4)
    broken = RefusesDarkImages(model)
    broken.logits = lambda images: np.where((images.reshape(len(images), -1).mean(axis=1) < 30)[:, None],  # type: ignore
                                            np.nan, model.logits(images))
    records, adversarials = attack_images(broken, np.stack([image, np.zeros_like(image)]), ["melanoma"] * 2, "color",
                                          popsize=2, max_generations=2)
    assert records[1]["outcome"] == "failed" and "non-finite" in records[1]["reason"] and adversarials[1] is None
    assert records[0]["outcome"] in ("success", "failed") and records[0]["reason"] is None


def test_a_parameter_unfit_for_the_attack_fails_the_job_not_each_image() -> None:
    image = random_image(16, seed=12, low=60, high=200)
    model = red_model_for(image, scale=100.0, clean_gap=0.4)
    with pytest.raises(ConfigError, match="fgsm needs 2 forward passes"):
        attack_images(model, image[None], ["melanoma"], "fgsm", max_forward=1)
    with pytest.raises(ConfigError, match="delta must be in"):
        attack_images(model, image[None], ["melanoma"], "color", delta=1.5)


def test_a_job_that_stops_on_bad_input_is_one_table_row_with_its_reason(tmp_path) -> None:
    settings = {"seed": 0, "device": "cpu", "max_attack_images": None}
    failed = tmp_path / "failed" / "result.json"
    run_image_attack(tmp_path / "manifest.tsv", tmp_path / "no_model.pt", "pixel", {"n_pixels": 1}, settings, failed,
                     failed.parent / "images", identity={"dataset": "d", "model": "m", "pid": "n_pixels~1",
                                                         "grid": {"n_pixels": 1}})
    payload = read_json(failed)
    assert payload["status"] == "job_failed" and "no_model.pt" in payload["reason"] and payload["records"] == []
    assert payload["job"]["attack"] == "pixel" and payload["job"]["pid"] == "n_pixels~1"
    ok = tmp_path / "ok" / "result.json"
    write_json(ok, {"job": {"dataset": "d", "model": "m", "attack": "fgsm", "pid": "default", "grid": {}},
                    "summary": {"n_attacked": 1, "n_success": 1}, "records": [{"image": "a", "attack": "fgsm",
                                                                                  "outcome": "success"}]})
    table, records = img_attack_tables([failed, ok])
    assert table["attack"].tolist() == ["fgsm", "pixel"]  # the registry's order, not the files'
    assert table["status"].tolist() == ["ok", "job_failed"] and table["reason"].iloc[0] == ""
    assert "no_model.pt" in table["reason"].iloc[1] and table["mode"].iloc[1] == "n_pixels=1"
    assert records["attack"].tolist() == ["fgsm"]


def test_order_comes_from_the_registry() -> None:
    assert attack_order() == ["fgsm", "pixel", "color", "rotation"]
    assert attack_order(["rotation", "mystery", "fgsm", "rotation"]) == ["fgsm", "rotation", "mystery"]
    assert set(attack_order()) == set(IMAGE_ATTACKS.names())
