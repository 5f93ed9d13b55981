"""The config reference's building blocks: rows (key, type, default, allowed values, meaning) from declared
parameters, their markdown tables and JSON-schema fragments, and the meanings of the config's own structural keys.

Parameters of datasets, classifiers, attacks and models carry their meaning in their function's `Args:` docstring
(`vulnbench.core.params.declared_parameters`); split, classifier and attack keys next to their constants
(`vulnbench.sc.plan`), reader-study settings in `vulnbench.reader.stages`. What has no such place (the sections
themselves, the image arm's section keys) is declared here, keyed by its path. `vulnbench.reference` walks the
registries and puts it all together; this module imports nothing of the arms.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vulnbench.core.params import BUDGETS, NULLABLE_BUDGETS, Parameter, hint_kind

#: the meanings of the config's structural keys: path (`<name>` for a user-chosen name) → (type, default, meaning)
STRUCTURE: dict[str, tuple[str, str, str]] = {
    "plugins": ("list[str]", "[]", "your own modules (a .py path relative to the working directory, or an installed "
                                   "module) that register classifiers, attacks, datasets or image models on import"),
    "seed": ("int", "0", "integer ≥ 0 from which every random choice derives (train/test split, model "
                         "initialisation, each attacked cluster's own stream: vulnbench.core.seeding.job_seed)"),
    "datasets": ("mapping", "(required)", "datasets to run: registry name → loader parameters plus the split keys"),
    "datasets.<name>": ("mapping | null", "{}", "one dataset: its loader's parameters plus the split keys "
                                                "(null: all defaults)"),
    "classifiers": ("mapping", "(required)", "classifiers to train: registry name → hyper-parameters (constructor "
                                             "keywords) plus label_map"),
    "classifiers.<name>": ("mapping | null", "{}", "one classifier's settings (null: all defaults)"),
    "attacks": ("mapping", "(required)", "attacks to run: registry name → grid, params, clusters, classifiers"),
    "attacks.<name>": ("mapping | null", "{}", "one attack (null: one job with the function's defaults on every "
                                               "configured classifier)"),
    "detectability": ("mapping | null", "null (no panel)", "the poster's detectability panel: single-gene, "
                      "max-change and CGD (low / high) on one cluster, UMAPs before / after, a marker DotPlot"),
    "detectability.dataset": ("str", "(required)", "configured dataset whose held-out cells are attacked"),
    "detectability.classifier": ("str", "(required)", "configured classifier whose trained model is attacked"),
    "detectability.cluster": ("str | null", "null", "cluster (cell type) to attack; null: the largest cluster of the "
                                                    "held-out cells"),
    "detectability.params": ("mapping", "{}", "keyword parameters of vulnbench.sc.detectability.detectability"),
    "resources": ("mapping", "{}", "overrides for downloaded reference files resources/<resource>/<file> (scType's "
                                   "database and R code, ImageNet weights)"),
    "resources.<resource>": ("mapping", "{}", "a folder under resources/ (built in: sctype, torchvision)"),
    "resources.<resource>.<file>": ("mapping", "{}", "download settings of one file (a file not built in needs a url)"),
    "resources.<resource>.<file>.url": ("str", "the built-in URL", "where the file is downloaded from (built-in "
                                                                   "files: a commit-pinned URL)"),
    "resources.<resource>.<file>.checksum": ("str | null", "the built-in digest", "'sha256:…', 'md5:…' or "
                                             "'sha256-prefix:…'; null: not verified, its sha256 is logged"),
    "resources.<resource>.<file>.retries": ("int", "3", "download attempts in all"),
    "resources.<resource>.<file>.timeout": ("float", "60.0", "seconds to wait for the next byte; also the window "
                                                             "of the stall rule"),
    "images": ("mapping | null", "null (no image arm)", "the dermoscopy arm (melanoma vs naevus): datasets, models, "
                                                        "attacks and the section's settings"),
    "images.datasets": ("mapping", "(required)", "image datasets: registry name → loader parameters plus the "
                                                 "preparation keys"),
    "images.datasets.<name>": ("mapping | null", "{}", "one image dataset (null: all defaults)"),
    "images.datasets.<name>.image_size": ("int", "", "side in px of the square prepared images the models see "
                                                     "(Inception v3 needs ≥ 75; its auxiliary head ≥ 299)"),
    "images.datasets.<name>.resize": ("str", "", "crop: shorter side to image_size, then a centre crop; squash: "
                                                 "direct resize (the aspect ratio is lost)"),
    "images.datasets.<name>.val_fraction": ("float", "", "fraction of images in the validation split (best-epoch "
                                                         "selection), grouped by lesion"),
    "images.datasets.<name>.test_fraction": ("float", "", "fraction of images in the test split (metrics, "
                                                          "attacks), grouped by lesion"),
    "images.models": ("mapping", "(required)", "image models: entry name (becomes a folder name) → architecture, "
                                               "training settings, the architecture's parameters"),
    "images.models.<name>": ("mapping | null", "{}", "one model, e.g. one replicate of an architecture"),
    "images.models.<name>.architecture": ("str", "the entry's name", "registered architecture to build; onnx is an "
                                          "external black box (not trained; only the DE attacks run on it)"),
    "images.attacks": ("mapping", "(required)", "image attacks: registry name → grid, params, models"),
    "images.attacks.<name>": ("mapping | null", "{}", "one image attack (null: one job with its defaults)"),
    "images.attacks.<name>.grid": ("mapping", "{}", "parameter: [values]; every combination is one job per "
                                                    "dataset × model"),
    "images.attacks.<name>.params": ("mapping", "{}", "fixed parameter values for every job of this attack"),
    "images.attacks.<name>.models": ("list", "all configured models", "restrict the attack to these configured "
                                     "models (white-box attacks never run on black boxes)"),
    "images.max_attack_images": ("int | null", "20", "test melanomas per attack job (the correctly classified ones "
                                                     "are attacked); null: all"),
    "images.device": ("str", '"cpu"', "torch device of every image job: cpu, cuda, cuda:N or mps (the rules then ask "
                                    "the scheduler for a GPU)"),
    "images.systematic": ("mapping", "{}", "the systematic perturbations (rotations 45°/180°, channel shifts "
                                           "±5/±10/±50)"),
    "images.systematic.offset_kind": ("str", '"additive"', "channel shifts as additive 8-bit offsets (additive) or "
                                                         "as percent multipliers (percent)"),
    "images.reader_study": ("mapping", "{} (all defaults)", "blinded reader study of clean and adversarial images "
                                                            "(`vulnbench reader-study serve`)"),
}

_BUDGET_ALLOWED = {"count": "≥ 1", "count0": "≥ 0", "positive": "> 0", "non-negative": "≥ 0"}


@dataclass(frozen=True)
class Row:
    """One documented config key: `path` with `<name>` for user-chosen names; `key` as its table shows it."""

    path: str
    key: str
    type: str
    default: str
    allowed: str
    meaning: str


#: `type_text`'s words for the kinds of `vulnbench.core.params.hint_kind` that need no recursion
_TYPE_WORDS = {"null": "null", "bool": "bool", "int": "int", "float": "float", "str": "str", "list": "list",
               "mapping": "mapping", "function": "Python function"}


def type_text(hint: Any) -> str:
    """A type hint in the config's words: int, float, bool, str, list, mapping, null, or a union of them."""
    if hint is typing.Any:
        return "any"
    kind, args = hint_kind(hint), typing.get_args(hint)
    if kind == "literal":
        return " | ".join(dict.fromkeys(type_text(type(a)) for a in args))
    if kind == "union":
        return " | ".join(dict.fromkeys(type_text(a) for a in args))
    if kind is not None:
        return _TYPE_WORDS[kind]
    return "str" if getattr(hint, "__name__", "") in ("Path", "PurePath") else getattr(hint, "__name__", str(hint))


