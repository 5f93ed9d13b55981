"""Melanoma-vs-naevus image models: torchvision CNNs we train (white boxes) and external ONNX models (black boxes).

Why these choices:
* Every torch architecture is built with `weights=None`; ImageNet weights only come from a local checkpoint file the
  user names, because torchvision's download is unreachable offline and must never happen implicitly.
* `transform_input` is an explicit architecture argument stored in the checkpoint (default False), so training,
  evaluation and attacks all see the same input convention (upstream trained with True and
  attacked with False).
* A model scores uint8 images of exactly its `image_size`; resizing is the data pipeline's business, so that the
  attacked 8-bit image is exactly what the model sees.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import itertools
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.fx.experimental import optimization as fx_optimization

from vulnbench.core.errors import ConfigError, DataError
from vulnbench.core.io import atomic_path
from vulnbench.core.params import check_params
from vulnbench.core.registry import Registry
from vulnbench.img.base import CLASSES, normalize, softmax, to_unit_tensor

log = logging.getLogger(__name__)

#: tag of our checkpoint files; bump when the layout changes
CHECKPOINT_FORMAT = "vulnbench-image-model/1"
#: torchvision's Inception v3 auxiliary head needs a 17×17 Mixed_6e map, i.e. inputs of at least 299 px
INCEPTION_AUX_MIN_SIZE = 299

#: user-facing names → builders returning an ImageModel (torch architectures and external black boxes)
IMAGE_MODELS: Registry[Callable[..., Any]] = Registry("image model")


# --------------------------------------------------------------------------------------------------------------------
# architectures


@dataclass(frozen=True)
class Architecture:
    """How to make one torchvision network with two-class heads, and which state-dict keys are those heads."""

    make: Callable[..., nn.Module]  # (n_classes, init_weights, **kwargs) → module with fresh heads
    head_prefixes: tuple[str, ...]  # re-initialised when ImageNet weights are loaded
    optional_prefixes: tuple[str, ...]  # may be in a weights file but absent from the module (aux head switched off)
    min_size: int


def _make_inception_v3(n_classes: int, init_weights: bool, *, aux_logits: bool = True, transform_input: bool = False,
                       dropout: float = 0.5) -> nn.Module:
    from torchvision.models import inception_v3

    # weights=None always: transform_input/aux_logits/init_weights are then exactly what we pass (no silent override)
    module = inception_v3(weights=None, aux_logits=aux_logits, init_weights=init_weights,
                          transform_input=transform_input, dropout=dropout)
    module.fc = nn.Linear(module.fc.in_features, n_classes)  # upstream initialize_model: replace both heads
    if module.AuxLogits is not None:
        module.AuxLogits.fc = nn.Linear(module.AuxLogits.fc.in_features, n_classes)
    return module


def _make_mobilenet_v3_small(n_classes: int, init_weights: bool, *, dropout: float = 0.2,
                             bn_momentum: float = 0.1) -> nn.Module:
    from torchvision.models import mobilenet_v3_small

    module = mobilenet_v3_small(weights=None, dropout=dropout)
    module.classifier[3] = nn.Linear(module.classifier[3].in_features, n_classes)
    for layer in module.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.momentum = bn_momentum
    return module


ARCHITECTURES: dict[str, Architecture] = {
    "inception_v3": Architecture(_make_inception_v3, ("fc.", "AuxLogits.fc."), ("AuxLogits.",), 75),
    "mobilenet_v3_small": Architecture(_make_mobilenet_v3_small, ("classifier.3.",), (), 16),
}


@contextlib.contextmanager
def _seeded(seed: int, device: str = "cpu") -> Iterator[None]:
    """Seed torch's global RNG (weight init, augmentation, dropout) without disturbing the caller's RNG state."""
    devices: list[int] | None = [] if torch.device(device).type == "cpu" else None
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _check_device(device: str) -> str:
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device: unknown torch device {device!r} (use 'cpu' or 'cuda')") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {device!r} requested but CUDA is not available")
    return str(device)


def _check_images(images: np.ndarray, image_size: int) -> np.ndarray:
    array = np.asarray(images)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise DataError(f"expected uint8 images of shape (S, H, W, 3), got {array.dtype} {array.shape}")
    if array.shape[1] != image_size or array.shape[2] != image_size:
        raise DataError(f"images are {array.shape[1]}x{array.shape[2]} px but the model expects "
                        f"{image_size}x{image_size}; resize them first")
    return array


# --------------------------------------------------------------------------------------------------------------------
# torch models (white boxes)


class TorchImageModel:
    """A torch network of ours in eval mode: `logits` for black-box attacks, `forward_normalized` for gradients."""

    def __init__(self, module: nn.Module, *, architecture: str, arch_kwargs: Mapping[str, Any], image_size: int,
                 classes: Sequence[str] = CLASSES, device: str = "cpu", batch_size: int = 64,
                 history: list[dict[str, float]] | None = None, provenance: Mapping[str, Any] | None = None) -> None:
        self.device = _check_device(device)
        self.module = module.to(self.device).eval()
        self.architecture = architecture
        self.arch_kwargs = dict(arch_kwargs)
        self.image_size = int(image_size)
        self.classes = tuple(classes)
        self.batch_size = int(batch_size)
        self.history = list(history or [])
        self.provenance = dict(provenance or {})
        self._inference: tuple[tuple[int, str, int], nn.Module] | None = None

    def __repr__(self) -> str:
        return (f"TorchImageModel({self.architecture}, image_size={self.image_size}, kwargs={self.arch_kwargs}, "
                f"device={self.device!r})")

    def to(self, device: str) -> TorchImageModel:
        self.device = _check_device(device)
        self.module.to(self.device)
        return self

    def inference_module(self) -> nn.Module:
        """The network folded for scoring: the same function as `module` in eval mode, 1.2–1.4× faster on CPU.

        Black-box attacks spend nearly all their time in forward passes, so `logits` scores through a copy with each
        BatchNorm folded into its convolution (torch.fx) and, on CPU, channels-last weights. The copy is rebuilt
        whenever a weight or buffer of `module` changes in place (torch's version counters) or `module` is replaced,
        so training further or loading new weights never scores with stale ones."""
        key = (id(self.module), self.device, _weights_version(self.module))
        if self._inference is None or self._inference[0] != key:
            self._inference = (key, _fold_for_inference(self.module, self.device))
        return self._inference[1]

    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised (S, 3, H, W) → logits; differentiable. The module stays in eval mode (no aux head)."""
        return self.module(x)

    def forward01(self, x01: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels (S, 3, H, W) → logits; differentiable (what FGSM in pixel space perturbs)."""
        return self.module(normalize(x01))

    def logits(self, images: np.ndarray) -> np.ndarray:
        """uint8 (S, image_size, image_size, 3) → float32 (S, n_classes), `batch_size` images per forward."""
        array = _check_images(images, self.image_size)
        out = np.empty((len(array), len(self.classes)), dtype=np.float32)
        module = self.inference_module()
        layout = torch.channels_last if self.device == "cpu" else torch.contiguous_format
        with torch.inference_mode():
            for start in range(0, len(array), self.batch_size):
                x = normalize(to_unit_tensor(array[start : start + self.batch_size], self.device))
                out[start : start + len(x)] = module(x.contiguous(memory_format=layout)).float().cpu().numpy()
        return out

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (S, n_classes), float64; column 0 = P(melanoma)."""
        return softmax(self.logits(images))

    def save(self, path: str | Path) -> None:
        """Atomic torch checkpoint: weights + everything needed to rebuild the exact architecture."""
        payload = {
            "format": CHECKPOINT_FORMAT,
            "architecture": self.architecture,
            "kwargs": self.arch_kwargs,
            "image_size": self.image_size,
            "classes": list(self.classes),
            "history": self.history,
            "provenance": self.provenance,
            "state_dict": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", batch_size: int = 64) -> TorchImageModel:
        path = Path(path)
        payload = _read_torch_file(path, "model checkpoint", "unreadable")
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise DataError(f"model checkpoint {path}: not a vulnbench image-model checkpoint ({CHECKPOINT_FORMAT})")
        architecture = payload.get("architecture")
        if architecture not in ARCHITECTURES:
            raise DataError(f"model checkpoint {path}: unknown architecture {architecture!r}")
        try:
            classes = tuple(payload["classes"])
            with _seeded(0):  # the random init is overwritten; fork so loading never shifts the caller's RNG
                module = ARCHITECTURES[architecture].make(len(classes), False, **payload["kwargs"])
            module.load_state_dict(payload["state_dict"], strict=True)
        except (RuntimeError, KeyError, TypeError, ValueError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise DataError(f"model checkpoint {path}: weights do not fit {architecture} ({first})") from None
        return cls(module, architecture=architecture, arch_kwargs=payload["kwargs"],
                   image_size=payload["image_size"], classes=classes, device=device, batch_size=batch_size,
                   history=payload.get("history"), provenance=payload.get("provenance"))


def _read_torch_file(path: Path, what: str, unreadable: str) -> Any:
    """A torch file's content on the CPU, read with `weights_only` (tensors and plain containers: a file never runs
    code when loaded); a missing or unreadable file fails in one line naming `what` and the path."""
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise DataError(f"{what} {path}: {unreadable} ({type(error).__name__})") from None


def _weights_version(module: nn.Module) -> int:
    """Grows whenever any parameter or buffer is modified in place (optimizer steps, `load_state_dict`)."""
    return sum(t._version for t in itertools.chain(module.parameters(), module.buffers()))


def _fold_for_inference(module: nn.Module, device: str) -> nn.Module:
    """An eval-mode copy of `module` with BatchNorm folded into the preceding convolutions (channels-last on CPU).

    Tracing is best effort: a network torch.fx cannot trace is scored as it is (still a detached eval copy)."""
    frozen = copy.deepcopy(module).eval()
    try:
        folded = fx_optimization.fuse(frozen, inplace=True)
    except Exception as error:  # any untraceable control flow: keep the plain copy, same numbers, a bit slower
        log.debug("conv+bn folding skipped (%s: %s)", type(error).__name__, error)
        folded = frozen
    folded.requires_grad_(False)
    if device == "cpu":
        folded = folded.to(memory_format=torch.channels_last)
    return folded.eval()


def load_pretrained_weights(module: nn.Module, path: str | Path, architecture: str) -> None:
    """Load a local (e.g. ImageNet) checkpoint into `module`: strict for the body, classifier heads left fresh."""
    path = Path(path)
    spec = ARCHITECTURES[architecture]
    state = _read_torch_file(path, "weights file", "not a readable torch checkpoint")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # our own checkpoints and most training frameworks nest it
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"weights file {path}: not a state dict of tensors")
    state = {str(k).removeprefix("module."): v for k, v in state.items()}  # DataParallel prefix

    own = module.state_dict()

    def is_head(key: str) -> bool:
        return key.startswith(spec.head_prefixes)

    body = {k: v for k, v in state.items() if not is_head(k)
            and not (k not in own and k.startswith(spec.optional_prefixes))}
    missing = [k for k in own if not is_head(k) and k not in body and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in body if k not in own]
    mismatched = [k for k in body if k in own and tuple(body[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        problems = [f"{len(found)} {what} (e.g. {found[0]})" for what, found in
                    (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
                    if found]
        raise DataError(f"weights file {path} does not fit {architecture}: {'; '.join(problems)}")
    result = module.load_state_dict(body, strict=False)
    assert all(is_head(k) or k.endswith("num_batches_tracked") for k in result.missing_keys), result.missing_keys
    log.info("loaded %d tensors from %s into %s; classifier heads re-initialised", len(body), path.name, architecture)


def _build_torch(architecture: str, image_size: int, *, weights: str | Path | None, seed: int, device: str,
                 batch_size: int, init_weights: bool, **arch_kwargs: Any) -> TorchImageModel:
    spec = ARCHITECTURES[architecture]
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < spec.min_size:
        raise ConfigError(f"image model {architecture!r}: image_size must be an integer >= {spec.min_size}, "
                          f"got {image_size!r}")
    with _seeded(seed):
        module = spec.make(len(CLASSES), init_weights and weights is None, **arch_kwargs)
    if weights is not None:
        load_pretrained_weights(module, weights, architecture)
    else:
        log.info("%s: no weights file given, starting from random weights (seed %d)", architecture, seed)
    return TorchImageModel(module, architecture=architecture, arch_kwargs=arch_kwargs, image_size=image_size,
                           device=device, batch_size=batch_size,
                           provenance={"weights": None if weights is None else str(weights), "init_seed": seed})


@IMAGE_MODELS.register("inception_v3")
def inception_v3(image_size: int = 299, weights: str | Path | None = None, transform_input: bool = False,
                 aux_logits: bool | None = None, dropout: float = 0.5, init_weights: bool = True, seed: int = 0,
                 device: str = "cpu", batch_size: int = 64) -> TorchImageModel:
    """torchvision Inception v3 with 2-class `fc` and `AuxLogits.fc` (upstream's model).

    `aux_logits=None` keeps the auxiliary head only where it can run (>= 299 px); `init_weights=False` skips
    torchvision's slow truncated-normal init (the default PyTorch init is used instead).

    Args:
        image_size: side in px of the square input (set from the dataset's image_size, not a model key)
        weights: local state dict to start from (set by the training keys, not a model key)
        transform_input: torchvision's transform_input: re-map ImageNet-normalised input to Inception's convention
        aux_logits: auxiliary classifier head; null: on iff image_size ≥ 299 (true below 299 is an error)
        dropout: dropout probability before the final fully connected layer
        init_weights: torchvision's truncated-normal init (true) or PyTorch's default (false); without a weights file
        seed: seed of the random initialisation (the top-level seed)
        device: torch device (images: device)
        batch_size: images per forward pass when scoring
    """
    if aux_logits is None:
        aux_logits = isinstance(image_size, int) and image_size >= INCEPTION_AUX_MIN_SIZE
    elif aux_logits and isinstance(image_size, int) and image_size < INCEPTION_AUX_MIN_SIZE:
        raise ConfigError(f"image model 'inception_v3': aux_logits needs image_size >= {INCEPTION_AUX_MIN_SIZE}, "
                          f"got {image_size}")
    return _build_torch("inception_v3", image_size, weights=weights, seed=seed, device=device, batch_size=batch_size,
                        init_weights=init_weights, aux_logits=bool(aux_logits), transform_input=bool(transform_input),
                        dropout=float(dropout))


@IMAGE_MODELS.register("mobilenet_v3_small")
def mobilenet_v3_small(image_size: int = 224, weights: str | Path | None = None, dropout: float = 0.2,
                       bn_momentum: float = 0.1, seed: int = 0, device: str = "cpu",
                       batch_size: int = 64) -> TorchImageModel:
    """torchvision MobileNetV3-small with a 2-class head: the fast CPU model (≈ 1.5 M parameters).

    Batch-norm momentum defaults to PyTorch's 0.1 rather than torchvision's 0.01: with the few hundred steps of a
    small training set, 0.01 leaves the eval-mode running statistics near their initial values (chance accuracy).

    Args:
        image_size: side in px of the square input (set from the dataset's image_size, not a model key)
        weights: local state dict to start from (set by the training keys, not a model key)
        dropout: dropout probability in the classifier head
        bn_momentum: batch-norm running-statistics momentum (PyTorch's 0.1, not torchvision's 0.01)
        seed: seed of the random initialisation (the top-level seed)
        device: torch device (images: device)
        batch_size: images per forward pass when scoring
    """
    return _build_torch("mobilenet_v3_small", image_size, weights=weights, seed=seed, device=device,
                        batch_size=batch_size, init_weights=True, dropout=float(dropout),
                        bn_momentum=float(bn_momentum))


# --------------------------------------------------------------------------------------------------------------------
# external black boxes


class OnnxImageModel:
    """An external model run by onnxruntime on CPU; only `logits` (no gradients): a pure black box."""

    def __init__(self, path: str | Path, input_layout: str = "NCHW", normalize: bool = True,
                 image_size: int | None = None, input_name: str | None = None, classes: Sequence[str] = CLASSES,
                 batch_size: int = 64) -> None:
        import onnxruntime

        self.path = Path(path)
        if input_layout not in ("NCHW", "NHWC"):
            raise ConfigError(f"image model 'onnx': input_layout must be 'NCHW' or 'NHWC', got {input_layout!r}")
        if not self.path.is_file():
            raise DataError(f"ONNX model not found: {self.path}")
        options = onnxruntime.SessionOptions()
        threads = os.environ.get("OMP_NUM_THREADS", "")
        if threads.isdigit() and int(threads) > 0:
            # onnxruntime sizes its pool by the machine's cores, not OMP_NUM_THREADS: keep to the job's share
            # (`vulnbench.core.jobs.use_threads` sets it), or parallel attack jobs oversubscribe the CPU
            options.intra_op_num_threads = int(threads)
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:
            raise DataError(f"ONNX model {self.path}: unreadable ({type(error).__name__})") from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        if input_name is None:
            if len(inputs) != 1:
                raise ConfigError(f"ONNX model {self.path.name}: {len(inputs)} inputs ({', '.join(inputs)}); "
                                  f"set input_name")
            input_name = next(iter(inputs))
        if input_name not in inputs:
            raise ConfigError(f"ONNX model {self.path.name}: no input {input_name!r} (has {', '.join(inputs)})")
        node = inputs[input_name]
        if node.type != "tensor(float)":
            raise ConfigError(f"ONNX model {self.path.name}: input {input_name!r} is {node.type}, need tensor(float)")
        shape = list(node.shape)
        if len(shape) != 4:
            raise ConfigError(f"ONNX model {self.path.name}: input {input_name!r} has shape {shape}, need 4-D")
        h, w = (shape[2], shape[3]) if input_layout == "NCHW" else (shape[1], shape[2])
        fixed = h if isinstance(h, int) and h == w else None
        if fixed is not None and image_size is not None and fixed != image_size:
            raise ConfigError(f"ONNX model {self.path.name}: image_size {image_size} but the model input is "
                              f"{fixed}x{fixed}")
        if fixed is None and image_size is None:
            raise ConfigError(f"ONNX model {self.path.name}: input size is not fixed ({shape}); set image_size")
        self.image_size = int(fixed if fixed is not None else image_size)
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self.input_name = input_name
        self.input_layout = input_layout
        self.normalize = normalize
        self.classes = tuple(classes)
        self.batch_size = self.fixed_batch or int(batch_size)

    def __repr__(self) -> str:
        return f"OnnxImageModel({self.path.name}, image_size={self.image_size}, layout={self.input_layout})"

    def _prepare(self, chunk: np.ndarray) -> np.ndarray:
        x = chunk.astype(np.float32) / np.float32(255.0)
        if self.normalize:
            x = normalize(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
        if self.input_layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=np.float32)

    def logits(self, images: np.ndarray) -> np.ndarray:
        array = _check_images(images, self.image_size)
        out = np.empty((len(array), len(self.classes)), dtype=np.float32)
        for start in range(0, len(array), self.batch_size):
            chunk = array[start : start + self.batch_size]
            n = len(chunk)
            if self.fixed_batch is not None and n < self.fixed_batch:  # a fixed batch axis: pad the last chunk
                chunk = np.concatenate([chunk, np.zeros((self.fixed_batch - n, *chunk.shape[1:]), np.uint8)])
            result = np.asarray(self.session.run(None, {self.input_name: self._prepare(chunk)})[0])
            if result.ndim != 2 or result.shape[1] != len(self.classes):
                raise DataError(f"ONNX model {self.path.name}: output shape {result.shape}, expected "
                                f"(S, {len(self.classes)})")
            out[start : start + n] = result[:n]
        return out

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return softmax(self.logits(images))


@IMAGE_MODELS.register("onnx")
def onnx(path: str, input_layout: str = "NCHW", normalize: bool = True, image_size: int | None = None,
         input_name: str | None = None, batch_size: int = 64) -> OnnxImageModel:
    """An external ONNX classifier (outputs logits, class 0 = melanoma) as a black box.

    Args:
        path: ONNX model file (required; 2 logits, class 0 = melanoma), run on CPU by onnxruntime
        input_layout: tensor layout the ONNX model expects: NCHW or NHWC
        normalize: apply ImageNet mean/std normalisation to [0, 1] inputs before the ONNX model
        image_size: side in px the model expects; null: the dataset's image_size
        input_name: ONNX input to feed; null: the model's only input
        batch_size: images per onnxruntime call when scoring
    """
    return OnnxImageModel(path, input_layout=input_layout, normalize=normalize, image_size=image_size,
                          input_name=input_name, batch_size=batch_size)


def build_image_model(name: str, **params: Any) -> Any:
    """A model by its config name; unknown names or parameters give a one-line ConfigError."""

    builder = IMAGE_MODELS.get(name)
    required = [p.name for p in inspect.signature(builder).parameters.values() if p.default is p.empty]
    check_params(f"image model {name!r}", params, builder, extra=required)
    missing = [key for key in required if key not in params]
    if missing:
        raise ConfigError(f"image model {name!r}: missing parameter {missing[0]!r}")
    return builder(**params)


def export_onnx(model: TorchImageModel, path: str | Path, opset_version: int = 17) -> None:
    """Write our model as ONNX (ImageNet-normalised NCHW float input, dynamic batch axis), atomically."""
    module = copy.deepcopy(model.module).cpu().eval()
    dummy = torch.zeros(1, 3, model.image_size, model.image_size)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is chosen on purpose
        torch.onnx.export(module, (dummy,), str(tmp), dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset_version)


# --------------------------------------------------------------------------------------------------------------------
# training (upstream classify.py: train_model / run_training)


def encode_labels(labels: Sequence[str], what: str) -> torch.Tensor:
    """'melanoma'/'nevus' → class indices (0 = melanoma), with a one-line error naming a bad label."""
    values = np.asarray(labels).astype(str)
    index = {name: i for i, name in enumerate(CLASSES)}
    unknown = sorted(set(values.tolist()) - set(index))
    if unknown:
        raise DataError(f"{what} labels: unknown label {unknown[0]!r} (expected one of {', '.join(CLASSES)})")
    return torch.tensor([index[v] for v in values.tolist()], dtype=torch.long)


def fit_to_size(images: np.ndarray, image_size: int) -> np.ndarray:
    """Upstream's evaluation transform, batched: Resize(shorter side → size) + CenterCrop(size); no-op if sized."""
    from torchvision.transforms import v2

    array = np.asarray(images)
    if array.shape[1:3] == (image_size, image_size):
        return array
    x = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2)
    x = v2.functional.center_crop(v2.functional.resize(x, [image_size], antialias=True), [image_size, image_size])
    return x.permute(0, 2, 3, 1).contiguous().numpy()


class TrainAugmentation:
    """Upstream's train transform on a uint8 (B, 3, H, W) batch → ImageNet-normalised float (B, 3, size, size).

    Flips run batched with one coin per image; crop, rotation and hue need per-image geometry and run per image.
    Flipping before cropping/rotating instead of after gives the same distribution (crop positions and rotation
    angles are mirror-symmetric), so this matches RandomResizedCrop → flips → RandomRotation(180) → ColorJitter.
    Randomness comes from torch's global RNG, which `train_image_model` seeds.
    """

    def __init__(self, image_size: int, crop_scale: Sequence[float] = (0.08, 1.0), color_jitter: bool = False) -> None:
        from torchvision.transforms import v2

        steps: list[Any] = [v2.RandomResizedCrop(image_size, scale=tuple(crop_scale), antialias=True),
                            v2.RandomRotation(180)]  # nearest, black fill, no expand: as upstream
        if color_jitter:
            steps.append(v2.ColorJitter(hue=0.4))
        self.per_image = v2.Compose(steps)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        coins = torch.rand(2, len(batch)) < 0.5
        batch = torch.where(coins[0].view(-1, 1, 1, 1), batch.flip(-1), batch)
        batch = torch.where(coins[1].view(-1, 1, 1, 1), batch.flip(-2), batch)
        out = torch.stack([self.per_image(image) for image in batch])
        return normalize(out.float().div_(255.0))


def training_loss(module: nn.Module, x: torch.Tensor, target: torch.Tensor,
                  aux_weight: float = 0.4) -> tuple[torch.Tensor, torch.Tensor]:
    """Train-mode loss: CE(main) + aux_weight · CE(aux) when the network has an auxiliary head (upstream l.261–266)."""
    output = module(x)
    aux = None
    if isinstance(output, tuple):  # torchvision's InceptionOutputs(logits, aux_logits) in train mode
        output, aux = output[0], output[1]
    loss = nn.functional.cross_entropy(output, target)
    if aux is not None and aux_weight:
        loss = loss + aux_weight * nn.functional.cross_entropy(aux, target)
    return loss, output


def _check_training_set(images: np.ndarray, labels: Sequence[str], what: str) -> tuple[np.ndarray, torch.Tensor]:
    array = np.asarray(images)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise DataError(f"{what} images: expected uint8 (N, H, W, 3), got {array.dtype} {array.shape}")
    if len(array) == 0:
        raise DataError(f"{what} images: empty")
    target = encode_labels(labels, what)
    if len(target) != len(array):
        raise DataError(f"{what}: {len(array)} images but {len(target)} labels")
    return array, target


def train_image_model(name: str, train_images: np.ndarray, train_labels: Sequence[str], val_images: np.ndarray,
                      val_labels: Sequence[str], *, epochs: int = 30, batch_size: int = 8, lr: float = 0.001,
                      momentum: float = 0.9, aux_weight: float = 0.4, color_jitter: bool = False,
                      image_size: int = 299, crop_scale: Sequence[float] = (0.08, 1.0),
                      weights: str | Path | None = None, model_params: Mapping[str, Any] | None = None, seed: int = 0,
                      device: str = "cpu", threads: int | None = None, progress: bool = True,
                      log: logging.Logger | None = None) -> TorchImageModel:
    """Fine-tune a whole network as upstream did (SGD, no weight decay, no schedule) and keep the best-val epoch.

    Replicate 1 = defaults; replicate 2 = `color_jitter=True`. Identical seed → identical weights on CPU.
    Train images may be any size (RandomResizedCrop sizes them); validation images get Resize + CenterCrop.

    Args:
        epochs: training epochs; the epoch with the best validation accuracy is kept
        batch_size: images per SGD mini-batch during training
        lr: SGD learning rate
        momentum: SGD momentum (no weight decay, no schedule)
        aux_weight: weight of Inception's auxiliary-head loss (only with the aux head, i.e. ≥ 299 px)
        color_jitter: add ColorJitter(hue=0.4) to the training augmentation (replicate 2)
        image_size: side in px of the training crops (the dataset's image_size, not a model key)
        crop_scale: [low, high] area fraction of the training RandomResizedCrop
        weights: local state dict (e.g. ImageNet) to fine-tune from, heads re-initialised; null: random initialisation
        model_params: the architecture's own parameters (the model entry's other keys)
        seed: seed of initialisation, augmentation and batch order (the top-level seed)
        device: torch device (images: device)
        threads: torch threads; null: torch's default (the rule passes its thread count)
        progress: show a progress bar
        log: logger of the training job
    """
    from tqdm.auto import tqdm

    logger = log or logging.getLogger(__name__)
    if name not in ARCHITECTURES:
        IMAGE_MODELS.get(name)  # unknown name → did-you-mean error
        raise ConfigError(f"image model {name!r} is an external black box and cannot be trained")
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be a positive integer, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not lr > 0 or not aux_weight >= 0:
        raise ConfigError(f"lr must be > 0 and aux_weight >= 0, got lr={lr!r}, aux_weight={aux_weight!r}")
    if len(crop_scale) != 2 or not 0 < crop_scale[0] <= crop_scale[1] <= 1:
        raise ConfigError(f"crop_scale must be (low, high) with 0 < low <= high <= 1, got {crop_scale!r}")
    device = _check_device(device)
    train_x, train_y = _check_training_set(train_images, train_labels, "train")
    val_x, val_y = _check_training_set(val_images, val_labels, "validation")
    if val_x.shape[1:3] != (image_size, image_size):
        logger.info("validation images %s resized + centre-cropped to %d px", val_x.shape[1:3], image_size)
        val_x = fit_to_size(val_x, image_size)

    builder = IMAGE_MODELS.get(name)
    params = dict(model_params or {})

    check_params(f"image model {name!r}", params, builder)
    reserved = sorted({"image_size", "weights", "seed", "device"} & set(params))
    if reserved:
        raise ConfigError(f"model_params: {reserved[0]!r} is a train_image_model argument, not a model parameter")
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        with _seeded(seed, device):
            model = builder(image_size=image_size, weights=weights, seed=seed, device=device, **params)
            module = model.module
            has_aux = getattr(module, "AuxLogits", None) is not None
            if name == "inception_v3" and aux_weight and not has_aux:
                logger.warning("inception_v3 at %d px has no auxiliary head (needs >= %d px): aux loss skipped",
                               image_size, INCEPTION_AUX_MIN_SIZE)
            optimiser = torch.optim.SGD(module.parameters(), lr=lr, momentum=momentum, weight_decay=0.0)
            augment = TrainAugmentation(image_size, crop_scale, color_jitter)
            shuffler = torch.Generator().manual_seed(seed)
            pixels = torch.from_numpy(np.ascontiguousarray(train_x)).permute(0, 3, 1, 2)
            best_accuracy, best_state, best_epoch = -math.inf, None, 0
            history: list[dict[str, float]] = []
            bar = tqdm(range(1, epochs + 1), desc=f"train {name}", disable=not progress, leave=False)
            for epoch in bar:
                started = time.perf_counter()
                module.train()
                batches = list(torch.randperm(len(pixels), generator=shuffler).split(batch_size))
                if len(batches) > 1 and len(batches[-1]) == 1:
                    batches.pop()  # a lone image breaks batch norm on 1x1 maps; it is reshuffled next epoch
                total_loss, correct, seen = 0.0, 0, 0
                for index in batches:
                    x = augment(pixels[index]).to(device)
                    target = train_y[index].to(device)
                    optimiser.zero_grad(set_to_none=True)
                    loss, output = training_loss(module, x, target, aux_weight)
                    if not torch.isfinite(loss):
                        raise DataError(f"training {name}: loss became {float(loss)} at epoch {epoch} (lower lr?)")
                    loss.backward()
                    optimiser.step()
                    total_loss += float(loss.detach()) * len(index)
                    correct += int((output.argmax(1) == target).sum())
                    seen += len(index)
                module.eval()
                val_logits = torch.from_numpy(model.logits(val_x))
                val_accuracy = float((val_logits.argmax(1) == val_y).float().mean())
                record = {"epoch": epoch, "train_loss": total_loss / seen, "train_accuracy": correct / seen,
                          "val_loss": float(nn.functional.cross_entropy(val_logits, val_y)),
                          "val_accuracy": val_accuracy, "seconds": time.perf_counter() - started}
                history.append(record)
                if val_accuracy > best_accuracy:  # strict: the first epoch reaching the best accuracy wins
                    best_accuracy, best_epoch = val_accuracy, epoch
                    best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
                bar.set_postfix(loss=f"{record['train_loss']:.3f}", val_acc=f"{val_accuracy:.3f}")
                logger.info("%s epoch %d/%d: train loss %.4f, train acc %.3f, val acc %.3f (%.1f s)", name, epoch,
                            epochs, record["train_loss"], record["train_accuracy"], val_accuracy, record["seconds"])
    finally:
        torch.set_num_threads(previous_threads)
    assert best_state is not None
    module.load_state_dict(best_state)
    module.eval()
    logger.info("%s: kept epoch %d (val accuracy %.3f)", name, best_epoch, best_accuracy)
    import torchvision

    model.history = history
    model.provenance.update({
        "best_epoch": best_epoch, "seed": seed,
        # plain str: torch's TorchVersion is not loadable with `weights_only=True`
        "torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
        "training": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "momentum": momentum,
                     "aux_weight": aux_weight if has_aux else 0.0, "color_jitter": color_jitter,
                     "crop_scale": [float(c) for c in crop_scale], "n_train": len(train_x), "n_val": len(val_x)},
    })
    return model
