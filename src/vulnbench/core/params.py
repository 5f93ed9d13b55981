"""Parameters as their functions declare them (default, type hint, choices as `Literal`) and the checks that hold
config values to them before any job runs.

Shared by both arms and by the config check (`vulnbench.sc.plan`); depends on nothing else of the package, so that
any arm can declare and check its parameters without import circles.
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from vulnbench.core.errors import ConfigError

#: sizes, step counts and step sizes, wherever they appear (dataset, classifier, attack, image arm): name → kind.
#: A negative or zero budget would otherwise surface only inside a job (or silently do nothing), so the config
#: check rejects it up front, naming the key.
BUDGETS: dict[str, str] = {
    **dict.fromkeys(("n_cells", "n_genes", "n_types", "epochs", "batch_size", "n_estimators", "min_samples_leaf",
                     "first_dichot", "max_split_size", "first_batch", "max_passes", "max_combinations",
                     "max_cells_per_type", "de_n", "retries", "n_images", "max_images", "max_generations",
                     "n_pixels", "popsize", "cgd_genes", "max_attack_images"), "count"),
    **dict.fromkeys(("n_markers", "walk_length", "while_max_count"), "count0"),
    **dict.fromkeys(("eps_levels", "learning_rate", "lr", "fold_change", "dispersion", "mean_count", "timeout", "C",
                     "fc_thresh"), "positive"),
    **dict.fromkeys(("alpha", "epsilon", "slope_margin", "min_mean_diff", "tune_thresh", "aux_weight", "momentum",
                     "delta", "max_translation"), "non-negative"),
}
#: budgets whose null means "no limit" or "the method's default"
NULLABLE_BUDGETS = frozenset({"max_cells_per_type", "de_n", "max_images", "popsize", "max_translation",
                              "max_attack_images"})
_BUDGET_TEXT = {"count": "a positive integer", "count0": "an integer ≥ 0", "positive": "a number > 0",
                "non-negative": "a number ≥ 0"}


def check_budgets(owner: str, params: Mapping[str, Any]) -> None:
    """Every size/step parameter of `params` (see BUDGETS) is a finite number in range; else a one-line error."""
    for key, value in params.items():
        kind = BUDGETS.get(str(key))
        if kind is None or (value is None and key in NULLABLE_BUDGETS):
            continue
        number = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)
        valid = number and math.isfinite(value) and {
            "count": lambda v: v >= 1 and v == int(v),
            "count0": lambda v: v >= 0 and v == int(v),
            "positive": lambda v: v > 0,
            "non-negative": lambda v: v >= 0,
        }[kind](value)
        if not valid:
            limit = " or null" if key in NULLABLE_BUDGETS else ""
            raise ConfigError(f"{owner}: {key} must be {_BUDGET_TEXT[kind]}{limit}, got {value!r}")


#: names that become folder names (datasets, classifiers, models, resources): the pipeline's wildcard alphabet
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def check_name(owner: str, name: Any) -> str:
    """A configured name that becomes part of a path: letters, digits, '_' and '-' only (no '/', '..', spaces)."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"{owner}: name {name!r} is not allowed (it becomes a folder name: letters, digits, '_' "
                          "and '-', starting with a letter or digit)")
    return name


@dataclass(frozen=True)
class Parameter:
    """One tunable parameter as its function declares it: default and type hint (None: read from the default)."""

    name: str
    default: Any
    hint: Any = None
    #: one line: what the parameter means (the `Args:` entry of its function's or class's docstring)
    meaning: str = ""

    @property
    def expected(self) -> Any:
        if self.hint is not None:
            return self.hint
        if self.default is None:
            return Any
        return type(self.default)


def declared_parameters(target: Any, exclude: Any = ()) -> dict[str, Parameter]:
    """The keyword parameters with defaults of a function or class, with their resolved type hints."""
    function = target.__init__ if inspect.isclass(target) else target
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # a hint naming a type only imported for type checkers: fall back to the defaults' types
        hints = {}
    meanings = parameter_meanings(target)
    return {name: Parameter(name, p.default, hints.get(name), meanings.get(name, ""))
            for name, p in inspect.signature(function).parameters.items()
            if name != "self" and name not in exclude and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
            and p.default is not p.empty}


_ARGS_HEADER = re.compile(r"(?P<indent>[ \t]*)Args:[ \t]*$")
_ARGS_ENTRY = re.compile(r"\*{0,2}(?P<name>\w+)(?:[ \t]*\([^)]*\))?:[ \t]*(?P<text>.*)$")


def docstring_meanings(doc: str | None) -> dict[str, str]:
    """Parameter name → one-line meaning from a Google-style `Args:` section (continuation lines, indented further
    than their entry, join it)."""
    meanings: dict[str, str] = {}
    lines = inspect.cleandoc(doc or "").splitlines()
    for start, line in enumerate(lines):
        header = _ARGS_HEADER.fullmatch(line)
        if header is None:
            continue
        entry_indent, name = None, None
        for body in lines[start + 1:]:
            if not body.strip():
                continue
            indent = len(body) - len(body.lstrip())
            if indent <= len(header["indent"]):
                break
            if entry_indent is None:
                entry_indent = indent
            entry = _ARGS_ENTRY.fullmatch(body.strip()) if indent == entry_indent else None
            if entry is not None:
                name = entry["name"]
                meanings[name] = entry["text"].strip()
            elif name is not None and indent > entry_indent:
                meanings[name] = f"{meanings[name]} {body.strip()}".strip()
    return meanings


