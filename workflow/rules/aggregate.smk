# All-to-all rules: long tables from every result, then figures from the tables.


rule aggregate_attack:
    input:
        attack_results,
    output:
        report(
            "results/tables/{attack}.tsv",
            caption="../report/attack_table.rst",
            category="Single-cell attacks",
        ),
    log:
        "logs/aggregate/{attack}.log",
    localrule: True
    conda:
        "../../envs/vulnbench.yaml"
    script:
        "../scripts/aggregate.py"


rule job_status:
    input:
        attack_tables,
    output:
        "results/tables/job_status.tsv",
    log:
        "logs/aggregate/job_status.log",
    localrule: True
    conda:
        "../../envs/vulnbench.yaml"
    script:
        "../scripts/job_status.py"


rule classifier_table:
    input:
        model_targets_metrics,
    output:
        report(
            "results/tables/classifiers.tsv",
            caption="../report/classifiers.rst",
            category="Classifiers",
        ),
    log:
        "logs/aggregate/classifiers.log",
    localrule: True
    conda:
        "../../envs/vulnbench.yaml"
    script:
        "../scripts/classifier_table.py"


rule plot_attack:
    input:
        "results/tables/{attack}.tsv",
    output:
        report(
            "results/figures/{attack}_{figure}.png",
            caption="../report/attack_figure.rst",
            category="Single-cell attacks",
        ),
    log:
        "logs/plots/{attack}_{figure}.log",
    localrule: True
    conda:
        "../../envs/vulnbench.yaml"
    script:
        "../scripts/plot.py"


rule sc_comparison:
    input:
        unpack(sc_comparison_inputs),
    output:
        table=report(
            "results/tables/sc_comparison.tsv",
            caption="../report/sc_comparison.rst",
            category="Single-cell comparison",
        ),
        figure=report(
            "results/figures/sc_comparison.png",
            caption="../report/sc_comparison.rst",
            category="Single-cell comparison",
        ),
    log:
        "logs/aggregate/sc_comparison.log",
    localrule: True
    conda:
        "../../envs/vulnbench.yaml"
    script:
        "../scripts/sc_comparison.py"


rule sc_detectability:
    input:
        data=detectability_data,
        model=detectability_model,
    output:
        table=report(
            "results/tables/sc_detectability.tsv",
            caption="../report/sc_detectability.rst",
            category="Single-cell detectability",
        ),
        umap=report(
            "results/figures/sc_detectability_umap.png",
            caption="../report/sc_detectability.rst",
            category="Single-cell detectability",
        ),
        dotplot=report(
            "results/figures/sc_detectability_dotplot.png",
            caption="../report/sc_detectability.rst",
            category="Single-cell detectability",
        ),
    log:
        "logs/aggregate/sc_detectability.log",
    conda:
        "../../envs/vulnbench.yaml"
    threads: 2
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 30 * attempt,
    params:
        settings=detectability_settings,
    script:
        "../scripts/sc_detectability.py"
