# Adapter: one image attack parameter cell on the test split's correctly classified melanomas.
from vulnbench.core.logsetup import logged_stage
from vulnbench.img.stages import run_image_attack

sm = snakemake  # noqa: F821
with logged_stage(sm.log[0]):
    identity = {"dataset": sm.wildcards.img_dataset, "model": sm.wildcards.img_model, "pid": sm.wildcards.pid,
                "grid": dict(sm.params.grid), "code": sm.params.code}
    run_image_attack(sm.input.manifest, sm.input.model, sm.wildcards.img_attack, dict(sm.params.attack),
                     dict(sm.params.settings), sm.output.result, sm.output.images, threads=sm.threads,
                     identity=identity)
