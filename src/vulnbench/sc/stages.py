"""Pipeline stages: pure functions (inputs, outputs, params) → files. Rules call these through adapters."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

from vulnbench.core.errors import DataError, VulnbenchError
from vulnbench.core.io import atomic_path, read_json, write_json, write_table
from vulnbench.core.jobs import JOB_FAILED, mode_label, use_threads, versions, write_failed_result
from vulnbench.core.params import signature_defaults
from vulnbench.core.seeding import job_seed
from vulnbench.sc.attacks import ATTACKS
from vulnbench.sc.classifiers import CLASSIFIERS
from vulnbench.sc.classifiers import get as get_classifier
from vulnbench.sc.classifiers.base import PerCellClassifier
from vulnbench.sc.data import get as get_dataset
from vulnbench.sc.data import prepare
from vulnbench.sc.data.prepare import check_clusters, check_data_names, read_prepared
from vulnbench.sc.expression import as_expression
from vulnbench.sc.modifications import GeneStats

log = logging.getLogger(__name__)


def run_download(dataset: str, params: Mapping[str, Any], output: str | Path) -> None:

    get_dataset(dataset, **params).download(Path(output))


def run_prepare(dataset: str, params: Mapping[str, Any], split: Mapping[str, Any], archive: str | Path | None,
                output: str | Path) -> None:

    raw = get_dataset(dataset, **params).load(Path(archive) if archive else None)
    prepared = prepare(raw, test_size=float(split["test_size"]), seed=int(split["seed"]),
                       min_cells_per_type=int(split["min_cells_per_type"]),
                       drop_labels=tuple(split.get("drop_labels") or ()))
    prepared.uns["dataset"] = dataset
    with atomic_path(output) as tmp:
        prepared.write_h5ad(tmp)


def run_train(prepared: str | Path, classifier: str, params: Mapping[str, Any], model_out: str | Path,
              metrics_out: str | Path, threads: int | None = None) -> None:

    use_threads(threads)
    params = dict(params)
    label_map = {str(k): str(v) for k, v in (params.pop("label_map", None) or {}).items()}
    if threads and "n_jobs" in signature_defaults(CLASSIFIERS.get(classifier)):
        params.setdefault("n_jobs", int(threads))
    data = read_prepared(prepared)
    train, test = data[data.obs["split"] == "train"], data[data.obs["split"] == "test"]
    started = time.perf_counter()
    model = get_classifier(classifier, **params).fit(train, train.obs["label"].astype(str))
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
    """Attack every requested cluster of the test split; an expected failure becomes a status row: of its cluster,
    or of the whole job when its input is bad (an unknown cluster or gene, an unreadable model).

    Every random choice is seeded from the config's seed (`identity["seed"]`) and the job's identity, per cluster
    (so a cluster's result does not depend on which other clusters the job attacks), unless the config fixes the
    attack's own `seed`."""
    use_threads(threads)
    if params_out is not None:
        write_json(params_out, {**identity, "attack": attack, "params": dict(params)})
    job = {"arm": "sc", **identity, "attack": attack, "params": dict(params), "versions": versions()}
    try:
        records = _attack_clusters(prepared, model_path, attack, params, clusters, identity)
    except VulnbenchError as error:
        write_failed_result(output, job, error)
        return
    write_json(output, {"job": job, "status": "ok", "records": records})


def _attack_clusters(prepared: str | Path, model_path: str | Path, attack: str, params: Mapping[str, Any],
                     clusters: str | Sequence[str], identity: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One record per requested cluster (its summary, or its own failure); raises on a problem of the whole job."""
    spec = ATTACKS.get(attack)
    data = read_prepared(prepared, split="test")
    labels = data.obs["label"].astype(str).to_numpy()
    where = f"attack {attack!r} on dataset {identity.get('dataset')!r}"
    targets = check_clusters(clusters, labels, where)
    check_data_names(params, labels, data.var_names, where)
    model = PerCellClassifier.load(model_path)
    stats = GeneStats(as_expression(data))  # shared by every cluster of this job
    config_seed = int(identity.get("seed", 0))
    seeded = "seed" in spec.parameters and params.get("seed") is None
    records = []
    for target in targets:
        started = time.perf_counter()
        record: dict[str, Any] = {"cluster": target, "n_cells": int((labels == target).sum())}
        call = dict(params)
        if seeded:
            call["seed"] = job_seed(config_seed, "sc", identity.get("dataset"), identity.get("classifier"), attack,
                                    identity.get("pid"), target)
            record["job_seed"] = call["seed"]
        try:
            result = spec.function(data, labels, target, model, stats=stats, **call)
            record.update(spec.summarise(result), status="ok", reason="")
        except VulnbenchError as exc:
            log.warning("%s on cluster %r failed: %s", attack, target, exc)
            record.update(status="failed", reason=str(exc))
        record["runtime_s"] = time.perf_counter() - started
        records.append(record)
    return records


def job_columns(job: Mapping[str, Any]) -> dict[str, Any]:
    """The identity and parameter columns of one attack job (a result.json payload or a planned job)."""
    params = job.get("params") or {}
    return {"dataset": job["dataset"], "classifier": job["classifier"], "attack": job["attack"], "pid": job["pid"],
            "params": ";".join(f"{k}={v}" for k, v in sorted(params.items())),
            "mode": mode_label(job.get("grid") or {}),
            **{f"param_{k}": v for k, v in params.items() if not isinstance(v, list | dict)}}


def collect_results(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Long table: one row per (job, cluster), identity and parameters first, read from each result's `job`; a job
    that stopped on bad input is one row with its `status` and `reason`."""
    rows = []
    for path in paths:
        payload = read_json(path)
        job = payload.get("job")
        if not isinstance(job, Mapping):
            raise DataError(f"{path} holds no job identity (written by an older vulnbench): delete it to rerun the job")
        identity = job_columns(job)
        if payload.get("status") == JOB_FAILED:
            rows.append({**identity, "status": JOB_FAILED, "reason": payload.get("reason", "")})
        rows.extend({**identity, **record} for record in payload.get("records", []))
    # columns in the order of a finished job's rows, whichever job comes first
    finished = [row for row in rows if row.get("status") != JOB_FAILED]
    columns = dict.fromkeys(key for row in [*finished, *rows] for key in row)
    return pd.DataFrame(rows, columns=list(columns))


def run_aggregate(attack: str, results: Sequence[str | Path], output: str | Path) -> None:

    table = collect_results(results)
    if table.empty:
        raise DataError(f"no results to aggregate for attack {attack!r}")
    write_table(output, table)


def run_metrics_table(metrics: Sequence[str | Path], output: str | Path) -> None:

    rows = [{k: v for k, v in read_json(p).items() if k not in ("params", "versions", "f1_per_class", "label_map")}
            for p in metrics]
    write_table(output, pd.DataFrame(rows))


