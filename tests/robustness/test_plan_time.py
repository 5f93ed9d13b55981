"""Wrong config values stop the plan: `snakemake -n` exits non-zero with one line naming the key, the value and
what is allowed, before any job; names only the data know (clusters) stop the first job that reads the data.

The `snakemake -n` cases are issue 16's; the in-process cases go through the same check (`validate_config`,
`validate_images_config`) that common.smk runs at parse time."""

from __future__ import annotations

import copy
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from tests.workflow.conftest import REPO, snakemake
from vulnbench.core.errors import ConfigError

BASE = yaml.safe_load((REPO / "tests" / "config" / "config.yaml").read_text())
IMAGES = {"datasets": {"synthetic_lesions": {"n_images": 40, "image_size": 16}},
          "models": {"mobilenet_v3_small": {"epochs": 1, "batch_size": 4}},
          "attacks": {"fgsm": {"grid": {"eps_levels": [8]}},
                      "pixel": {"grid": {"n_pixels": [1]}, "params": {"popsize": 2, "max_generations": 2}}}}
CONFIG_PREFIX = "vulnbench config error: "


def edited(edit: Callable[[dict[str, Any]], Any], images: bool = False) -> dict[str, Any]:
    config = copy.deepcopy(BASE)
    if images:
        config["images"] = copy.deepcopy(IMAGES)
    edit(config)
    return config


def sc_attack(name: str, section: str, **values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda c: c["attacks"][name].setdefault(section, {}).update(values)


def img_attack(name: str, section: str, **values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda c: c["images"]["attacks"][name].setdefault(section, {}).update(values)


#: issue 16's plan-time cases, each through `snakemake -n`: (config, words the one error line must hold)
DRY_RUN_CASES: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "method_perc999": (edited(sc_attack("single_gene", "grid", method=["perc99", "perc999"])),
                       ("attack 'single_gene' grid", "method", "'perc999'", "known: perc1, perc99")),
    "negative_eps_levels": (edited(img_attack("fgsm", "grid", eps_levels=[-1]), images=True),
                            ("image attack 'fgsm' grid", "eps_levels must be a number > 0", "-1")),
    "model_named_as_a_path": (edited(lambda c: c["images"]["models"].update(
        {"../evil": {"architecture": "mobilenet_v3_small", "epochs": 1}}), images=True),
        ("'../evil'", "not allowed", "folder name")),
    "delta_under_pixel_params": (edited(img_attack("pixel", "params", delta=3), images=True),
                                 ("image attack 'pixel' params", "unknown parameter 'delta'", "allowed: ")),
    "unconfigured_classifier_in_attack": (edited(lambda c: c["attacks"]["max_change"].update(
        classifiers=["scrf", "celltypist"])), ("attack 'max_change'", "'celltypist'", "configured: ")),
}


def dry_run(workdir: Path, config: dict[str, Any]) -> Any:
    workdir.mkdir(parents=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return snakemake(workdir, "-n", "--configfile", str(workdir / "config.yaml"), timeout=300)


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("plan_time")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(dry_run, root / name, config) for name, (config, _) in DRY_RUN_CASES.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(DRY_RUN_CASES))
def test_a_wrong_value_stops_the_dry_run_in_one_line(case: str, dry_runs: dict[str, Any]) -> None:
    result = dry_runs[case]
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-2000:]
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.startswith(CONFIG_PREFIX)]
    assert len(lines) == 1, output[-2000:]
    for expected in DRY_RUN_CASES[case][1]:
        assert expected in lines[0], lines[0]


def check(config: dict[str, Any]) -> None:
    """What the Snakefile asks before any job: the whole run's plan, both arms and the reader study."""
    from vulnbench.pipeline import plan

    plan(config, schema=REPO / "workflow" / "schemas" / "config.schema.json")


