# Adapter: load an image dataset, resize it and write the lesion-grouped train/val/test manifest.
from vulnbench.core.logsetup import logged_stage
from vulnbench.img.stages import run_prepare_images

sm = snakemake  # noqa: F821
with logged_stage(sm.log[0]):
    run_prepare_images(sm.wildcards.img_dataset, dict(sm.params.dataset), dict(sm.params.prepare),
                       sm.input[0] if len(sm.input) else None, sm.output[0])
