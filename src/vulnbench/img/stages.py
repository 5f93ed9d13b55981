"""Pipeline stages of the dermoscopy arm: pure functions (input paths, settings, output paths) → files.

The rules in `workflow/rules/img.smk` call these through 5-line adapters, as the single-cell stages.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from vulnbench.core.errors import DataError, VulnbenchError
from vulnbench.core.io import atomic_path, read_json, read_table, write_json, write_table
from vulnbench.core.jobs import JOB_FAILED, keep_freed_memory, mode_label, use_threads, versions, write_failed_result
from vulnbench.core.seeding import job_seed
from vulnbench.img.attacks import attack_images, attack_order
from vulnbench.img.attacks.systematic import apply_transform, systematic_transforms
from vulnbench.img.base import softmax
from vulnbench.img.data import get_image_dataset, prepare_images, read_manifest
from vulnbench.img.metrics import classification_metrics, clopper_pearson
from vulnbench.img.models import TorchImageModel, build_image_model, train_image_model

log = logging.getLogger(__name__)

#: what the train stage writes for an external model: no weights, only how to open it
EXTERNAL_FORMAT = "vulnbench-external-image-model/1"


# -- data ------------------------------------------------------------------------------------------------------------
def run_download_images(dataset: str, params: Mapping[str, Any], done_flag: str | Path) -> None:

    flag = Path(done_flag)
    get_image_dataset(dataset, **params).download(flag.parent)
    with atomic_path(flag) as tmp:
        Path(tmp).write_text("downloaded\n")


def run_prepare_images(dataset: str, params: Mapping[str, Any], prepare: Mapping[str, Any],
                       download_flag: str | None, manifest: str | Path) -> None:

    source = get_image_dataset(dataset, **params)
    lesions = source.load(Path(download_flag).parent if download_flag else None)
    prepare_images(lesions, Path(manifest).parent, int(prepare["image_size"]), str(prepare["resize"]),
                   float(prepare["val_fraction"]), float(prepare["test_fraction"]), int(prepare["seed"]))


def read_split(manifest: str | Path, split: str) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:

    return read_manifest(Path(manifest).parent, split)


# -- models ----------------------------------------------------------------------------------------------------------
def start_image_job(threads: int | None) -> None:
    """Before any tensor exists: keep to the job's cores (torch would take them all, oversubscribing the scheduler's
    parallel jobs) and let glibc keep freed memory (every batch and DE generation re-allocates the same activations,
    which would otherwise page-fault in again each time)."""

    use_threads(threads)
    keep_freed_memory()


def load_image_model(path: str | Path, device: str = "cpu") -> Any:
    """A trained torch model, or the external black box an `onnx` entry points at (a small JSON file)."""

    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(1)
    except OSError as error:
        raise DataError(f"model file {path}: {error.strerror}") from None
    if head == b"{":
        spec = read_json(path)
        if spec.get("format") != EXTERNAL_FORMAT:
            raise DataError(f"model file {path}: not a vulnbench model ({EXTERNAL_FORMAT})")
        return build_image_model(spec["architecture"], **spec["params"])
    return TorchImageModel.load(path, device=device)


def run_train_image_model(manifest: str | Path, model_name: str, settings: Mapping[str, Any], out_model: str | Path,
                          out_metrics: str | Path, out_predictions: str | Path, threads: int | None = None) -> None:
    """Train (or, for an external model, open) one model; score the test split (Supplementary Table 1)."""

    start_image_job(threads)
    started = time.perf_counter()
    if settings["black_box"]:
        model = build_image_model(settings["architecture"], **settings["model"])
        write_json(out_model, {"format": EXTERNAL_FORMAT, "architecture": settings["architecture"],
                               "params": _plain(dict(settings["model"]))})
        history: list[dict[str, float]] = []
    else:
        train_x, train_y, _ = read_split(manifest, "train")
        val_x, val_y, _ = read_split(manifest, "val")
        model = train_image_model(settings["architecture"], train_x, train_y, val_x, val_y,
                                  image_size=int(train_x.shape[1]), model_params=settings["model"],
                                  seed=int(settings["seed"]), threads=threads, log=log,
                                  device=settings["device"], **settings["train"])
        model.save(out_model)
        history = list(model.history)
    test_x, test_y, frame = read_split(manifest, "test")
    p_melanoma = model.predict_proba(test_x)[:, 0]
    metrics = classification_metrics(p_melanoma, test_y, seed=int(settings["seed"]))
    write_table(out_predictions, pd.DataFrame({"image": frame["image"].to_numpy(), "label": test_y,
                                               "p_melanoma": p_melanoma}))
    write_json(out_metrics, {"model": model_name, "architecture": settings["architecture"],
                             "train": _plain(settings["train"]), "model_params": _plain(settings["model"]),
                             **_plain(metrics), "history": history, "fit_s": time.perf_counter() - started})
    log.info("%s: test AUC %.3f, sensitivity %.3f, specificity %.3f", model_name, metrics["auc"],
             metrics["sensitivity"], metrics["specificity"])


def _plain(value: Any) -> Any:
    """JSON-ready copy (numpy scalars → Python, tuples → lists)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# -- attacks ---------------------------------------------------------------------------------------------------------
