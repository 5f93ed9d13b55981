"""Parameter grids shared by both arms: canonical value text, grid-cell ids and the expansion of a config's grid.

A grid maps parameter names to lists of values; keys joined by commas vary together. Each cell gets a readable,
stable id (`pid`) that names its folder and its row in the tables.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from vulnbench.core.errors import ConfigError
from vulnbench.core.params import Parameter, check_params, check_values

#: longest readable grid-cell id; longer ones are hashed
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
