# Adapter: run one attack parameter cell on every cluster of the test split.
from vulnbench.core.logsetup import logged_stage
from vulnbench.sc.stages import run_attack

sm = snakemake  # noqa: F821
with logged_stage(sm.log[0]):
    identity = {key: sm.wildcards[key] for key in ("dataset", "classifier", "pid")}
    identity.update(grid=dict(sm.params.grid), seed=sm.params.seed, code=sm.params.code)
    run_attack(sm.input.data, sm.input.model, sm.wildcards.attack, dict(sm.params.attack), sm.params.clusters,
               sm.output.result, identity, params_out=sm.output.params, threads=sm.threads)
