"""Image datasets of the dermoscopy arm and their preparation into a fixed-size, lesion-grouped split.

Three sources, all yielding a `LesionSet` (images of any size, label, lesion id, image id):

* `synthetic_lesions`: seeded synthetic images (vulnbench.img.synthetic), nothing to download;
* `folder`: the user's own images, one sub-folder per class;
* `isic2019`: the ISIC 2019 training set, MEL vs NV only (the closest stable proxy of the 2019 ISIC-archive dump the
  paper used); only the MEL/NV JPEGs are streamed out of the 9 GB zip.

`prepare_images` resizes once to the model's input size and writes a manifest whose split is grouped by lesion id:
the upstream code split images at random, so a second photo of a training lesion could land in the validation set.
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, overload

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from vulnbench.core.download import download, parse_checksum, verify_file
from vulnbench.core.errors import ConfigError, DataError
from vulnbench.core.io import atomic_dir, atomic_path, write_table
from vulnbench.core.params import check_params
from vulnbench.core.registry import Registry
from vulnbench.img.base import CLASSES
from vulnbench.img.synthetic import synthetic_lesions

log = logging.getLogger(__name__)

IMAGE_DATASETS: Registry[type[ImageDataset]] = Registry("image dataset")

SPLITS: tuple[str, ...] = ("train", "val", "test")
MANIFEST = "manifest.tsv"
MANIFEST_COLUMNS: tuple[str, ...] = ("image", "label", "split", "lesion_id", "path")
RESIZE_MODES: tuple[str, ...] = ("crop", "squash")
#: what PIL reads and dermoscopy archives contain
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
#: characters that would break a file name or a TSV row
_UNSAFE_NAME = re.compile(r"[/\\\t\n\r\x00]")


@dataclass
class LesionSet:
    """Images (uint8 (H, W, 3), any size, possibly read lazily) with label, lesion id and image id per image."""

    images: Sequence[np.ndarray]
    labels: np.ndarray
    lesion_ids: np.ndarray
    names: np.ndarray

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=str)
        self.lesion_ids = np.asarray(self.lesion_ids, dtype=str)
        self.names = np.asarray(self.names, dtype=str)
        n = len(self.images)
        if not (len(self.labels) == len(self.lesion_ids) == len(self.names) == n):
            raise DataError(f"lesion set: {n} images but {len(self.labels)} labels, {len(self.lesion_ids)} lesion "
                            f"ids and {len(self.names)} names")
        unknown = sorted(set(self.labels) - set(CLASSES))
        if unknown:
            raise DataError(f"lesion set: unknown label {unknown[0]!r} (expected one of {', '.join(CLASSES)})")
        for name in self.names:
            if not name or name.startswith(".") or _UNSAFE_NAME.search(name):
                raise DataError(f"lesion set: image name {name!r} cannot be used as a file name")
        duplicated = pd.Index(self.names).duplicated()
        if duplicated.any():
            raise DataError(f"lesion set: duplicated image name {self.names[duplicated][0]!r}")
        if any(not lesion for lesion in self.lesion_ids):
            raise DataError("lesion set: empty lesion id")

    def __len__(self) -> int:
        return len(self.images)


class ImageFiles(Sequence[np.ndarray]):
    """Images read from disk on access: ISIC's MEL+NV set is ~17k multi-megapixel JPEGs, too much for memory."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self.paths = [Path(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice) -> list[np.ndarray]: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(index, slice):
            return [read_rgb(p) for p in self.paths[index]]
        return read_rgb(self.paths[index])


def read_rgb(path: Path) -> np.ndarray:
    """uint8 (H, W, 3), EXIF orientation applied (phone photos), or a DataError naming the file."""
    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"image file missing: {path}") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None


def check_image_file(path: Path) -> None:
    """Cheap readability check at load time (header and structure), so a stray file fails early by name."""
    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None


class ImageDataset:
    """Base class; parameters are the constructor's keyword arguments (checked against the config)."""

    name: ClassVar[str]

    @property
    def needs_download(self) -> bool:
        return False

    def download(self, dest_dir: Path) -> None:
        """Fetch what `load` needs into `dest_dir`; nothing by default."""

    def load(self, dest_dir: Path | None = None) -> LesionSet:
        raise NotImplementedError


