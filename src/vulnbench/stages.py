"""Pipeline stages: pure functions (inputs, outputs, params) → files. Rules call these through adapters."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

from vulnbench import __version__
from vulnbench.errors import DataError, VulnbenchError
from vulnbench.io import atomic_path, read_json, write_json
from vulnbench.sc.classifiers.base import PerCellClassifier

log = logging.getLogger(__name__)


def versions() -> dict[str, str]:
    """Library versions recorded in every result, so a number can be traced to the code that made it."""
    import scanpy
    import scipy
    import sklearn
    import torch

    return {"vulnbench": __version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__, "torch": torch.__version__, "scanpy": scanpy.__version__,
            "anndata": ad.__version__}


def run_download(dataset: str, params: Mapping[str, Any], output: str | Path) -> None:
    from vulnbench.data import get

    get(dataset, **params).download(Path(output))


def run_prepare(dataset: str, params: Mapping[str, Any], split: Mapping[str, Any], archive: str | Path | None,
                output: str | Path) -> None:
    from vulnbench.data import get, prepare

    raw = get(dataset, **params).load(Path(archive) if archive else None)
    prepared = prepare(raw, test_size=float(split["test_size"]), seed=int(split["seed"]),
                       min_cells_per_type=int(split["min_cells_per_type"]),
                       drop_labels=tuple(split.get("drop_labels") or ()))
    prepared.uns["dataset"] = dataset
    with atomic_path(output) as tmp:
        prepared.write_h5ad(tmp)


def read_prepared(path: str | Path, split: str | None = None) -> ad.AnnData:
    try:
        adata = ad.read_h5ad(path)
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"cannot read prepared dataset {path}: {type(exc).__name__}") from None
    for column in ("label", "split"):
        if column not in adata.obs:
            raise DataError(f"{path} has no obs column {column!r}: not a prepared dataset")
    if split is not None:
        adata = adata[adata.obs["split"] == split].copy()
    return adata


def use_threads(threads: int | None) -> None:
    """Keep torch (and BLAS through it) within the cores the scheduler gave this job."""
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def run_train(prepared: str | Path, classifier: str, params: Mapping[str, Any], model_out: str | Path,
              metrics_out: str | Path, threads: int | None = None) -> None:
    from vulnbench.matrix import signature_defaults
    from vulnbench.sc.classifiers import CLASSIFIERS, get

    use_threads(threads)
    params = dict(params)
    label_map = {str(k): str(v) for k, v in (params.pop("label_map", None) or {}).items()}
    if threads and "n_jobs" in signature_defaults(CLASSIFIERS.get(classifier)):
        params.setdefault("n_jobs", int(threads))
    data = read_prepared(prepared)
    train, test = data[data.obs["split"] == "train"], data[data.obs["split"] == "test"]
    started = time.perf_counter()
    model = get(classifier, **params).fit(train, train.obs["label"].astype(str))
    fit_s = time.perf_counter() - started
    truth = test.obs["label"].astype(str).to_numpy()
    # a method with its own vocabulary (scType's marker types) is scored through the configured label map
    predicted = np.array([label_map.get(label, label) for label in model.predict(test)])
    classes = sorted(set(truth) | set(predicted))
    per_class = f1_score(truth, predicted, labels=classes, average=None, zero_division=0)
    metrics = {
        "dataset": data.uns.get("dataset", Path(prepared).parent.name),
        "classifier": classifier,
        "params": dict(params),
        "n_train": int(train.n_obs),
        "n_test": int(test.n_obs),
        "label_map": label_map,
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
        "f1_per_class": dict(zip(classes, map(float, per_class), strict=True)),
        "fit_s": fit_s,
        "versions": versions(),
    }
    model.save(model_out)
    write_json(metrics_out, metrics)
    log.info("%s: accuracy %.3f, macro-F1 %.3f on %d test cells", classifier, metrics["accuracy"],
             metrics["macro_f1"], test.n_obs)


def run_attack(prepared: str | Path, model_path: str | Path, attack: str, params: Mapping[str, Any],
               clusters: str | Sequence[str], output: str | Path, identity: Mapping[str, Any],
               params_out: str | Path | None = None, threads: int | None = None) -> None:
    """Attack every requested cluster of the test split; an expected failure becomes a status row."""
    from vulnbench.sc.attacks import ATTACKS
    from vulnbench.sc.expression import as_expression
    from vulnbench.sc.modifications import GeneStats

    use_threads(threads)
    spec = ATTACKS.get(attack)
    if params_out is not None:
        write_json(params_out, {**identity, "attack": attack, "params": dict(params)})
    data = read_prepared(prepared, split="test")
    model = PerCellClassifier.load(model_path)
    labels = data.obs["label"].astype(str).to_numpy()
    targets = sorted(set(labels)) if clusters in ("all", None) else [str(c) for c in clusters]
    stats = GeneStats(as_expression(data))  # shared by every cluster of this job
    records = []
    for target in targets:
        started = time.perf_counter()
        record: dict[str, Any] = {"cluster": target, "n_cells": int((labels == target).sum())}
        try:
            result = spec.function(data, labels, target, model, stats=stats, **params)
            record.update(spec.summarise(result), status="ok", reason="")
        except VulnbenchError as exc:
            log.warning("%s on cluster %r failed: %s", attack, target, exc)
            record.update(status="failed", reason=str(exc))
        record["runtime_s"] = time.perf_counter() - started
        records.append(record)
    write_json(output, {**identity, "attack": attack, "params": dict(params), "records": records,
                        "versions": versions()})


def mode_label(grid: Mapping[str, Any]) -> str:
    """Column label of a grid cell in tables and heatmaps: the method itself, else `key=value` pairs."""
    from vulnbench.matrix import format_value

    if not grid:
        return "default"
    if set(grid) == {"method"}:
        return str(grid["method"])
    return ", ".join(f"{k}={format_value(v)}" for k, v in grid.items())


def collect_results(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Long table: one row per (job, cluster), identity and parameters first."""
    rows = []
    for path in paths:
        payload = read_json(path)
        params = payload.get("params", {})
        for record in payload.get("records", []):
            rows.append({"dataset": payload["dataset"], "classifier": payload["classifier"],
                         "attack": payload["attack"], "pid": payload["pid"],
                         "params": ";".join(f"{k}={v}" for k, v in sorted(params.items())),
                         "mode": mode_label(payload.get("grid", {})),
                         **{f"param_{k}": v for k, v in params.items() if not isinstance(v, list | dict)},
                         **record})
    return pd.DataFrame(rows)


def run_aggregate(attack: str, results: Sequence[str | Path], output: str | Path) -> None:
    from vulnbench.io import write_table

    table = collect_results(results)
    if table.empty:
        raise DataError(f"no results to aggregate for attack {attack!r}")
    write_table(output, table)


def run_metrics_table(metrics: Sequence[str | Path], output: str | Path) -> None:
    from vulnbench.io import write_table

    rows = [{k: v for k, v in read_json(p).items() if k not in ("params", "versions", "f1_per_class", "label_map")}
            for p in metrics]
    write_table(output, pd.DataFrame(rows))
