# The dermoscopy arm: image dataset → models (two Inception v3 replicates, a small CNN, external black boxes)
# → attack × model × parameter jobs and the systematic perturbations → the paper's tables and figures.


rule download_image_dataset:
    output:
        "resources/img/{img_dataset}/download.done",
    log:
        "logs/download/img/{img_dataset}.log",
    retries: 2
    localrule: True
    conda:
        "../../envs/vulnbench.yaml"
    params:
        dataset=image_dataset_params,
    script:
        "../scripts/img_download.py"


rule prepare_images:
    input:
        image_download_input,
    output:
        "results/img/data/{img_dataset}/manifest.tsv",
    log:
        "logs/img/prepare/{img_dataset}.log",
    conda:
        "../../envs/vulnbench.yaml"
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        dataset=image_dataset_params,
        prepare=image_prepare_params,
        code_version=CODE_VERSION,
        code=lambda wildcards: image_dataset_code(wildcards.img_dataset),
    script:
        "../scripts/img_prepare.py"


rule train_image_model:
    input:
        manifest="results/img/data/{img_dataset}/manifest.tsv",
        resources=image_model_resources,
    output:
        model="results/img/models/{img_dataset}/{img_model}/model.pt",
        metrics="results/img/models/{img_dataset}/{img_model}/metrics.json",
        predictions="results/img/models/{img_dataset}/{img_model}/predictions.tsv",
    log:
        "logs/img/train/{img_dataset}/{img_model}.log",
    benchmark:
        "logs/benchmarks/img/train/{img_dataset}/{img_model}.tsv"
    priority: 10
    conda:
        "../../envs/vulnbench.yaml"
    # One core locally, so a training overlaps the short attack jobs instead of holding a 2-core machine; a
    # cluster asks for more (profiles/slurm: set-threads). First in line: the image arm's attacks wait for it.
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 6000 * attempt,
        runtime=lambda wildcards, attempt: 720 * attempt,
        gpu=image_gpus,
    params:
        model=image_model_params,
        code_version=CODE_VERSION,
        code=lambda wildcards: image_model_code(),
    script:
        "../scripts/img_train.py"


rule image_attack:
    input:
        manifest="results/img/data/{img_dataset}/manifest.tsv",
        model="results/img/models/{img_dataset}/{img_model}/model.pt",
    output:
        result="results/img/attacks/{img_dataset}/{img_model}/{img_attack}/{pid}/result.json",
        images=directory(
            "results/img/attacks/{img_dataset}/{img_model}/{img_attack}/{pid}/images"
        ),
    log:
        "logs/img/attack/{img_dataset}/{img_model}/{img_attack}/{pid}.log",
    benchmark:
        "logs/benchmarks/img/attack/{img_dataset}/{img_model}/{img_attack}/{pid}.tsv"
    conda:
        "../../envs/vulnbench.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 30 * attempt,
        gpu=image_gpus,
    params:
        attack=image_attack_params,
        grid=image_attack_grid,
        settings=image_run_params,
        code_version=CODE_VERSION,
        code=lambda wildcards: image_attack_code(wildcards.img_attack),
        retry=lambda wildcards: retry_token(
            f"results/img/attacks/{wildcards.img_dataset}/{wildcards.img_model}/{wildcards.img_attack}/{wildcards.pid}/result.json"
        ),
    script:
        "../scripts/img_attack.py"


rule image_perturbations:
    input:
        manifest="results/img/data/{img_dataset}/manifest.tsv",
        model="results/img/models/{img_dataset}/{img_model}/model.pt",
    output:
        "results/img/perturbations/{img_dataset}/{img_model}.tsv",
    log:
        "logs/img/perturbations/{img_dataset}/{img_model}.log",
    conda:
        "../../envs/vulnbench.yaml"
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
        gpu=image_gpus,
    params:
        settings=image_run_params,
        code_version=CODE_VERSION,
        code=lambda wildcards: image_perturbation_code(),
    script:
        "../scripts/img_perturbations.py"


