"""The config reference, derived from the declarations: config/README.md's reference section and the JSON schema.

Every dataset, classifier, attack, image model and image attack declares its parameters once (default and type in
its signature, the meaning in its docstring's `Args:`; `vulnbench.core.params.declared_parameters`); the config's
structural keys carry their meanings beside their constants (`vulnbench.sc.plan`, `vulnbench.reader.stages`) or in
`vulnbench.core.reference.STRUCTURE`. This module walks the registries and writes, from that one source:

* the reference section of config/README.md (between `<!-- reference:start -->` and `<!-- reference:end -->`),
* workflow/schemas/config.schema.json (draft 2020-12, `description` = meaning on every property), which the
  pipeline validates against, and its YAML twin workflow/schemas/config.schema.yaml.

    .venv/bin/python -m vulnbench.reference --write   # regenerate
    .venv/bin/python -m vulnbench.reference --check   # exit 1 when a generated file is stale
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vulnbench.core.params import Parameter, declared_parameters, parameter_meanings
from vulnbench.core.reference import Row, annotation, markdown_table, parameter_row, structure_row
from vulnbench.img.data import IMAGE_DATASETS
from vulnbench.img.models import ARCHITECTURES, IMAGE_MODELS, train_image_model
from vulnbench.img.plan import (
    ATTACK_KEYS as IMAGE_ATTACK_KEYS,
)
from vulnbench.img.plan import (
    IMAGE_ATTACKS,
    PREPARE_KEYS,
    SECTION_KEYS,
    TRAIN_KEYS,
    attack_parameters,
)
from vulnbench.reader.stages import READER_STUDY_DEFAULTS, READER_STUDY_MEANINGS
from vulnbench.sc.attacks import ATTACKS
from vulnbench.sc.classifiers import CLASSIFIERS
from vulnbench.sc.data import DATASETS
from vulnbench.sc.detectability import detectability
from vulnbench.sc.plan import (
    ATTACK_KEY_MEANINGS,
    ATTACK_KEYS,
    CLASSIFIER_KEY_MEANINGS,
    CLASSIFIER_KEYS,
    SPLIT_KEYS,
    SPLIT_MEANINGS,
)

REPO = Path(__file__).resolve().parents[2]
README = Path("config") / "README.md"
SCHEMA_JSON = Path("workflow") / "schemas" / "config.schema.json"
SCHEMA_YAML = Path("workflow") / "schemas" / "config.schema.yaml"
START, END = "<!-- reference:start -->", "<!-- reference:end -->"
COMMAND = ".venv/bin/python -m vulnbench.reference --write"
#: builder keywords the pipeline sets itself (from the dataset, the training keys, the seed and `images: device`)
MODEL_PLUMBING = ("image_size", "weights", "seed", "device")
#: image-dataset keywords the pipeline sets itself (the preparation's image_size)
IMAGE_DATASET_PLUMBING = ("image_size",)
RESOURCE_KEYS = ("url", "checksum", "retries", "timeout")
#: keyword arguments of `detectability` that are data, not settings
DETECTABILITY_PLUMBING = ("adata", "labels", "target", "model", "stats", "progress")


@dataclass
class Section:
    """One table of the reference: its heading (a config path), a line of explanation and its rows."""

    heading: str
    intro: str
    rows: list[Row] = field(default_factory=list)


def _structural(path: str, defaults: Mapping[str, Any] | None = None) -> Row:
    key = path.rsplit(".", 1)[-1]
    if defaults is not None and key in defaults:
        return structure_row(path, defaults[key], has_default=True)
    return structure_row(path)


def _meaning_row(path: str, default: Any, meaning: str) -> Row:
    """A row for a setting whose default lives beside its meaning in a constant (split keys, reader study)."""
    hint = str | None if default is None else None  # a null default stands for a name or a folder
    return parameter_row(path, Parameter(path.rsplit(".", 1)[-1], default, hint, meaning))


def _declared_rows(prefix: str, declared: Mapping[str, Parameter], required: tuple[str, ...] = ()) -> list[Row]:
    return [parameter_row(f"{prefix}.{name}", parameter, name in required) for name, parameter in declared.items()]


def _required_parameters(target: Any, exclude: tuple[str, ...] = ()) -> dict[str, Parameter]:
    """Parameters without a default that a config must set (onnx's path), with their documented meaning."""
    function = target.__init__ if inspect.isclass(target) else target
    meanings, hints = parameter_meanings(target), typing.get_type_hints(function)
    return {name: Parameter(name, None, hints.get(name), meanings.get(name, ""))
            for name, p in inspect.signature(function).parameters.items()
            if name != "self" and name not in exclude and p.default is p.empty
            and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def _required_dataset_keys(target: Any) -> tuple[str, ...]:
    """Loader keywords documented as required (their default None only means 'not given')."""
    meanings = parameter_meanings(target)
    return tuple(name for name, text in meanings.items() if text.startswith("(required") or "(required" in text)


def dataset_parameters(name: str) -> dict[str, Parameter]:
    return declared_parameters(DATASETS.get(name))


def classifier_parameters(name: str) -> dict[str, Parameter]:
    return declared_parameters(CLASSIFIERS.get(name))


def attack_declared(name: str) -> dict[str, Parameter]:
    return dict(ATTACKS.get(name).declared)


def detectability_declared() -> dict[str, Parameter]:
    return declared_parameters(detectability, exclude=DETECTABILITY_PLUMBING)


def image_dataset_parameters(name: str) -> dict[str, Parameter]:
    return declared_parameters(IMAGE_DATASETS.get(name), exclude=IMAGE_DATASET_PLUMBING)


def training_parameters() -> dict[str, Parameter]:
    """The training settings a model entry may set (TRAIN_KEYS, as `train_image_model` declares them)."""
    declared = declared_parameters(train_image_model)
    return {key: declared[key] for key in TRAIN_KEYS if key in declared}


def architecture_parameters(architecture: str) -> dict[str, Parameter]:
    """An architecture's own parameters a model entry may set (what the pipeline does not set itself)."""
    builder = IMAGE_MODELS.get(architecture)
    exclude = MODEL_PLUMBING + (TRAIN_KEYS if architecture in ARCHITECTURES else ())
    return {**_required_parameters(builder, exclude), **declared_parameters(builder, exclude=exclude)}


def sections() -> list[Section]:
    """Every table of the reference, in the config's order."""
    out = [Section("top level", "The file's sections; `snakemake --configfile other.yaml` replaces the file "
                                "entirely (it is not merged with it).",
                   [structure_row(k) for k in ("plugins", "seed", "datasets", "classifiers", "attacks", "detectability",
                                               "resources", "images")])]
    # -- datasets
    out.append(Section("datasets.<name>", f"Every dataset (registry: {_names(DATASETS)}) also takes the split keys.",
                       [_structural("datasets.<name>")]
                       + [_meaning_row(f"datasets.<name>.{k}", d, SPLIT_MEANINGS.get(k, ""))
                          for k, d in SPLIT_KEYS.items()]))
    out.extend(_dataset_sections("datasets", DATASETS, dataset_parameters))
    # -- classifiers
    out.append(Section("classifiers.<name>", f"Every classifier (registry: {_names(CLASSIFIERS)}) also takes these "
                                             "keys besides its hyper-parameters.",
                       [_structural("classifiers.<name>")]
                       + [_meaning_row(f"classifiers.<name>.{k}", {}, CLASSIFIER_KEY_MEANINGS.get(k, ""))
                          for k in CLASSIFIER_KEYS]))
    for name in CLASSIFIERS:
        out.append(Section(f"classifiers.{name}", _summary(CLASSIFIERS.get(name)),
                           _declared_rows(f"classifiers.{name}", classifier_parameters(name))))
    # -- attacks
    out.append(Section("attacks.<name>", f"Every attack (registry: {_names(ATTACKS)}) takes these keys; its "
                                         "parameters (below) go under `params:` (one value) or `grid:` (a list of "
                                         "values, one job each).",
                       [_structural("attacks.<name>")]
                       + [_meaning_row(f"attacks.<name>.{k}", _attack_key_default(k), ATTACK_KEY_MEANINGS.get(k, ""))
                          for k in ATTACK_KEYS]))
    for name in ATTACKS:
        spec = ATTACKS.get(name)
        out.append(Section(f"attacks.{name}", f"`params:` / `grid:` keys of `{spec.function.__module__}."
                                              f"{spec.function.__name__}`. " + _summary(spec.function),
                           _declared_rows(f"attacks.{name}", attack_declared(name))))
    # -- detectability, resources
    out.append(Section("detectability", "One dataset × classifier × cluster, attacked four ways.",
                       [structure_row(f"detectability.{k}") for k in ("dataset", "classifier", "cluster", "params")]))
    out.append(Section("detectability.params", "Keyword parameters of `vulnbench.sc.detectability.detectability`.",
                       _declared_rows("detectability.params", detectability_declared())))
    out.append(Section("resources.<resource>.<file>", "e.g. `sctype: {ScTypeDB_full.xlsx: {checksum: \"sha256:…\"}}`.",
                       [structure_row(p) for p in ("resources.<resource>", "resources.<resource>.<file>")]
                       + [structure_row(f"resources.<resource>.<file>.{k}") for k in RESOURCE_KEYS]))
    # -- images
    out.append(Section("images", "The dermoscopy arm's section keys.",
                       [structure_row(f"images.{k}") for k in SECTION_KEYS]))
    out.append(Section("images.datasets.<name>", f"Every image dataset (registry: {_names(IMAGE_DATASETS)}) also "
                                                 "takes the preparation keys.",
                       [_structural("images.datasets.<name>")]
                       + [_structural(f"images.datasets.<name>.{k}", PREPARE_KEYS) for k in PREPARE_KEYS]))
    out.extend(_dataset_sections("images.datasets", IMAGE_DATASETS, image_dataset_parameters))
    out.append(Section("images.models.<name>", f"Every model entry (architectures: {_names(IMAGE_MODELS)}); the "
                                               "training settings (from `vulnbench.img.models.train_image_model`) "
                                               "apply to the trained architectures, not to black boxes.",
                       [_structural("images.models.<name>"), _structural("images.models.<name>.architecture"),
                        *_declared_rows("images.models.<name>", training_parameters())]))
    for name in IMAGE_MODELS:
        kind = "trained" if name in ARCHITECTURES else "a black box: not trained, no training settings"
        out.append(Section(f"images.models.<name> with architecture: {name}", f"({kind}) " + _summary(
            IMAGE_MODELS.get(name)), _declared_rows(f"images.models.{name}", architecture_parameters(name),
                                                    tuple(_required_parameters(IMAGE_MODELS.get(name))))))
    out.append(Section("images.attacks.<name>", f"Every image attack (registry: {_names(IMAGE_ATTACKS)}) takes these "
                                                "keys; its parameters go under `params:` or `grid:`.",
                       [_structural("images.attacks.<name>")]
                       + [_structural(f"images.attacks.<name>.{k}") for k in IMAGE_ATTACK_KEYS]))
    for name in IMAGE_ATTACKS:
        out.append(Section(f"images.attacks.{name}", IMAGE_ATTACKS.get(name).description,
                           _declared_rows(f"images.attacks.{name}", attack_parameters(name))))
    out.append(Section("images.systematic", "Rotations and colour shifts of the test images.",
                       [structure_row("images.systematic.offset_kind")]))
    out.append(Section("images.reader_study", "Settings of `vulnbench.reader.stages` (READER_STUDY_DEFAULTS).",
                       [_meaning_row(f"images.reader_study.{k}", d, READER_STUDY_MEANINGS.get(k, ""))
                        for k, d in READER_STUDY_DEFAULTS.items()]))
    return out


def _dataset_sections(prefix: str, registry: Any, parameters: Callable[[str], dict[str, Parameter]]) -> list[Section]:
    """One table per registered loader, the same for both arms' datasets: its summary, the parameters `parameters`
    gives for it (each arm leaves out what its pipeline sets itself) and the ones its docstring marks required."""
    out = []
    for name in registry:
        loader = registry.get(name)
        out.append(Section(f"{prefix}.{name}", _summary(loader),
                           _declared_rows(f"{prefix}.{name}", parameters(name), _required_dataset_keys(loader))))
    return out


def _names(registry: Any) -> str:
    return ", ".join(f"`{n}`" for n in registry)


def _summary(target: Any) -> str:
    doc = inspect.getdoc(target) or ""
    return doc.split("\n\n", 1)[0].replace("\n", " ").strip() if not doc.startswith("Keyword parameters") else ""


def _attack_key_default(key: str) -> Any:
    return {"grid": {}, "params": {}, "clusters": "all"}.get(key, "(all configured)")


def all_rows() -> dict[str, Row]:
    """Every documented key: its path (`<name>` for user-chosen names) → its row."""
    return {row.path: row for section in sections() for row in section.rows}


def markdown() -> str:
    """The generated reference section of config/README.md (without its markers)."""
    parts = ["## Reference (generated)", "",
             f"Generated from the declarations by `{COMMAND}` (a test fails when it is stale); do not edit by hand. "
             "`<name>` stands for a name you choose from the registry (a dataset, classifier, attack, model); "
             "`allowed` gives choices or ranges the config check enforces; null is YAML's `null`."]
    for section in sections():
        parts += ["", f"### `{section.heading}`", ""]
        if section.intro:
            parts += [section.intro, ""]
        parts.append(markdown_table(section.rows))
    return "\n".join(parts) + "\n"


# -- the JSON schema ------------------------------------------------------------------------------------------------
def _object(description: str, properties: Mapping[str, Any] | None = None, closed: bool = False,
            nullable: bool = False, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": ["object", "null"] if nullable else "object", "description": description}
    if properties:
        schema["properties"] = dict(properties)
    if closed:
        schema["additionalProperties"] = False
    schema.update(extra)
    return schema


def _described(row: Row, constraint: Mapping[str, Any] | None = None) -> dict[str, Any]:
    fragment = annotation(row)
    fragment.update(constraint or {})
    return fragment


def _entries(description: str, generic: dict[str, Any], per_name: Mapping[str, dict[str, Any]],
             min_properties: bool = True) -> dict[str, Any]:
    """A mapping of registry names: each known name its documented entry, any other name the generic one (the
    registry check names it)."""
    schema = _object(description, per_name, additionalProperties=generic)
    if min_properties:
        schema["minProperties"] = 1
    return schema


def _entry(generic: dict[str, Any], description: str, extra_properties: Mapping[str, Any]) -> dict[str, Any]:
    entry = copy.deepcopy(generic)
    entry["description"] = description
    entry.setdefault("properties", {}).update(extra_properties)
    return entry


def _parameter_properties(prefix: str, rows: Mapping[str, Row]) -> dict[str, Any]:
    return {row.key: annotation(row) for path, row in rows.items() if path.rsplit(".", 1)[0] == prefix}


def schema() -> dict[str, Any]:
    """The config's JSON schema (draft 2020-12). It constrains the shape (sections, closed structural mappings,
    split keys, resources) and documents every parameter; parameter values are checked by the registries right
    after it (`vulnbench.sc.plan.validate_config`), whose messages name the dataset, classifier or attack."""
    rows = all_rows()

    def row(path: str) -> Row:
        return rows[path]

    split = {"test_size": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
             "min_cells_per_type": {"type": "integer", "minimum": 2},
             "drop_labels": {"type": "array", "items": {"type": "string"}}}
    dataset_generic = _object(row("datasets.<name>").meaning, nullable=True, properties={
        k: _described(row(f"datasets.<name>.{k}"), split.get(k)) for k in SPLIT_KEYS})
    datasets = _entries(row("datasets").meaning, dataset_generic, {
        name: _entry(dataset_generic, _summary(DATASETS.get(name)) or row("datasets.<name>").meaning,
                     _parameter_properties(f"datasets.{name}", rows)) for name in DATASETS})

    classifier_generic = _object(row("classifiers.<name>").meaning, nullable=True, properties={
        k: _described(row(f"classifiers.<name>.{k}")) for k in CLASSIFIER_KEYS})
    classifiers = _entries(row("classifiers").meaning, classifier_generic, {
        name: _entry(classifier_generic, _summary(CLASSIFIERS.get(name)) or row("classifiers.<name>").meaning,
                     _parameter_properties(f"classifiers.{name}", rows)) for name in CLASSIFIERS})

    attack_constraints = {
        "grid": {"type": "object", "additionalProperties": {"type": "array", "minItems": 1}},
        "params": {"type": "object"},
        "classifiers": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "clusters": {"oneOf": [{"const": "all"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]},
    }
    attack_generic = _object(row("attacks.<name>").meaning, nullable=True, closed=True, properties={
        k: _described(row(f"attacks.<name>.{k}"), attack_constraints.get(k)) for k in ATTACK_KEYS})
    # oneOf's description is what a wrong `clusters` value is told it should be
    attack_generic["properties"]["clusters"]["description"] = "'all' or a list of cluster names"
    attack_generic["properties"]["clusters"]["$comment"] = row("attacks.<name>.clusters").meaning
    attacks = _entries(row("attacks").meaning, attack_generic, {
        name: _attack_entry(attack_generic, _summary(ATTACKS.get(name).function) or row("attacks.<name>").meaning,
                            _parameter_properties(f"attacks.{name}", rows)) for name in ATTACKS})

    detect = _object(row("detectability").meaning, nullable=True, closed=True, properties={
        "dataset": _described(row("detectability.dataset"), {"type": "string"}),
        "classifier": _described(row("detectability.classifier"), {"type": "string"}),
        "cluster": _described(row("detectability.cluster"), {"type": ["string", "null"]}),
        "params": _described(row("detectability.params"), {"type": "object", "properties": _parameter_properties(
            "detectability.params", rows)})})

    resource_constraints = {"url": {"type": "string"}, "checksum": {"type": ["string", "null"]},
                            "retries": {"type": "integer", "minimum": 1},
                            "timeout": {"type": "number", "exclusiveMinimum": 0}}
    resource_file = _object(row("resources.<resource>.<file>").meaning, closed=True, properties={
        k: _described(row(f"resources.<resource>.<file>.{k}"), resource_constraints[k]) for k in RESOURCE_KEYS})
    resources = _object(row("resources").meaning, additionalProperties=_object(
        row("resources.<resource>").meaning, additionalProperties=resource_file))

    top = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": f"generated by `{COMMAND}` from the declarations; do not edit",
        "title": "vulnbench pipeline configuration",
        "description": "vulnbench pipeline configuration (names and parameter values are checked against the "
                       "registries right after this schema; see config/README.md)",
        "type": "object",
        "additionalProperties": False,
        "required": ["datasets", "classifiers", "attacks"],
        "properties": {
            "plugins": _described(row("plugins"), {"type": "array", "items": {"type": "string", "minLength": 1}}),
            "seed": _described(row("seed"), {"type": "integer", "minimum": 0}),
            "datasets": datasets,
            "classifiers": classifiers,
            "detectability": detect,
            "images": _images_schema(rows),
            "resources": resources,
            "attacks": attacks,
        },
    }
    return top


def _attack_entry(generic: dict[str, Any], description: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    entry = copy.deepcopy(generic)
    entry["description"] = description
    entry["properties"]["params"]["properties"] = dict(parameters)
    entry["properties"]["grid"]["properties"] = {
        k: {**{key: v for key, v in value.items() if key != "default"}, "type": "array", "minItems": 1}
        for k, value in parameters.items()}
    return entry


def _images_schema(rows: Mapping[str, Row]) -> dict[str, Any]:
    def row(path: str) -> Row:
        return rows[path]

    dataset_generic = _object(row("images.datasets.<name>").meaning, nullable=True, properties={
        k: _described(row(f"images.datasets.<name>.{k}")) for k in PREPARE_KEYS})
    datasets = _entries(row("images.datasets").meaning, dataset_generic, {
        name: _entry(dataset_generic, _summary(IMAGE_DATASETS.get(name)) or row("images.datasets.<name>").meaning,
                     _parameter_properties(f"images.datasets.{name}", rows)) for name in IMAGE_DATASETS},
        min_properties=False)
    model_generic = _object(row("images.models.<name>").meaning, nullable=True, properties={
        "architecture": _described(row("images.models.<name>.architecture")),
        **_parameter_properties("images.models.<name>", rows)})
    models = _object(row("images.models").meaning, nullable=True, additionalProperties=model_generic)
    attack_generic = _object(row("images.attacks.<name>").meaning, nullable=True, closed=True, properties={
        k: _described(row(f"images.attacks.<name>.{k}")) for k in IMAGE_ATTACK_KEYS})
    attacks = _object(row("images.attacks").meaning, nullable=True, additionalProperties=attack_generic, properties={
        name: _image_attack_entry(attack_generic, IMAGE_ATTACKS.get(name).description,
                                  _parameter_properties(f"images.attacks.{name}", rows)) for name in IMAGE_ATTACKS})
    datasets["type"] = ["object", "null"]
    known = {
        "datasets": datasets, "models": models, "attacks": attacks,
        "max_attack_images": _described(row("images.max_attack_images")),
        "device": _described(row("images.device")),
        "systematic": _object(row("images.systematic").meaning, nullable=True, closed=True, properties={
            "offset_kind": _described(row("images.systematic.offset_kind"))}),
        "reader_study": _object(row("images.reader_study").meaning, nullable=True, closed=True, properties={
            k: _described(row(f"images.reader_study.{k}")) for k in READER_STUDY_DEFAULTS}),
    }
    return _object(row("images").meaning, nullable=True, closed=True,
                   properties={k: known.get(k, {"description": row(f"images.{k}").meaning}) for k in SECTION_KEYS})


def _image_attack_entry(generic: dict[str, Any], description: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    entry = copy.deepcopy(generic)
    entry["description"] = description
    entry["properties"]["params"]["properties"] = dict(parameters)
    entry["properties"]["grid"]["properties"] = {k: {key: v for key, v in value.items() if key != "default"}
                                                 for k, value in parameters.items()}
    return entry


# -- which reference row explains a key of a config file ------------------------------------------------------------
def config_keys(config: Mapping[str, Any]) -> dict[str, str | None]:
    """Every key path of a config (dotted) → the reference row that explains it (None: undocumented)."""
    rows = all_rows()
    found: dict[str, str | None] = {}

    def note(concrete: list[str], path: str) -> None:
        found[".".join(concrete)] = path if path in rows else None

    def entries(value: Any) -> Mapping[str, Any]:
        return value if isinstance(value, Mapping) else {}

    for top, value in config.items():
        note([top], str(top))
        if top in ("datasets", "classifiers"):
            keys = SPLIT_KEYS if top == "datasets" else CLASSIFIER_KEYS
            for name, entry in entries(value).items():
                note([top, name], f"{top}.<name>")
                for key in entries(entry):
                    note([top, name, key], f"{top}.<name>.{key}" if key in keys else f"{top}.{name}.{key}")
        elif top == "attacks":
            for name, entry in entries(value).items():
                note([top, name], "attacks.<name>")
                _attack_keys(note, [top, name], entries(entry), f"attacks.{name}", "attacks.<name>")
        elif top == "detectability":
            for key, item in entries(value).items():
                note([top, key], f"detectability.{key}")
                if key == "params":
                    for param in entries(item):
                        note([top, key, param], f"detectability.params.{param}")
        elif top == "resources":
            for resource, files in entries(value).items():
                note([top, resource], "resources.<resource>")
                for file, settings in entries(files).items():
                    note([top, resource, file], "resources.<resource>.<file>")
                    for key in entries(settings):
                        note([top, resource, file, key], f"resources.<resource>.<file>.{key}")
        elif top == "images":
            _image_keys(note, entries(value))
    return found


def _attack_keys(note: Any, concrete: list[str], entry: Mapping[str, Any], own: str, generic: str) -> None:
    for key, item in entry.items():
        note([*concrete, key], f"{generic}.{key}")
        if key in ("grid", "params") and isinstance(item, Mapping):
            for param in item:
                for part in str(param).split(","):  # tied grid keys "alpha,epsilon"
                    note([*concrete, key, part], f"{own}.{part.strip()}")


def _image_keys(note: Any, section: Mapping[str, Any]) -> None:
    for key, value in section.items():
        note(["images", key], f"images.{key}")
        items = value if isinstance(value, Mapping) else {}
        if key == "datasets":
            for name, entry in items.items():
                note(["images", key, name], "images.datasets.<name>")
                for param in entry or {}:
                    generic = param in PREPARE_KEYS
                    note(["images", key, name, param],
                         f"images.datasets.<name>.{param}" if generic else f"images.datasets.{name}.{param}")
        elif key == "models":
            for name, entry in items.items():
                note(["images", key, name], "images.models.<name>")
                architecture = str((entry or {}).get("architecture", name))
                for param in entry or {}:
                    generic = param == "architecture" or (param in TRAIN_KEYS and architecture in ARCHITECTURES)
                    note(["images", key, name, param],
                         f"images.models.<name>.{param}" if generic else f"images.models.{architecture}.{param}")
        elif key == "attacks":
            for name, entry in items.items():
                note(["images", key, name], "images.attacks.<name>")
                _attack_keys(note, ["images", key, name], entry or {}, f"images.attacks.{name}",
                             "images.attacks.<name>")
        elif key in ("systematic", "reader_study"):
            for param in items:
                note(["images", key, param], f"images.{key}.{param}")


# -- the generated files ----------------------------------------------------------------------------------------------
def rendered_readme(text: str) -> str:
    """config/README.md's text with its reference section regenerated."""
    if START not in text or END not in text:
        raise SystemExit(f"{README}: the markers {START} and {END} are missing")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{markdown()}{END}{tail}"


def rendered_schema_json() -> str:
    return json.dumps(schema(), indent=2, ensure_ascii=False) + "\n"


def rendered_schema_yaml() -> str:
    header = (f"# Generated by `{COMMAND}` from the declarations (same schema as config.schema.json, which the\n"
              "# pipeline validates against); do not edit.\n")
    return header + yaml.safe_dump(schema(), sort_keys=False, allow_unicode=True, width=120)


def generated(root: Path = REPO) -> dict[Path, str]:
    """Each generated file → the text it should have."""
    return {root / README: rendered_readme((root / README).read_text()),
            root / SCHEMA_JSON: rendered_schema_json(), root / SCHEMA_YAML: rendered_schema_yaml()}


def stale(root: Path = REPO) -> list[Path]:
    return [path for path, text in generated(root).items() if not path.is_file() or path.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vulnbench.reference", description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate the README section and the schemas")
    mode.add_argument("--check", action="store_true", help="exit 1 when a generated file is stale")
    parser.add_argument("--root", type=Path, default=REPO, help="the repository (default: this checkout)")
    args = parser.parse_args(argv)
    if args.write:
        for path, text in generated(args.root).items():
            path.write_text(text)
            print(f"wrote {path}")
        return 0
    outdated = stale(args.root)
    for path in outdated:
        print(f"stale: {path} (regenerate: {COMMAND})", file=sys.stderr)
    return 1 if outdated else 0


if __name__ == "__main__":
    sys.exit(main())
