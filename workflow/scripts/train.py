# Adapter: train one classifier on the train split, write the model and its test-split metrics.
from vulnbench.core.logsetup import logged_stage
from vulnbench.sc.stages import run_train

sm = snakemake  # noqa: F821
with logged_stage(sm.log[0]):
    run_train(sm.input.data, sm.wildcards.classifier, dict(sm.params.classifier), sm.output.model,
              sm.output.metrics, threads=sm.threads)
