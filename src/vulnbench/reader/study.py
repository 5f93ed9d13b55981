"""A reader study: which images dermatologists see, in which order, and the key that says what each one really is.

The images are copied under opaque names (img_0001.png, …) in a shuffled order, so neither the file name nor the
position tells a reader whether an image is clean or attacked; the manifest (manifest.csv) is the key, read by the
analysis and by the app's server but never sent to the browser. Readers' answers live in the study's answers/
folder, so a study that holds answers is never replaced: a rebuild that would change it refuses (`build_study`) or
goes into a new versioned folder beside it (`build_versioned_study`, the pipeline's build, which leaves a small
pointer file naming the current study). The answers file format is in `vulnbench.reader.answers`.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from vulnbench.core.errors import ConfigError, DataError
from vulnbench.core.io import atomic_path
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
#: the study's readers' answers, <study>/answers/<reader>.csv (the default of `serve --answers`)
ANSWERS = "answers"
#: what a study folder holds; anything else in it (above all answers) stops a rebuild from replacing it
_STUDY_ENTRIES = frozenset({MANIFEST, "images", ANSWERS})
POINTER_FORMAT = "vulnbench-reader-study-pointer/1"
MAX_NAME_LENGTH = 64
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]+")


def check_reader_name(reader: str) -> str:
    """Reader names become file names: only letters, digits, '_' and '-' (no path tricks), not too long, and not
    'pooled'."""
    if (not isinstance(reader, str) or len(reader) > MAX_NAME_LENGTH or not _SAFE_NAME.fullmatch(reader)
            or reader == POOLED):
        shown = reader[:MAX_NAME_LENGTH] + "…" if isinstance(reader, str) and len(reader) > MAX_NAME_LENGTH else reader
        raise ConfigError(f"invalid reader name {shown!r}: use up to {MAX_NAME_LENGTH} letters, digits, '_' or '-' "
                          f"(and not {POOLED!r})")
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
    #: digest of the manifest: answers files carry it, so answers never meet another study's key
    study_id: str = ""

    @property
    def answers_dir(self) -> Path:
        return self.directory / ANSWERS


def build_study(clean: Sequence[tuple[str | Path, str]], adversarial: Mapping[str, Sequence[tuple[str | Path, str]]],
                out_dir: str | Path, n_per_condition: int, seed: int, *, image_size: int | None = None) -> Path:
    """Sample N clean and N images per attack (seeded), shuffle, copy as opaque PNGs and write the manifest.

    `clean` and each `adversarial[attack]` list (image file, true label ∈ {melanoma, nevus}). With fewer images than N
    a condition uses all it has (logged). `image_size` resizes every image to a square of that many pixels, so that
    clean and attacked images cannot be told apart by their resolution; None keeps each image's size. The study
    directory appears complete or not at all (built in a temporary directory, then renamed). An existing study is
    replaced only while it holds no answers and nothing but a study: a rebuild that leaves the study unchanged keeps
    it (answers included), a changed one refuses with a one-line error that names a free folder beside it.
    """
    out_dir = Path(out_dir)
    staging = _stage_study(clean, adversarial, out_dir, n_per_condition, seed, image_size)
    try:
        if same_study(staging, out_dir):
            log.info("reader study %s is unchanged: kept as it is", out_dir)
        else:
            _install(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out_dir


def build_versioned_study(clean: Sequence[tuple[str | Path, str]],
                          adversarial: Mapping[str, Sequence[tuple[str | Path, str]]], pointer: str | Path,
                          n_per_condition: int, seed: int, *, image_size: int | None = None) -> Path:
    """The pipeline's build: the study goes into <pointer stem> (e.g. study/) or, when that folder holds answers and the
    study changed, into the next free study_v2/, study_v3/ beside it; the old one is left whole. An unchanged study is
    kept where it is. The pointer (a small JSON file, the rule's output: Snakemake deletes outputs before it reruns a
    rule, so a study folder must not be one) names the current study; `load_study` and the commands accept it."""
    pointer = Path(pointer)
    if pointer.suffix != ".json":
        raise ConfigError(f"the reader study pointer must be a .json file, got {pointer}")
    base = pointer.with_suffix("")
    staging = _stage_study(clean, adversarial, base, n_per_condition, seed, image_size)
    try:
        existing = study_versions(base)
        target = next((folder for folder in existing if same_study(staging, folder)), None)
        if target is not None:
            log.info("reader study %s is unchanged: kept as it is", target)
        else:
            target = existing[-1] if existing else base
            problem = study_folder_problem(target) if target.exists() else None
            if problem is not None:
                new = next_free_version(base)
                log.warning("reader study %s %s: the new study goes beside it into %s, the old one is left whole",
                            target, problem, new)
                target = new
            try:
                _install(staging, target)
            except DataError as refused:  # answers appeared in the meantime (a server started): go beside it
                target = next_free_version(base)
                log.warning("%s; building into %s instead", refused, target)
                _install(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    study = load_study(target)
    counts = study.manifest["condition"].value_counts().sort_index().to_dict()
    payload = {"format": POINTER_FORMAT, "study": target.name, "study_id": study.study_id,
               "n_images": len(study.images), "conditions": {str(k): int(v) for k, v in counts.items()},
               "answers": f"{target.name}/{ANSWERS}"}
    with atomic_path(pointer) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return target


def _stage_study(clean: Sequence[tuple[str | Path, str]], adversarial: Mapping[str, Sequence[tuple[str | Path, str]]],
                 out_dir: Path, n_per_condition: int, seed: int, image_size: int | None) -> Path:
    """Sample, shuffle and copy into a hidden temporary folder beside `out_dir`; the caller moves it into place."""
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
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it private; a study is shared like any result
        if image_size is None and len({s for group in sizes.values() for s in group}) > 1:
            log.warning("study images differ in size (%s); readers may tell conditions apart by resolution — "
                        "consider image_size", {c: sorted(s) for c, s in sizes.items()})
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    counts = pd.Series([c for _, _, c in chosen]).value_counts().to_dict()
    log.info("reader study with %d images (%s)", len(chosen), counts)
    return staging


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


def study_folder_problem(folder: Path) -> str | None:
    """Why `folder` must not be replaced (it holds answers, or things that are not a study), or None if it may be."""
    if folder.is_symlink():
        return "is a symbolic link"
    if not folder.is_dir():
        return "is not a folder"
    entries = sorted(os.listdir(folder))
    answers = folder / ANSWERS
    if ANSWERS in entries:
        inside = sorted(os.listdir(answers)) if answers.is_dir() and not answers.is_symlink() else [ANSWERS]
        if inside:
            shown = ", ".join(f"{ANSWERS}/{name}" for name in inside[:3]) + (", …" if len(inside) > 3 else "")
            return f"holds readers' answers ({shown})"
    other = [name for name in entries if name not in _STUDY_ENTRIES]
    if other:
        return f"holds files that are not part of a reader study ({', '.join(other[:3])})"
    return None


def same_study(new: Path, old: Path) -> bool:
    """Same manifest and byte-identical images: rebuilding would change nothing, so the old folder can stay."""
    try:
        if (new / MANIFEST).read_bytes() != (old / MANIFEST).read_bytes():
            return False
        names = sorted(os.listdir(new / "images"))
        if names != sorted(os.listdir(old / "images")):
            return False
        return all((new / "images" / n).read_bytes() == (old / "images" / n).read_bytes() for n in names)
    except OSError:
        return False


def study_versions(base: Path) -> list[Path]:
    """base, base_v2, base_v3, … as they exist, oldest first."""
    numbered = []
    for path in base.parent.glob(f"{glob.escape(base.name)}_v*"):
        match = re.fullmatch(re.escape(base.name) + r"_v(\d{1,6})", path.name)
        if match and path.is_dir():
            numbered.append((int(match.group(1)), path))
    return ([base] if base.is_dir() else []) + [path for _, path in sorted(numbered)]


def next_free_version(path: Path) -> Path:
    """The folder beside `path` where a new version of its study goes: study → study_v2, study_v2 → study_v3, …"""
    match = re.fullmatch(r"(.+)_v(\d{1,6})", path.name)
    base = path.with_name(match.group(1)) if match else path
    taken = [1] + [int(m.group(1)) for p in study_versions(base)
                   if (m := re.fullmatch(re.escape(base.name) + r"_v(\d+)", p.name))]
    candidate = max(taken) + 1
    while base.with_name(f"{base.name}_v{candidate}").exists():
        candidate += 1
    return base.with_name(f"{base.name}_v{candidate}")


def _install(staging: Path, target: Path) -> None:
    """Move a staged study into place. Directories cannot be os.replace'd over a non-empty one: the old study is moved
    aside, checked once more (nothing can be added under its old name any more) and only then deleted."""
    def refuse(problem: str) -> DataError:
        return DataError(f"study folder {target} {problem}; a rebuild would delete them — build the new study beside "
                         f"it: --out {next_free_version(target)}")

    if not target.exists() and not target.is_symlink():
        try:
            os.replace(staging, target)
        except OSError as exc:
            raise refuse(f"appeared while building ({exc.strerror})") from None
        return
    problem = study_folder_problem(target)
    if problem is not None:
        raise refuse(problem)
    old = target.with_name(f".{target.name}.old.{os.getpid()}")
    os.replace(target, old)
    problem = study_folder_problem(old)
    if problem is not None:
        try:
            os.replace(old, target)
        except OSError:
            raise DataError(f"study folder {target} {problem} and something new took its name while rebuilding: "
                            f"the old study is kept as {old}") from None
        raise refuse(problem)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def resolve_study_dir(study: str | Path) -> Path:
    """A study folder, or the pipeline's pointer file (study.json) naming the current one beside it."""
    path = Path(study)
    if path.suffix != ".json" or not path.is_file():
        return path
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read reader study pointer {path}: {type(exc).__name__}") from None
    if not isinstance(payload, dict):
        payload = {}
    name = payload.get("study")
    if payload.get("format") != POINTER_FORMAT or not isinstance(name, str) or not _SAFE_NAME.fullmatch(name):
        raise DataError(f"{path} is not a reader study pointer (format {POINTER_FORMAT})")
    return path.parent / name


def load_study(study_dir: str | Path) -> Study:
    """Read and check the manifest: unique opaque names, known truths, every image present. Accepts a pointer file."""
    directory = resolve_study_dir(study_dir)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise DataError(f"no reader study in {directory}: {MANIFEST} is missing")
    try:
        raw = manifest_path.read_bytes()
        manifest = pd.read_csv(io.BytesIO(raw), dtype={"image": str, "source": str, "condition": str, "truth": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
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
    return Study(directory=directory, manifest=manifest, images=tuple(manifest["image"]), paths=paths,
                 study_id=hashlib.sha256(raw).hexdigest()[:16])
