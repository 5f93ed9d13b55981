# Adapter: how visible are single-gene, max-change and CGD (low / high) attacks on one cluster?
from vulnbench.core.logsetup import logged_stage
from vulnbench.sc.detectability import run_detectability

sm = snakemake  # noqa: F821
with logged_stage(sm.log[0]):
    settings = dict(sm.params.settings)
    run_detectability(sm.input.data, sm.input.model, settings.get("cluster"), dict(settings.get("params") or {}),
                      sm.output.table, sm.output.umap, sm.output.dotplot, threads=sm.threads)
