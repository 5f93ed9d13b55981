# Adapter: the systematic perturbations (rotations, channel shifts) of one model on the test split.
from vulnbench.core.logsetup import logged_stage
from vulnbench.img.stages import run_systematic

sm = snakemake  # noqa: F821
with logged_stage(sm.log[0]):
    run_systematic(sm.input.manifest, sm.input.model, sm.wildcards.img_model, dict(sm.params.settings), sm.output[0],
                   threads=sm.threads)
