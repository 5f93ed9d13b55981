"""The dermoscopy arm through the real Snakemake workflow: a tiny run on synthetic_lesions with a trained CNN and an
external ONNX black box, and the ISIC 2019 download rule against a real HTTP server on 127.0.0.1."""

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
import yaml
from PIL import Image

from .conftest import snakemake

#: a minimal single-cell part: the config needs one, the targets below only ask for the image arm
SC_PART = {"datasets": {"synthetic": {"n_cells": 60, "n_genes": 40, "n_types": 2, "n_markers": 5}},
           "classifiers": {"scrf": {"n_estimators": 5}},
           "attacks": {"single_gene": {"grid": {"method": ["perc99"]}}}}
IMG_TABLES = ["results/tables/img_metrics.tsv", "results/tables/img_attacks.tsv",
              "results/tables/img_perturbations.tsv"]
IMG_FIGURES = [f"results/figures/img_{name}.png" for name in ("attacks", "confidence", "panels", "perturbations")]


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def external_onnx(tmp_path: Path) -> Path:
    """An ONNX file of a (random) MobileNetV3-small at 32 px: a stand-in for someone else's model."""
    from vulnbench.img.models import build_image_model, export_onnx

    path = tmp_path / "external.onnx"
    export_onnx(build_image_model("mobilenet_v3_small", image_size=32, seed=3), path)
    return path


def test_image_arm_end_to_end_with_an_external_black_box(tmp_path: Path, external_onnx: Path) -> None:
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = {
        "seed": 0, **SC_PART,
        "images": {
            "datasets": {"synthetic_lesions": {"n_images": 80, "image_size": 32, "test_fraction": 0.3}},
            "models": {"mobilenet_v3_small": {"epochs": 2, "batch_size": 16, "lr": 0.03},
                       "external": {"architecture": "onnx", "path": str(external_onnx)}},
            "attacks": {"fgsm": {"grid": {"eps_levels": [8], "space": ["pixel"]}},
                        "pixel": {"grid": {"n_pixels": [1]}, "params": {"popsize": 2, "max_generations": 2}},
                        "color": {"params": {"popsize": 3, "max_generations": 2}},
                        "rotation": {"params": {"popsize": 3, "max_generations": 2}}},
            "max_attack_images": 4,
        },
    }
    path = workdir / "images.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, *IMG_TABLES, *IMG_FIGURES, "--cores", "2", "--configfile", str(path))
    assert result.returncode == 0, result.stderr[-3000:]

    metrics = pd.read_csv(workdir / IMG_TABLES[0], sep="\t")
    assert sorted(metrics["model"]) == ["external", "mobilenet_v3_small"]
    assert metrics["auc"].between(0, 1).all() and (metrics["n"] > 0).all()

    attacks = pd.read_csv(workdir / IMG_TABLES[1], sep="\t")
    jobs = set(zip(attacks["model"], attacks["attack"], strict=True))
    assert ("external", "fgsm") not in jobs  # no gradients from a black box
    assert {("external", a) for a in ("pixel", "color", "rotation")} <= jobs
    assert {("mobilenet_v3_small", a) for a in ("fgsm", "pixel", "color", "rotation")} <= jobs
    assert (attacks["n_images"] == 4).all() and (attacks["n_success"] <= attacks["n_attacked"]).all()

    records = pd.read_csv(workdir / "results" / "tables" / "img_attack_records.tsv", sep="\t")
    saved = records[records["outcome"] == "success"]
    for row in saved.itertuples():
        png = (workdir / "results" / "img" / "attacks" / row.dataset / row.model / row.attack / row.pid / "images" /
               row.adversarial_file)
        assert png.is_file() and Image.open(png).size == (32, 32)
    assert set(records.loc[records["outcome"] == "skipped", "reason"]) <= {"incorrect class"}

    perturbations = pd.read_csv(workdir / IMG_TABLES[2], sep="\t")
    assert len(perturbations) == 2 * 21  # two models × (identity, 2 rotations, 3 channels × 6 shifts)
    identity = perturbations[perturbations["transform"] == "identity"].set_index("model")["auc"]
    np.testing.assert_allclose(identity.sort_index(), metrics.set_index("model")["auc"].sort_index())
    for figure in IMG_FIGURES:
        assert (workdir / figure).stat().st_size > 5000


def test_a_config_error_in_the_image_arm_is_one_line_before_any_job(tmp_path: Path) -> None:
    config = {"seed": 0, **SC_PART,
              "images": {"datasets": {"synthetic_lesions": {}}, "models": {"inception_v3": {"epoch": 2}},
                         "attacks": {"fgsm": {}}}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "-n", "--configfile", str(path))
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "vulnbench config error" in line]
    assert lines and "image model 'inception_v3': unknown parameter 'epoch'" in lines[0]
    assert "did you mean 'epochs'" in lines[0]


