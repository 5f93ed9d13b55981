"""The whole run's plan, both arms: what the workflow asks before any job (validation, the job tables)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from vulnbench.img.plan import build_image_jobs, images_section
from vulnbench.reader.stages import reader_study_config
from vulnbench.sc.plan import build, validate_config


def plan(config: Mapping[str, Any], schema: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check the config (its shape against `schema`, then every name and value against the registries) and
    expand it into the single-cell and the image attack jobs; the first problem is a one-line ConfigError."""
    validate_config(config, schema=schema)
    jobs, image_jobs = build(config), build_image_jobs(config)
    if images_section(config):
        reader_study_config(config)
    return jobs, image_jobs
