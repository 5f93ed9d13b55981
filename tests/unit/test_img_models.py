"""Dermoscopy-arm models and metrics on tiny synthetic images (bright vs dark discs); no data, no download, CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import beta
from sklearn.metrics import roc_auc_score

from vulnbench.core.errors import ConfigError, DataError
from vulnbench.img.base import DifferentiableImageModel, ImageModel, normalize, to_unit_tensor
from vulnbench.img.metrics import _bootstrap_auc, classification_metrics, clopper_pearson
from vulnbench.img.models import (
    IMAGE_MODELS,
    OnnxImageModel,
    TorchImageModel,
    build_image_model,
    export_onnx,
    fit_to_size,
    inception_v3,
    mobilenet_v3_small,
    train_image_model,
    training_loss,
)


def discs(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Dark discs = 'melanoma', mid-grey discs = 'nevus', on a light noisy background; alternating labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    radius_map = np.hypot(yy - size / 2, xx - size / 2)
    labels = np.array(["melanoma", "nevus"] * (n // 2))
    images = np.empty((len(labels), size, size, 3), np.uint8)
    for i, label in enumerate(labels):
        background = rng.integers(180, 230, 3)
        foreground = rng.integers(10, 60, 3) if label == "melanoma" else rng.integers(120, 170, 3)
        disc = radius_map < rng.uniform(0.25, 0.4) * size
        images[i] = np.where(disc[..., None], foreground, background) + rng.integers(0, 10, (size, size, 3))
    return images, labels


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def small_set() -> tuple[np.ndarray, np.ndarray]:
    return discs(16, 32, 0)


@pytest.fixture(scope="module")
def mobilenet48() -> TorchImageModel:
    return mobilenet_v3_small(image_size=48, seed=0)


# --------------------------------------------------------------------------------------------------------------------
# training


def test_training_is_seeded_and_leaves_global_rng_alone(small_set):
    images, labels = small_set
    state_before = torch.random.get_rng_state()
    runs = [train_image_model("mobilenet_v3_small", images, labels, images, labels, epochs=1, image_size=32,
                              seed=seed, progress=False) for seed in (0, 0, 1)]
    assert torch.equal(torch.random.get_rng_state(), state_before)
    assert same_state(runs[0].module, runs[1].module)
    assert not same_state(runs[0].module, runs[2].module)
    assert [h["epoch"] for h in runs[0].history] == [1]
    assert set(runs[0].history[0]) >= {"train_loss", "val_accuracy"}


def test_inception_training_is_seeded_at_75px():
    images, labels = discs(6, 75, 1)
    runs = [train_image_model("inception_v3", images, labels, images, labels, epochs=1, batch_size=3,
                              image_size=75, seed=seed, progress=False) for seed in (3, 3, 4)]
    assert same_state(runs[0].module, runs[1].module)
    assert not same_state(runs[0].module, runs[2].module)
    model = runs[0]
    assert not model.module.training and model.arch_kwargs["transform_input"] is False
    assert model.module.AuxLogits is None  # the aux head cannot run below 299 px: switched off, not crashing
    assert model.logits(images).shape == (6, 2) and model.logits(images).dtype == np.float32
    proba = model.predict_proba(images)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)


def test_mobilenet_learns_bright_vs_dark_discs(tmp_path):
    train, train_labels = discs(48, 48, 0)
    val, val_labels = discs(24, 48, 1)
    test, test_labels = discs(24, 48, 2)
    model = train_image_model("mobilenet_v3_small", train, train_labels, val, val_labels, epochs=5, batch_size=4,
                              lr=0.02, image_size=48, crop_scale=(0.5, 1.0), seed=0, progress=False)
    predicted = np.array(model.classes)[model.logits(test).argmax(axis=1)]
    assert (predicted == test_labels).mean() > 0.8
    best = max(h["val_accuracy"] for h in model.history)
    assert model.provenance["best_epoch"] == next(h["epoch"] for h in model.history if h["val_accuracy"] == best)
    model.save(tmp_path / "trained.pt")  # a trained model's checkpoint (provenance included) loads safely
    reloaded = TorchImageModel.load(tmp_path / "trained.pt")
    np.testing.assert_array_equal(reloaded.logits(test), model.logits(test))
    assert reloaded.provenance["torch"] == model.provenance["torch"]


def test_inception_aux_loss_enters_the_gradient_at_299px():
    model = inception_v3(image_size=299, init_weights=False, seed=0)
    module = model.module.train()
    assert module.AuxLogits is not None and module.transform_input is False
    x = normalize(to_unit_tensor(discs(2, 299, 0)[0]))
    target = torch.tensor([0, 1])
    grads, losses = {}, {}
    for weight in (0.0, 0.4):
        module.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # same dropout mask
        loss, _ = training_loss(module, x, target, aux_weight=weight)
        loss.backward()
        losses[weight] = float(loss.detach())
        grads[weight] = module.AuxLogits.fc.weight.grad
    torch.manual_seed(0)
    aux = module(x).aux_logits.detach()
    assert grads[0.0] is None and grads[0.4] is not None and grads[0.4].abs().sum() > 0
    expected = losses[0.0] + 0.4 * float(torch.nn.functional.cross_entropy(aux, target))
    assert losses[0.4] == pytest.approx(expected, rel=1e-5)
    module.eval()
    with torch.inference_mode():
        assert module(x).shape == (2, 2)  # eval: main logits only


def test_training_rejects_bad_names_and_labels(small_set):
    images, labels = small_set
    with pytest.raises(ConfigError, match="inception_v3"):
        train_image_model("inception_v33", images, labels, images, labels, epochs=1, image_size=32)
    with pytest.raises(ConfigError, match="cannot be trained"):
        train_image_model("onnx", images, labels, images, labels, epochs=1, image_size=32)
    with pytest.raises(DataError, match="'naevus'"):
        train_image_model("mobilenet_v3_small", images, ["naevus"] * len(images), images, labels, image_size=32)
    with pytest.raises(ConfigError, match="image_size"):
        inception_v3(image_size=74)
    with pytest.raises(ConfigError, match="'seed' is a train_image_model argument"):
        train_image_model("mobilenet_v3_small", images, labels, images, labels, image_size=32, model_params={"seed": 1})


def test_validation_images_get_resize_and_centre_crop():
    wide = np.zeros((2, 40, 60, 3), np.uint8)
    wide[:, :, 5:55] = 200  # dark 5-px margins left and right: outside the centre crop
    fitted = fit_to_size(wide, 32)
    assert fitted.shape == (2, 32, 32, 3) and fitted.dtype == np.uint8
    assert (fitted == 200).all()  # the centre crop keeps only the bright square
    same = np.zeros((1, 32, 32, 3), np.uint8)
    assert fit_to_size(same, 32) is same


# --------------------------------------------------------------------------------------------------------------------
# model I/O


def test_protocols_and_wrong_image_size(mobilenet48):
    assert isinstance(mobilenet48, DifferentiableImageModel) and isinstance(mobilenet48, ImageModel)
    with pytest.raises(DataError, match="32x32 px but the model expects 48x48"):
        mobilenet48.logits(np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match="uint8"):
        mobilenet48.logits(np.zeros((2, 48, 48, 3), np.float32))


def eager_logits(model: TorchImageModel, images: np.ndarray) -> np.ndarray:
    """The unfolded network's logits: what `model.logits` must reproduce."""
    with torch.inference_mode():
        return model.module.eval()(normalize(to_unit_tensor(images, "cpu"))).numpy()


