# One generic rule runs any registered attack, for one parameter cell, on every cluster of a dataset.


rule run_attack:
    input:
        data="results/data/{dataset}/prepared.h5ad",
        model="results/models/{dataset}/{classifier}/model.pkl",
    output:
        result="results/attacks/{dataset}/{classifier}/{attack}/{pid}/result.json",
        params="results/attacks/{dataset}/{classifier}/{attack}/{pid}/params.json",
    log:
        "logs/attack/{dataset}/{classifier}/{attack}/{pid}.log",
    benchmark:
        "logs/benchmarks/attack/{dataset}/{classifier}/{attack}/{pid}.tsv"
    conda:
        "../../envs/vulnbench.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 20 * attempt,
    params:
        attack=attack_params,
        grid=attack_grid,
        clusters=attack_clusters,
        seed=config_seed,
        code_version=CODE_VERSION,
        code=lambda wildcards: attack_code(wildcards.attack, wildcards.classifier),
        retry=lambda wildcards: retry_token(
            f"results/attacks/{wildcards.dataset}/{wildcards.classifier}/{wildcards.attack}/{wildcards.pid}/result.json"
        ),
    script:
        "../scripts/attack.py"
