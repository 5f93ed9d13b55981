# vulnbench: dataset → classifier training → attack × classifier × parameter jobs → tables and figures.
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")


# The default config applies only when no --configfile is given (Snakemake would otherwise merge both).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/attack.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/img.smk"


rule all:
    default_target: True
    input:
        final_targets(),


rule only_train:
    input:
        model_targets(),


onstart:
    # a run of other config files must not overwrite this directory's tables (vulnbench.core.workdir)
    from vulnbench.core.errors import VulnbenchError
    from vulnbench.core.workdir import claim_results

    try:
        claim_results(Path.cwd(), workflow.overwrite_configfiles)
    except VulnbenchError as error:
        sys.exit(f"vulnbench error: {error}")