@pytest.mark.parametrize("build, size", [(mobilenet_v3_small, 48), (inception_v3, 75)])
def test_folded_scoring_matches_the_network_and_follows_weight_changes(build, size):
    model = build(image_size=size, seed=0)
    for layer in model.module.modules():  # non-trivial running statistics, so folding them in changes the weights
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.running_mean.uniform_(-0.2, 0.2)
            layer.running_var.uniform_(0.5, 2.0)
    images = discs(6, size, 5)[0]
    reference = eager_logits(model, images)
    folded = model.logits(images)
    assert isinstance(model.inference_module(), torch.fx.GraphModule)  # conv+bn folding really happened
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.inference_module().modules())
    np.testing.assert_allclose(folded, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())
    assert model.inference_module() is model.inference_module()  # built once, reused

    with torch.no_grad():  # an in-place change (an optimizer step, load_state_dict) must not be scored stale
        for parameter in model.module.parameters():
            parameter.mul_(1.1)
    changed = eager_logits(model, images)
    assert not np.allclose(changed, reference)
    np.testing.assert_allclose(model.logits(images), changed, rtol=1e-4, atol=1e-4 * np.abs(changed).max())


def test_save_load_round_trip_and_corrupt_checkpoints(tmp_path, mobilenet48):
    images = discs(10, 48, 3)[0]
    mobilenet48.history = [{"epoch": 1, "train_loss": 0.5, "val_accuracy": 0.75}]
    path = tmp_path / "model.pt"
    mobilenet48.save(path)
    loaded = TorchImageModel.load(path)
    assert np.array_equal(loaded.logits(images), mobilenet48.logits(images))
    assert loaded.history == mobilenet48.history and loaded.arch_kwargs == mobilenet48.arch_kwargs
    assert (loaded.image_size, loaded.classes) == (48, ("melanoma", "nevus"))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary left behind

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:5000])
    for bad in (garbage, truncated, tmp_path / "missing.pt"):
        with pytest.raises(DataError, match=bad.name):
            TorchImageModel.load(bad)


