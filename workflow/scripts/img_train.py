# Adapter: train one image model (or open an external one) and score it on the test split.
from vulnbench.core.logsetup import logged_stage
from vulnbench.img.stages import run_train_image_model

sm = snakemake  # noqa: F821
with logged_stage(sm.log[0]):
    run_train_image_model(sm.input.manifest, sm.wildcards.img_model, dict(sm.params.model), sm.output.model,
                          sm.output.metrics, sm.output.predictions, threads=sm.threads)
