# Everything Snakemake needs to know about the config: validation, the job matrix, input functions.
import sys
from pathlib import Path

import vulnbench
from vulnbench.core.errors import ConfigError
from vulnbench.core.jobs import retry_token
from vulnbench.sc.plan import (
    attack_code,
    classifier_code,
    dataset_code,
    classifier_settings,
    dataset_settings,
)
from vulnbench.sc.data import DATASETS
from vulnbench.sc.data.resources import RESOURCES, remote_file, resource_paths
from vulnbench.sc.attacks import ATTACKS
from vulnbench.img.plan import (
    IMAGE_ATTACKS,
    image_attack_code,
    image_dataset_code,
    image_model_code,
    image_perturbation_code,
    image_dataset_settings,
    image_device,
    image_model_settings,
    image_run_settings,
    images_section,
)
from vulnbench.pipeline import plan
from vulnbench.reader.stages import reader_study_config
from vulnbench.img.plots import IMAGE_FIGURES

SCHEMA = Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.json"

try:
    JOBS, IMG_JOBS = plan(config, schema=SCHEMA)
except ConfigError as error:
    sys.exit(f"vulnbench config error: {error}")

CODE_VERSION = vulnbench.__version__


def config_seed(wildcards):
    """The config's seed: every job's random choices derive from it and the job's identity."""
    return int(config.get("seed", 0))


wildcard_constraints:
    dataset=r"[A-Za-z0-9_-]+",
    classifier=r"[A-Za-z0-9_-]+",
    attack="|".join(ATTACKS.names()),
    figure=r"[A-Za-z0-9_-]+",
    pid=r"[^/]+",
    img_dataset=r"[A-Za-z0-9_-]+",
    img_model=r"[A-Za-z0-9_-]+",
    img_attack="|".join(IMAGE_ATTACKS.names()),
    img_figure="|".join(IMAGE_FIGURES),


def final_targets():
    attacks = sorted(JOBS["attack"].unique())
    return (
        image_targets()
        + detectability_targets()
        + [
            "results/tables/classifiers.tsv",
            "results/tables/job_status.tsv",
            "results/tables/sc_comparison.tsv",
            "results/figures/sc_comparison.png",
            *expand("results/tables/{attack}.tsv", attack=attacks),
            *[
                f"results/figures/{attack}_{figure}.png"
                for attack in attacks
                for figure in ATTACKS.get(attack).figures
            ],
        ]
    )


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


def dataset_files(wildcards):
    """The user's own input files (an h5ad dataset's path): inputs, so that editing one reruns the preparation."""
    loader = DATASETS.get(wildcards.dataset)(**dataset_params(wildcards))
    return [str(path) for path in loader.input_files()]


def split_params(wildcards):
    return dataset_settings(config, wildcards.dataset)[1]


def classifier_params(wildcards):
    return classifier_settings(config, wildcards.classifier)


def classifier_gpus(wildcards):
    """1 when the classifier trains on a CUDA device (scmlp `device: cuda`): the cluster then grants a GPU."""
    device = str(classifier_params(wildcards).get("device", "cpu"))
    return int(device.startswith("cuda"))


def image_gpus(wildcards):
    """1 when the image arm runs on CUDA (`images: device: cuda`), for training, attacks and perturbations."""
    return int(image_device(config).startswith("cuda"))


def classifier_resources(wildcards):
    return resource_paths(classifier_settings(config, wildcards.classifier))


def resource_params(wildcards):
    return remote_file(config, wildcards.resource, wildcards.file)


# one dict lookup per job (filtering the frame per job would make planning quadratic in the sweep size)
JOB_INDEX = {
    (row.dataset, row.classifier, row.attack, row.pid): row
    for row in JOBS.itertuples(index=False)
}


def job_row(wildcards):
    key = (wildcards.dataset, wildcards.classifier, wildcards.attack, wildcards.pid)
    if key not in JOB_INDEX:
        raise ValueError(f"no configured job for {dict(wildcards)}")
    return JOB_INDEX[key]


def attack_params(wildcards):
    return job_row(wildcards).params


def attack_grid(wildcards):
    return job_row(wildcards).grid


def attack_clusters(wildcards):
    return job_row(wildcards).clusters


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


