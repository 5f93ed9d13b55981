# Adapter: every attack job's status; fails, naming them, when a job stopped on bad input.
from vulnbench.core.logsetup import logged_stage
from vulnbench.pipeline import run_job_status

with logged_stage(snakemake.log[0]):  # noqa: F821
    run_job_status(list(snakemake.input), snakemake.output[0])  # noqa: F821
