"""Dermoscopy data layer: the synthetic_lesions generator, folder and ISIC 2019 datasets, grouped split, manifest.

ISIC downloads run against a real HTTP server on 127.0.0.1 serving small files in ISIC's own formats (no mocks).
"""

from __future__ import annotations

import functools
import hashlib
import io
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupShuffleSplit

from vulnbench.core.errors import ConfigError, DataError, DownloadError
from vulnbench.img.data import (
    ISIC2019_EXTRACTED,
    ISIC2019_GROUNDTRUTH,
    ISIC2019_INPUT,
    ISIC2019_METADATA,
    LesionSet,
    get_image_dataset,
    grouped_split,
    prepare_images,
    read_manifest,
    resize_image,
)
from vulnbench.img.synthetic import generate_synthetic_lesions, synthetic_lesions

# ---------------------------------------------------------------- generator


def test_same_seed_gives_identical_bytes_and_other_seed_differs() -> None:
    first = synthetic_lesions(12, 40, seed=3)
    second = synthetic_lesions(12, 40, seed=3)
    other = synthetic_lesions(12, 40, seed=4)
    assert first[0].shape == (12, 40, 40, 3) and first[0].dtype == np.uint8
    assert first[0].tobytes() == second[0].tobytes()
    assert list(first[1]) == list(second[1]) and list(first[2]) == list(second[2])
    assert first[0].tobytes() != other[0].tobytes()
    assert set(first[1]) <= {"melanoma", "nevus"}


@pytest.mark.parametrize(("n_images", "fraction", "n_melanoma"), [(100, 0.4, 40), (50, 0.5, 25), (7, 0.0, 0)])
def test_class_balance_follows_melanoma_fraction(n_images: int, fraction: float, n_melanoma: int) -> None:
    _, labels, _ = synthetic_lesions(n_images, 16, seed=0, melanoma_fraction=fraction)
    assert int((labels == "melanoma").sum()) == n_melanoma
    assert int((labels == "nevus").sum()) == n_images - n_melanoma


def test_some_lesions_are_photographed_twice_with_one_label() -> None:
    batch = generate_synthetic_lesions(100, 48, seed=1)
    ids, counts = np.unique(batch.lesion_ids, return_counts=True)
    assert counts.max() == 2
    assert int((counts == 2).sum()) == int(40 * 0.2) + int(60 * 0.2)  # a fifth of each class is a second photo
    for lesion in ids[counts == 2]:
        photos = np.flatnonzero(batch.lesion_ids == lesion)
        assert batch.labels[photos[0]] == batch.labels[photos[1]]
        assert batch.appearance[photos[0]] == batch.appearance[photos[1]]  # same lesion ...
        assert not np.array_equal(batch.images[photos[0]], batch.images[photos[1]])  # ... different photo
        # rotation and position change, the lesion's size does not (±8 % zoom per photo → area within ~40 %)
        areas = batch.masks[photos].sum(axis=(1, 2))
        assert 0.6 < areas[0] / areas[1] < 1.67


def test_lesions_are_darker_than_skin_and_melanomas_more_varied_in_colour() -> None:
    batch = generate_synthetic_lesions(120, 64, seed=2)
    luminance = batch.images.astype(float) @ np.array([0.299, 0.587, 0.114])
    inside = np.array([lum[mask].mean() for lum, mask in zip(luminance, batch.masks, strict=True)])
    outside = np.array([lum[~mask].mean() for lum, mask in zip(luminance, batch.masks, strict=True)])
    assert np.all(inside < outside) and np.mean(outside - inside) > 40
    coverage = batch.masks.mean(axis=(1, 2))
    assert coverage.min() > 0.02 and coverage.max() < 0.7

    def chromaticity_spread(image: np.ndarray, mask: np.ndarray) -> float:
        """Spread of colour (not brightness) inside the lesion: several colours → large."""
        pixels = image[mask].astype(float) + 1.0
        return float((pixels / pixels.sum(axis=1, keepdims=True)).std(axis=0).sum())

    colour_spread = np.array([chromaticity_spread(img, mask)
                              for img, mask in zip(batch.images, batch.masks, strict=True)])
    melanoma = batch.labels == "melanoma"
    assert colour_spread[melanoma].mean() > 1.25 * colour_spread[~melanoma].mean()
    # hard, not trivial: some naevi are more varied than the average melanoma
    assert np.any(colour_spread[~melanoma] > colour_spread[melanoma].mean())


