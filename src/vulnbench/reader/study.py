"""A reader study: which images dermatologists see, in which order, and the key that says what each one really is.

The images are copied under opaque names (img_0001.png, …) in a shuffled order, so neither the file name nor the
position tells a reader whether an image is clean or attacked; the manifest (manifest.csv) is the key, read by the
analysis and by the app's server but never sent to the browser. The reader CSV format is defined here because both
the app (writer) and the analysis (reader) depend on it.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from vulnbench.errors import ConfigError, DataError
from vulnbench.img.base import CLASSES

log = logging.getLogger(__name__)

#: condition of the unperturbed images; every other condition is the name of an attack
CLEAN = "clean"
#: condition set that pools all attacks (never a valid attack name)
ADVERSARIAL = "adversarial"
#: label of the all-readers rows of the analysis (never a valid reader name)
POOLED = "pooled"
MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("image", "source", "condition", "truth", "order")
#: one reader's answers file, <answers_dir>/<reader>.csv; answer 0 = benign, 1 = malignant (as the original app)
ANSWER_COLUMNS = ("image", "answer", "response_time_ms", "timestamp")
#: the original PyQt app's export (thelynchlab/dermoscopy-app): no times
ORIGINAL_ANSWER_COLUMNS = ("Image_name", "Diagnosis")
ANSWER_VALUES = {"benign": 0, "malignant": 1}
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]+")


def check_reader_name(reader: str) -> str:
    """Reader names become file names: only letters, digits, '_' and '-' (no path tricks), and not 'pooled'."""
    if not isinstance(reader, str) or not _SAFE_NAME.fullmatch(reader) or reader == POOLED:
        raise ConfigError(f"invalid reader name {reader!r}: use letters, digits, '_' or '-' (and not {POOLED!r})")
    return reader


def _check_attack_name(attack: str) -> str:
    if not isinstance(attack, str) or not _SAFE_NAME.fullmatch(attack) or attack in (CLEAN, ADVERSARIAL):
        raise ConfigError(f"invalid attack name {attack!r}: use letters, digits, '_' or '-' "
                          f"(and not {CLEAN!r} or {ADVERSARIAL!r})")
    return attack


@dataclass(frozen=True)
class Study:
    """A built study as the app and the analysis see it: the manifest plus where each image lies."""

    directory: Path
    manifest: pd.DataFrame
    #: opaque image names in display order
    images: tuple[str, ...]
    #: opaque name → file on disk (the only files the app ever serves)
    paths: Mapping[str, Path]


def build_study(clean: Sequence[tuple[str | Path, str]], adversarial: Mapping[str, Sequence[tuple[str | Path, str]]],
                out_dir: str | Path, n_per_condition: int, seed: int, *, image_size: int | None = None) -> Path:
    """Sample N clean and N images per attack (seeded), shuffle, copy as opaque PNGs and write the manifest.

    `clean` and each `adversarial[attack]` list (image file, true label ∈ {melanoma, nevus}). With fewer images than N
    a condition uses all it has (logged). `image_size` resizes every image to a square of that many pixels, so that
    clean and attacked images cannot be told apart by their resolution; None keeps each image's size. The study
    directory appears complete or not at all (built in a temporary directory, then renamed).
    """
    if int(n_per_condition) < 1:
        raise ConfigError(f"n_per_condition must be at least 1, got {n_per_condition}")
    if image_size is not None and int(image_size) < 8:
        raise ConfigError(f"image_size must be at least 8 pixels, got {image_size}")
    conditions = {CLEAN: _checked_items(CLEAN, clean)}
    for attack in sorted(adversarial):
        conditions[_check_attack_name(attack)] = _checked_items(attack, adversarial[attack])

    rng = np.random.default_rng(seed)
    chosen: list[tuple[Path, str, str]] = []
    for condition, items in conditions.items():
        if len(items) < n_per_condition:
            log.warning("condition %s has %d images, fewer than n_per_condition=%d: using all of them",
                        condition, len(items), n_per_condition)
        picked = rng.permutation(len(items))[: min(n_per_condition, len(items))]
        chosen.extend((items[i][0], items[i][1], condition) for i in picked)
    if not chosen:
        raise DataError("no images given for the reader study")
    order = rng.permutation(len(chosen))
    width = max(4, len(str(len(chosen))))

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        (staging / "images").mkdir()
        rows = []
        sizes: dict[str, set[tuple[int, int]]] = {}
        for position, index in enumerate(order):
            source, truth, condition = chosen[index]
            name = f"img_{position + 1:0{width}d}.png"
            size = _copy_as_png(source, staging / "images" / name, image_size)
            sizes.setdefault(condition, set()).add(size)
            rows.append({"image": name, "source": str(source), "condition": condition, "truth": truth,
                         "order": position})
        pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).to_csv(staging / MANIFEST, index=False)
        if image_size is None and len({s for group in sizes.values() for s in group}) > 1:
            log.warning("study images differ in size (%s); readers may tell conditions apart by resolution — "
                        "consider image_size", {c: sorted(s) for c, s in sizes.items()})
        _replace_directory(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    counts = pd.Series([c for _, _, c in chosen]).value_counts().to_dict()
    log.info("reader study with %d images in %s (%s)", len(chosen), out_dir, counts)
    return out_dir


def _checked_items(condition: str, items: Sequence[tuple[str | Path, str]]) -> list[tuple[Path, str]]:
    checked: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for entry in items:
        try:
            path, label = entry
        except (TypeError, ValueError):
            raise DataError(f"condition {condition}: expected (image path, label) pairs, got {entry!r}") from None
        path = Path(path)
        if label not in CLASSES:
            raise DataError(f"condition {condition}: label {label!r} of {path} is not one of {', '.join(CLASSES)}")
        if not path.is_file():
            raise DataError(f"condition {condition}: image file {path} does not exist")
        if path in seen:
            raise DataError(f"condition {condition}: image {path} is listed twice")
        seen.add(path)
        checked.append((path, label))
    return checked


def _copy_as_png(source: Path, target: Path, image_size: int | None) -> tuple[int, int]:
    """Re-encode as plain RGB PNG: also drops EXIF/text metadata that could name the attack or the lesion."""
    try:
        with Image.open(source) as image:
            rgb = image.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"cannot read image {source}: {type(exc).__name__}") from None
    if image_size is not None:
        rgb = rgb.resize((int(image_size), int(image_size)), Image.Resampling.BILINEAR)
    clean_copy = Image.fromarray(np.asarray(rgb))  # a fresh image carries no info dict (ICC, text chunks)
    clean_copy.save(target, format="PNG")
    return clean_copy.size


def _replace_directory(staging: Path, target: Path) -> None:
    """Directories cannot be os.replace'd over a non-empty one: move the old aside, move the new in, delete the old."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old.{os.getpid()}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_study(study_dir: str | Path) -> Study:
    """Read and check the manifest: unique opaque names, known truths, every image present."""
    directory = Path(study_dir)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise DataError(f"no reader study in {directory}: {MANIFEST} is missing")
    try:
        manifest = pd.read_csv(manifest_path, dtype={"image": str, "source": str, "condition": str, "truth": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot parse {manifest_path}: {type(exc).__name__}") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise DataError(f"{manifest_path} lacks columns {', '.join(missing)}")
    if manifest.empty:
        raise DataError(f"{manifest_path} lists no images")
    names = manifest["image"]
    if names.isna().any() or not names.map(lambda n: bool(re.fullmatch(r"[A-Za-z0-9_-]+\.png", n))).all():
        raise DataError(f"{manifest_path} has an image name that is not a plain PNG file name")
    if names.duplicated().any():
        raise DataError(f"{manifest_path} lists image {names[names.duplicated()].iloc[0]} twice")
    bad_truth = manifest.loc[~manifest["truth"].isin(CLASSES), "truth"]
    if not bad_truth.empty:
        raise DataError(f"{manifest_path} has truth {bad_truth.iloc[0]!r}; expected one of {', '.join(CLASSES)}")
    manifest = manifest.sort_values("order", kind="stable").reset_index(drop=True)
    paths = {name: directory / "images" / name for name in manifest["image"]}
    absent = [name for name, path in paths.items() if not path.is_file()]
    if absent:
        raise DataError(f"reader study {directory} lacks image files: {', '.join(absent[:3])}")
    return Study(directory=directory, manifest=manifest, images=tuple(manifest["image"]), paths=paths)


def read_reader_csv(path: str | Path, known_images: set[str] | frozenset[str]) -> pd.DataFrame:
    """One reader's answers, checked line by line so that an error names the file and the line.

    Accepts the app's format (image, answer, response_time_ms, timestamp) and the original app's export
    (Image_name, Diagnosis; no times). An empty file means no answers yet.
    """
    path = Path(path)
    columns = list(ANSWER_COLUMNS)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read answers file {path}: {type(exc).__name__}") from None
    if not text.strip():
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    rows: list[dict[str, object]] = []
    seen: set[str] = set()
    lines = csv.reader(text.splitlines())
    header = next(lines)
    original = tuple(header) == ORIGINAL_ANSWER_COLUMNS
    if tuple(header) != ANSWER_COLUMNS and not original:
        raise DataError(f"{path} line 1: header {','.join(header)!r}, expected {','.join(ANSWER_COLUMNS)!r}")
    width = len(header)
    for fields in lines:
        where = f"{path} line {lines.line_num}"
        if not fields:
            continue
        if len(fields) != width:
            raise DataError(f"{where}: {len(fields)} fields, expected {width}")
        image, answer = fields[0], fields[1]
        if image not in known_images:
            raise DataError(f"{where}: image {image!r} is not in the study")
        if image in seen:
            raise DataError(f"{where}: image {image} is answered twice")
        if answer not in ("0", "1"):
            raise DataError(f"{where}: answer {answer!r} is not 0 (benign) or 1 (malignant)")
        response_time, timestamp = (math.nan, None) if original else (fields[2], fields[3])
        if not original:
            try:
                response_time = float(response_time)
                stamp = datetime.fromisoformat(timestamp)
            except ValueError:
                raise DataError(f"{where}: bad response time {fields[2]!r} or timestamp {fields[3]!r}") from None
            if not math.isfinite(response_time) or response_time < 0 or stamp.tzinfo is None:
                raise DataError(f"{where}: response time must be ≥ 0 and the timestamp carry a time zone")
        seen.add(image)
        rows.append({"image": image, "answer": int(answer), "response_time_ms": response_time,
                     "timestamp": timestamp})
    return pd.DataFrame(rows, columns=columns)
