# Adapter: accuracy and macro-F1 of every trained classifier on its test split.
from vulnbench.core.logsetup import logged_stage
from vulnbench.sc.stages import run_metrics_table

with logged_stage(snakemake.log[0]):  # noqa: F821
    run_metrics_table(list(snakemake.input), snakemake.output[0])  # noqa: F821
