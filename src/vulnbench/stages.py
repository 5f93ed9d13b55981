"""Pipeline stages: pure functions (inputs, outputs, params) → files. Rules call these through adapters."""

from __future__ import annotations

import logging
import os
import sys
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
    """Library versions recorded in every result, so a number can be traced to the code that made it.

    Read from the installed distributions' metadata: importing torch and scanpy only to ask their version cost every
    attack job ~3 s."""
    from importlib.metadata import version

    return {"vulnbench": __version__,
            **{name: version(name) for name in ("numpy", "scipy", "scikit-learn", "torch", "scanpy", "anndata")}}


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


#: what OpenMP, BLAS and torch read when they start their thread pools (snakemake sets them for shell rules only)
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                   "NUMEXPR_NUM_THREADS")


def use_threads(threads: int | None) -> None:
    """Keep torch, OpenMP and BLAS within the cores the scheduler gave this job, without importing torch for it.

    Libraries already loaded are limited now (threadpoolctl; torch if imported); the environment covers those a job
    loads later (torch reads OMP_NUM_THREADS when first imported): importing torch only to set its thread count
    would add seconds to every single-cell job that never uses it."""
    if not threads:
        return
    count = int(threads)
    os.environ.update(dict.fromkeys(THREAD_ENV_VARS, str(count)))
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=count)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(count)


#: glibc mallopt parameters (malloc.h) and the values keep_freed_memory sets
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEPT_HEAP_BYTES, MMAP_ABOVE_BYTES = 1 << 30, 1 << 25