def parameter_meanings(target: Any) -> dict[str, str]:
    """The documented meanings of a function's parameters; for a class, its own and its `__init__`'s docstring."""
    if inspect.isclass(target):
        return {**docstring_meanings(target.__doc__), **docstring_meanings(target.__init__.__doc__)}
    return docstring_meanings(getattr(target, "__doc__", None))


_SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.Iterable, collections.abc.Collection)
_MAPPINGS = (dict, collections.abc.Mapping)
_SCALARS = (bool, int, float, str)


def hint_kind(hint: Any) -> str | None:
    """What a type hint is in a config's terms: 'null', 'literal', 'union', 'bool', 'int', 'float', 'str', 'list',
    'mapping', 'function'; None for anything else (Any included). The config check (`value_matches`), its
    messages (`describe_hint`) and the config reference (`vulnbench.core.reference.type_text`) all sort hints
    this one way, so a hint the check accepts as a list is also called a list in its message and its table."""
    origin = typing.get_origin(hint)
    if hint is None or hint is type(None):
        return "null"
    if origin is typing.Literal:
        return "literal"
    if origin in (typing.Union, types.UnionType):
        return "union"
    for scalar in _SCALARS:
        if hint is scalar:  # identity: any hint may be unhashable
            return scalar.__name__
    if hint in _SEQUENCES or origin in _SEQUENCES:
        return "list"
    if hint in _MAPPINGS or origin in _MAPPINGS:
        return "mapping"
    if hint is collections.abc.Callable or origin is collections.abc.Callable:
        return "function"
    return None


def value_matches(value: Any, hint: Any) -> bool:
    """Whether a YAML value (None, bool, int, float, str, list, dict) fits a type hint; unknown types pass."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    kind, args = hint_kind(hint), typing.get_args(hint)
    if kind == "null":
        return value is None
    if kind == "literal":
        return any(value == choice and type(value) is type(choice) for choice in args)
    if kind == "union":
        return any(value_matches(value, arg) for arg in args)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "list":
        if not isinstance(value, list | tuple):
            return False
        items = [a for a in args if a is not Ellipsis]
        return len(items) != 1 or all(value_matches(v, items[0]) for v in value)
    if kind == "mapping":
        return isinstance(value, Mapping)
    # a function cannot come from a YAML file; other types (arrays, objects) are the function's own business
    return kind != "function"


#: `describe_hint`'s words for the kinds of `hint_kind` that need no recursion
_HINT_WORDS = {"null": "null", "bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
               "list": "a list", "mapping": "a mapping",
               "function": "a Python function (not settable in a config file)"}


def describe_hint(hint: Any) -> str:
    """What a type hint allows, in words, for error messages."""
    kind, args = hint_kind(hint), typing.get_args(hint)
    if kind == "literal":
        return "one of " + ", ".join(repr(a) for a in args)
    if kind == "union":
        return " or ".join(dict.fromkeys(describe_hint(a) for a in args if a is not typing.Any))
    if kind is not None:
        return _HINT_WORDS[kind]
    return getattr(hint, "__name__", str(hint))


def check_values(owner: str, params: Mapping[str, Any], declared: Mapping[str, Parameter],
                 checks: Mapping[str, Callable[[Any], Any]] | None = None) -> None:
    """Each value has its declared type (choices included), budgets are in range, and each value passes its
    parameter's own check (e.g. a modification mode parsed as the attack would): the first problem, one line."""
    check_budgets(owner, params)
    for key, value in params.items():
        parameter = declared.get(str(key))
        if parameter is not None and not value_matches(value, parameter.expected):
            raise ConfigError(f"{owner}: {key} must be {describe_hint(parameter.expected)}, got {value!r}")
        check = (checks or {}).get(str(key))
        if check is not None:
            try:
                check(value)
            except (ConfigError, ValueError, TypeError) as error:
                raise ConfigError(f"{owner}: {key}={value!r}: {error}") from None


def check_params(owner: str, params: Mapping[str, Any], target: Any = None, extra: Any = ()) -> None:
    """Every key must be a keyword of `target` (a class or function) or in `extra`; else a one-line error."""
    if not isinstance(params, Mapping):
        raise ConfigError(f"{owner}: expected a mapping of parameters, got {type(params).__name__}")
    allowed = (set(signature_defaults(target)) if target is not None else set()) | set(extra)
    for key in params:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{owner}: unknown parameter {key!r} (allowed: {', '.join(sorted(allowed))}){hint}")


def signature_defaults(target: Any) -> dict[str, Any]:
    function = target.__init__ if inspect.isclass(target) else target
    return {
        name: p.default
        for name, p in inspect.signature(function).parameters.items()
        if name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is not p.empty
    }