def test_difficulty_controls_how_far_the_classes_overlap() -> None:
    def gap(difficulty: float) -> float:
        batch = generate_synthetic_lesions(200, 16, seed=5, difficulty=difficulty)
        melanoma = batch.labels == "melanoma"
        return batch.appearance[melanoma].mean() - batch.appearance[~melanoma].mean()

    assert gap(0.0) > 0.9
    assert 0.3 < gap(0.35) < 0.8
    assert abs(gap(1.0)) < 0.1


def test_colour_histograms_learn_something_but_not_everything() -> None:
    images, labels, lesion_ids = synthetic_lesions(500, 40, seed=0, melanoma_fraction=0.5)
    levels = (images.astype(np.int64) * 4) // 256
    codes = (levels[..., 0] * 4 + levels[..., 1]) * 4 + levels[..., 2]
    features = np.sqrt(np.stack([np.bincount(c.ravel(), minlength=64) / c.size for c in codes]))
    y = (labels == "melanoma").astype(int)
    train, test = next(GroupShuffleSplit(1, test_size=0.4, random_state=0).split(features, y, lesion_ids))
    accuracy = (LogisticRegression(C=10, max_iter=5000).fit(features[train], y[train]).predict(features[test])
                == y[test]).mean()
    assert 0.6 <= accuracy <= 0.98


@pytest.mark.parametrize("params", [{"n_images": 0}, {"image_size": 8}, {"difficulty": 1.5},
                                    {"melanoma_fraction": -0.1}])
def test_generator_rejects_bad_parameters(params: dict) -> None:
    arguments = {"n_images": 4, "image_size": 32, "seed": 0} | params
    with pytest.raises(ConfigError, match="synthetic_lesions"):
        synthetic_lesions(**arguments)


# ---------------------------------------------------------------- resize, split, manifest


def test_resize_matches_torchvision_crop_and_squash() -> None:
    import torch
    from torchvision import transforms

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (50, 90, 3), dtype=np.uint8)
    picture = Image.fromarray(image)
    crop = transforms.Compose([transforms.Resize(32), transforms.CenterCrop(32)])(picture)
    squash = transforms.Resize((32, 32))(picture)
    assert np.array_equal(resize_image(image, 32, "crop"), np.asarray(crop))
    assert np.array_equal(resize_image(image, 32, "squash"), np.asarray(squash))
    assert torch.__version__  # the torchvision reference really ran
    tall = np.zeros((90, 40, 3), np.uint8)
    tall[:20] = 255  # a white band at the top: cut away by the centre crop, kept (squashed) by squash
    assert resize_image(tall, 20, "crop").max() == 0
    assert resize_image(tall, 20, "squash")[:3].min() == 255
    with pytest.raises(ConfigError, match="resize"):
        resize_image(tall, 20, "stretch")


def test_grouped_split_keeps_lesions_whole_stratified_and_seeded() -> None:
    _, labels, lesion_ids = synthetic_lesions(300, 16, seed=7)
    split = grouped_split(labels, lesion_ids, val_fraction=0.15, test_fraction=0.2, seed=1)
    frame = pd.DataFrame({"split": split, "lesion": lesion_ids, "label": labels})
    assert (frame.groupby("lesion")["split"].nunique() == 1).all()
    for name, expected in (("train", 0.65), ("val", 0.15), ("test", 0.2)):
        for cls in ("melanoma", "nevus"):
            share = ((split == name) & (labels == cls)).sum() / (labels == cls).sum()
            assert abs(share - expected) < 0.04, (name, cls, share)
    assert np.array_equal(split, grouped_split(labels, lesion_ids, seed=1))
    assert not np.array_equal(split, grouped_split(labels, lesion_ids, seed=2))
    # stable: the split of an image does not depend on the order images are listed in
    order = np.random.default_rng(0).permutation(len(labels))
    assert np.array_equal(grouped_split(labels[order], lesion_ids[order], seed=1), split[order])


