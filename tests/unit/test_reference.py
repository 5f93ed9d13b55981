"""The config reference is derived from the declarations: config/README.md's reference section and the JSON schema
are up to date, name every key the shipped configs use, and every declared parameter has a meaning."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from vulnbench import reference
from vulnbench.core.errors import ConfigError
from vulnbench.core.params import declared_parameters, docstring_meanings
from vulnbench.sc.plan import validate_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = ("config/config.yaml", "config/paper.yaml")


def test_the_generated_files_are_up_to_date() -> None:
    stale = [str(path.relative_to(REPO)) for path in reference.stale(REPO)]
    assert not stale, f"generated from the declarations but stale: {', '.join(stale)}; regenerate with " \
                      f"`{reference.COMMAND}`"


@pytest.mark.parametrize("config_file", CONFIGS)
def test_every_key_of_the_shipped_configs_is_in_the_reference(config_file: str) -> None:
    config = yaml.safe_load((REPO / config_file).read_text())
    keys = reference.config_keys(config)
    assert keys, config_file
    undocumented = sorted(path for path, row in keys.items() if row is None)
    assert not undocumented, f"{config_file}: keys the reference does not explain: {', '.join(undocumented)}"
    rows = reference.all_rows()
    readme = (REPO / reference.README).read_text()
    for path, row in keys.items():
        assert rows[row].meaning, f"{config_file}: {path} (reference row {row}) has no meaning"
        assert f"| `{rows[row].key}` |" in readme, f"{config_file}: {path} is not in {reference.README}"


def test_every_declared_parameter_has_a_meaning() -> None:
    missing = sorted(f"{row.path} (declared without a meaning: add it to the `Args:` of its function's docstring)"
                     for row in reference.all_rows().values() if not row.meaning.strip())
    assert not missing, "\n".join(missing)


def test_sc_declarations_carry_their_meanings() -> None:
    """The sc arm and the image models/datasets, independently of the image attacks' declarations."""
    groups = {
        "dataset": [reference.dataset_parameters(n) for n in reference.DATASETS],
        "classifier": [reference.classifier_parameters(n) for n in reference.CLASSIFIERS],
        "attack": [reference.attack_declared(n) for n in reference.ATTACKS],
        "image dataset": [reference.image_dataset_parameters(n) for n in reference.IMAGE_DATASETS],
        "image model": [reference.architecture_parameters(n) for n in reference.IMAGE_MODELS]
        + [reference.training_parameters()],
        "detectability": [reference.detectability_declared()],
    }
    missing = [f"{kind} parameter {name}" for kind, declared in groups.items() for params in declared
               for name, parameter in params.items() if not parameter.meaning]
    assert not missing, missing


def test_args_sections_are_parsed_with_continuations() -> None:
    doc = """Summary.

    Args:
        eps_levels: perturbation size in 8-bit levels
            (ε = eps_levels/255)
        space (str): where ε applies

    Returns:
        nothing
    """
    assert docstring_meanings(doc) == {"eps_levels": "perturbation size in 8-bit levels (ε = eps_levels/255)",
                                       "space": "where ε applies"}

    def function(*, eps_levels: float = 8) -> None:
        """One step.

        Args:
            eps_levels: the step
        """

    assert declared_parameters(function)["eps_levels"].meaning == "the step"


@pytest.mark.parametrize("config_file", CONFIGS)
def test_the_shipped_configs_validate_against_the_generated_schema(config_file: str) -> None:
    schema = json.loads((REPO / reference.SCHEMA_JSON).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load((REPO / config_file).read_text()))


@pytest.mark.parametrize(("edit", "words"), [
    (lambda c: c.update(classifers=c.pop("classifiers")), ("unknown key 'classifers'", "did you mean 'classifiers'")),
    (lambda c: c["attacks"]["cgd"].update(prams={}), ("attacks/cgd", "unknown key 'prams'", "did you mean 'params'")),
    (lambda c: c["images"].update(max_atack_images=3), ("images", "unknown key 'max_atack_images'")),
])
def test_a_misspelt_key_fails_the_generated_schema(edit, words: tuple[str, ...]) -> None:
    config = copy.deepcopy(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    edit(config)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(json.loads((REPO / reference.SCHEMA_JSON).read_text())).validate(config)
    with pytest.raises(ConfigError) as info:
        validate_config(config, schema=REPO / reference.SCHEMA_JSON)
    for text in words:
        assert text in str(info.value), str(info.value)


def test_every_schema_property_has_a_description() -> None:
    schema = json.loads((REPO / reference.SCHEMA_JSON).read_text())
    undescribed: list[str] = []

    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            for key, value in (node.get("properties") or {}).items():
                if not (isinstance(value, dict) and value.get("description")):
                    undescribed.append(f"{where}/{key}")
                walk(value, f"{where}/{key}")
            extra = node.get("additionalProperties")
            if isinstance(extra, dict):
                walk(extra, f"{where}/*")

    walk(schema, "")
    assert not undescribed, undescribed
