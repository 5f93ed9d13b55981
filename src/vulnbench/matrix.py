"""Config → the matrix of jobs (dataset × classifier × attack × parameter cell), validated first.

Pure Python so that it is unit-tested and fast for large sweeps; `workflow/rules/common.smk` only turns
the frame into targets.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from vulnbench.errors import ConfigError
from vulnbench.params import (
    Parameter,
    check_budgets,
    check_name,
    check_params,
    check_values,
    declared_parameters,
    signature_defaults,
)

#: dataset keys that configure the split, not the loader
SPLIT_KEYS = {"test_size": 0.5, "min_cells_per_type": 5, "drop_labels": []}
#: classifier keys that configure the pipeline, not the model
CLASSIFIER_KEYS = ("label_map",)
#: attack keys besides the parameter grid
ATTACK_KEYS = ("grid", "params", "clusters", "classifiers")
PID_MAX = 80

def format_value(value: Any) -> str:
    """Canonical text of a parameter value, shared by ids, paths and tables."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating):
        return np.format_float_positional(float(value), trim="-")
    if isinstance(value, list | tuple):
        return "+".join(format_value(v) for v in value)
    return str(value).replace("/", "-").replace(" ", "-")


def make_pid(grid_values: Mapping[str, Any]) -> str:
    """Readable, stable id of one grid cell (`method~perc99_search~dichotomic`), hashed when long."""
    if not grid_values:
        return "default"
    pid = "_".join(f"{k}~{format_value(v)}" for k, v in sorted(grid_values.items()))
    if len(pid) > PID_MAX:
        pid = hashlib.sha256(pid.encode()).hexdigest()[:8]
    return pid


def tied_keys(key: str) -> list[str]:
    """Grid keys joined by commas vary together: `"alpha,epsilon": [[0.5, 0.5], [1, 1]]`."""
    return [k.strip() for k in str(key).split(",")]


def _section(config: Mapping[str, Any], key: str) -> dict[str, Any]:
    section = config.get(key)
    if not isinstance(section, Mapping) or not section:
        raise ConfigError(f"config: '{key}' must name at least one entry")
    return {str(k): (v if v is not None else {}) for k, v in section.items()}


