# Datasets: download (only for datasets that need it) → prepared, split h5ad.


rule download_dataset:
    output:
        "resources/{dataset}/{archive}",
    log:
        "logs/download/{dataset}/{archive}.log",
    localrule: True
    conda:
        "../../envs/vulnbench.yaml"
    params:
        dataset=dataset_params,
    script:
        "../scripts/download.py"


rule prepare_dataset:
    input:
        download_input,
    output:
        "results/data/{dataset}/prepared.h5ad",
    log:
        "logs/prepare/{dataset}.log",
    conda:
        "../../envs/vulnbench.yaml"
    params:
        dataset=dataset_params,
        split=split_params,
        code_version=CODE_VERSION,
    script:
        "../scripts/prepare.py"