def get_image_dataset(name: str, **params: Any) -> ImageDataset:
    """The configured dataset; unknown names or parameters fail with one line."""

    cls = IMAGE_DATASETS.get(name)
    check_params(f"image dataset {name!r}", params, cls)
    return cls(**params)


@IMAGE_DATASETS.register("synthetic_lesions")
class SyntheticLesions(ImageDataset):
    """Seeded synthetic dermoscopy-like images (clearly not ISIC); see vulnbench.img.synthetic."""

    name = "synthetic_lesions"

    def __init__(self, n_images: int = 240, seed: int = 0, melanoma_fraction: float = 0.4, difficulty: float = 0.35,
                 image_size: int = 299) -> None:
        """Keyword parameters, as a config sets them.

        Args:
            n_images: number of synthetic images (about 1/5 are second photos of a lesion)
            seed: seed of the synthetic images; defaults to the top-level seed
            melanoma_fraction: share of melanoma-like images
            difficulty: class overlap: the best achievable accuracy is 1 − difficulty/2 (0.825 at 0.35)
            image_size: side in px the images are drawn at (the dataset's image_size key)
        """
        self.n_images = n_images
        self.seed = seed
        self.melanoma_fraction = melanoma_fraction
        self.difficulty = difficulty
        self.image_size = image_size

    def load(self, dest_dir: Path | None = None) -> LesionSet:

        images, labels, lesion_ids = synthetic_lesions(self.n_images, self.image_size, self.seed,
                                                       self.melanoma_fraction, self.difficulty)
        names = np.array([f"synthetic_lesions_{i:05d}" for i in range(len(images))])
        return LesionSet(list(images), labels, lesion_ids, names)


#: accepted class-folder names → label
CLASS_FOLDERS = {"melanoma": "melanoma", "nevus": "nevus", "naevus": "nevus"}
LESIONS_FILE = "lesions.csv"


@IMAGE_DATASETS.register("folder")
class FolderDataset(ImageDataset):
    """A user folder with melanoma/ and nevus/ (or naevus/) sub-folders of images.

    An optional `lesions.csv` (columns image, lesion_id) groups several photos of one lesion; without it, or for an
    image it does not list, each image is its own lesion. Hidden files (.DS_Store) are skipped.
    """

    name = "folder"

    def __init__(self, path: str | None = None) -> None:
        """Keyword parameters, as a config sets them.

        Args:
            path: folder with melanoma/ and nevus/ (or naevus/) sub-folders; optional lesions.csv (required)
        """
        self.path = path

    def load(self, dest_dir: Path | None = None) -> LesionSet:
        if not self.path or not Path(self.path).is_dir():
            raise DataError(f"image folder not found: {self.path!r} (set path to a folder with melanoma/ and nevus/)")
        root = Path(self.path)
        files: list[Path] = []
        labels: list[str] = []
        seen_labels: dict[str, Path] = {}
        for entry in sorted(root.iterdir()):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            label = CLASS_FOLDERS.get(entry.name)
            if label is None:
                raise DataError(f"{entry}: unknown class folder {entry.name!r}; expected melanoma/ and nevus/ "
                                "(or naevus/)")
            if label in seen_labels:
                raise DataError(f"{root}: both {seen_labels[label].name}/ and {entry.name}/ hold naevi; use one")
            seen_labels[label] = entry
            for file in sorted(entry.iterdir()):
                if file.name.startswith("."):
                    continue
                if file.is_dir():
                    raise DataError(f"{file}: nested folder inside a class folder; put images directly in "
                                    f"{entry.name}/")
                check_image_file(file)
                files.append(file)
                labels.append(label)
        if not seen_labels:
            raise DataError(f"{root}: no melanoma/ or nevus/ sub-folder")
        for label in CLASSES:  # a model of one class cannot be trained or scored
            if label not in seen_labels:
                raise DataError(f"{root}: no {label}/ sub-folder; both melanoma/ and nevus/ (or naevus/) are needed")
            if label not in labels:
                raise DataError(f"{seen_labels[label]}: class folder holds no images")
        names = np.array([f.stem for f in files])
        duplicated = pd.Index(names).duplicated()
        if duplicated.any():
            raise DataError(f"{root}: two images are both named {names[duplicated][0]!r} (file names without "
                            "extension must be unique)")
        lesion_ids = self._lesion_ids(root, names)
        log.info("folder %s: %d images (%s)", root, len(files),
                 ", ".join(f"{c} {labels.count(c)}" for c in CLASSES))
        return LesionSet(ImageFiles(files), np.array(labels), lesion_ids, names)

    @staticmethod
    def _lesion_ids(root: Path, names: np.ndarray) -> np.ndarray:
        path = root / LESIONS_FILE
        if not path.exists():
            return names.copy()
        table = _read_csv(path, required=("image", "lesion_id"))
        keys = table["image"].map(_strip_image_suffix)
        if keys.duplicated().any():
            raise DataError(f"{path}: image {keys[keys.duplicated()].iloc[0]!r} is listed twice")
        mapping = dict(zip(keys, table["lesion_id"].str.strip(), strict=True))
        unknown = sorted(set(mapping) - set(names))
        if unknown:
            log.warning("%s lists %d image(s) not in the folder, e.g. %s", path, len(unknown), unknown[0])
        return np.array([mapping.get(n) or n for n in names])


