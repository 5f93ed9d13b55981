"""The whole run's plan, both arms: what the workflow asks before any job (validation, the job tables)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from vulnbench.core.errors import DataError
from vulnbench.core.io import read_table, write_table
from vulnbench.core.jobs import JOB_FAILED
from vulnbench.core.plugins import use_plugins
from vulnbench.img.plan import build_image_jobs, images_section
from vulnbench.reader.stages import reader_study_config
from vulnbench.sc.plan import build, validate_config


def plan(config: Mapping[str, Any], schema: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check the config (its shape against `schema`, then every name and value against the registries) and
    expand it into the single-cell and the image attack jobs; the first problem is a one-line ConfigError.

    The config's `plugins` are imported first, so their classifiers, attacks and models are known by name."""
    use_plugins(config.get("plugins"))
    validate_config(config, schema=schema)
    jobs, image_jobs = build(config), build_image_jobs(config)
    if images_section(config):
        reader_study_config(config)
    return jobs, image_jobs


#: the columns that name a job in either arm's attack table
JOB_COLUMNS = ("attack", "dataset", "classifier", "model", "pid")
#: failed jobs named in the error line; the rest are counted
LISTED_FAILURES = 3


def job_status(tables: Sequence[str | Path]) -> pd.DataFrame:
    """One row per attack job of the given tables (either arm): its identity, `status` and `reason`."""
    frames = []
    for path in tables:
        table = read_table(path)
        if table.empty:
            continue
        table = table.reindex(columns=list(dict.fromkeys([*JOB_COLUMNS, "status", "reason"])))
        table["status"] = table["status"].fillna("ok")
        failed = table["status"] == JOB_FAILED
        table.loc[~failed, ["status", "reason"]] = ["ok", ""]
        frames.append(table.drop_duplicates([*JOB_COLUMNS, "status"]).assign(table=str(path)))
    columns = ["table", *JOB_COLUMNS, "status", "reason"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def run_job_status(tables: Sequence[str | Path], output: str | Path) -> None:
    """Every attack job's status, written only when none stopped on bad input; else one error line naming them.

    A failed job does not stop the run (its result is a status row, so every table is written); this last step
    makes the run end non-zero, and repeats on every run until the input is fixed (its output never exists then)."""
    status = job_status(tables)
    failed = status[status["status"] == JOB_FAILED]
    if len(failed):
        named = [f"{row.attack} on {row.dataset}/{row.classifier if isinstance(row.classifier, str) else row.model} "
                 f"({row.pid}): {row.reason}" for row in failed.head(LISTED_FAILURES).itertuples()]
        more = f"; and {len(failed) - LISTED_FAILURES} more" if len(failed) > LISTED_FAILURES else ""
        raise DataError(f"{len(failed)} attack job(s) stopped on bad input (rows with status {JOB_FAILED} in "
                        f"{', '.join(sorted(set(failed['table'])))}): {'; '.join(named)}{more}")
    write_table(output, status)
