# All-to-all rules: long tables from every result, then figures from the tables.


rule aggregate_attack:
    input:
        attack_results,
    output:
        "results/tables/{attack}.tsv",
    log:
        "logs/aggregate/{attack}.log",
    localrule: True
    conda:
        "../../envs/vulnbench.yaml"
    script:
        "../scripts/aggregate.py"


rule classifier_table:
    input:
        model_targets_metrics,
    output:
        "results/tables/classifiers.tsv",
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
        "results/figures/{attack}_heatmap.png",
    log:
        "logs/plots/{attack}.log",
    localrule: True
    conda:
        "../../envs/vulnbench.yaml"
    script:
        "../scripts/plot.py"
