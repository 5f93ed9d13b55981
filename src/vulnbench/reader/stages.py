"""Pipeline stages of the reader study: build it from the dermoscopy arm's results, simulate readers, analyse."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from vulnbench.core.errors import ConfigError, DataError
from vulnbench.img.plan import image_entries, images_section
from vulnbench.reader.analysis import simulate_readers
from vulnbench.reader.study import build_versioned_study

log = logging.getLogger(__name__)

#: the study's settings (images: reader_study:) and their defaults
READER_STUDY_DEFAULTS: dict[str, Any] = {
    "model": None,  # which model's adversarial images (default: the first configured model)
    "attacks": ["pixel", "color", "rotation"],  # the paper's three DE attacks (fgsm may be added)
    "n_per_condition": 10,  # N clean images and N per attack (the paper: 102 clean, 34 per attack)
    "answers": None,  # a folder of real readers' CSVs (from `vulnbench reader-study serve`); None: simulated readers
    "n_readers": 5, "sensitivity": 0.8, "specificity": 0.75, "adversarial_effect": 0.0,  # simulated readers
}
#: what each setting means (the reference in config/README.md and the JSON schema are generated from it)
READER_STUDY_MEANINGS: dict[str, str] = {
    "model": "configured image model whose successful DE attacks are shown (null: the first configured model)",
    "attacks": "image attacks whose successful adversarial images are included (the paper's three DE attacks; "
               "fgsm may be added)",
    "n_per_condition": "clean images and images per attack shown (the paper: 102 clean, 34 per attack)",
    "answers": "folder of real readers' answer CSVs (from `vulnbench reader-study serve`); null: simulated readers",
    "n_readers": "number of simulated readers (when answers is null)",
    "sensitivity": "probability that a simulated reader answers a melanoma correctly",
    "specificity": "probability that a simulated reader answers a naevus correctly",
    "adversarial_effect": "added to the log-odds of a simulated reader's correct answer on adversarial images "
                          "(0: not fooled; negative: fooled)",
}


def reader_study_settings(section: Mapping[str, Any], models: list[str]) -> dict[str, Any]:
    given = dict(section.get("reader_study") or {})
    unknown = set(given) - set(READER_STUDY_DEFAULTS)
    if unknown:
        raise ConfigError(f"images reader_study: unknown key(s) {', '.join(sorted(unknown))} "
                          f"(allowed: {', '.join(READER_STUDY_DEFAULTS)})")
    settings = {**READER_STUDY_DEFAULTS, **given}
    settings["model"] = settings["model"] or (models[0] if models else None)
    if settings["model"] not in models:
        raise ConfigError(f"images reader_study: model {settings['model']!r} is not configured under 'images: models'")
    return settings


def reader_study_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The reader study's settings plus the dataset it draws from (the first image dataset)."""
    section = images_section(config)
    settings = reader_study_settings(section, list(image_entries(section, "models")))
    return {**settings, "dataset": next(iter(image_entries(section, "datasets"))), "seed": int(config.get("seed", 0))}


def run_build_reader_study(records: str | Path, manifest: str | Path, dataset: str, settings: Mapping[str, Any],
                           seed: int, pointer: str | Path) -> Path:
    """Clean test images (both classes) and the chosen model's successful adversarial images, blinded.

    The study goes beside `pointer` (results/reader_study/study.json → study/, or study_v2/, … when the previous
    study holds readers' answers and changed; see `build_versioned_study`); returns the study folder.
    """

    frame = pd.read_csv(manifest, sep="\t")
    test = frame[frame["split"] == "test"]
    root = Path(manifest).parent
    clean = [(root / path, label) for path, label in zip(test["path"], test["label"], strict=True)]
    chosen = _successful_attacks(records, dataset, settings["model"])
    adversarial: dict[str, list[tuple[Path, str]]] = {}
    for attack in settings["attacks"]:
        rows = chosen[chosen["attack"] == attack]
        adversarial[attack] = [(Path(path), "melanoma") for path in rows["adversarial_path"]]
        if not adversarial[attack]:
            log.warning("reader study: no successful %s attack on %s to show", attack, settings["model"])
    adversarial = {a: items for a, items in adversarial.items() if items}
    if not adversarial:
        raise DataError(f"reader study: no successful attack on {settings['model']} among "
                        f"{', '.join(settings['attacks'])}, so nothing to show readers (attack more images, or choose "
                        "another model or attacks under images: reader_study:)")
    return build_versioned_study(clean, adversarial, pointer, int(settings["n_per_condition"]), seed)


def _successful_attacks(records: str | Path, dataset: str, model: str) -> pd.DataFrame:
    """Rows of saved successful attacks; a table without any (no adversarial_path column at all) gives none."""
    try:
        table = pd.read_csv(records, sep="\t")
    except pd.errors.EmptyDataError:
        table = pd.DataFrame()
    needed = ["dataset", "model", "attack", "pid", "outcome", "adversarial_path"]
    if table.empty or "adversarial_path" not in table.columns:
        return pd.DataFrame(columns=needed)
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise DataError(f"attack records {records} lack columns {', '.join(missing)}")
    return table[(table["dataset"] == dataset) & (table["model"] == model) & (table["outcome"] == "success")
                 & table["adversarial_path"].notna()]


def run_simulate_readers(study: str | Path, settings: Mapping[str, Any], seed: int, answers_dir: str | Path) -> None:

    simulate_readers(study, answers_dir, n_readers=int(settings["n_readers"]), seed=seed,
                     sensitivity=float(settings["sensitivity"]), specificity=float(settings["specificity"]),
                     adversarial_effect=float(settings["adversarial_effect"]))
