"""A hash of the code a job runs, so that editing a classifier's or an attack's module reruns exactly its jobs.

Snakemake reruns a job when its `params` change; the package version alone does not change when a module is edited.
`code_hash(obj, …)` hashes the source files of the modules that define the given functions or classes and, through
their `import` statements (top level and inside functions, read with `ast`, nothing executed), every module of the
package they use. Two rules keep the closure to what the job runs:

* `from package import name` follows `name` to the module that defines it (a registry package re-exporting every
  attack would otherwise tie every attack to every other);
* parent packages' `__init__.py` files are not followed: they only re-export.

A helper defined in a module the job does not reach (a plotting module, another attack) never changes its hash.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

ROOT_PACKAGE = "vulnbench"
HASH_LENGTH = 12
#: how far a re-exported name is followed through `from … import` chains before its importer is taken
MAX_REEXPORT_DEPTH = 8


def _is_package_module(name: str, root: str) -> bool:
    return name == root or name.startswith(root + ".")


@cache
def _root_folder(root: str) -> Path:
    spec = importlib.util.find_spec(root)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"package {root!r} not found")
    return Path(next(iter(spec.submodule_search_locations)))


@cache
def _source_path(module: str, root: str = ROOT_PACKAGE) -> Path | None:
    """The file of a package module, found on disk without importing anything."""
    if not _is_package_module(module, root):
        return None
    folder = _root_folder(root).joinpath(*module.split(".")[1:])
    for candidate in (folder.with_suffix(".py"), folder / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def _tree(module: str, root: str) -> ast.Module | None:
    path = _source_path(module, root)
    return ast.parse(path.read_text(), filename=str(path)) if path is not None else None


def _resolve_relative(module: str, level: int, target: str | None, root: str) -> str:
    parts = module.split(".")
    path = _source_path(module, root)
    base = parts if path is not None and path.name == "__init__.py" else parts[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, target] if target else base)


def _defining_module(package: str, name: str, root: str, depth: int = 0) -> str:
    """The module that defines `package.name`: a submodule, the module itself, or, for a name it imports from
    another package module (a re-export), that module, followed statically."""
    if _source_path(f"{package}.{name}", root) is not None:
        return f"{package}.{name}"
    tree = _tree(package, root)
    if tree is None or depth >= MAX_REEXPORT_DEPTH:
        return package
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            source = _resolve_relative(package, node.level, node.module, root) if node.level else node.module or ""
            if _is_package_module(source, root):
                original = next(a.name for a in node.names if (a.asname or a.name) == name)
                return _defining_module(source, original, root, depth + 1)
    return package


@cache
def imported_modules(module: str, root: str = ROOT_PACKAGE) -> frozenset[str]:
    """The package's modules that `module` imports anywhere in its source (not transitively)."""
    tree = _tree(module, root)
    if tree is None:
        return frozenset()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if _is_package_module(alias.name, root))
        elif isinstance(node, ast.ImportFrom):
            source = _resolve_relative(module, node.level, node.module, root) if node.level else node.module or ""
            if not _is_package_module(source, root):
                continue
            found.update(_defining_module(source, alias.name, root) for alias in node.names if alias.name != "*")
    found.discard(module)
    return frozenset(found)


def module_closure(modules: Iterable[str], root: str = ROOT_PACKAGE) -> list[str]:
    """`modules` and every package module they reach through imports, sorted."""
    seen: set[str] = set()
    stack = [m for m in modules if _is_package_module(m, root)]
    while stack:
        module = stack.pop()
        if module in seen:
            continue
        seen.add(module)
        stack.extend(imported_modules(module, root) - seen)
    return sorted(seen)


def _module_of(obj: Any) -> str:
    if isinstance(obj, str):
        return obj
    if inspect.ismodule(obj):
        return obj.__name__
    module = getattr(obj, "__module__", None)
    if module is None:
        raise TypeError(f"cannot tell which module defines {obj!r}")
    return module


def code_hash(*objects: Any, sources: Iterable[Any] = (), root: str = ROOT_PACKAGE) -> str:
    """Short SHA-256 of the source of every package module the given functions, classes or module names reach,
    plus the source text alone of `sources` (functions defined in a hub module whose imports the job does not run,
    such as an attack's table summary in its registry)."""
    digest = hashlib.sha256()
    for module in module_closure({_module_of(obj) for obj in objects}, root):
        path = _source_path(module, root)
        if path is not None:
            digest.update(module.encode() + b"\0" + path.read_bytes() + b"\0")
    for function in sources:
        digest.update(inspect.getsource(function).encode() + b"\0")
    return digest.hexdigest()[:HASH_LENGTH]


def clear_caches() -> None:
    """Forget parsed sources (a long-lived process that edits the package, such as a test, calls this)."""
    for cached in (_root_folder, _source_path, _tree, imported_modules):
        cached.cache_clear()