def attack_set(manifest: str | Path, max_images: int | None) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """The test split's melanomas, in manifest order, at most `max_images`: what every attack job attacks."""
    images, labels, frame = read_split(manifest, "test")
    keep = np.flatnonzero(labels == "melanoma")
    if max_images is not None:
        keep = keep[: int(max_images)]
    return images[keep], labels[keep], frame.iloc[keep].reset_index(drop=True)


def run_image_attack(manifest: str | Path, model_path: str | Path, attack: str, params: Mapping[str, Any],
                     settings: Mapping[str, Any], out_result: str | Path, out_images: str | Path,
                     threads: int | None = None, identity: Mapping[str, Any] | None = None) -> None:
    """Attack the correctly classified melanomas of the test split; save each adversarial image as PNG, reload it
    and re-classify it (`verified`: the saved file still fools the model).

    The attack's randomness is seeded from the config's seed and the job's `identity` (dataset, model, pid), so
    two attacks or two grid cells never share a random stream and a rerun repeats every number. An image the attack
    stops on is a record with its reason; a problem of the whole job (an unreadable model, parameters unfit for the
    attack) becomes the job's result with status "job_failed" and its reason, which the attack table shows."""

    start_image_job(threads)
    started = time.perf_counter()
    ident = identity or {}
    # the job's seed, recorded for every job (FGSM draws no random numbers and leaves it unused)
    seed = job_seed(int(settings["seed"]), "img", ident.get("dataset"), ident.get("model"), attack, ident.get("pid"))
    out_dir = Path(out_images)
    out_dir.mkdir(parents=True, exist_ok=True)
    job = {"arm": "img", **dict(ident), "attack": attack, "params": _plain(dict(params)), "seed": seed,
           "versions": versions(), "images_dir": os.path.relpath(out_dir, Path(out_result).parent)}
    try:
        model = load_image_model(model_path, settings["device"])
        images, labels, frame = attack_set(manifest, settings.get("max_attack_images"))
        records, adversarials = attack_images(model, images, labels, attack, seed=seed, **dict(params))
    except VulnbenchError as error:
        write_failed_result(out_result, job, error)
        return
    for record, adversarial, name in zip(records, adversarials, frame["image"], strict=True):
        record["image"] = str(name)
        record["verified"] = None
        if adversarial is None or record["outcome"] != "success":
            continue
        path = out_dir / f"{name}_adv.png"
        _save_png(adversarial, path)
        reloaded = _read_png(path)
        after = softmax(model.logits(reloaded[None]))[0]
        record["verified"] = bool(model.classes[int(np.argmax(after))] != record["original_class"])
        record["saved_probability"] = float(after.max())
        record["adversarial_file"] = path.name
    attacked = [r for r in records if r["outcome"] != "skipped"]
    n_success = sum(r["outcome"] == "success" for r in attacked)
    low, high = clopper_pearson(n_success, len(attacked)) if attacked else (float("nan"), float("nan"))
    summary = {"n_images": len(records), "n_attacked": len(attacked), "n_success": n_success,
               "n_verified": sum(bool(r.get("verified")) for r in attacked),
               "n_confident": sum(bool(r.get("confident_success")) for r in attacked),
               "success_rate": n_success / len(attacked) if attacked else float("nan"),
               "success_lo": low, "success_hi": high,
               "mean_forward": float(np.mean([r["n_forward"] for r in attacked])) if attacked else 0.0,
               "runtime_s": time.perf_counter() - started}
    write_json(out_result, {"job": job, "summary": _plain(summary), "records": _plain(records)})

    log.info("%s: %d of %d attacked melanomas flipped (%d still fooled after saving)", attack, n_success,
             len(attacked), summary["n_verified"])


