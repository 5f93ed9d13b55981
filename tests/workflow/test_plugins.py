"""A user's own classifier and image attack, one module each in a package outside vulnbench, named by the config's
`plugins:` list: planned, trained, attacked and tabled by the unchanged pipeline."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .conftest import REPO, job_counts, snakemake

TOY_CLASSIFIER = '''
"""A nearest-centroid classifier: the whole contract in one module."""

import numpy as np

from vulnbench.sc.classifiers import CLASSIFIERS
from vulnbench.sc.classifiers.base import PerCellClassifier


@CLASSIFIERS.register("toy_centroid")
class ToyCentroid(PerCellClassifier):
    name = "toy_centroid"

    def __init__(self, temperature: float = 1.0) -> None:
        """Keyword parameters, as a config sets them.

        Args:
            temperature: softmax temperature of the negative distances to each type's centroid
        """
        self.temperature = temperature

    def _fit(self, matrix: np.ndarray, y: np.ndarray) -> None:
        self.centroids_ = np.stack([matrix[y == label].mean(axis=0) for label in self.classes_])

    def _predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        distance = ((matrix[:, None, :] - self.centroids_[None]) ** 2).sum(axis=2)
        logits = -distance / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        return weights / weights.sum(axis=1, keepdims=True)
'''

TOY_IMAGE_ATTACK = '''
"""Random uniform noise, best of a few draws: the image-attack contract in one module."""

import numpy as np

from vulnbench.img.attacks.base import AttackedImage, image_attack, softmax64
from vulnbench.img.base import MELANOMA


def within_levels(clean, adversarial, params):
    change = int(np.abs(adversarial.astype(np.int16) - clean.astype(np.int16)).max(initial=0))
    return None if change <= params["levels"] else f"L∞ {change} levels exceeds {params['levels']}"


@image_attack("toy_noise", description="best of n_tries uniform noises of ±levels 8-bit levels",
              constraint=within_levels, order=90)
def toy_noise(model, images, seeds, *, levels: int = 16, n_tries: int = 8,
              max_forward: int | None = None) -> list[AttackedImage]:
    """Each image plus the draw of uniform noise that lowers P(melanoma) most.

    Args:
        levels: largest change of a channel value, in 8-bit levels
        n_tries: noise draws scored per image (one batched model call)
        max_forward: forward-pass budget per image (null: n_tries)
    """
    out = []
    for image, seed in zip(images, seeds, strict=True):
        tries = n_tries if max_forward is None else min(n_tries, max_forward)
        noise = np.random.default_rng(seed).integers(-levels, levels + 1, size=(tries, *image.shape))
        candidates = np.clip(image[None].astype(np.int16) + noise, 0, 255).astype(np.uint8)
        probabilities = softmax64(model.logits(candidates))
        best = int(np.argmin(probabilities[:, MELANOMA]))
        adversarial_class = int(np.argmax(probabilities[best]))
        target = 1.0 - float(probabilities[best, MELANOMA])
        out.append(AttackedImage(success=adversarial_class != MELANOMA, adversarial=candidates[best],
                                 adversarial_class=adversarial_class, adversarial_probability=target,
                                 confident_success=adversarial_class != MELANOMA and target > 0.9, n_forward=tries))
    return out
'''

SC_CONFIG = {
    "seed": 3,
    "plugins": ["toy_plugins/toy_classifier.py"],
    "datasets": {"synthetic": {"n_cells": 240, "n_genes": 200, "n_types": 3, "n_markers": 10, "test_size": 0.5}},
    "classifiers": {"toy_centroid": {"temperature": 2.0}, "scrf": {"n_estimators": 10}},
    "attacks": {"single_gene": {"params": {"search": "dichotomic", "first_dichot": 20},
                                "grid": {"method": ["perc99", "positive_aberrant"]}}},
}


def write_plugin(workdir: Path, name: str, source: str) -> None:
    folder = workdir / "toy_plugins"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(source))


@pytest.mark.slow
def test_a_classifier_from_one_module_is_planned_trained_attacked_and_tabled(tmp_path: Path) -> None:
    write_plugin(tmp_path, "toy_classifier", TOY_CLASSIFIER)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(SC_CONFIG))
    targets = ("results/tables/single_gene.tsv", "results/tables/classifiers.tsv", "results/tables/job_status.tsv")

    plan = snakemake(tmp_path, *targets, "-n", "--configfile", str(config))
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert job_counts(plan.stdout + plan.stderr)["train_classifier"] == 2

    run = snakemake(tmp_path, *targets, "--cores", "2", "--configfile", str(config))
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = pd.read_csv(tmp_path / targets[1], sep="\t").set_index("classifier")
    assert metrics.loc["toy_centroid", "accuracy"] > 0.9  # the synthetic types are separable by their markers
    table = pd.read_csv(tmp_path / targets[0], sep="\t")
    toy = table[table["classifier"] == "toy_centroid"]
    assert len(toy) == 2 * 3 and (toy["status"] == "ok").all()
    assert set(toy["param_method"]) == {"perc99", "positive_aberrant"}
    assert toy["n_genes_flipping"].notna().all()
    status = pd.read_csv(tmp_path / targets[2], sep="\t")
    assert set(status["classifier"]) == {"toy_centroid", "scrf"} and (status["status"] == "ok").all()


IMAGES = {"datasets": {"synthetic_lesions": {"n_images": 60, "image_size": 32}},
          "models": {"mobilenet_v3_small": {"epochs": 1}},
          "attacks": {"toy_noise": {"params": {"levels": 24}, "grid": {"n_tries": [4, 8]}}},
          "max_attack_images": 6}


@pytest.mark.slow
def test_an_image_attack_from_one_module_is_planned_run_tabled_and_contract_tested(tmp_path: Path) -> None:
    write_plugin(tmp_path, "toy_classifier", TOY_CLASSIFIER)
    write_plugin(tmp_path, "toy_image_attack", TOY_IMAGE_ATTACK)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**SC_CONFIG, "classifiers": {"toy_centroid": {}}, "images": IMAGES,
                                      "plugins": [*SC_CONFIG["plugins"], "toy_plugins/toy_image_attack.py"]}))
    targets = ("results/tables/img_attacks.tsv", "results/tables/job_status.tsv")

    plan = snakemake(tmp_path, *targets, "-n", "--configfile", str(config))
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert job_counts(plan.stdout + plan.stderr)["image_attack"] == 2  # one job per grid cell

    run = snakemake(tmp_path, *targets, "--cores", "2", "--configfile", str(config))
    assert run.returncode == 0, run.stderr[-3000:]
    table = pd.read_csv(tmp_path / targets[0], sep="\t")
    assert list(table["attack"]) == ["toy_noise", "toy_noise"] and (table["status"] == "ok").all()
    assert sorted(table["mode"]) == ["n_tries=4", "n_tries=8"] and (table["n_images"] > 0).all()
    records = pd.read_csv(tmp_path / "results" / "tables" / "img_attack_records.tsv", sep="\t")
    attacked = records[records["outcome"] != "skipped"]
    assert set(records["attack"]) == {"toy_noise"}
    assert (attacked["n_forward"] <= attacked["pid"].str.extract(r"n_tries~(\d+)")[0].astype(int)).all()
    status = pd.read_csv(tmp_path / targets[1], sep="\t")
    assert set(status["attack"]) == {"single_gene", "toy_noise"} and (status["status"] == "ok").all()

    # the generated contract tests hold the plugin to the same rules as the built-in attacks
    env = {**os.environ, "VULNBENCH_PLUGINS": str(tmp_path / "toy_plugins" / "toy_image_attack.py")}
    contract = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "toy_noise",
                               str(REPO / "tests" / "contract" / "test_image_attacks.py")],
                              capture_output=True, text=True, env=env, cwd=REPO, timeout=600, check=False)
    assert contract.returncode == 0, contract.stdout[-3000:]
    assert " passed" in contract.stdout and " failed" not in contract.stdout


def test_a_misspelt_plugin_parameter_or_missing_plugin_stops_the_plan(tmp_path: Path) -> None:
    write_plugin(tmp_path, "toy_classifier", TOY_CLASSIFIER)
    bad = {**SC_CONFIG, "classifiers": {"toy_centroid": {"temprature": 2.0}}}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(bad))
    plan = snakemake(tmp_path, "-n", "--configfile", str(config))
    assert plan.returncode != 0 and "temprature" in plan.stderr and "temperature" in plan.stderr
    config.write_text(yaml.safe_dump({**SC_CONFIG, "plugins": ["toy_plugins/nothing.py"]}))
    plan = snakemake(tmp_path, "-n", "--configfile", str(config))
    assert plan.returncode != 0
    assert "vulnbench config error: plugins: file 'toy_plugins/nothing.py' not found" in plan.stderr
