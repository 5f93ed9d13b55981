# Everything Snakemake needs to know about the config: validation, the job matrix, input functions.
import sys
from pathlib import Path

import vulnbench
from vulnbench.errors import ConfigError
from vulnbench.matrix import (
    build,
    classifier_settings,
    dataset_settings,
    validate_config,
)
from vulnbench.data import DATASETS
from vulnbench.data.resources import RESOURCES, remote_file, resource_paths
from vulnbench.sc.attacks import ATTACKS

SCHEMA = Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"

try:
    validate_config(config, schema=SCHEMA)
    JOBS = build(config)
except ConfigError as error:
    sys.exit(f"vulnbench config error: {error}")

CODE_VERSION = vulnbench.__version__


wildcard_constraints:
    dataset=r"[A-Za-z0-9_-]+",
    classifier=r"[A-Za-z0-9_-]+",
    attack="|".join(ATTACKS.names()),
    figure=r"[A-Za-z0-9_-]+",
    pid=r"[^/]+",


def final_targets():
    attacks = sorted(JOBS["attack"].unique())
    return [
        "results/tables/classifiers.tsv",
        *expand("results/tables/{attack}.tsv", attack=attacks),
        *[
            f"results/figures/{attack}_{figure}.png"
            for attack in attacks
            for figure in ATTACKS.get(attack).figures
        ],
    ]


def model_targets():
    pairs = JOBS[["dataset", "classifier"]].drop_duplicates()
    return expand(
        "results/models/{dataset}/{classifier}/model.pkl",
        zip,
        dataset=pairs["dataset"],
        classifier=pairs["classifier"],
    )


def download_input(wildcards):
    archive = DATASETS.get(wildcards.dataset).archive
    return [f"resources/{wildcards.dataset}/{archive}"] if archive else []


def dataset_params(wildcards):
    return dataset_settings(config, wildcards.dataset)[0]


def split_params(wildcards):
    return dataset_settings(config, wildcards.dataset)[1]


def classifier_params(wildcards):
    return classifier_settings(config, wildcards.classifier)


def classifier_resources(wildcards):
    return resource_paths(classifier_settings(config, wildcards.classifier))


def resource_params(wildcards):
    return remote_file(config, wildcards.resource, wildcards.file)


def job_row(wildcards):
    rows = JOBS[
        (JOBS["dataset"] == wildcards.dataset)
        & (JOBS["classifier"] == wildcards.classifier)
        & (JOBS["attack"] == wildcards.attack)
        & (JOBS["pid"] == wildcards.pid)
    ]
    if rows.empty:
        raise ValueError(f"no configured job for {dict(wildcards)}")
    return rows.iloc[0]


def attack_params(wildcards):
    return job_row(wildcards)["params"]


def attack_grid(wildcards):
    return job_row(wildcards)["grid"]


def attack_clusters(wildcards):
    return job_row(wildcards)["clusters"]


def attack_results(wildcards):
    jobs = JOBS[JOBS["attack"] == wildcards.attack]
    return expand(
        "results/attacks/{dataset}/{classifier}/{attack}/{pid}/result.json",
        zip,
        dataset=jobs["dataset"],
        classifier=jobs["classifier"],
        attack=jobs["attack"],
        pid=jobs["pid"],
    )


def model_targets_metrics(wildcards):
    return [path.replace("model.pkl", "metrics.json") for path in model_targets()]
