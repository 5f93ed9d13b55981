"""A user's own classifiers, attacks, datasets and image models: modules named by the config's `plugins:` list.

Each module registers what it defines when imported (`@CLASSIFIERS.register("mine")`, as the built-in modules do),
so adding one is one module plus its config entries. The list travels to every job through the environment
(`VULNBENCH_PLUGINS`, set when the run is planned), and every registry imports the modules before its first lookup,
so a job finds the plugin's entries, and unpickles its models, exactly as the planning process did.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from vulnbench.core.errors import ConfigError

#: environment variable holding the plugin list (os.pathsep-separated), inherited by every job of the run
PLUGINS_ENV = "VULNBENCH_PLUGINS"

_loaded: dict[str, ModuleType] = {}


def plugin_module_name(path: Path) -> str:
    """A stable module name for a plugin given as a file, so pickles made in one job load in another."""
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
    return f"vulnbench_plugin_{path.stem}_{digest}"


def import_plugin(spec: str) -> ModuleType:
    """Import one plugin: a file path ending in .py (relative to the working directory) or a module name."""
    if spec in _loaded:
        return _loaded[spec]
    if spec.endswith(".py"):
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"plugins: file {spec!r} not found (relative to {Path.cwd()})")
        name = plugin_module_name(path)
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise ConfigError(f"plugins: cannot import {spec!r}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        _loaded[spec] = module
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(spec)
        except ModuleNotFoundError as error:
            raise ConfigError(f"plugins: cannot import module {spec!r} ({error}); give an installed module or a "
                              "path to a .py file") from None
        _loaded[spec] = module
    return module


def use_plugins(specs: Sequence[str] | None) -> list[ModuleType]:
    """Import the config's plugins now and hand the list to every job this process starts."""
    specs = [str(s) for s in specs or ()]
    if specs:
        os.environ[PLUGINS_ENV] = os.pathsep.join(specs)
    else:
        os.environ.pop(PLUGINS_ENV, None)
    return [import_plugin(spec) for spec in specs]


def load_plugins() -> None:
    """Import the plugins the run was planned with (no-op without any); called before every registry lookup."""
    for spec in filter(None, os.environ.get(PLUGINS_ENV, "").split(os.pathsep)):
        if spec not in _loaded:
            import_plugin(spec)
