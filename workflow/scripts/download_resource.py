# Adapter: download one reference file (checksum-verified when pinned) into resources/<resource>/.
from vulnbench.data.resources import run_download_resource
from vulnbench.logsetup import logged_stage

with logged_stage(snakemake.log[0]):  # noqa: F821
    run_download_resource(snakemake.params.remote, snakemake.output[0])  # noqa: F821
