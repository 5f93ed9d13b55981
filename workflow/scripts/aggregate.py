# Adapter: one long table from every result of one attack.
from vulnbench.core.logsetup import logged_stage
from vulnbench.sc.stages import run_aggregate

with logged_stage(snakemake.log[0]):  # noqa: F821
    run_aggregate(snakemake.wildcards.attack, list(snakemake.input), snakemake.output[0])  # noqa: F821
