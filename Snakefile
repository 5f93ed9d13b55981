# vulnbench: dataset → classifier training → attack × classifier × parameter jobs → tables and figures.
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