# -- the dermoscopy arm ------------------------------------------------------------------------------
def attack_tables(wildcards):
    """Both arms' attack tables, whose rows the job status reads."""
    tables = expand(
        "results/tables/{attack}.tsv", attack=sorted(JOBS["attack"].unique())
    )
    return tables + ([] if IMG_JOBS.empty else ["results/tables/img_attacks.tsv"])


def image_targets():
    if IMG_JOBS.empty:
        return []
    return [
        "results/tables/img_metrics.tsv",
        "results/tables/img_attacks.tsv",
        "results/tables/img_perturbations.tsv",
        *expand("results/figures/img_{figure}.png", figure=IMAGE_FIGURES),
        "results/tables/reader_study_auc.tsv",
        "results/figures/reader_study_auc.png",
    ]


def image_dataset_params(wildcards):
    return image_dataset_settings(config, wildcards.img_dataset)[0]


def image_prepare_params(wildcards):
    return image_dataset_settings(config, wildcards.img_dataset)[1]


def image_download_input(wildcards):
    from vulnbench.img.data import get_image_dataset

    source = get_image_dataset(wildcards.img_dataset, **image_dataset_params(wildcards))
    if source.needs_download:
        return [f"resources/img/{wildcards.img_dataset}/download.done"]
    return []


def image_model_params(wildcards):
    return image_model_settings(config, wildcards.img_model)


def image_model_resources(wildcards):
    settings = image_model_settings(config, wildcards.img_model)
    return resource_paths({**settings["train"], **settings["model"]})


def image_run_params(wildcards):
    return image_run_settings(config)


# as JOB_INDEX: one dict lookup per image attack job
IMG_JOB_INDEX = {
    (row.dataset, row.model, row.attack, row.pid): row
    for row in IMG_JOBS.itertuples(index=False)
}


def image_job_row(wildcards):
    key = (
        wildcards.img_dataset,
        wildcards.img_model,
        wildcards.img_attack,
        wildcards.pid,
    )
    if key not in IMG_JOB_INDEX:
        raise ValueError(f"no configured image job for {dict(wildcards)}")
    return IMG_JOB_INDEX[key]


def image_attack_params(wildcards):
    return image_job_row(wildcards).params


def image_attack_grid(wildcards):
    return image_job_row(wildcards).grid


def image_pairs():
    section = images_section(config)
    return [
        (d, m)
        for d in section.get("datasets") or {}
        for m in section.get("models") or {}
    ]


def image_model_metrics(wildcards):
    return [f"results/img/models/{d}/{m}/metrics.json" for d, m in image_pairs()]


def image_perturbation_results(wildcards):
    return [f"results/img/perturbations/{d}/{m}.tsv" for d, m in image_pairs()]


def image_attack_results(wildcards):
    return expand(
        "results/img/attacks/{dataset}/{model}/{attack}/{pid}/result.json",
        zip,
        dataset=IMG_JOBS["dataset"],
        model=IMG_JOBS["model"],
        attack=IMG_JOBS["attack"],
        pid=IMG_JOBS["pid"],
    )


def image_attack_image_dirs(wildcards):
    return [
        path.replace("result.json", "images")
        for path in image_attack_results(wildcards)
    ]


def image_manifests(wildcards):
    return {
        d: f"results/img/data/{d}/manifest.tsv"
        for d in images_section(config).get("datasets") or {}
    }


def reader_study_params(wildcards):
    return reader_study_config(config)


def reader_study_manifest(wildcards):
    return f"results/img/data/{reader_study_config(config)['dataset']}/manifest.tsv"


def reader_study_answers(wildcards):
    return (
        reader_study_config(config)["answers"]
        or "results/reader_study/simulated_answers"
    )


def sc_comparison_inputs(wildcards):
    attacks = set(JOBS["attack"])
    return {
        name: f"results/tables/{name}.tsv"
        for name in ("single_gene", "max_change", "cgd")
        if name in attacks
    }


def detectability_targets():
    if not config.get("detectability"):
        return []
    return [
        "results/tables/sc_detectability.tsv",
        "results/figures/sc_detectability_umap.png",
        "results/figures/sc_detectability_dotplot.png",
    ]


def detectability_settings(wildcards):
    return dict(config.get("detectability") or {})


def detectability_data(wildcards):
    return f"results/data/{config['detectability']['dataset']}/prepared.h5ad"


def detectability_model(wildcards):
    d = config["detectability"]
    return f"results/models/{d['dataset']}/{d['classifier']}/model.pkl"
