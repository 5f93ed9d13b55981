"""Config validation and the job matrix: ids are stable, every bad name is caught with a one-line error."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

from vulnbench.core.errors import ConfigError
from vulnbench.core.grid import format_value, make_pid
from vulnbench.core.params import check_budgets
from vulnbench.sc.plan import build, validate_config

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
BASE = {
    "seed": 0,
    "datasets": {"pbmc68k_reduced": {"test_size": 0.3}, "synthetic": {"n_cells": 50}},
    "classifiers": {"scrf": {"n_estimators": 10}, "scmlp": None},
    "attacks": {"single_gene": {"grid": {"method": ["perc1", "perc99"], "search": ["dichotomic", "exhaustive"]},
                                "params": {"first_dichot": 10}}},
}


def test_build_expands_the_grid_across_datasets_and_classifiers() -> None:
    jobs = build(BASE)
    assert len(jobs) == 2 * 2 * 2 * 2
    assert set(jobs["pid"]) == {f"method~{m}_search~{s}" for m in ("perc1", "perc99")
                                for s in ("dichotomic", "exhaustive")}
    row = jobs.iloc[0]
    assert row["params"]["first_dichot"] == 10 and "method" in row["params"]


def test_ids_do_not_depend_on_order_and_long_ones_are_hashed() -> None:
    assert make_pid({"b": 1, "a": 0.5}) == make_pid({"a": 0.5, "b": 1}) == "a~0.5_b~1"
    long = make_pid({f"key{i}": "value" * 3 for i in range(10)})
    assert len(long) == 8 and long == make_pid({f"key{i}": "value" * 3 for i in range(10)})
    assert format_value(0.1 + 0.2) == "0.30000000000000004" and format_value(1.0) == "1"
    assert format_value(True) == "true" and format_value("decile+5") == "decile+5"


def test_the_default_configs_are_valid() -> None:
    for path in (REPO / "config" / "config.yaml", REPO / "tests" / "config" / "config.yaml"):
        validate_config(yaml.safe_load(path.read_text()), schema=SCHEMA)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["classifiers"].update(scfr={}), "unknown classifier 'scfr'.*did you mean 'scrf'"),
        (lambda c: c["datasets"].update(pbmc86k={}), "unknown dataset 'pbmc86k'"),
        (lambda c: c["attacks"].update(single_gen={}), "unknown attack 'single_gen'.*did you mean 'single_gene'"),
        (lambda c: c["classifiers"]["scrf"].update(n_trees=3), "classifier 'scrf': unknown parameter 'n_trees'"),
        (lambda c: c["attacks"]["single_gene"]["params"].update(first_dicot=3),
         "unknown parameter 'first_dicot'.*did you mean 'first_dichot'"),
        (lambda c: c["attacks"]["single_gene"]["grid"].update(method=[]), "non-empty"),
        (lambda c: c.update(classifers={}), "unknown key 'classifers'.*did you mean 'classifiers'"),
        (lambda c: c["datasets"]["synthetic"].update(test_size=1.5), "test_size"),
        (lambda c: c["attacks"]["single_gene"].update(grids={}), "unknown key 'grids'"),
        (lambda c: c.update(seed=-1), "seed"),
    ],
)
def test_bad_configs_are_named_in_one_line(edit, message: str) -> None:
    config = copy.deepcopy(BASE)
    edit(config)
    with pytest.raises(ConfigError, match=message) as info:
        validate_config(config, schema=SCHEMA)
    assert "\n" not in str(info.value)


def test_tied_grid_keys_vary_together() -> None:
    config = copy.deepcopy(BASE)
    config["attacks"] = {"cgd": {"grid": {"alpha,epsilon": [[0.3, 0.3], [1.5, 1.5]]}, "params": {"n_genes": 20}}}
    jobs = build(config)
    assert sorted(set(jobs["pid"])) == ["alpha~0.3_epsilon~0.3", "alpha~1.5_epsilon~1.5"]
    config["attacks"]["cgd"]["grid"] = {"alpha,epsilon": [[0.3], [1.5, 1.5]]}
    with pytest.raises(ConfigError, match="must be a list of 2"):
        validate_config(config)


def test_an_attack_can_be_restricted_to_some_classifiers() -> None:
    config = copy.deepcopy(BASE)
    config["attacks"]["single_gene"]["classifiers"] = ["scmlp"]
    assert set(build(config)["classifier"]) == {"scmlp"}
    config["attacks"]["single_gene"]["classifiers"] = ["scfr"]
    with pytest.raises(ConfigError, match="classifier 'scfr' is not configured"):
        validate_config(config, schema=SCHEMA)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_genes": 0}, "n_genes must be a positive integer, got 0"),
        ({"epochs": 2.5}, "epochs must be a positive integer, got 2.5"),
        ({"first_dichot": True}, "first_dichot must be a positive integer"),
        ({"walk_length": -1}, "walk_length must be an integer ≥ 0"),
        ({"learning_rate": 0.0}, "learning_rate must be a number > 0"),
        ({"alpha": float("nan")}, "alpha must be a number ≥ 0"),
        ({"epsilon": "big"}, "epsilon must be a number ≥ 0"),
        ({"epochs": None}, "epochs must be a positive integer, got None"),
        ({"de_n": -3}, "de_n must be a positive integer or null"),
    ],
)
def test_negative_or_zero_budgets_are_named(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^owner: {message}"):
        check_budgets("owner", params)


def test_valid_budgets_and_other_keys_pass() -> None:
    check_budgets("owner", {"walk_length": 0, "epsilon": 0.0, "de_n": None, "popsize": None, "n_jobs": -1,
                            "seed": 0, "epochs": 3.0, "n_genes": np.int64(5), "method": "perc99"})
