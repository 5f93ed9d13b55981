# One generic rule trains any registered classifier on the train split of any dataset.


rule train_classifier:
    input:
        data="results/data/{dataset}/prepared.h5ad",
        resources=classifier_resources,
    output:
        model="results/models/{dataset}/{classifier}/model.pkl",
        metrics="results/models/{dataset}/{classifier}/metrics.json",
    log:
        "logs/train/{dataset}/{classifier}.log",
    benchmark:
        "logs/benchmarks/train/{dataset}/{classifier}.tsv"
    conda:
        "../../envs/vulnbench.yaml"
    threads: 2
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
        gpu=classifier_gpus,
    params:
        classifier=classifier_params,
        code_version=CODE_VERSION,
        code=lambda wildcards: classifier_code(wildcards.classifier),
    script:
        "../scripts/train.py"