def _strip_image_suffix(name: str) -> str:
    name = str(name).strip()
    suffix = PurePosixPath(name).suffix
    return name[: -len(suffix)] if suffix.lower() in IMAGE_SUFFIXES else name


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """All-string CSV with the required columns, or a one-line DataError naming the file and the column."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot parse {path}: {' '.join(str(exc).split())}") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column {missing[0]!r} (columns: {', '.join(table.columns)})")
    return table


ISIC2019_BASE_URL = "https://isic-challenge-data.s3.amazonaws.com/2019/"
ISIC2019_INPUT = "ISIC_2019_Training_Input.zip"
ISIC2019_GROUNDTRUTH = "ISIC_2019_Training_GroundTruth.csv"
ISIC2019_METADATA = "ISIC_2019_Training_Metadata.csv"
#: where the MEL/NV images go, beside the zip (or in dest_dir when `root` is read-only shared storage)
ISIC2019_EXTRACTED = "ISIC_2019_Training_Input_MEL_NV"
#: ground-truth columns we read: one-hot floats; the other diagnoses (BCC, AK, …) are dropped
ISIC2019_LABEL_COLUMNS = {"MEL": "melanoma", "NV": "nevus"}
_SAFE_IMAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@IMAGE_DATASETS.register("isic2019")
class Isic2019(ImageDataset):
    """ISIC 2019 training set, melanoma (MEL) vs naevus (NV): 4,522 + 12,875 images, lesion ids from the metadata.

    The real digests are not known offline, so checksums default to None: downloads are then unverified and their
    sha256 is logged (pin it in the config after the first download). With `root` (a folder already holding the
    three files), nothing is downloaded. `max_images` keeps a seeded class-stratified subsample.
    """

    name = "isic2019"

    def __init__(self, input_url: str = ISIC2019_BASE_URL + ISIC2019_INPUT,
                 groundtruth_url: str = ISIC2019_BASE_URL + ISIC2019_GROUNDTRUTH,
                 metadata_url: str = ISIC2019_BASE_URL + ISIC2019_METADATA,
                 input_checksum: str | None = None, groundtruth_checksum: str | None = None,
                 metadata_checksum: str | None = None, retries: int = 3, timeout: float = 60.0,
                 max_images: int | None = None, seed: int = 0, root: str | None = None) -> None:
        """Keyword parameters, as a config sets them.

        Args:
            input_url: URL of ISIC_2019_Training_Input.zip (9 GB; only the MEL and NV images are extracted)
            groundtruth_url: URL of ISIC_2019_Training_GroundTruth.csv (diagnosis labels)
            metadata_url: URL of ISIC_2019_Training_Metadata.csv (lesion ids for the grouped split)
            input_checksum: digest of the image zip ('sha256:…' or 'md5:…'); null: not verified, its sha256 logged
            groundtruth_checksum: digest of the ground-truth CSV; null: not verified, its sha256 logged
            metadata_checksum: digest of the metadata CSV; null: not verified, its sha256 logged
            retries: download attempts in all, per file
            timeout: seconds to wait for the next byte of a download (also the stall rule's window)
            max_images: keep a seeded class-stratified subsample of this many images (at least 2); null: all
            seed: seed of the max_images subsample; defaults to the top-level seed
            root: folder already holding the three ISIC 2019 files: nothing is downloaded
        """
        self.input_url = input_url
        self.groundtruth_url = groundtruth_url
        self.metadata_url = metadata_url
        self.input_checksum = input_checksum
        self.groundtruth_checksum = groundtruth_checksum
        self.metadata_checksum = metadata_checksum
        self.retries = retries
        self.timeout = timeout
        if max_images is not None and (int(max_images) != max_images or max_images < 2):
            raise ConfigError(f"isic2019: max_images must be an integer ≥ 2 or null, got {max_images!r}")
        self.max_images = max_images
        self.seed = seed
        self.root = root

    @property
    def needs_download(self) -> bool:
        return self.root is None

    def files(self) -> list[tuple[str, str, str | None]]:
        """(url, file name, checksum): small CSVs first, so a bad one fails before 9 GB are fetched."""
        return [(self.groundtruth_url, ISIC2019_GROUNDTRUTH, self.groundtruth_checksum),
                (self.metadata_url, ISIC2019_METADATA, self.metadata_checksum),
                (self.input_url, ISIC2019_INPUT, self.input_checksum)]

    def download(self, dest_dir: Path) -> None:
        """Fetch the three files into `dest_dir`; files already there (placed by hand) are checked, never replaced."""

        if self.root is not None:
            log.info("isic2019: using the files in %s, nothing to download", self.root)
            return
        for _url, _file_name, checksum in self.files():
            parse_checksum(checksum)  # a typo in the zip's checksum fails now, not after the CSVs are fetched
        for url, file_name, checksum in self.files():
            download(url, Path(dest_dir) / file_name, checksum=checksum, retries=self.retries, timeout=self.timeout)

    def load(self, dest_dir: Path | None = None) -> LesionSet:

        folder = Path(self.root) if self.root is not None else dest_dir
        if folder is None:
            raise DataError("isic2019: no data folder; set root or run the download rule first")
        folder = Path(folder)
        for _url, file_name, checksum in self.files():
            path = folder / file_name
            if not path.is_file():
                raise DataError(f"isic2019: {path} missing; run the download rule or set root to a folder with "
                                f"{ISIC2019_INPUT}, {ISIC2019_GROUNDTRUTH} and {ISIC2019_METADATA}")
            if self.root is not None:
                verify_file(path, checksum, hint="files under root are never changed by vulnbench: replace the file "
                                                 "or fix its checksum in the config")
        table = read_isic2019_groundtruth(folder / ISIC2019_GROUNDTRUTH)
        table["lesion_id"] = read_isic2019_lesion_ids(folder / ISIC2019_METADATA, table["image"])
        if self.max_images is not None and self.max_images < len(table):
            table = stratified_subsample(table, self.max_images, self.seed)
        out_dir = Path(dest_dir if dest_dir is not None else folder) / ISIC2019_EXTRACTED
        paths = extract_zip_images(folder / ISIC2019_INPUT, list(table["image"]), out_dir)
        log.info("isic2019: %d images (%s)", len(table),
                 ", ".join(f"{c} {int((table['label'] == c).sum())}" for c in CLASSES))
        return LesionSet(ImageFiles(paths), table["label"].to_numpy(), table["lesion_id"].to_numpy(),
                         table["image"].to_numpy())


def read_isic2019_groundtruth(path: Path) -> pd.DataFrame:
    """Columns image, label for the MEL and NV rows of `ISIC_2019_Training_GroundTruth.csv` (one-hot floats)."""
    table = _read_csv(path, required=("image", *ISIC2019_LABEL_COLUMNS))
    onehot = {}
    for column in ISIC2019_LABEL_COLUMNS:
        values = pd.to_numeric(table[column], errors="coerce")
        bad = ~values.isin([0.0, 1.0])
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}: column {column} of image {table['image'].iloc[row]!r} is "
                            f"{table[column].iloc[row]!r}, expected 0.0 or 1.0")
        onehot[column] = values.to_numpy() == 1.0
    both = onehot["MEL"] & onehot["NV"]
    if both.any():
        raise DataError(f"{path}: image {table['image'].iloc[int(np.flatnonzero(both)[0])]!r} is both MEL and NV")
    keep = onehot["MEL"] | onehot["NV"]
    images = table["image"].str.strip()[keep]
    unsafe = images[~images.map(lambda name: bool(_SAFE_IMAGE_ID.match(name)))]
    if len(unsafe):
        raise DataError(f"{path}: image id {unsafe.iloc[0]!r} is not a plain ISIC image name")
    if images.duplicated().any():
        raise DataError(f"{path}: image {images[images.duplicated()].iloc[0]!r} is listed twice")
    if not len(images):
        raise DataError(f"{path}: no MEL or NV image")
    labels = np.where(onehot["MEL"][keep], ISIC2019_LABEL_COLUMNS["MEL"], ISIC2019_LABEL_COLUMNS["NV"])
    log.info("%s: %d MEL/NV rows kept of %d", path, len(images), len(table))
    return pd.DataFrame({"image": images.to_numpy(), "label": labels})


def read_isic2019_lesion_ids(path: Path, images: pd.Series) -> np.ndarray:
    """Lesion id per image from the metadata CSV; an empty or absent id makes the image its own lesion."""
    table = _read_csv(path, required=("image", "lesion_id"))
    mapping = dict(zip(table["image"].str.strip(), table["lesion_id"].str.strip(), strict=True))
    lesion_ids = np.array([mapping.get(image) or image for image in images])
    n_own = int(sum(not mapping.get(image) for image in images))
    if n_own:
        log.info("%s: %d of %d images have no lesion_id and count as their own lesion", path, n_own, len(images))
    return lesion_ids


def stratified_subsample(table: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """`n` rows keeping the class proportions (at least one per class), chosen with `seed`, in original order."""
    rng = np.random.default_rng(seed)
    counts = table["label"].value_counts().reindex(list(CLASSES), fill_value=0)
    quota = np.maximum(np.round(counts.to_numpy() * n / len(table)).astype(int), (counts.to_numpy() > 0).astype(int))
    while quota.sum() > n:  # rounding up both classes can overshoot by one
        quota[int(np.argmax(quota))] -= 1
    chosen = [rng.choice(np.flatnonzero(table["label"].to_numpy() == c), size=int(q), replace=False)
              for c, q in zip(CLASSES, quota, strict=True) if q]
    return table.iloc[np.sort(np.concatenate(chosen))].reset_index(drop=True)


def extract_zip_images(archive: Path, image_ids: list[str], out_dir: Path) -> list[Path]:
    """Stream just the wanted images out of the zip (member by member, never the whole archive); returns their paths.

    Each file is written atomically, and a file already extracted with the right size is kept, so an interrupted
    extraction resumes. Output names come from the image ids, never from member paths (no zip-slip).
    """
    wanted = set(image_ids)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(archive) as bundle:
            members: dict[str, zipfile.ZipInfo] = {}
            for info in bundle.infolist():
                member = PurePosixPath(info.filename)
                if info.is_dir() or "__MACOSX" in member.parts or member.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                if member.stem in wanted:
                    if member.stem in members:
                        raise DataError(f"{archive}: image {member.stem!r} appears twice")
                    members[member.stem] = info
            missing = [i for i in image_ids if i not in members]
            if missing:
                raise DataError(f"{archive}: {len(missing)} MEL/NV image(s) of the ground truth are not in the zip, "
                                f"e.g. {missing[0]!r}")
            paths = []
            for image_id in tqdm(image_ids, desc="extracting", unit="image", file=sys.stderr, leave=False,
                                 disable=None):
                info = members[image_id]
                target = out_dir / f"{image_id}{PurePosixPath(info.filename).suffix.lower()}"
                if not (target.is_file() and target.stat().st_size == info.file_size):
                    with atomic_path(target) as tmp, bundle.open(info) as source, open(tmp, "wb") as sink:
                        shutil.copyfileobj(source, sink, 1 << 20)
                paths.append(target)
    except FileNotFoundError:
        raise DataError(f"zip not found: {archive}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise DataError(f"cannot read {archive}: corrupt or truncated zip ({exc})") from None
    log.info("extracted %d images from %s into %s", len(paths), archive, out_dir)
    return paths


def resize_image(image: np.ndarray, size: int, mode: str = "crop") -> np.ndarray:
    """uint8 (H, W, 3) → (size, size, 3), bilinear via PIL as torchvision's PIL path does.

    crop: the shorter side becomes `size` (aspect kept), then a centre crop (upstream evaluation);
    squash: direct resize to size×size, aspect not kept (upstream attack loader, parity mode).
    """
    picture = Image.fromarray(image)
    if mode == "squash":
        return np.asarray(picture.resize((size, size), Image.Resampling.BILINEAR))
    if mode != "crop":
        raise ConfigError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")
    width, height = picture.size
    if width <= height:
        new_width, new_height = size, int(size * height / width)
    else:
        new_width, new_height = int(size * width / height), size
    picture = picture.resize((new_width, new_height), Image.Resampling.BILINEAR)
    left, top = round((new_width - size) / 2.0), round((new_height - size) / 2.0)
    return np.asarray(picture.crop((left, top, left + size, top + size)))


def grouped_split(labels: np.ndarray, lesion_ids: np.ndarray, val_fraction: float = 0.15,
                  test_fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """train/val/test per image: whole lesions per split, class proportions kept per split, seeded.

    Per class, lesions are shuffled and laid end to end by image count; a lesion goes to the split in which its
    midpoint falls (test first, then val, then train). A split left without any lesion of a class borrows the
    smallest one from the split with the most, when that one has lesions to spare.
    """
    _check_fractions(val_fraction, test_fraction)
    labels, lesion_ids = np.asarray(labels, dtype=str), np.asarray(lesion_ids, dtype=str)
    per_lesion = pd.DataFrame({"lesion": lesion_ids, "label": labels}).groupby("lesion", sort=True)["label"]
    mixed = per_lesion.nunique() > 1
    if mixed.any():
        raise DataError(f"lesion {mixed.index[mixed][0]!r} has images of both classes")
    lesion_label, lesion_size = per_lesion.first(), per_lesion.size()
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for cls in CLASSES:
        lesions = lesion_label.index[lesion_label == cls].to_numpy()
        if not len(lesions):
            continue
        sizes = lesion_size.loc[lesions].to_numpy()
        order = rng.permutation(len(lesions))
        total = sizes.sum()
        midpoints = np.cumsum(sizes[order]) - sizes[order] / 2.0
        chosen = np.where(midpoints < test_fraction * total, "test",
                          np.where(midpoints < (test_fraction + val_fraction) * total, "val", "train"))
        groups = {s: [int(i) for i, c in zip(order, chosen, strict=True) if c == s] for s in SPLITS}
        for split in SPLITS:
            if not groups[split]:
                donor = max(SPLITS, key=lambda s: len(groups[s]))
                if len(groups[donor]) > 1:
                    smallest = min(groups[donor], key=lambda i: (sizes[i], lesions[i]))
                    groups[donor].remove(smallest)
                    groups[split].append(smallest)
        assignment.update({str(lesions[i]): s for s in SPLITS for i in groups[s]})
    split = np.array([assignment[lesion] for lesion in lesion_ids])
    for name in SPLITS:
        for cls in CLASSES:
            if not np.any((split == name) & (labels == cls)):
                n_lesions = int((lesion_label == cls).sum())
                raise DataError(f"split {name!r} has no {cls} image ({n_lesions} {cls} lesion(s) in all); "
                                "use more images or other split fractions")
    return split


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(f"val_fraction and test_fraction must be in (0, 1) with a sum below 1, got "
                          f"{val_fraction} and {test_fraction}")


def prepare_images(lesions: LesionSet, out_dir: Path, image_size: int, resize: str = "crop",
                   val_fraction: float = 0.15, test_fraction: float = 0.2, seed: int = 0) -> pd.DataFrame:
    """Write `out_dir/images/<name>.png` (image_size²) and `out_dir/manifest.tsv`; returns the manifest.

    Everything is written into a temporary folder beside `out_dir` that replaces it only when complete, so a
    corrupt image halfway through leaves the previous output (or nothing) in place.
    """
    if resize not in RESIZE_MODES:
        raise ConfigError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
    if int(image_size) != image_size or image_size < 8:
        raise ConfigError(f"image_size must be an integer ≥ 8, got {image_size!r}")
    if not len(lesions):
        raise DataError("no images to prepare")
    split = grouped_split(lesions.labels, lesions.lesion_ids, val_fraction, test_fraction, seed)
    frame = pd.DataFrame({"image": lesions.names, "label": lesions.labels, "split": split,
                          "lesion_id": lesions.lesion_ids, "path": [f"images/{n}.png" for n in lesions.names]})

    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        for index in tqdm(range(len(lesions)), desc="resizing", unit="image", file=sys.stderr, leave=False,
                          disable=None):
            image = np.asarray(lesions.images[index])
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise DataError(f"image {lesions.names[index]!r}: expected uint8 (H, W, 3), got {image.dtype} "
                                f"{image.shape}")
            Image.fromarray(resize_image(image, int(image_size), resize)).save(tmp / frame["path"].iloc[index])
        write_table(tmp / MANIFEST, frame)
    counts = frame.groupby(["split", "label"]).size()
    log.info("prepared %d images (%d px, %s) in %s: %s", len(frame), image_size, resize, out_dir,
             ", ".join(f"{s}/{c} {n}" for (s, c), n in counts.items()))
    return frame


def read_manifest(out_dir: Path, split: str | None = None,
                  image_size: int | None = None) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """(images uint8 (n, S, S, 3), labels, manifest rows) of one split or all; a bad manifest fails in one line.

    S is `image_size` when given, else the size of the first image; every image must be S×S RGB.
    """
    out_dir = Path(out_dir)
    path = out_dir / MANIFEST
    if split is not None and split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not path.is_file():
        raise DataError(f"manifest not found: {path}; run the image preparation first")
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot parse {path}: {' '.join(str(exc).split())}") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column {missing[0]!r}")
    for column, allowed in (("label", CLASSES), ("split", SPLITS)):
        bad = ~frame[column].isin(allowed)
        if bad.any():
            row = frame[bad].iloc[0]
            raise DataError(f"{path}: unknown {column} {row[column]!r} for image {row['image']!r} (expected one of "
                            f"{', '.join(allowed)})")
    if split is not None:
        frame = frame[frame["split"] == split].reset_index(drop=True)
        if frame.empty:
            raise DataError(f"{path}: no image in split {split!r}")
    images = []
    expected = image_size
    for image_name, relative in zip(frame["image"], frame["path"], strict=True):
        relative_path = PurePosixPath(relative)
        if relative_path.is_absolute() or ".." in relative_path.parts or not relative:
            raise DataError(f"{path}: path {relative!r} of image {image_name!r} must stay inside {out_dir}")
        file = out_dir / relative_path
        if not file.is_file():
            raise DataError(f"{path}: image file missing: {file}")
        image = read_rgb(file)
        expected = expected if expected is not None else image.shape[0]
        if image.shape != (expected, expected, 3):
            raise DataError(f"{file}: size {image.shape[1]}×{image.shape[0]}, expected {expected}×{expected}")
        images.append(image)
    return np.stack(images), frame["label"].to_numpy(dtype=str), frame
