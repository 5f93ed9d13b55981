# Adapter: load a dataset, log-normalise, validate and split it into one h5ad.
from vulnbench.core.logsetup import logged_stage
from vulnbench.sc.stages import run_prepare

sm = snakemake  # noqa: F821
with logged_stage(sm.log[0]):
    archive = sm.input.archive[0] if len(sm.input.archive) else None
    run_prepare(sm.wildcards.dataset, sm.params.dataset, sm.params.split, archive, sm.output[0])
