"""Config → the matrix of jobs (dataset × classifier × attack × parameter cell), validated first.

Pure Python so that it is unit-tested and fast for large sweeps; `workflow/rules/common.smk` only turns
the frame into targets.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from vulnbench.core.codehash import code_hash
from vulnbench.core.errors import ConfigError
from vulnbench.core.grid import check_grid, grid_cells
from vulnbench.core.params import (
    check_budgets,
    check_name,
    check_params,
    check_values,
    declared_parameters,
    signature_defaults,
)
from vulnbench.core.registry import Registry
from vulnbench.sc.attacks import ATTACKS
from vulnbench.sc.classifiers import CLASSIFIERS
from vulnbench.sc.data import DATASETS
from vulnbench.sc.data.resources import remote_file
from vulnbench.sc.detectability import detectability_parameters

#: dataset keys that configure the split, not the loader
SPLIT_KEYS = {"test_size": 0.5, "min_cells_per_type": 5, "drop_labels": []}
#: classifier keys that configure the pipeline, not the model
CLASSIFIER_KEYS = ("label_map",)
#: attack keys besides the parameter grid
ATTACK_KEYS = ("grid", "params", "clusters", "classifiers")
#: what each of these keys means (the reference in config/README.md and the JSON schema are generated from them)
SPLIT_MEANINGS = {
    "test_size": "fraction of cells held out (stratified by label); classifiers are scored and attacked on them",
    "min_cells_per_type": "cell types with fewer cells are dropped before the split (logged)",
    "drop_labels": "labels whose cells are removed before the split, e.g. [UNDETERMINED]",
}
CLASSIFIER_KEY_MEANINGS = {
    "label_map": "{predicted label: dataset label} for methods whose vocabulary is not the dataset's (scType's "
                 "marker types); used by the accuracy table only",
}
ATTACK_KEY_MEANINGS = {
    "grid": "parameter: [values]; every combination is one job (id key~value_…); a key 'a,b' takes [a, b] pairs "
            "that vary together",
    "params": "fixed parameter values for every job of this attack (a key cannot also be in grid)",
    "clusters": "'all' (default) or a list of cluster (cell type) names of the held-out cells to attack",
    "classifiers": "restrict the attack to these configured classifiers (default: all)",
}
def _section(config: Mapping[str, Any], key: str) -> dict[str, Any]:
    section = config.get(key)
    if not isinstance(section, Mapping) or not section:
        raise ConfigError(f"config: '{key}' must name at least one entry")
    return {str(k): (v if v is not None else {}) for k, v in section.items()}


def _registered_entry(section: str, kind: str, registry: Registry[Any], name: str, params: Mapping[str, Any],
                      extra: Any) -> Any:
    """A dataset or classifier entry, checked the same way: a registered name fit for a folder, keys its
    implementation declares (or `extra`), values of the declared types. Returns the implementation."""
    if name not in registry:
        raise ConfigError(f"config {section}: {registry.unknown_message(name)}")
    check_name(f"config {section}", name)
    implementation = registry.get(name)
    check_params(f"{kind} {name!r}", params, implementation, extra=extra)
    check_values(f"{kind} {name!r}", params, declared_parameters(implementation))
    return implementation


def validate_config(config: Mapping[str, Any], schema: str | Path | None = None) -> None:
    """Shape (JSON schema) then names (registries): the first problem as a one-line ConfigError."""

    if schema is not None:
        _validate_schema(config, schema)
    for name, params in _section(config, "datasets").items():
        loader_class = _registered_entry("datasets", "dataset", DATASETS, name, params, SPLIT_KEYS)
        loader = loader_class(**{k: v for k, v in params.items() if k not in SPLIT_KEYS})
        for file in loader.input_files():
            if not file.is_file():
                raise ConfigError(f"dataset {name!r}: input file not found: {file}")
    for name, params in _section(config, "classifiers").items():
        model_class = _registered_entry("classifiers", "classifier", CLASSIFIERS, name, params, CLASSIFIER_KEYS)
        if not isinstance(params.get("label_map", {}), Mapping):
            raise ConfigError(f"classifier {name!r}: label_map must map predicted labels to dataset labels")
        if params.get("backend") == "r":  # R or its packages missing: say so now, before any job runs
            model = model_class(**{k: v for k, v in params.items() if k not in CLASSIFIER_KEYS})
            model._check_backend()
    detect = config.get("detectability") or {}
    if detect:
        if detect.get("dataset") not in config["datasets"] or detect.get("classifier") not in config["classifiers"]:
            raise ConfigError(f"detectability: dataset {detect.get('dataset')!r} and classifier "
                              f"{detect.get('classifier')!r} must be configured under 'datasets' and 'classifiers'")

        check_params("detectability params", detect.get("params") or {}, extra=detectability_parameters())
        check_budgets("detectability params", detect.get("params") or {})
    for resource, files in (config.get("resources") or {}).items():
        for file in files or {}:
            remote_file(config, resource, file)
    for name, entry in _section(config, "attacks").items():
        if name not in ATTACKS:
            raise ConfigError(f"config attacks: {ATTACKS.unknown_message(name)}")
        check_params(f"attack {name!r}", entry, extra=ATTACK_KEYS)
        spec = ATTACKS.get(name)
        check_grid(f"attack {name!r}", entry.get("grid") or {}, entry.get("params") or {}, spec.declared, spec.checks)
        for classifier in entry.get("classifiers") or ():
            if classifier not in config["classifiers"]:
                raise ConfigError(f"attack {name!r}: classifier {classifier!r} is not configured under 'classifiers' "
                                  f"(configured: {', '.join(map(str, config['classifiers']))})")
        check_clusters_entry(f"attack {name!r}", entry.get("clusters", "all"))


def check_clusters_entry(owner: str, clusters: Any) -> None:
    """`clusters:` is `all` or a non-empty list of names; whether the names exist only the prepared data can say
    (checked when a job reads it, `vulnbench.sc.data.prepare.check_clusters`)."""
    if clusters in ("all", None):
        return
    if not isinstance(clusters, list) or not clusters or not all(isinstance(c, str) and c for c in clusters):
        raise ConfigError(f"{owner}: clusters must be 'all' or a non-empty list of cluster names, got {clusters!r}")


def _validate_schema(config: Mapping[str, Any], schema: str | Path) -> None:
    import jsonschema

    spec = yaml.safe_load(Path(schema).read_text())
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(spec).iter_errors(dict(config)))
    if error is None:
        return
    where = "/".join(map(str, error.absolute_path)) or "top level"
    message = error.message
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        known = sorted(error.schema.get("properties", {}))
        close = difflib.get_close_matches(extra[0], known, n=1) if extra else []
        hint = f"; did you mean {close[0]!r}?" if close else ""
        message = f"unknown key {extra[0]!r} (allowed: {', '.join(known)}){hint}"
    elif error.validator in ("oneOf", "anyOf") and error.schema.get("description"):
        message = f"{error.instance!r} is not allowed: expected {error.schema['description']}"
    raise ConfigError(f"config {where}: {message}")


def build(config: Mapping[str, Any]) -> pd.DataFrame:
    """One row per attack job: dataset, classifier, attack, pid and the resolved `params` dict."""
    validate_config(config)
    rows = []
    datasets, classifiers = _section(config, "datasets"), _section(config, "classifiers")
    for attack, entry in _section(config, "attacks").items():
        fixed = entry.get("params") or {}
        for pid, cell in grid_cells(entry.get("grid") or {}):
            chosen = entry.get("classifiers") or list(classifiers)
            for dataset, classifier in itertools.product(datasets, chosen):
                rows.append({"dataset": dataset, "classifier": classifier, "attack": attack, "pid": pid,
                             "params": {**fixed, **cell}, "grid": cell, "clusters": entry.get("clusters", "all")})
    frame = pd.DataFrame(rows, columns=["dataset", "classifier", "attack", "pid", "params", "grid", "clusters"])
    duplicated = frame.duplicated(["dataset", "classifier", "attack", "pid"])
    if duplicated.any():
        row = frame[duplicated].iloc[0]
        raise ConfigError(f"two grid cells of attack {row.attack!r} share the id {row.pid!r}")
    return frame


def dataset_settings(config: Mapping[str, Any], dataset: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(loader parameters, split parameters) of one configured dataset."""
    entry = dict(_section(config, "datasets")[dataset])
    split = {k: entry.pop(k, default) for k, default in SPLIT_KEYS.items()}
    split["seed"] = int(config.get("seed", 0))
    return entry, split


def classifier_settings(config: Mapping[str, Any], classifier: str) -> dict[str, Any]:
    """Model hyper-parameters (seeded from the global seed) plus `label_map`, which the train stage takes."""

    params = dict(_section(config, "classifiers")[classifier])
    if "seed" in signature_defaults(CLASSIFIERS.get(classifier)):
        params.setdefault("seed", int(config.get("seed", 0)))
    return params


# -- the code each job runs (Snakemake reruns a job when its params, this hash included, change) --------------------
@cache
def dataset_code(dataset: str) -> str:
    """Hash of the code that prepares one dataset: its loader's module and the preparation."""

    return code_hash(DATASETS.get(dataset), "vulnbench.sc.data.prepare")


@cache
def classifier_code(classifier: str) -> str:
    """Hash of the code that trains and runs one classifier (its module and what it imports from the package)."""

    return code_hash(CLASSIFIERS.get(classifier))


@cache
def attack_code(attack: str, classifier: str) -> str:
    """Hash of the code of one attack job: the attack's module, its table summary and the classifier's code."""

    spec = ATTACKS.get(attack)
    return code_hash(spec.function, CLASSIFIERS.get(classifier), sources=[spec.summarise])
