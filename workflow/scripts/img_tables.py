# Adapter: the dermoscopy arm's long tables (metrics, attacks, perturbations), chosen by the rule's name.
from vulnbench.core.logsetup import logged_stage
from vulnbench.img import stages

sm = snakemake  # noqa: F821
with logged_stage(sm.log[0]):
    if sm.rule == "img_metrics_table":
        stages.run_img_metrics_table(list(sm.input), sm.output[0])
    elif sm.rule == "img_attack_table":
        stages.run_img_attack_table(list(sm.input), sm.output.table, sm.output.records)
    else:
        stages.run_img_perturbation_table(list(sm.input), sm.output[0])
