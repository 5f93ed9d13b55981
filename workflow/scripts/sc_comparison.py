# Adapter: every classifier on the same clusters, from the single-gene, max-change and CGD tables.
from vulnbench.core.logsetup import logged_stage
from vulnbench.sc.comparison import run_comparison

sm = snakemake  # noqa: F821
with logged_stage(sm.log[0]):
    run_comparison(dict(sm.input.items()), sm.output.table, sm.output.figure)