rule img_metrics_table:
    input:
        image_model_metrics,
    output:
        report(
            "results/tables/img_metrics.tsv",
            caption="../report/img_metrics.rst",
            category="Dermoscopy",
        ),
    log:
        "logs/aggregate/img_metrics.log",
    localrule: True
    conda:
        "../../envs/vulnbench.yaml"
    script:
        "../scripts/img_tables.py"


rule img_attack_table:
    input:
        image_attack_results,
    output:
        table=report(
            "results/tables/img_attacks.tsv",
            caption="../report/img_attacks.rst",
            category="Dermoscopy",
        ),
        records="results/tables/img_attack_records.tsv",
    log:
        "logs/aggregate/img_attacks.log",
    localrule: True
    conda:
        "../../envs/vulnbench.yaml"
    script:
        "../scripts/img_tables.py"


rule img_perturbation_table:
    input:
        image_perturbation_results,
    output:
        report(
            "results/tables/img_perturbations.tsv",
            caption="../report/img_perturbations.rst",
            category="Dermoscopy",
        ),
    log:
        "logs/aggregate/img_perturbations.log",
    localrule: True
    conda:
        "../../envs/vulnbench.yaml"
    script:
        "../scripts/img_tables.py"


rule img_figure:
    input:
        attacks="results/tables/img_attacks.tsv",
        records="results/tables/img_attack_records.tsv",
        perturbations="results/tables/img_perturbations.tsv",
        metrics="results/tables/img_metrics.tsv",
        images=image_attack_image_dirs,
    output:
        report(
            "results/figures/img_{img_figure}.png",
            caption="../report/img_figure.rst",
            category="Dermoscopy",
        ),
    log:
        "logs/plots/img_{img_figure}.log",
    localrule: True
    conda:
        "../../envs/vulnbench.yaml"
    params:
        manifests=image_manifests,
    script:
        "../scripts/img_plot.py"


# The study's images go to results/reader_study/study/ (or study_v2/, … beside it when the previous study holds
# readers' answers and changed): the rule's output is only the pointer naming the current one, because Snakemake
# deletes a rule's outputs before rerunning it and a study folder may hold answers that exist nowhere else.
rule reader_study_build:
    input:
        records="results/tables/img_attack_records.tsv",
        manifest=reader_study_manifest,
        images=image_attack_image_dirs,
    output:
        "results/reader_study/study.json",
    log:
        "logs/reader_study/build.log",
    localrule: True
    conda:
        "../../envs/vulnbench.yaml"
    params:
        settings=reader_study_params,
    script:
        "../scripts/reader_study.py"


# simulated readers have a folder of their own (marked as such): no real reader's answers are ever in it
rule reader_study_simulate:
    input:
        "results/reader_study/study.json",
    output:
        directory("results/reader_study/simulated_answers"),
    log:
        "logs/reader_study/simulate.log",
    localrule: True
    conda:
        "../../envs/vulnbench.yaml"
    params:
        settings=reader_study_params,
    script:
        "../scripts/reader_study.py"


rule reader_study_analyse:
    input:
        study="results/reader_study/study.json",
        answers=reader_study_answers,
    output:
        auc=report(
            "results/tables/reader_study_auc.tsv",
            caption="../report/reader_study.rst",
            category="Reader study",
        ),
        effect=report(
            "results/tables/reader_study_effect.tsv",
            caption="../report/reader_study.rst",
            category="Reader study",
        ),
        summary="results/reader_study/effect_test.json",
        answers="results/reader_study/answers.tsv",
        figure=report(
            "results/figures/reader_study_auc.png",
            caption="../report/reader_study.rst",
            category="Reader study",
        ),
    log:
        "logs/reader_study/analyse.log",
    localrule: True
    conda:
        "../../envs/vulnbench.yaml"
    params:
        settings=reader_study_params,
    script:
        "../scripts/reader_study.py"