def _save_png(image: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(tmp, format="PNG")


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as handle:
        return np.asarray(handle.convert("RGB"))


# -- systematic perturbations ----------------------------------------------------------------------------------------
def run_systematic(manifest: str | Path, model_path: str | Path, model_name: str, settings: Mapping[str, Any],
                   out_table: str | Path, threads: int | None = None) -> None:
    """Every test image under each deterministic transform: correct, false negatives, false positives, accuracy,
    AUC (Supplementary Figure 1's table), one batched model call per transform."""

    start_image_job(threads)
    model = load_image_model(model_path, settings["device"])
    images, labels, _ = read_split(manifest, "test")
    truth = labels == "melanoma"
    rows = []
    for transform in systematic_transforms(str(settings.get("offset_kind", "additive"))):
        p_melanoma = model.predict_proba(apply_transform(images, transform.fn))[:, 0]
        called = p_melanoma >= 0.5
        metrics = classification_metrics(p_melanoma, labels, seed=int(settings["seed"]), n_boot=500)
        rows.append({"model": model_name, "transform": transform.name, "channel": transform.channel,
                     "delta": transform.delta, "n": len(labels), "correct": int((called == truth).sum()),
                     "false_negatives": int((~called & truth).sum()), "false_positives": int((called & ~truth).sum()),
                     "accuracy": float((called == truth).mean()), "auc": metrics["auc"], "auc_lo": metrics["auc_lo"],
                     "auc_hi": metrics["auc_hi"], "sensitivity": metrics["sensitivity"],
                     "specificity": metrics["specificity"]})
    write_table(out_table, pd.DataFrame(rows))


# -- tables ------------------------------------------------------------------------------------------------------
def run_img_metrics_table(metrics_files: Sequence[str | Path], out_table: str | Path) -> None:
    """Supplementary Table 1: AUC (95 % CI), sensitivity and specificity at 0.5 per model."""
    keys = ["model", "architecture", "n", "auc", "auc_lo", "auc_hi", "sensitivity", "specificity", "accuracy",
            "fit_s"]
    rows = []
    for path in metrics_files:
        entry = read_json(path)
        rows.append({"dataset": Path(path).parts[-3], **{k: entry.get(k) for k in keys}})
    write_table(out_table, pd.DataFrame(rows))


def img_attack_tables(result_files: Sequence[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Supplementary Table 2: successful attacks per attack × model (one row per job), plus every image's record.

    Built from each result's `job` (its identity, grid cell and parameters), never from its path; attacks in the
    registry's order (`attack_order`). A job that stopped on bad input is one row with its `status` and `reason`."""

    rows, records = [], []
    for path in result_files:
        entry = read_json(path)
        job = entry.get("job")
        if not isinstance(job, Mapping) or not {"dataset", "model", "attack", "pid"} <= set(job):
            raise DataError(f"{path} holds no job identity (written by an older vulnbench): delete it to rerun the job")
        identity = {key: job[key] for key in ("dataset", "model", "attack", "pid")}
        if entry.get("status") == JOB_FAILED:  # stopped on bad input: one status row, no records
            rows.append({**identity, "mode": mode_label(job.get("grid") or {}), "status": JOB_FAILED,
                         "reason": entry.get("reason", "")})
            continue
        rows.append({**identity, "mode": mode_label(job.get("grid") or {}), **entry["summary"], "status": "ok",
                     "reason": ""})
        images_dir = Path(path).parent / job.get("images_dir", "images")
        records.extend({**identity, **r,
                        "params": None if r.get("params") is None else ",".join(f"{v:g}" for v in r["params"]),
                        **({"adversarial_path": (images_dir / r["adversarial_file"]).as_posix()}
                           if r.get("adversarial_file") else {})}
                       for r in entry["records"])
    position = {name: k for k, name in enumerate(attack_order([row["attack"] for row in rows]))}
    rows.sort(key=lambda row: position[row["attack"]])  # stable: jobs of one attack keep their order
    records.sort(key=lambda record: position[record["attack"]])
    return pd.DataFrame(rows), pd.DataFrame(records)


def run_img_attack_table(result_files: Sequence[str | Path], out_table: str | Path, out_records: str | Path) -> None:
    table, records = img_attack_tables(result_files)
    write_table(out_table, table)
    write_table(out_records, records)


def run_img_perturbation_table(tables: Sequence[str | Path], out_table: str | Path) -> None:
    frames = [read_table(path).assign(dataset=Path(path).parts[-2]) for path in tables]
    write_table(out_table, pd.concat(frames, ignore_index=True))