def test_inception_round_trip_keeps_transform_input(tmp_path):
    model = inception_v3(image_size=75, transform_input=True, init_weights=False, seed=1)
    model.save(tmp_path / "inc.pt")
    loaded = TorchImageModel.load(tmp_path / "inc.pt")
    assert loaded.module.transform_input is True and loaded.arch_kwargs["transform_input"] is True
    images = discs(4, 75, 0)[0]
    assert np.array_equal(loaded.logits(images), model.logits(images))


def test_onnx_export_matches_torch(tmp_path, mobilenet48):
    images = discs(6, 48, 4)[0]
    path = tmp_path / "model.onnx"
    export_onnx(mobilenet48, path)
    external = build_image_model("onnx", path=str(path))
    assert isinstance(external, OnnxImageModel) and isinstance(external, ImageModel)
    assert external.image_size == 48  # read from the ONNX input shape
    np.testing.assert_allclose(external.logits(images), mobilenet48.logits(images), atol=1e-4)
    with pytest.raises(DataError, match="expects 48x48"):
        external.logits(np.zeros((1, 64, 64, 3), np.uint8))
    with pytest.raises(ConfigError, match="image_size 64"):
        OnnxImageModel(path, image_size=64)


def test_onnx_model_keeps_to_the_jobs_threads(tmp_path, mobilenet48, monkeypatch):
    path = tmp_path / "model.onnx"
    export_onnx(mobilenet48, path)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    default = OnnxImageModel(path).session.get_session_options().intra_op_num_threads
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what use_threads(1) sets in a single-threaded attack job
    limited = OnnxImageModel(path).session.get_session_options().intra_op_num_threads
    assert (default, limited) == (0, 1)  # 0: onnxruntime's own choice, one thread per core


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy TorchScript exporter, on purpose
def test_onnx_channels_last_with_fixed_batch(tmp_path, mobilenet48):
    """An external model taking NHWC input with a fixed batch of 4: the last chunk is padded, results unchanged."""

    class ChannelsLast(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x.permute(0, 3, 1, 2))

    path = tmp_path / "nhwc.onnx"
    wrapped = ChannelsLast(mobilenet48.module).eval()
    torch.onnx.export(wrapped, (torch.zeros(4, 48, 48, 3),), str(path), dynamo=False, opset_version=17)
    external = OnnxImageModel(path, input_layout="NHWC")
    assert (external.image_size, external.batch_size) == (48, 4)
    images = discs(6, 48, 5)[0]
    np.testing.assert_allclose(external.logits(images), mobilenet48.logits(images), atol=1e-4)


def test_imagenet_weights_from_local_file_reinitialise_only_heads(tmp_path):
    import torchvision

    reference = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    assert reference.fc.out_features == 1000
    weights = tmp_path / "inception_imagenet.pth"
    torch.save(reference.state_dict(), weights)
    file_state = reference.state_dict()
    for size in (75, 299):  # without and with the aux head
        model = inception_v3(image_size=size, weights=str(weights), seed=0)
        state = model.module.state_dict()
        heads = [k for k in state if k.startswith(("fc.", "AuxLogits.fc."))]
        assert len(heads) == (4 if size == 299 else 2)
        assert all(torch.equal(state[k], file_state[k]) for k in state if k not in heads)
        assert state["fc.weight"].shape == (2, 2048) and state["fc.weight"].abs().sum() > 0
        assert model.module.transform_input is False  # pinned, not torchvision's weights-implied True
    assert model.module.AuxLogits.conv1.conv.weight.shape == reference.AuxLogits.conv1.conv.weight.shape

    wrong = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), wrong)
    with pytest.raises(DataError, match=r"mobilenet\.pth does not fit inception_v3"):
        inception_v3(image_size=75, weights=str(wrong))
    with pytest.raises(DataError, match="not found"):
        inception_v3(image_size=75, weights=str(tmp_path / "absent.pth"))


