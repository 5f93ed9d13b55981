"""The dermoscopy arm's config section (`images:`) → validated settings and the matrix of attack jobs.

    images:
      datasets:   {name: {loader parameters + image_size, resize, val_fraction, test_fraction}}
      models:     {name: {architecture (default: the name), training settings, model parameters}}
      attacks:    {an attack of vulnbench.img.attacks (fgsm, pixel, color, rotation, …): {grid, params, models}}
      max_attack_images: 20       # melanomas of the test split attacked per job (None: all)
      systematic: {offset_kind: additive}

Two replicates of one architecture are two entries (`inception_v3` and `inception_v3_jitter: {architecture:
inception_v3, color_jitter: true}`). An `onnx` model is an external black box: it is not trained and only the
black-box (DE) attacks run on it.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from functools import cache
from typing import Any

import pandas as pd

from vulnbench.core.codehash import code_hash
from vulnbench.core.errors import ConfigError
from vulnbench.core.grid import check_grid, grid_cells
from vulnbench.core.params import (
    Parameter,
    check_name,
    check_params,
    check_values,
    declared_parameters,
    signature_defaults,
)
from vulnbench.img.attacks import IMAGE_ATTACKS
from vulnbench.img.data import IMAGE_DATASETS
from vulnbench.img.models import ARCHITECTURES, IMAGE_MODELS, train_image_model

#: dataset keys that configure preparation (resize + grouped split), not the loader
PREPARE_KEYS = {"image_size": 299, "resize": "crop", "val_fraction": 0.15, "test_fraction": 0.2}
#: model keys that configure the pipeline, not the network
MODEL_KEYS = ("architecture",)
ATTACK_KEYS = ("grid", "params", "models")
SECTION_KEYS = ("datasets", "models", "attacks", "max_attack_images", "systematic", "reader_study", "device")
#: training settings `train_image_model` takes from a model entry (the rest are the architecture's parameters)
TRAIN_KEYS = ("epochs", "batch_size", "lr", "momentum", "aux_weight", "color_jitter", "crop_scale", "weights")


def attack_parameters(name: str) -> dict[str, Parameter]:
    """The declared parameters (default, type, choices, meaning) a config may set for one image attack."""

    return IMAGE_ATTACKS.get(name).declared


def images_section(config: Mapping[str, Any]) -> dict[str, Any]:
    """The `images:` section ({} when the config has no image arm)."""
    section = config.get("images") or {}
    if not isinstance(section, Mapping):
        raise ConfigError("config images: expected a mapping with datasets, models and attacks")
    return dict(section)


def image_entries(section: Mapping[str, Any], key: str) -> dict[str, dict[str, Any]]:
    entries = section.get(key) or {}
    if not isinstance(entries, Mapping) or not entries:
        raise ConfigError(f"config images: '{key}' must name at least one entry")
    return {str(k): dict(v or {}) for k, v in entries.items()}


def architecture_of(name: str, entry: Mapping[str, Any]) -> str:
    return str(entry.get("architecture", name))


def is_black_box(architecture: str) -> bool:

    return architecture not in ARCHITECTURES


def validate_images_config(config: Mapping[str, Any]) -> None:
    """Names and parameters of the image arm, before any job: the first problem as a one-line ConfigError."""

    section = images_section(config)
    if not section:
        return
    check_params("config images", section, extra=SECTION_KEYS)
    for name, entry in image_entries(section, "datasets").items():
        if name not in IMAGE_DATASETS:
            raise ConfigError(f"config images datasets: {IMAGE_DATASETS.unknown_message(name)}")
        loader_keys = set(signature_defaults(IMAGE_DATASETS.get(name))) - {"image_size"}
        check_params(f"image dataset {name!r}", entry, extra=loader_keys | set(PREPARE_KEYS))
        check_values(f"image dataset {name!r}", entry, declared_parameters(IMAGE_DATASETS.get(name)))
    train_allowed = set(TRAIN_KEYS) & set(signature_defaults(train_image_model))
    for name, entry in image_entries(section, "models").items():
        check_name("config images models", name)
        architecture = architecture_of(name, entry)
        if architecture not in IMAGE_MODELS:
            raise ConfigError(f"image model {name!r}: {IMAGE_MODELS.unknown_message(architecture)}")
        builder = IMAGE_MODELS.get(architecture)
        model_keys = set(inspect.signature(builder).parameters) - {"image_size", "weights", "seed", "device"}
        allowed = set(MODEL_KEYS) | model_keys | (set() if is_black_box(architecture) else train_allowed)
        check_params(f"image model {name!r}", entry, extra=allowed)
        check_values(f"image model {name!r}", entry,
                     {**declared_parameters(builder), **declared_parameters(train_image_model)})
    models = image_entries(section, "models")
    for name, entry in image_entries(section, "attacks").items():
        if name not in IMAGE_ATTACKS:
            raise ConfigError(f"config images attacks: {IMAGE_ATTACKS.unknown_message(name)}")
        check_params(f"image attack {name!r}", entry, extra=ATTACK_KEYS)
        check_grid(f"image attack {name!r}", entry.get("grid") or {}, entry.get("params") or {},
                   attack_parameters(name), IMAGE_ATTACKS.get(name).checks)
        for model in entry.get("models") or ():
            if model not in models:
                raise ConfigError(f"image attack {name!r}: model {model!r} is not configured under 'images: models'")

    device = section.get("device", "cpu")
    if not isinstance(device, str) or device.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"config images: device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}")
    limit = section.get("max_attack_images")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"config images: max_attack_images must be a positive integer or null, got {limit!r}")


def build_image_jobs(config: Mapping[str, Any]) -> pd.DataFrame:
    """One row per image attack job: dataset, model, attack, pid, params. White-box attacks skip black boxes."""
    columns = ["dataset", "model", "attack", "pid", "params", "grid"]
    section = images_section(config)
    if not section:
        return pd.DataFrame(columns=columns)
    validate_images_config(config)
    models = image_entries(section, "models")
    rows = []
    for attack, entry in image_entries(section, "attacks").items():
        white_box = IMAGE_ATTACKS.get(attack).white_box
        chosen = [m for m in (entry.get("models") or list(models))
                  if not (white_box and is_black_box(architecture_of(m, models[m])))]
        fixed = entry.get("params") or {}
        for pid, cell in grid_cells(entry.get("grid") or {}):
            for dataset in image_entries(section, "datasets"):
                rows.extend({"dataset": dataset, "model": model, "attack": attack, "pid": pid,
                             "params": {**fixed, **cell}, "grid": cell} for model in chosen)
    return pd.DataFrame(rows, columns=columns)


def image_dataset_settings(config: Mapping[str, Any], dataset: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(loader parameters, preparation parameters incl. the seed) of one image dataset."""
    entry = image_entries(images_section(config), "datasets")[dataset]
    prepare = {k: entry.pop(k, default) for k, default in PREPARE_KEYS.items()}
    prepare["seed"] = int(config.get("seed", 0))
    entry.setdefault("seed", prepare["seed"])
    entry["image_size"] = prepare["image_size"]  # generators draw at the final size

    allowed = signature_defaults(IMAGE_DATASETS.get(dataset))
    return {k: v for k, v in entry.items() if k in allowed}, prepare