def test_grouped_split_fails_when_a_split_would_miss_a_class() -> None:
    labels = np.array(["melanoma", "melanoma", "nevus", "nevus", "nevus", "nevus"])
    with pytest.raises(DataError, match=r"split '\w+' has no melanoma image .*more images"):
        grouped_split(labels, np.array(["a", "b", "c", "d", "e", "f"]))
    with pytest.raises(DataError, match="lesion 'x' has images of both classes"):
        grouped_split(np.array(["melanoma", "nevus"]), np.array(["x", "x"]))
    with pytest.raises(ConfigError, match="val_fraction"):
        grouped_split(labels, labels, val_fraction=0.5, test_fraction=0.6)


def test_prepare_images_writes_pngs_and_a_manifest_that_reads_back(tmp_path: Path) -> None:
    lesions = get_image_dataset("synthetic_lesions", n_images=60, image_size=48, seed=3).load()
    out = tmp_path / "prepared"
    frame = prepare_images(lesions, out, image_size=32, seed=0)
    assert list(frame.columns) == ["image", "label", "split", "lesion_id", "path"]
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(f"{n}.png" for n in lesions.names)
    on_disk = pd.read_csv(out / "manifest.tsv", sep="\t", dtype=str)
    assert on_disk.equals(frame.astype(str))
    images, labels, rows = read_manifest(out)
    assert images.shape == (60, 32, 32, 3) and images.dtype == np.uint8
    index = list(lesions.names).index(rows["image"].iloc[0])
    assert np.array_equal(images[0], resize_image(lesions.images[index], 32, "crop"))
    assert list(labels) == list(lesions.labels)
    val_images, val_labels, val_rows = read_manifest(out, split="val")
    assert len(val_images) == len(val_rows) == (frame["split"] == "val").sum() > 0
    assert set(val_labels) == {"melanoma", "nevus"}
    assert set(val_rows["lesion_id"]).isdisjoint(frame.loc[frame["split"] == "train", "lesion_id"])
    with pytest.raises(ConfigError, match="split"):
        read_manifest(out, split="validation")


def test_read_manifest_names_the_problem(tmp_path: Path) -> None:
    lesions = get_image_dataset("synthetic_lesions", n_images=30, image_size=32, seed=0).load()
    out = tmp_path / "prepared"
    frame = prepare_images(lesions, out, image_size=24)
    manifest = out / "manifest.tsv"
    with pytest.raises(DataError, match="size 24×24, expected 32×32"):
        read_manifest(out, image_size=32)
    first = out / frame["path"].iloc[0]
    Image.new("RGB", (20, 24)).save(first)
    with pytest.raises(DataError, match=f"{first.name}: size 20×24"):
        read_manifest(out)
    first.unlink()
    with pytest.raises(DataError, match=f"image file missing: .*{first.name}"):
        read_manifest(out)
    bad = frame.assign(label=["basal cell", *frame["label"].iloc[1:]])
    bad.to_csv(manifest, sep="\t", index=False)
    with pytest.raises(DataError, match="unknown label 'basal cell'"):
        read_manifest(out)
    frame.drop(columns="lesion_id").to_csv(manifest, sep="\t", index=False)
    with pytest.raises(DataError, match="missing column 'lesion_id'"):
        read_manifest(out)
    with pytest.raises(DataError, match="manifest not found"):
        read_manifest(tmp_path / "nowhere")


