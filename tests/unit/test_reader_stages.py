"""The reader study's pipeline glue: built from the image arm's manifest and attack records, simulated, analysed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vulnbench.core.errors import ConfigError, DataError
from vulnbench.reader.analysis import analyse_study
from vulnbench.reader.stages import reader_study_settings, run_build_reader_study, run_simulate_readers


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def image_arm(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A manifest with 12 test images and attack records: 5 pixel and 4 color successes of model m, one failure."""
    data = tmp_path / "results" / "img" / "data" / "ds"
    rows = []
    for k in range(16):
        name = f"img{k:02d}"
        _png(data / "images" / f"{name}.png", k)
        rows.append({"image": name, "label": "melanoma" if k % 2 else "nevus", "split": "test" if k < 12 else "train",
                     "lesion_id": name, "path": f"images/{name}.png"})
    pd.DataFrame(rows).to_csv(data / "manifest.tsv", sep="\t", index=False)
    attacks = tmp_path / "results" / "img" / "attacks"
    records = []
    for attack, n in (("pixel", 5), ("color", 4), ("rotation", 0)):
        for k in range(n + 1):
            success = k < n
            file = f"img{k:02d}_adv.png" if success else None
            path = attacks / "ds" / "m" / attack / "default" / "images" / file if success else None
            if success:
                _png(path, 100 + k)
            records.append({"dataset": "ds", "model": "m", "attack": attack, "pid": "default", "image": f"img{k:02d}",
                            "outcome": "success" if success else "failed", "adversarial_file": file,
                            "adversarial_path": str(path) if path else None})
    records.append({"dataset": "ds", "model": "other", "attack": "pixel", "pid": "default", "image": "img01",
                    "outcome": "success", "adversarial_file": "elsewhere.png",
                    "adversarial_path": str(attacks / "elsewhere.png")})
    table = tmp_path / "records.tsv"
    pd.DataFrame(records).to_csv(table, sep="\t", index=False)
    return data / "manifest.tsv", table, attacks


def test_build_simulate_analyse(image_arm, tmp_path: Path) -> None:
    manifest, records, _attacks = image_arm
    settings = reader_study_settings({"reader_study": {"model": "m", "n_per_condition": 4, "n_readers": 3}}, ["m"])
    pointer = tmp_path / "study.json"
    study = run_build_reader_study(records, manifest, "ds", settings, 0, pointer)
    assert study == tmp_path / "study"  # the pointer names the folder beside it
    assert json.loads(pointer.read_text())["study"] == "study"
    shown = pd.read_csv(study / "manifest.csv")
    assert shown["condition"].value_counts().to_dict() == {"clean": 4, "pixel": 4, "color": 4}  # rotation: none
    assert set(shown.loc[shown["condition"] != "clean", "truth"]) == {"melanoma"}
    assert all("elsewhere" not in str(s) for s in shown["source"])  # only model m's images
    answers = tmp_path / "answers"
    run_simulate_readers(pointer, settings, 0, answers)
    assert len(list(answers.glob("*.csv"))) == 3
    out = tmp_path / "out"
    table, test = analyse_study(pointer, answers, out / "auc.tsv", out / "effect.tsv", out / "effect.json",
                                out / "auc.png", n_boot=200)
    assert {"clean", "adversarial"} <= set(table["condition_set"]) and (out / "auc.png").stat().st_size > 5000
    assert test.n == 3 * 12 and 0 <= test.p_adversarial <= 1


def test_settings_and_empty_studies_fail_in_one_line(image_arm, tmp_path: Path) -> None:
    manifest, records, _attacks = image_arm
    with pytest.raises(ConfigError, match=r"unknown key.*n_reader"):
        reader_study_settings({"reader_study": {"n_reader": 3}}, ["m"])
    with pytest.raises(ConfigError, match="model 'x' is not configured"):
        reader_study_settings({"reader_study": {"model": "x"}}, ["m"])
    settings = reader_study_settings({"reader_study": {"model": "m", "attacks": ["rotation"]}}, ["m"])
    with pytest.raises(DataError, match="no successful attack on m among rotation, so nothing to show readers"):
        run_build_reader_study(records, manifest, "ds", settings, 0, tmp_path / "s.json")
    assert not (tmp_path / "s").exists() and not (tmp_path / "s.json").exists()
    # every attack failed: the records table has no adversarial_file column at all (was KeyError 'adversarial_file')
    failed = pd.read_csv(records, sep="\t").drop(columns=["adversarial_file", "adversarial_path"])
    failed = failed.assign(outcome="failed")
    failed.to_csv(tmp_path / "failed.tsv", sep="\t", index=False)
    settings = reader_study_settings({"reader_study": {"model": "m"}}, ["m"])
    with pytest.raises(DataError, match="no successful attack on m among pixel, color, rotation, so nothing to show"):
        run_build_reader_study(tmp_path / "failed.tsv", manifest, "ds", settings, 0, tmp_path / "s.json")
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(DataError, match="nothing to show readers"):
        run_build_reader_study(tmp_path / "empty.tsv", manifest, "ds", settings, 0, tmp_path / "s.json")
