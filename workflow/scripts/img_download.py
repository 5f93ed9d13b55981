# Adapter: download one image dataset (e.g. ISIC 2019) into resources/img/<dataset>/.
from vulnbench.core.logsetup import logged_stage
from vulnbench.img.stages import run_download_images

sm = snakemake  # noqa: F821
with logged_stage(sm.log[0]):
    run_download_images(sm.wildcards.img_dataset, dict(sm.params.dataset), sm.output[0])