def validate_config(config: Mapping[str, Any], schema: str | Path | None = None) -> None:
    """Shape (JSON schema) then names (registries): the first problem as a one-line ConfigError."""
    from vulnbench.data import DATASETS
    from vulnbench.data.resources import remote_file
    from vulnbench.sc.attacks import ATTACKS
    from vulnbench.sc.classifiers import CLASSIFIERS

    if schema is not None:
        _validate_schema(config, schema)
    for name, params in _section(config, "datasets").items():
        if name not in DATASETS:
            raise ConfigError(f"config datasets: {DATASETS.unknown_message(name)}")
        check_name("config datasets", name)
        check_params(f"dataset {name!r}", params, DATASETS.get(name), extra=SPLIT_KEYS)
        check_values(f"dataset {name!r}", params, declared_parameters(DATASETS.get(name)))
        loader = DATASETS.get(name)(**{k: v for k, v in params.items() if k not in SPLIT_KEYS})
        for file in loader.input_files():
            if not file.is_file():
                raise ConfigError(f"dataset {name!r}: input file not found: {file}")
    for name, params in _section(config, "classifiers").items():
        if name not in CLASSIFIERS:
            raise ConfigError(f"config classifiers: {CLASSIFIERS.unknown_message(name)}")
        check_name("config classifiers", name)
        check_params(f"classifier {name!r}", params, CLASSIFIERS.get(name), extra=CLASSIFIER_KEYS)
        check_values(f"classifier {name!r}", params, declared_parameters(CLASSIFIERS.get(name)))
        if not isinstance(params.get("label_map", {}), Mapping):
            raise ConfigError(f"classifier {name!r}: label_map must map predicted labels to dataset labels")
        if params.get("backend") == "r":  # R or its packages missing: say so now, before any job runs
            model = CLASSIFIERS.get(name)(**{k: v for k, v in params.items() if k not in CLASSIFIER_KEYS})
            model._check_backend()
    detect = config.get("detectability") or {}
    if detect:
        if detect.get("dataset") not in config["datasets"] or detect.get("classifier") not in config["classifiers"]:
            raise ConfigError(f"detectability: dataset {detect.get('dataset')!r} and classifier "
                              f"{detect.get('classifier')!r} must be configured under 'datasets' and 'classifiers'")
        from vulnbench.sc.detectability import detectability_parameters

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
    (checked when a job reads it, `vulnbench.stages.check_clusters`)."""
    if clusters in ("all", None):
        return
    if not isinstance(clusters, list) or not clusters or not all(isinstance(c, str) and c for c in clusters):
        raise ConfigError(f"{owner}: clusters must be 'all' or a non-empty list of cluster names, got {clusters!r}")


def check_grid(owner: str, grid: Mapping[str, Any], params: Mapping[str, Any], declared: Mapping[str, Parameter],
               checks: Mapping[str, Callable[[Any], Any]] | None = None) -> None:
    """Grid and fixed parameters name only `declared` keys, grid values are non-empty lists (tied keys: lists of
    the right width), no key is both in the grid and fixed, and every value fits its declaration (`check_values`)."""
    grid_keys = {k: None for key in grid for k in tied_keys(key)}
    check_params(f"{owner} grid", grid_keys, extra=declared)
    check_params(f"{owner} params", params, extra=declared)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{owner} grid: {key!r} must be a non-empty list of values")
        width = len(tied_keys(key))
        if width > 1 and not all(isinstance(v, list) and len(v) == width for v in values):
            raise ConfigError(f"{owner} grid: every value of tied keys {key!r} must be a list of {width}")
    for key in set(grid_keys) & set(params):
        raise ConfigError(f"{owner}: {key!r} is both in grid and params")
    check_values(f"{owner} params", params, declared, checks)
    for key, values in grid.items():
        names = tied_keys(key)
        for value in values:
            check_values(f"{owner} grid", dict(zip(names, value if len(names) > 1 else [value], strict=True)),
                         declared, checks)


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


def grid_cells(grid: Mapping[str, list[Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(pid, {parameter: value}) for every combination of a grid (tied keys vary together)."""
    keys = sorted(grid)
    cells = []
    for values in itertools.product(*(grid[k] for k in keys)):
        cell: dict[str, Any] = {}
        for key, value in zip(keys, values, strict=True):
            names = tied_keys(key)
            cell.update(zip(names, value if len(names) > 1 else [value], strict=True))
        cells.append((make_pid(cell), cell))
    return cells


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
    from vulnbench.sc.classifiers import CLASSIFIERS

    params = dict(_section(config, "classifiers")[classifier])
    if "seed" in signature_defaults(CLASSIFIERS.get(classifier)):
        params.setdefault("seed", int(config.get("seed", 0)))
    return params


# -- the code each job runs (Snakemake reruns a job when its params, this hash included, change) --------------------
@cache
def dataset_code(dataset: str) -> str:
    """Hash of the code that prepares one dataset: its loader's module and the preparation."""
    from vulnbench.codehash import code_hash
    from vulnbench.data import DATASETS

    return code_hash(DATASETS.get(dataset), "vulnbench.data.prepare")


@cache
def classifier_code(classifier: str) -> str:
    """Hash of the code that trains and runs one classifier (its module and what it imports from the package)."""
    from vulnbench.codehash import code_hash
    from vulnbench.sc.classifiers import CLASSIFIERS

    return code_hash(CLASSIFIERS.get(classifier))


@cache
def attack_code(attack: str, classifier: str) -> str:
    """Hash of the code of one attack job: the attack's module, its table summary and the classifier's code."""
    from vulnbench.codehash import code_hash
    from vulnbench.sc.attacks import ATTACKS
    from vulnbench.sc.classifiers import CLASSIFIERS

    spec = ATTACKS.get(attack)
    return code_hash(spec.function, CLASSIFIERS.get(classifier), sources=[spec.summarise])