# -- ISIC 2019 through the download rule -------------------------------------------------------------------
GT_COLUMNS = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]


def isic_files(folder: Path, n_lesions: int = 24) -> dict[str, str]:
    """ISIC 2019's three files for `n_lesions` MEL/NV lesions (some photographed twice) plus BCC rows to drop."""
    from vulnbench.img.synthetic import synthetic_lesions

    folder.mkdir(parents=True)
    images, labels, lesions = synthetic_lesions(n_lesions + 6, 40, seed=5, melanoma_fraction=0.4)
    rows, meta = [], []
    with zipfile.ZipFile(folder / "ISIC_2019_Training_Input.zip", "w") as bundle:
        bundle.writestr("ISIC_2019_Training_Input/LICENSE.txt", b"CC-BY-NC 4.0\n")
        for k, (pixels, label, lesion) in enumerate(zip(images, labels, lesions, strict=True)):
            name = f"ISIC_{k:07d}"
            dx = "BCC" if k >= n_lesions else ("MEL" if label == "melanoma" else "NV")
            rows.append(",".join([name] + ["1.0" if c == dx else "0.0" for c in GT_COLUMNS]))
            meta.append(f"{name},50.0,back,IL_{lesion},male")
            buffer = io.BytesIO()
            Image.fromarray(pixels).resize((60, 45)).save(buffer, format="JPEG", quality=95)
            bundle.writestr(f"ISIC_2019_Training_Input/{name}.jpg", buffer.getvalue())
    (folder / "ISIC_2019_Training_GroundTruth.csv").write_text("image," + ",".join(GT_COLUMNS) + "\n" +
                                                               "\n".join(rows) + "\n")
    (folder / "ISIC_2019_Training_Metadata.csv").write_text(
        "image,age_approx,anatom_site_general,lesion_id,sex\n" + "\n".join(meta) + "\n")
    return {p.name: "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


@pytest.fixture
def isic_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, dict[str, str]]]:
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = tmp_path / "served"
    checksums = isic_files(root)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", checksums
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def isic_config(workdir: Path, url: str, checksums: dict[str, str]) -> Path:
    files = {"input": "ISIC_2019_Training_Input.zip", "groundtruth": "ISIC_2019_Training_GroundTruth.csv",
             "metadata": "ISIC_2019_Training_Metadata.csv"}
    dataset = {f"{key}_url": f"{url}/{name}" for key, name in files.items()}
    dataset.update({f"{key}_checksum": checksums[name] for key, name in files.items()})
    config = {"seed": 0, **SC_PART,
              "images": {"datasets": {"isic2019": {**dataset, "retries": 1, "image_size": 32,
                                                   "val_fraction": 0.2, "test_fraction": 0.25}},
                         "models": {"mobilenet_v3_small": {"epochs": 1}}, "attacks": {"color": {}}}}
    path = workdir / "isic.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_isic_download_rule_fetches_verifies_and_prepares(isic_server, tmp_path: Path) -> None:
    url, checksums = isic_server
    workdir = tmp_path / "run"
    workdir.mkdir()
    result = snakemake(workdir, "results/img/data/isic2019/manifest.tsv", "--cores", "1",
                       "--configfile", str(isic_config(workdir, url, checksums)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (workdir / "resources" / "img" / "isic2019" / "ISIC_2019_Training_Input.zip").is_file()
    manifest = pd.read_csv(workdir / "results" / "img" / "data" / "isic2019" / "manifest.tsv", sep="\t")
    assert len(manifest) == 24 and set(manifest["label"]) == {"melanoma", "nevus"}  # the 6 BCC rows are dropped
    assert manifest.groupby("lesion_id")["split"].nunique().max() == 1  # no lesion in two splits
    assert set(manifest["split"]) == {"train", "val", "test"}


def test_isic_download_rule_fails_cleanly_on_a_bad_checksum(isic_server, tmp_path: Path) -> None:
    url, checksums = isic_server
    workdir = tmp_path / "run"
    workdir.mkdir()
    bad = {**checksums, "ISIC_2019_Training_Input.zip": "sha256:" + "0" * 64}
    result = snakemake(workdir, "results/img/data/isic2019/manifest.tsv", "--cores", "1",
                       "--configfile", str(isic_config(workdir, url, bad)))
    assert result.returncode != 0
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("vulnbench error")]
    assert errors and "checksum mismatch" in errors[0] and "ISIC_2019_Training_Input.zip" in errors[0]
    assert not (workdir / "resources" / "img" / "isic2019" / "ISIC_2019_Training_Input.zip").exists()
    assert not (workdir / "resources" / "img" / "isic2019" / "download.done").exists()
    assert not (workdir / "results" / "img" / "data" / "isic2019").exists()