def test_registry_names_and_parameters():
    assert IMAGE_MODELS.names() == ["inception_v3", "mobilenet_v3_small", "onnx"]
    with pytest.raises(ConfigError, match="did you mean 'dropout'"):
        build_image_model("mobilenet_v3_small", dropuot=0.1)
    with pytest.raises(ConfigError, match="missing parameter 'path'"):
        build_image_model("onnx")


# --------------------------------------------------------------------------------------------------------------------
# metrics


def test_auc_and_bootstrap_match_sklearn():
    rng = np.random.default_rng(0)
    labels = np.array(["melanoma"] * 30 + ["nevus"] * 50)
    p = np.round(np.clip(rng.normal(np.where(labels == "melanoma", 0.65, 0.4), 0.2), 0, 1), 1)  # with ties
    result = classification_metrics(p, labels, n_boot=500, seed=7)
    positive = (labels == "melanoma").astype(int)
    assert result["auc"] == pytest.approx(roc_auc_score(positive, p))
    assert result["auc_lo"] < result["auc"] < result["auc_hi"]
    assert classification_metrics(p, labels, n_boot=500, seed=7) == result
    assert classification_metrics(p, labels, n_boot=500, seed=8)["auc_lo"] != result["auc_lo"]

    # the vectorised bootstrap equals sklearn on the very same stratified resamples
    draws = np.random.default_rng(3)
    pos, neg = np.flatnonzero(positive == 1), np.flatnonzero(positive == 0)
    pos_idx, neg_idx = pos[draws.integers(0, 30, (5, 30))], neg[draws.integers(0, 50, (5, 50))]
    expected = [roc_auc_score([1] * 30 + [0] * 50, np.concatenate([p[a], p[b]]))
                for a, b in zip(pos_idx, neg_idx, strict=True)]
    np.testing.assert_allclose(_bootstrap_auc(p, positive, 5, seed=3), expected, rtol=1e-12)


def test_sensitivity_specificity_by_hand():
    p = [0.9, 0.6, 0.4, 0.5, 0.2, 0.7, 0.1]
    labels = ["melanoma", "melanoma", "melanoma", "nevus", "nevus", "nevus", "nevus"]
    result = classification_metrics(p, labels, n_boot=0)
    # called melanoma (P >= 0.5): 0.9, 0.6 | 0.5, 0.7 → TP 2/3, TN 2/4, accuracy 4/7
    assert result["sensitivity"] == pytest.approx(2 / 3)
    assert result["specificity"] == pytest.approx(2 / 4)
    assert result["accuracy"] == pytest.approx(4 / 7)
    assert (result["n"], result["n_melanoma"], result["n_nevus"]) == (7, 3, 4)
    assert classification_metrics(p, [0, 0, 0, 1, 1, 1, 1], n_boot=0)["accuracy"] == pytest.approx(4 / 7)


def test_single_class_gives_nan_auc_with_warning():
    with pytest.warns(RuntimeWarning, match="only one class"):
        result = classification_metrics([0.2, 0.8, 0.6], ["melanoma"] * 3)
    assert np.isnan(result["auc"]) and np.isnan(result["auc_lo"]) and np.isnan(result["specificity"])
    assert result["sensitivity"] == pytest.approx(2 / 3)
    with pytest.raises(DataError, match="non-finite"):
        classification_metrics([0.2, np.nan], ["melanoma", "nevus"])


def test_clopper_pearson_known_values():
    assert clopper_pearson(0, 10) == pytest.approx((0.0, 0.30850), abs=1e-5)
    assert clopper_pearson(10, 10) == pytest.approx((0.69150, 1.0), abs=1e-5)
    assert clopper_pearson(5, 10) == pytest.approx((0.18709, 0.81291), abs=1e-5)
    assert clopper_pearson(53, 59)[0] == pytest.approx(beta.ppf(0.025, 53, 7))
    assert clopper_pearson(0, 0) == (0.0, 1.0)