def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for reuse instead of handing it back to the OS after every batch.

    Batched scoring allocates and frees the same tens of MB of activations at every DE generation; by default glibc
    unmaps such blocks and page-faults them back in on the next batch, which cost a third of a CPU forward pass
    here (PyTorch's CPU tuning guide fixes the same with jemalloc/tcmalloc). Blocks up to 32 MB now come from the
    heap, which keeps up to 1 GB free. Process-wide and idempotent; returns False, changing nothing, off glibc."""
    import ctypes

    if not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_TRIM_THRESHOLD, KEPT_HEAP_BYTES)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_ABOVE_BYTES))


def run_train(prepared: str | Path, classifier: str, params: Mapping[str, Any], model_out: str | Path,
              metrics_out: str | Path, threads: int | None = None) -> None:
    from vulnbench.params import signature_defaults
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


def check_clusters(requested: str | Sequence[str] | None, labels: np.ndarray, where: str) -> list[str]:
    """The clusters to attack: all labels, or the requested names, each of which must be a label of the data."""
    present = sorted(set(labels))
    if requested in ("all", None):
        return present
    names = [requested] if isinstance(requested, str) else [str(c) for c in requested]
    unknown = [name for name in names if name not in present]
    if unknown:
        raise DataError(f"{where}: unknown cluster {unknown[0]!r} (clusters of the held-out cells: "
                        f"{', '.join(present)})")
    return names


#: attack parameters that name genes / clusters of the data
GENE_PARAMETERS, CLUSTER_PARAMETERS = ("genes", "exclude_genes"), ("new_target", "exclude_new_targets")


def check_data_names(params: Mapping[str, Any], labels: np.ndarray, gene_names: Sequence[str], where: str) -> None:
    """Gene and cluster names in an attack's parameters exist in the data, before the first cluster is attacked
    (a misspelt gene would otherwise fail every cluster alone, or a misspelt excluded gene be silently kept)."""
    import difflib

    known = set(map(str, gene_names))
    for key in GENE_PARAMETERS:
        unknown = [str(g) for g in params.get(key) or () if str(g) not in known]
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(known), n=3)
            hint = f"; close: {', '.join(close)}" if close else ""
            raise DataError(f"{where}: {key}: gene {unknown[0]!r} is not in the data ({len(known)} genes){hint}")
    for key in CLUSTER_PARAMETERS:
        value = params.get(key)
        if value:
            check_clusters([value] if isinstance(value, str) else list(value), labels, f"{where}: {key}")


def run_attack(prepared: str | Path, model_path: str | Path, attack: str, params: Mapping[str, Any],
               clusters: str | Sequence[str], output: str | Path, identity: Mapping[str, Any],
               params_out: str | Path | None = None, threads: int | None = None) -> None:
    """Attack every requested cluster of the test split; an expected failure becomes a status row.

    Every random choice is seeded from the config's seed (`identity["seed"]`) and the job's identity, per cluster
    (so a cluster's result does not depend on which other clusters the job attacks), unless the config fixes the
    attack's own `seed`."""
    from vulnbench.sc.attacks import ATTACKS
    from vulnbench.sc.expression import as_expression
    from vulnbench.sc.modifications import GeneStats
    from vulnbench.seeding import job_seed

    use_threads(threads)
    spec = ATTACKS.get(attack)
    if params_out is not None:
        write_json(params_out, {**identity, "attack": attack, "params": dict(params)})
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
    job = {"arm": "sc", **identity, "attack": attack, "params": dict(params), "versions": versions()}
    write_json(output, {"job": job, "records": records})


def mode_label(grid: Mapping[str, Any]) -> str:
    """Column label of a grid cell in tables and heatmaps: the method itself, else `key=value` pairs."""
    from vulnbench.matrix import format_value

    if not grid:
        return "default"
    if set(grid) == {"method"}:
        return str(grid["method"])
    return ", ".join(f"{k}={format_value(v)}" for k, v in grid.items())


def job_columns(job: Mapping[str, Any]) -> dict[str, Any]:
    """The identity and parameter columns of one attack job (a result.json payload or a planned job)."""
    params = job.get("params") or {}
    return {"dataset": job["dataset"], "classifier": job["classifier"], "attack": job["attack"], "pid": job["pid"],
            "params": ";".join(f"{k}={v}" for k, v in sorted(params.items())),
            "mode": mode_label(job.get("grid") or {}),
            **{f"param_{k}": v for k, v in params.items() if not isinstance(v, list | dict)}}


def collect_results(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Long table: one row per (job, cluster), identity and parameters first, read from each result's `job`."""
    rows = []
    for path in paths:
        payload = read_json(path)
        job = payload.get("job")
        if not isinstance(job, Mapping):
            raise DataError(f"{path} holds no job identity (written by an older vulnbench): delete it to rerun the job")
        identity = job_columns(job)
        rows.extend({**identity, **record} for record in payload.get("records", []))
    return pd.DataFrame(rows)


def run_aggregate(attack: str, results: Sequence[str | Path], output: str | Path) -> None:
    from vulnbench.io import write_table

    table = collect_results(results)
    if table.empty:
        raise DataError(f"no results to aggregate for attack {attack!r}")
    write_table(output, table)


def run_plot(attack: str, figure: str, table: str | Path, output: str | Path) -> None:
    """One figure of one attack's table, drawn by the function the attack registers for it."""
    from vulnbench.errors import ConfigError
    from vulnbench.io import read_table
    from vulnbench.sc.attacks import ATTACKS

    figures = ATTACKS.get(attack).figures
    if figure not in figures:
        raise ConfigError(f"attack {attack!r} has no figure {figure!r} (figures: {', '.join(figures)})")
    figures[figure](read_table(table), output)


def run_metrics_table(metrics: Sequence[str | Path], output: str | Path) -> None:
    from vulnbench.io import write_table

    rows = [{k: v for k, v in read_json(p).items() if k not in ("params", "versions", "f1_per_class", "label_map")}
            for p in metrics]
    write_table(output, pd.DataFrame(rows))


# -- after a failed run ----------------------------------------------------------------------------------------------
#: status of a planned job that left no result: it ran and failed (or was killed), or it never ran
JOB_FAILED, JOB_NOT_RUN = "job_failed", "job_not_run"


def missing_job_status(log_file: str | Path, inputs: Sequence[str | Path]) -> dict[str, str]:
    """Status and reason of a planned job without a result, naming where to look: its log or its missing input."""
    absent = [str(p) for p in inputs if not Path(p).exists()]
    if absent:
        return {"status": JOB_NOT_RUN, "reason": f"not run: its input {absent[0]} is missing (an upstream job failed)"}
    log_file = Path(log_file)
    if not log_file.is_file():
        return {"status": JOB_NOT_RUN, "reason": f"not run: the run stopped before it (no {log_file})"}
    lines = [line for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    detail = last.removeprefix("vulnbench error: ") if last.startswith("vulnbench error: ") else "failed or was killed"
    return {"status": JOB_FAILED, "reason": f"{detail} (log: {log_file})"}


def planned_results(jobs: pd.DataFrame, wildcards: Mapping[str, str], result: str, log_file: str,
                    inputs: Sequence[str]) -> tuple[list[Path], list[dict[str, Any]]]:
    """Split planned jobs into the result files that exist and, for the others, the job row plus its status.

    `result`, `log_file` and `inputs` are the rule's patterns; `wildcards` maps each wildcard to its `jobs` column.
    """
    present: list[Path] = []
    missing: list[dict[str, Any]] = []
    for job in jobs.to_dict("records"):
        names = {wildcard: job[column] for wildcard, column in wildcards.items()}
        path = Path(result.format(**names))
        if path.is_file():
            present.append(path)
        else:
            missing.append({**job, **missing_job_status(log_file.format(**names),
                                                        [p.format(**names) for p in inputs])})
    return present, missing


def any_job_ran(present: Sequence[Path], missing: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a table's jobs were reached at all: one left a result or failed. A table that none reached (its arm
    was not a target of the run, or its data never got prepared) is not written after a failed run."""
    return bool(present) or any(job["status"] != JOB_NOT_RUN for job in missing)


#: modification time of a table written after a failed run (1970-01-02): older than any input and any script
PLACEHOLDER_MTIME_NS = 86_400 * 10**9


def write_placeholder_table(path: str | Path, frame: pd.DataFrame) -> None:
    """Write a table in place of a rule's output after a failed run, dated 1970 so the next run rebuilds it.

    Snakemake regenerates a missing result only when the rule that consumes it must rerun, and it would take this
    table for up to date: its inputs' checksums can match an earlier successful run, or no input may exist at all.
    An output older than its rule's script (the `code` rerun trigger) or than an input (`mtime`) is rebuilt, with
    or without metadata; both triggers are Snakemake's defaults and the profiles' setting.
    """
    from vulnbench.io import write_table

    write_table(path, frame)
    os.utime(path, ns=(PLACEHOLDER_MTIME_NS, PLACEHOLDER_MTIME_NS))


def write_failed_attack_tables(jobs: pd.DataFrame, result: str, log_file: str, inputs: Sequence[str],
                               table: str) -> list[Path]:
    """Each attack table whose results are incomplete: the results that exist plus one status row per missing job.

    Called when a run ends with errors (Snakemake's `onerror`), where the aggregate rule could not run, so that
    a `--keep-going` run shows its failed cells instead of tables that silently lack them.
    """
    written = []
    wildcards = {"dataset": "dataset", "classifier": "classifier", "attack": "attack", "pid": "pid"}
    for attack, group in jobs.groupby("attack", sort=True):
        present, missing = planned_results(group, wildcards, result, log_file, inputs)
        if not missing or not any_job_ran(present, missing):
            continue
        failed = pd.DataFrame([{**job_columns(job), "status": job["status"], "reason": job["reason"]}
                               for job in missing])
        frames = [frame for frame in (collect_results(present), failed) if not frame.empty]
        out = Path(table.format(attack=attack))
        write_placeholder_table(out, pd.concat(frames, ignore_index=True))
        written.append(out)
    return written


def write_failed_tables(jobs: pd.DataFrame, image_jobs: pd.DataFrame, patterns: Mapping[str, Any]) -> None:
    """Snakemake's `onerror`: the attack tables of both arms with failed jobs as status rows.

    `patterns` holds the rules' file patterns (see the Snakefile). A problem here is printed, never raised: it
    must not hide the error that ended the run.
    """
    import sys

    from vulnbench.img.stages import write_failed_img_attack_table

    written: list[Path] = []
    try:
        if not jobs.empty:
            written += write_failed_attack_tables(jobs, **patterns["attack"])
        if not image_jobs.empty:
            written += write_failed_img_attack_table(image_jobs, **patterns["img_attack"])
    except Exception as exc:  # reporting only: the run has already failed
        print(f"vulnbench: could not write the tables of failed jobs: {type(exc).__name__}: {exc}", file=sys.stderr)
    for path in written:
        print(f"vulnbench: {path} lists the failed jobs (status {JOB_FAILED} / {JOB_NOT_RUN}); the next run "
              "rebuilds it", file=sys.stderr)
