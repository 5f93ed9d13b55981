# Adapter: the heatmap of one attack's table.
from vulnbench.logsetup import logged_stage
from vulnbench.plots import run_plot

with logged_stage(snakemake.log[0]):  # noqa: F821
    run_plot(snakemake.wildcards.attack, snakemake.input[0], snakemake.output[0])  # noqa: F821
