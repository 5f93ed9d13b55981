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
    # a run of other config files must not overwrite this directory's tables (vulnbench.workdir)
    from vulnbench.errors import VulnbenchError
    from vulnbench.workdir import claim_results

    try:
        claim_results(Path.cwd(), workflow.overwrite_configfiles)
    except VulnbenchError as error:
        sys.exit(f"vulnbench error: {error}")


onerror:
    # a failed run (say with --keep-going) still writes the attack tables, failed jobs as status rows
    from vulnbench.stages import write_failed_tables

    write_failed_tables(
        JOBS,
        IMG_JOBS,
        {
            "attack": {
                "result": rules.run_attack.output.result,
                "log_file": rules.run_attack.log[0],
                "inputs": list(rules.run_attack.input),
                "table": rules.aggregate_attack.output[0],
            },
            "img_attack": {
                "result": rules.image_attack.output.result,
                "log_file": rules.image_attack.log[0],
                "inputs": list(rules.image_attack.input),
                "table": rules.img_attack_table.output.table,
                "records": rules.img_attack_table.output.records,
            },
        },
    )
