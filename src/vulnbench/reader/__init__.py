"""The dermoscopy reader study: build a blinded image set, collect dermatologists' answers, analyse them.

study: sample + shuffle + anonymise the images and write the key (manifest.csv), never replacing a study that holds
answers; answers: the readers' answer files (format, forgiving reading, one locked writer per reader); app: a local
web page for readers; analysis: reader AUCs with DeLong/bootstrap intervals and the logistic test of "adversarial";
cli: the commands.
"""

from __future__ import annotations

from vulnbench.reader.study import CLEAN, POOLED, Study, build_study, build_versioned_study, load_study

__all__ = ["CLEAN", "POOLED", "Study", "build_study", "build_versioned_study", "load_study"]
