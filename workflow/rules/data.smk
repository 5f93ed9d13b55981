# Datasets: download (only for datasets that need it) → prepared, split h5ad.


rule download_dataset:
    output:
        "resources/{dataset}/{archive}",
    log:
        "logs/download/{dataset}/{archive}.log",
    wildcard_constraints:
        dataset="|".join(DATASETS.names()),
    localrule: True
    conda:
        "../../envs/vulnbench.yaml"
    params:
        dataset=dataset_params,
    script:
        "../scripts/download.py"


rule prepare_dataset:
    input:
        archive=download_input,
        files=dataset_files,
    output:
        "results/data/{dataset}/prepared.h5ad",
    log:
        "logs/prepare/{dataset}.log",
    conda:
        "../../envs/vulnbench.yaml"
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 30 * attempt,
    params:
        dataset=dataset_params,
        split=split_params,
        code_version=CODE_VERSION,
        code=lambda wildcards: dataset_code(wildcards.dataset),
    script:
        "../scripts/prepare.py"


rule download_resource:
    output:
        "resources/{resource}/{file}",
    log:
        "logs/download/{resource}/{file}.log",
    wildcard_constraints:
        resource="|".join(RESOURCES),
    localrule: True
    conda:
        "../../envs/vulnbench.yaml"
    params:
        remote=resource_params,
    script:
        "../scripts/download_resource.py"
