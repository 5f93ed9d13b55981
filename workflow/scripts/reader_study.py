# Adapter: the reader study's three steps (build the blinded study, simulate readers, analyse), by rule name.
# The build's output is a pointer file (study.json) naming the study folder beside it; the other steps take it as is.
from vulnbench.core.logsetup import logged_stage
from vulnbench.reader.analysis import analyse_study
from vulnbench.reader.stages import run_build_reader_study, run_simulate_readers

sm = snakemake  # noqa: F821
settings = dict(sm.params.settings)
with logged_stage(sm.log[0]):
    if sm.rule == "reader_study_build":
        run_build_reader_study(sm.input.records, sm.input.manifest, settings["dataset"], settings, settings["seed"],
                               sm.output[0])
    elif sm.rule == "reader_study_simulate":
        run_simulate_readers(sm.input[0], settings, settings["seed"], sm.output[0])
    else:
        analyse_study(sm.input.study, sm.input.answers, sm.output.auc, sm.output.effect, sm.output.summary,
                      sm.output.figure, out_answers=sm.output.answers, seed=settings["seed"])
