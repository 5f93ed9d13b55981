# Adapter: one figure of the dermoscopy arm from the aggregated tables.
from vulnbench.core.logsetup import logged_stage
from vulnbench.img.plots import run_img_plot

sm = snakemake  # noqa: F821
with logged_stage(sm.log[0]):
    run_img_plot(sm.wildcards.img_figure, sm.input.attacks, sm.input.records, sm.input.perturbations,
                 dict(sm.params.manifests), sm.output[0])
