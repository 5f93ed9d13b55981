# Adapter: download one reference file (checksum-verified when pinned) into resources/<resource>/.
from vulnbench.core.logsetup import logged_stage
from vulnbench.sc.data.resources import run_download_resource

with logged_stage(snakemake.log[0]):  # noqa: F821
    run_download_resource(snakemake.params.remote, snakemake.output[0])  # noqa: F821
