# Adapter: download one dataset archive (checksum-verified) into resources/.
from vulnbench.core.logsetup import logged_stage
from vulnbench.sc.stages import run_download

with logged_stage(snakemake.log[0]):  # noqa: F821
    run_download(snakemake.wildcards.dataset, snakemake.params.dataset, snakemake.output[0])  # noqa: F821
