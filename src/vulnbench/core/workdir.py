"""Which config a working directory's results belong to, so that a run of another config never overwrites them.

Snakemake writes every config's tables to the same `results/tables/…` paths: running `other.yaml` where
`config/config.yaml` ran would silently replace the first config's tables. The first real run of a directory
stamps `results/.vulnbench-config.json` with its config file(s); a later run of other config files stops with one
line saying where to run it instead. Editing the same config file and rerunning is the ordinary workflow and is not
refused: Snakemake reruns the jobs whose parameters changed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from vulnbench.core.errors import VulnbenchError
from vulnbench.core.io import atomic_path

STAMP = Path("results") / ".vulnbench-config.json"
DEFAULT_CONFIG = "config/config.yaml"


class ResultsOfAnotherConfig(VulnbenchError):
    """The working directory holds results of other config files."""


def config_names(workdir: Path, configfiles: Sequence[str | Path]) -> list[str]:
    """The config files as the stamp records them: relative to the working directory when inside it."""
    names = []
    for file in configfiles or [DEFAULT_CONFIG]:
        path = (workdir / file).resolve()
        try:
            names.append(str(path.relative_to(workdir.resolve())))
        except ValueError:
            names.append(str(path))
    return names


def has_results(workdir: Path) -> bool:
    tables = workdir / "results" / "tables"
    return tables.is_dir() and any(tables.iterdir())


def claim_results(workdir: str | Path, configfiles: Sequence[str | Path]) -> None:
    """Stamp the results with this run's config files, or refuse if they hold another config's tables."""
    workdir = Path(workdir)
    names = config_names(workdir, configfiles)
    stamp = workdir / STAMP
    if stamp.is_file():
        try:
            recorded = json.loads(stamp.read_text()).get("configfiles", [])
        except (OSError, ValueError, AttributeError):
            recorded = []
        if recorded and recorded != names and has_results(workdir):
            raise ResultsOfAnotherConfig(
                f"the results folder of {workdir} holds the tables of config {', '.join(recorded)}, not "
                f"{', '.join(names)}: run this config in its own directory (vulnbench run CONFIG --directory DIR, or "
                "snakemake --directory DIR), or move results/ aside first (mv results results_old)")
        if recorded == names:
            return
    stamp.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(stamp) as tmp:
        Path(tmp).write_text(json.dumps({"configfiles": names}, indent=1) + "\n")
