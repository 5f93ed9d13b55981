# Adapter: one figure of one attack's table.
from vulnbench.core.logsetup import logged_stage
from vulnbench.sc.plots import run_plot

sm = snakemake  # noqa: F821
with logged_stage(sm.log[0]):
    run_plot(sm.wildcards.attack, sm.wildcards.figure, sm.input[0], sm.output[0])