def image_model_settings(config: Mapping[str, Any], model: str) -> dict[str, Any]:
    """{architecture, train: {...}, model: {...}, seed}: how the train stage builds one configured model."""
    entry = dict(image_entries(images_section(config), "models")[model])
    architecture = architecture_of(model, entry)
    entry.pop("architecture", None)
    train = {k: entry.pop(k) for k in list(entry) if k in TRAIN_KEYS}
    if "crop_scale" in train:
        train["crop_scale"] = tuple(train["crop_scale"])
    return {"architecture": architecture, "train": train, "model": entry, "seed": int(config.get("seed", 0)),
            "black_box": is_black_box(architecture), "device": image_device(config)}


def image_device(config: Mapping[str, Any]) -> str:
    """Torch device of every image job (`images: device`); the rules also ask the scheduler for a GPU with it."""
    return str(images_section(config).get("device", "cpu"))


def image_run_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """Section-wide settings of attack and evaluation jobs."""
    section = images_section(config)
    return {"max_attack_images": section.get("max_attack_images", 20), "seed": int(config.get("seed", 0)),
            "offset_kind": (section.get("systematic") or {}).get("offset_kind", "additive"),
            "device": image_device(config)}


# -- the code each image job runs (Snakemake reruns a job when this hash, one of its params, changes) ---------------
#: every architecture's builder and training live in this module
IMAGE_MODEL_MODULE = "vulnbench.img.models"


@cache
def image_dataset_code(dataset: str) -> str:
    """Hash of the code that loads and prepares one image dataset."""

    return code_hash(IMAGE_DATASETS.get(dataset))


@cache
def image_model_code() -> str:
    """Hash of the code that builds, trains and runs the image models."""

    return code_hash(IMAGE_MODEL_MODULE)


@cache
def image_attack_code(attack: str) -> str:
    """Hash of one image attack's code (its module and what that imports) and the model code it runs."""

    return code_hash(IMAGE_ATTACKS.get(attack).function, IMAGE_MODEL_MODULE)


@cache
def image_perturbation_code() -> str:
    """Hash of the systematic perturbations' code and the model code."""

    return code_hash("vulnbench.img.attacks.systematic", IMAGE_MODEL_MODULE)