def test_prepare_images_is_atomic(tmp_path: Path) -> None:
    lesions = get_image_dataset("synthetic_lesions", n_images=30, image_size=32, seed=0).load()
    out = tmp_path / "prepared"
    prepare_images(lesions, out, image_size=16)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    broken_images = list(lesions.images)
    broken_images[17] = broken_images[17].astype(np.float32)
    broken = LesionSet(broken_images, lesions.labels, lesions.lesion_ids, lesions.names)
    with pytest.raises(DataError, match=r"synthetic_lesions_00017.*expected uint8"):
        prepare_images(broken, out, image_size=24)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # the old output survives untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]  # no temporary folder left behind
    with pytest.raises(DataError):
        prepare_images(broken, tmp_path / "fresh", image_size=24)
    assert not (tmp_path / "fresh").exists()


# ---------------------------------------------------------------- folder dataset


def _write_image(path: Path, seed: int, size: tuple[int, int] = (30, 20)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def test_folder_dataset_reads_classes_and_lesion_ids(tmp_path: Path) -> None:
    for i, name in enumerate(["mel_a.png", "mel_b.png", "mel_c.jpg"]):
        _write_image(tmp_path / "melanoma" / name, i)
    for i, name in enumerate(["nev_a.png", "nev_b.png"]):
        _write_image(tmp_path / "naevus" / name, 10 + i, size=(25, 25))
    (tmp_path / "melanoma" / ".DS_Store").write_bytes(b"\x00\x01finder")
    (tmp_path / "lesions.csv").write_text("image,lesion_id\nmel_a.png,L1\nmel_b,L1\nnev_a.png,\n")
    lesions = get_image_dataset("folder", path=str(tmp_path)).load()
    assert list(lesions.names) == ["mel_a", "mel_b", "mel_c", "nev_a", "nev_b"]
    assert list(lesions.labels) == ["melanoma"] * 3 + ["nevus"] * 2
    assert list(lesions.lesion_ids) == ["L1", "L1", "mel_c", "nev_a", "nev_b"]
    assert lesions.images[0].shape == (20, 30, 3) and lesions.images[3].shape == (25, 25, 3)
    assert np.array_equal(lesions.images[1], np.asarray(Image.open(tmp_path / "melanoma" / "mel_b.png")))


def test_folder_dataset_rejects_non_images_and_unknown_class_folders(tmp_path: Path) -> None:
    _write_image(tmp_path / "melanoma" / "a.png", 0)
    _write_image(tmp_path / "nevus" / "b.png", 1)
    (tmp_path / "nevus" / "notes.txt").write_text("not an image\n")
    with pytest.raises(DataError, match=r"notes\.txt: not a readable image") as error:
        get_image_dataset("folder", path=str(tmp_path)).load()
    assert "\n" not in str(error.value)
    (tmp_path / "nevus" / "notes.txt").unlink()
    _write_image(tmp_path / "benign" / "c.png", 2)
    with pytest.raises(DataError, match="unknown class folder 'benign'"):
        get_image_dataset("folder", path=str(tmp_path)).load()
    with pytest.raises(DataError, match="image folder not found"):
        get_image_dataset("folder", path=str(tmp_path / "missing")).load()


def test_registry_rejects_unknown_names_and_parameters() -> None:
    with pytest.raises(ConfigError, match=r"unknown image dataset 'isic2018'.*did you mean 'isic2019'"):
        get_image_dataset("isic2018")
    with pytest.raises(ConfigError, match="unknown parameter 'n_image'"):
        get_image_dataset("synthetic_lesions", n_image=3)
    assert get_image_dataset("synthetic_lesions").needs_download is False
    assert get_image_dataset("isic2019").needs_download is True
    assert get_image_dataset("isic2019", root="/data/isic").needs_download is False


# ---------------------------------------------------------------- ISIC 2019

GT_HEADER = "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK"
#: image → diagnosis column; MEL/NV are kept, the rest dropped
ISIC_ROWS = {
    "ISIC_0000000": "NV", "ISIC_0000001": "MEL", "ISIC_0000002_downsampled": "MEL", "ISIC_0000003": "NV",
    "ISIC_0000004": "BCC", "ISIC_0000005": "NV", "ISIC_0000006": "MEL", "ISIC_0000007": "BKL",
    "ISIC_0000008": "NV", "ISIC_0000009": "MEL", "ISIC_0000010": "SCC", "ISIC_0000011": "NV",
}
LESION_IDS = {"ISIC_0000000": "IL_0000001", "ISIC_0000003": "IL_0000001", "ISIC_0000001": "IL_0000002",
              "ISIC_0000004": "IL_0000003", "ISIC_0000006": "", "ISIC_0000011": "IL_0000004"}
KEPT = [name for name, dx in ISIC_ROWS.items() if dx in ("MEL", "NV")]


def _isic_files(folder: Path) -> dict[str, str]:
    """Write zip / GT / metadata in ISIC 2019's formats into `folder`; returns file name → sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    columns = GT_HEADER.split(",")[1:]
    gt = [GT_HEADER] + [",".join([name] + ["1.0" if c == dx else "0.0" for c in columns])
                        for name, dx in ISIC_ROWS.items()]
    (folder / ISIC2019_GROUNDTRUTH).write_text("\n".join(gt) + "\n")
    meta = ["image,age_approx,anatom_site_general,lesion_id,sex"] + [
        f"{name},55.0,anterior torso,{LESION_IDS.get(name, '')},female" for name in ISIC_ROWS if name != "ISIC_0000008"
    ]
    (folder / ISIC2019_METADATA).write_text("\n".join(meta) + "\n")
    images = synthetic_lesions(len(ISIC_ROWS), 32, seed=11)[0]
    with zipfile.ZipFile(folder / ISIC2019_INPUT, "w") as bundle:
        bundle.writestr("ISIC_2019_Training_Input/", b"")
        bundle.writestr("ISIC_2019_Training_Input/LICENSE.txt", b"CC-BY-NC 4.0\n")
        bundle.writestr("ISIC_2019_Training_Input/ATTRIBUTION.txt", b"synthetic stand-ins\n")
        for name, pixels in zip(ISIC_ROWS, images, strict=True):
            buffer = io.BytesIO()
            Image.fromarray(pixels).resize((40, 30)).save(buffer, format="JPEG", quality=95)
            bundle.writestr(f"ISIC_2019_Training_Input/{name}.jpg", buffer.getvalue())
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def isic_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, dict[str, str]]]:
    """(base URL, sha256 per file) of a real HTTP server on 127.0.0.1 serving small ISIC-format files."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    served = tmp_path / "served"
    digests = _isic_files(served)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", digests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _isic(base: str, **params: object):
    urls = {"input_url": base + ISIC2019_INPUT, "groundtruth_url": base + ISIC2019_GROUNDTRUTH,
            "metadata_url": base + ISIC2019_METADATA}
    return get_image_dataset("isic2019", **urls, retries=1, timeout=10, **params)


def test_isic2019_downloads_verifies_and_extracts_only_mel_nv(isic_server, tmp_path: Path) -> None:
    base, digests = isic_server
    dataset = _isic(base, input_checksum=f"sha256:{digests[ISIC2019_INPUT]}",
                    groundtruth_checksum=f"sha256:{digests[ISIC2019_GROUNDTRUTH]}",
                    metadata_checksum=f"sha256:{digests[ISIC2019_METADATA]}")
    dest = tmp_path / "resources"
    dataset.download(dest)
    assert sorted(p.name for p in dest.iterdir()) == sorted([ISIC2019_INPUT, ISIC2019_GROUNDTRUTH, ISIC2019_METADATA])
    lesions = dataset.load(dest)
    assert list(lesions.names) == KEPT
    assert list(lesions.labels) == ["melanoma" if ISIC_ROWS[n] == "MEL" else "nevus" for n in KEPT]
    lesion_of = dict(zip(lesions.names, lesions.lesion_ids, strict=True))
    assert lesion_of["ISIC_0000000"] == lesion_of["ISIC_0000003"] == "IL_0000001"
    assert lesion_of["ISIC_0000006"] == "ISIC_0000006"  # empty lesion_id: its own lesion
    assert lesion_of["ISIC_0000008"] == "ISIC_0000008"  # absent from the metadata: its own lesion
    extracted = sorted(p.name for p in (dest / ISIC2019_EXTRACTED).iterdir())
    assert extracted == sorted(f"{n}.jpg" for n in KEPT)  # no BCC/BKL/SCC image, no LICENSE or ATTRIBUTION
    assert lesions.images[0].shape == (30, 40, 3) and lesions.images[0].dtype == np.uint8
    frame = prepare_images(lesions, tmp_path / "prepared", image_size=16, val_fraction=0.25, test_fraction=0.25)
    assert set(frame.groupby("split")["label"].nunique()) == {2}


def test_isic2019_wrong_checksum_fails_in_one_line_and_leaves_no_file(isic_server, tmp_path: Path) -> None:
    base, _ = isic_server
    dest = tmp_path / "resources"
    with pytest.raises(DownloadError, match=f"checksum mismatch for .*{ISIC2019_INPUT}") as error:
        _isic(base, input_checksum="sha256:" + "0" * 64).download(dest)
    assert "\n" not in str(error.value)
    assert sorted(p.name for p in dest.iterdir()) == sorted([ISIC2019_GROUNDTRUTH, ISIC2019_METADATA])


def test_isic2019_from_root_without_any_server(tmp_path: Path) -> None:
    root = tmp_path / "isic"
    digests = _isic_files(root)
    dataset = get_image_dataset("isic2019", root=str(root), input_url="http://127.0.0.1:9/unreachable.zip",
                                max_images=4, seed=0)
    dataset.download(tmp_path / "unused")  # a no-op: nothing to fetch
    assert not (tmp_path / "unused").exists()
    lesions = dataset.load()
    assert len(lesions) == 4 and set(lesions.labels) == {"melanoma", "nevus"}
    assert set(lesions.names) <= set(KEPT)
    assert sorted(p.name for p in (root / ISIC2019_EXTRACTED).iterdir()) == sorted(f"{n}.jpg" for n in lesions.names)
    again = get_image_dataset("isic2019", root=str(root), max_images=4, seed=0).load()
    assert list(again.names) == list(lesions.names)  # seeded subsample
    verified = get_image_dataset("isic2019", root=str(root), input_checksum=f"sha256:{digests[ISIC2019_INPUT]}")
    assert len(verified.load(tmp_path / "elsewhere")) == len(KEPT)
    assert (tmp_path / "elsewhere" / ISIC2019_EXTRACTED).is_dir()  # extracted to dest_dir, root untouched
    with pytest.raises(DataError, match="checksum mismatch"):
        get_image_dataset("isic2019", root=str(root), metadata_checksum="sha256:" + "1" * 64).load()


def test_isic2019_corrupt_zip_and_bad_ground_truth_fail_in_one_line(tmp_path: Path) -> None:
    root = tmp_path / "isic"
    _isic_files(root)
    gt = root / ISIC2019_GROUNDTRUTH
    original = gt.read_text()
    pd.read_csv(gt).drop(columns="NV").to_csv(gt, index=False)
    with pytest.raises(DataError, match=f"{ISIC2019_GROUNDTRUTH}: missing column 'NV'"):
        get_image_dataset("isic2019", root=str(root)).load()
    gt.write_text(original.replace("ISIC_0000001,1.0", "ISIC_0000001,yes"))
    with pytest.raises(DataError, match="column MEL of image 'ISIC_0000001' is 'yes'"):
        get_image_dataset("isic2019", root=str(root)).load()
    gt.write_text(original)
    archive = root / ISIC2019_INPUT
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match="corrupt or truncated zip") as error:
        get_image_dataset("isic2019", root=str(root)).load()
    assert "\n" not in str(error.value)
    archive.unlink()
    with pytest.raises(DataError, match=f"{ISIC2019_INPUT} missing"):
        get_image_dataset("isic2019", root=str(root)).load()