#: more values checked against what the code accepts, in-process (the same check as above, without Snakemake)
VALUE_CASES: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "unknown_search": (edited(sc_attack("single_gene", "params", search="binary")),
                       ("search must be one of 'dichotomic', 'exhaustive'", "'binary'")),
    "decile_without_number": (edited(sc_attack("single_gene", "grid", method=["decile+"])), ("'decile+'",)),
    "function_mode_from_yaml": (edited(sc_attack("single_gene", "grid", method=["full_row_fct"])),
                                ("full_row_fct", "needs a function")),
    "unknown_change_type": (edited(sc_attack("random_walk_min_change", "params", change_type="na")),
                            ("change_type must be one of 'any', 'not_na'",)),
    "unknown_gene_order": (edited(sc_attack("cgd", "params", gene_order="top")),
                           ("gene_order must be one of 'signature', 'random'",)),
    "text_for_a_flag": (edited(sc_attack("cgd", "params", legacy="yes")), ("legacy must be true or false", "'yes'")),
    "text_for_a_number": (edited(sc_attack("cgd", "params", slope_margin="0.1")), ("slope_margin", "'0.1'")),
    "unknown_modification_in_list": (edited(sc_attack("grid_min_change", "params", modifications=[["perc2"]])),
                                     ("modifications", "'perc2'")),
    "genes_as_one_string": (edited(sc_attack("single_gene", "params", genes="CD3E")), ("genes must be", "a list")),
    "one_cluster_not_in_a_list": (edited(lambda c: c["attacks"]["cgd"].update(clusters="NK")),
                                  ("clusters", "'NK'", "'all' or a list of cluster names")),
    "empty_cluster_name": (edited(lambda c: c["attacks"]["cgd"].update(clusters=[""])), ("clusters",)),
    "classifier_epochs_as_text": (edited(lambda c: c["classifiers"]["scmlp"].update(epochs="20")),
                                  ("classifier 'scmlp'", "epochs", "'20'")),
    "classifier_flag_as_text": (edited(lambda c: c["classifiers"]["scmlp"].update(standardize="no")),
                                ("standardize must be true or false",)),
    "dataset_size_as_float": (edited(lambda c: c["datasets"]["synthetic"].update(n_cells=240.5)), ("n_cells",)),
    "unknown_fgsm_space": (edited(img_attack("fgsm", "grid", space=["pixels"]), images=True),
                           ("space must be one of 'normalized', 'pixel'", "'pixels'")),
    "unknown_de_objective": (edited(img_attack("pixel", "params", objective="margins"), images=True),
                             ("objective must be one of 'probability', 'margin'",)),
    "n_pixels_under_color": (edited(lambda c: c["images"]["attacks"].update(
        color={"params": {"n_pixels": 3}}), images=True), ("image attack 'color' params", "unknown parameter")),
    "zero_eps_levels": (edited(img_attack("fgsm", "grid", eps_levels=[0]), images=True), ("eps_levels", "got 0")),
    "model_with_a_space": (edited(lambda c: c["images"]["models"].update(
        {"my model": {"architecture": "mobilenet_v3_small"}}), images=True), ("'my model'", "not allowed")),
    "reader_study_unknown_model": (edited(lambda c: c["images"].update(reader_study={"model": "resnet"}),
                                          images=True), ("reader_study", "'resnet'")),
    "unknown_image_model_param": (edited(lambda c: c["images"]["models"]["mobilenet_v3_small"].update(
        learning_rate=0.1), images=True), ("image model 'mobilenet_v3_small'", "unknown parameter 'learning_rate'")),
}


@pytest.mark.parametrize("case", sorted(VALUE_CASES))
def test_a_wrong_value_is_one_config_error_naming_it(case: str) -> None:
    config, expected = VALUE_CASES[case]
    with pytest.raises(ConfigError) as error:
        check(config)
    message = str(error.value)
    assert "\n" not in message
    for words in expected:
        assert words in message, message


@pytest.mark.parametrize("config_file", ["config/config.yaml", "config/paper.yaml", "tests/config/config.yaml"])
def test_the_shipped_configs_pass_the_value_checks(config_file: str) -> None:
    config = yaml.safe_load((REPO / config_file).read_text())
    try:
        check(config)
    except ConfigError as error:  # paper.yaml's pbmc3k labels file lives in ../shared/data, absent in a user's clone
        if "input file not found" not in str(error):
            raise
        pytest.skip(f"{config_file}: {error}")


@pytest.mark.slow
def test_an_unknown_cluster_fails_the_run_naming_it_and_the_valid_ones(tmp_path: Path) -> None:
    config = copy.deepcopy(BASE)
    config["classifiers"] = {"scrf": {"n_estimators": 5}}
    config["attacks"] = {"single_gene": {"grid": {"method": ["perc99"]}, "clusters": ["Bogus T cells"]}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "--cores", "1", "--configfile", str(tmp_path / "config.yaml"), timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "KeyError" not in output and "Traceback" not in output
    logs = list((tmp_path / "logs" / "attack").rglob("*.log"))
    assert logs, output[-2000:]
    line = next(line for line in logs[0].read_text().splitlines() if "vulnbench error: " in line)
    assert "unknown cluster 'Bogus T cells'" in line
    assert "type_0" in line or "clusters of the held-out cells" in line
    # the job's result is its failure, tabled by the aggregation; the run's last step names it and fails
    errors = {line for line in output.splitlines() if line.startswith("vulnbench error: ")}
    assert len(errors) == 1 and "1 attack job(s) stopped on bad input" in errors.pop()
    table = pd.read_csv(tmp_path / "results" / "tables" / "single_gene.tsv", sep="\t")
    assert list(table["status"]) == ["job_failed"] and "unknown cluster 'Bogus T cells'" in table["reason"][0]
    assert not (tmp_path / "results" / "tables" / "job_status.tsv").exists()