def choices(hint: Any) -> tuple[Any, ...]:
    """The values a `Literal` (possibly inside a union) allows; () when any value of the type is allowed."""
    kind, args = hint_kind(hint), typing.get_args(hint)
    if kind == "literal":
        return args
    if kind == "union":
        return tuple(c for a in args for c in choices(a))
    return ()


def allowed_text(name: str, hint: Any) -> str:
    """Allowed values or range: the Literal's choices, the budget's range (BUDGETS), or ''."""
    found = choices(hint)
    if found:
        return ", ".join(f"`{json_value(c)}`" for c in found)
    kind = BUDGETS.get(name)
    if kind is None:
        return ""
    return _BUDGET_ALLOWED[kind] + (" or null" if name in NULLABLE_BUDGETS else "")


def json_value(value: Any) -> Any:
    """A default as the config would spell it (tuples as lists, paths as strings)."""
    if isinstance(value, tuple | list):
        return [json_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def default_text(value: Any) -> str:
    return json.dumps(json_value(value), ensure_ascii=False)


def parameter_row(path: str, parameter: Parameter, required: bool = False) -> Row:
    """The reference row of one declared parameter."""
    default = "(required)" if required else default_text(parameter.default)
    return Row(path, parameter.name, type_text(parameter.expected), default,
               allowed_text(parameter.name, parameter.expected), parameter.meaning)


def structure_row(path: str, default: Any = None, has_default: bool = False) -> Row:
    """The reference row of a structural key (STRUCTURE); `default` overrides its text when the code holds it."""
    type_name, text, meaning = STRUCTURE[path]
    key = path.rsplit(".", 1)[-1]
    return Row(path, key, type_name, default_text(default) if has_default else text, allowed_text(key, None), meaning)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Iterable[Row]) -> str:
    """| key | type | default | allowed | meaning | — one line per row."""
    lines = ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for row in rows:
        default = f"`{_cell(row.default)}`" if _is_json(row.default) else row.default
        lines.append(f"| `{_cell(row.key)}` | {_cell(row.type)} | {_cell(default)} | {_cell(row.allowed)} | "
                     f"{_cell(row.meaning)} |")
    return "\n".join(lines)


def annotation(row: Row) -> dict[str, Any]:
    """A JSON-schema property that documents a key without constraining it (its values are checked in Python,
    with messages naming the owner): the meaning as `description`, type and range in `$comment`."""
    comment = f"type: {row.type}" + (f"; allowed: {row.allowed}" if row.allowed else "")
    fragment: dict[str, Any] = {"description": row.meaning, "$comment": comment}
    if _is_json(row.default):
        fragment["default"] = json.loads(row.default)
    return fragment


def _is_json(text: str) -> bool:
    """Whether a default's text is a value (rendered as code, a schema `default`) rather than words."""
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
