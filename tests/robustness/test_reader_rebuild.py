"""Issue 16 item 1: rebuilding a reader study never deletes or changes a reader's answers.

A study rebuilt into a folder holding answers/drsmith.csv leaves that file byte-identical, through the command line
(`vulnbench reader-study build --out DIR`: a changed study is refused with a one-line error naming a folder beside
it) and through the pipeline rule reader_study_build (a changed study goes into study_v2/ beside the old one, whole).
Simulated readers never overwrite a real reader's file.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from vulnbench.core.errors import DataError
from vulnbench.reader.analysis import read_answers, simulate_readers
from vulnbench.reader.app import serve
from vulnbench.reader.study import build_study, build_versioned_study, load_study

VULNBENCH = Path(sys.executable).with_name("vulnbench")
REPO = Path(__file__).resolve().parents[2]
#: a real reader's answers, including a last line without newline: nothing may "tidy" it
DRSMITH = (b"# vulnbench reader answers v2; study=0000000000000000; reader=drsmith\n"
           b"image,answer,response_time_ms,timestamp\n"
           b"img_0001.png,1,2210.4,2024-05-01T10:00:00.000+00:00\n"
           b"img_0002.png,0,1875.0,2024-05-01T10:00:03.000+00:00")


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(path)


def _lists(tmp_path: Path) -> dict[str, Path]:
    """Image lists (path,label) for 8 clean and 6 pixel-attacked images."""
    lists = {}
    for name, n, offset in (("clean", 8, 0), ("pixel", 6, 100)):
        rows = []
        for k in range(n):
            image = tmp_path / "src" / name / f"{name}{k}.png"
            _png(image, offset + k)
            rows.append(f"{image}\t{'melanoma' if name == 'pixel' or k % 2 else 'nevus'}\n")
        lists[name] = tmp_path / f"{name}.tsv"
        lists[name].write_text("path\tlabel\n" + "".join(rows))
    return lists


def _tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` with the digest of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(VULNBENCH), "reader-study", *args], capture_output=True, text=True, timeout=120,
                          check=False)


def _build_args(lists: dict[str, Path], out: Path, n: int) -> list[str]:
    return ["build", "--clean", str(lists["clean"]), "--adversarial", f"pixel={lists['pixel']}", "--out", str(out),
            "--n-per-condition", str(n), "--seed", "3"]


def test_cli_rebuild_into_a_study_with_answers_keeps_them_byte_identical(tmp_path: Path) -> None:
    lists = _lists(tmp_path)
    study = tmp_path / "study"
    assert _cli(*_build_args(lists, study, 4)).returncode == 0
    (study / "answers").mkdir()
    (study / "answers" / "drsmith.csv").write_bytes(DRSMITH)
    before = _tree(study)

    # another n_per_condition: refused in one line that says where to build instead; nothing changed, exit 1
    result = _cli(*_build_args(lists, study, 3))
    assert result.returncode == 1, result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("vulnbench error")]
    assert len(error) == 1 and error[0].startswith("vulnbench error: study folder ")
    assert "Traceback" not in result.stderr
    assert "holds readers' answers (answers/drsmith.csv)" in error[0]
    assert f"build the new study beside it: --out {tmp_path / 'study_v2'}" in error[0]
    assert (study / "answers" / "drsmith.csv").read_bytes() == DRSMITH
    assert _tree(study) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean.tsv", "pixel.tsv", "src", "study"]  # no leftovers

    # the same study again: nothing to rebuild, kept as it is (exit 0)
    assert _cli(*_build_args(lists, study, 4)).returncode == 0
    assert _tree(study) == before

    # the folder the error named takes the new study; the old one stays whole
    result = _cli(*_build_args(lists, tmp_path / "study_v2", 3))
    assert result.returncode == 0, result.stderr
    assert pd.read_csv(tmp_path / "study_v2" / "manifest.csv")["condition"].value_counts().to_dict() == {
        "clean": 3, "pixel": 3}
    assert _tree(study) == before
    # … and a third attempt on study points past study_v2
    assert "--out " + str(tmp_path / "study_v3") in _cli(*_build_args(lists, study, 2)).stderr


def test_a_study_without_answers_is_replaced_but_other_folders_are_not(tmp_path: Path) -> None:
    lists = _lists(tmp_path)
    study = tmp_path / "study"
    assert _cli(*_build_args(lists, study, 4)).returncode == 0
    (study / "answers").mkdir()  # an empty answers folder is no answer
    assert _cli(*_build_args(lists, study, 2)).returncode == 0
    assert len(pd.read_csv(study / "manifest.csv")) == 4  # rebuilt: 2 clean + 2 pixel

    # --out at a folder that is not a study (a typo, a home folder): refused, every file kept
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "thesis.tex").write_text("months of work\n")
    result = _cli(*_build_args(lists, notes, 2))
    assert result.returncode == 1
    assert "holds files that are not part of a reader study (thesis.tex)" in result.stderr
    assert (notes / "thesis.tex").read_text() == "months of work\n" and len(list(notes.iterdir())) == 1


def test_a_server_started_on_a_study_blocks_its_replacement(tmp_path: Path) -> None:
    """A reader set up (link made, lock taken) but no answer yet: the study is theirs now, a rebuild must not move
    it under them."""
    lists = _lists(tmp_path)
    study = tmp_path / "study"
    assert _cli(*_build_args(lists, study, 4)).returncode == 0
    server = serve(study, "drsmith")
    try:
        clean = [(Path(p), label) for p, label in pd.read_csv(lists["clean"], sep="\t").itertuples(index=False)]
        with pytest.raises(DataError, match=r"holds readers' answers \(answers/\.drsmith\.lock"):
            build_study(clean, {}, study, n_per_condition=2, seed=0)
        assert server.state("drsmith")["total"] == 8
    finally:
        server.close()


def test_versioned_build_goes_beside_a_study_with_answers(tmp_path: Path) -> None:
    lists = _lists(tmp_path)
    clean = [(Path(p), label) for p, label in pd.read_csv(lists["clean"], sep="\t").itertuples(index=False)]
    pixel = [(Path(p), label) for p, label in pd.read_csv(lists["pixel"], sep="\t").itertuples(index=False)]
    pointer = tmp_path / "rs" / "study.json"
    first = build_versioned_study(clean, {"pixel": pixel}, pointer, 4, 0)
    assert first == tmp_path / "rs" / "study" and load_study(pointer).directory == first
    # no answers yet: a changed study replaces it in place
    assert build_versioned_study(clean, {"pixel": pixel}, pointer, 3, 0) == first
    (first / "answers").mkdir()
    (first / "answers" / "drsmith.csv").write_bytes(DRSMITH)
    before = _tree(first)
    second = build_versioned_study(clean, {"pixel": pixel}, pointer, 2, 0)
    assert second == tmp_path / "rs" / "study_v2" and _tree(first) == before
    assert json.loads(pointer.read_text())["study"] == "study_v2" and len(load_study(pointer).images) == 4
    # back to the settings of the study that has answers: that one is current again, nothing copied
    assert build_versioned_study(clean, {"pixel": pixel}, pointer, 3, 0) == first
    assert json.loads(pointer.read_text())["answers"] == "study/answers"
    assert _tree(first) == before and sorted(p.name for p in (tmp_path / "rs").iterdir()) == [
        "study", "study.json", "study_v2"]


def test_simulate_never_overwrites_a_real_readers_file(tmp_path: Path) -> None:
    lists = _lists(tmp_path)
    study = tmp_path / "study"
    assert _cli(*_build_args(lists, study, 4)).returncode == 0
    answers = tmp_path / "answers"
    answers.mkdir()
    real = b"image,answer,response_time_ms,timestamp\nimg_0003.png,1,950.0,2024-05-01T10:00:00.000+00:00\n"
    (answers / "sim01.csv").write_bytes(real)  # a real reader who happens to be called sim01 (an older v1 file)
    result = _cli("simulate", str(study), "--answers", str(answers), "--readers", "2")
    assert result.returncode == 1
    assert "holds real readers' files (sim01.csv); simulated readers go to a folder of their own" in result.stderr
    assert (answers / "sim01.csv").read_bytes() == real and sorted(p.name for p in answers.iterdir()) == ["sim01.csv"]

    simulated = tmp_path / "simulated"
    assert _cli("simulate", str(study), "--answers", str(simulated), "--readers", "2").returncode == 0
    first = (simulated / "sim01.csv").read_bytes()
    assert first.startswith(b"# vulnbench reader answers v2; study=") and b"; simulated=yes\n" in first
    simulate_readers(study, simulated, n_readers=2, seed=0)  # its own folder may be rewritten
    assert (simulated / "sim01.csv").read_bytes() == first
    # a real reader's server refuses the simulated folder, and the analysis refuses to mix the two
    with pytest.raises(Exception, match="folder of simulated readers"):
        serve(study, "drsmith", answers_dir=simulated)
    assert not (simulated / "drsmith.csv").exists()
    (simulated / "drsmith.csv").write_bytes(real)
    with pytest.raises(DataError, match="mixes simulated readers"):
        read_answers(study, simulated)


# -- through the pipeline rule ----------------------------------------------------------------------------------------
def _image_arm(workdir: Path) -> None:
    """The rule's inputs as the image arm leaves them: manifest, attack records, saved adversarial images."""
    data = workdir / "results" / "img" / "data" / "synthetic_lesions"
    rows = []
    for k in range(10):
        _png(data / "images" / f"les{k}.png", k)
        rows.append({"image": f"les{k}", "label": "melanoma" if k % 2 else "nevus", "split": "test",
                     "lesion_id": f"L{k}", "path": f"images/les{k}.png"})
    pd.DataFrame(rows).to_csv(data / "manifest.tsv", sep="\t", index=False)
    records = []
    for attack in ("pixel", "color"):
        folder = workdir / "results" / "img" / "attacks" / "synthetic_lesions" / "mobilenet_v3_small" / attack
        for k in range(5):
            _png(folder / "default" / "images" / f"les{k}_adv.png", 50 + k + (attack == "color") * 10)
            records.append({"dataset": "synthetic_lesions", "model": "mobilenet_v3_small", "attack": attack,
                            "pid": "default", "image": f"les{k}", "outcome": "success",
                            "adversarial_file": f"les{k}_adv.png",
                            "adversarial_path": str(folder / "default" / "images" / f"les{k}_adv.png")})
    (workdir / "results" / "tables").mkdir(parents=True)
    pd.DataFrame(records).to_csv(workdir / "results" / "tables" / "img_attack_records.tsv", sep="\t", index=False)


def _config(workdir: Path, n_per_condition: int) -> Path:
    config = {"seed": 0,
              "datasets": {"synthetic": {"n_cells": 60, "n_genes": 40, "n_types": 2, "n_markers": 5}},
              "classifiers": {"scrf": {"n_estimators": 5}},
              "attacks": {"single_gene": {"grid": {"method": ["perc99"]}}},
              "images": {"datasets": {"synthetic_lesions": {"n_images": 40, "image_size": 16}},
                         "models": {"mobilenet_v3_small": {"epochs": 1}},
                         "attacks": {"pixel": {}, "color": {}},
                         "reader_study": {"n_per_condition": n_per_condition}}}
    path = workdir / "config.yaml"  # the user edits their config between the two builds
    path.write_text(yaml.safe_dump(config))
    return path


def _build_rule(workdir: Path, config: Path, target: str = "results/reader_study/study.json",
                rules: tuple[str, ...] = ("reader_study_build",)) -> subprocess.CompletedProcess:
    """Only the rules under test run (--allowed-rules): the inputs above stand in for the image arm's outputs."""
    command = [str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile"), "--directory",
               str(workdir), target, "--allowed-rules", *rules, "--cores", "1", "--configfile", str(config)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_pipeline_rule_rebuild_keeps_a_readers_answers_byte_identical(tmp_path: Path) -> None:
    _image_arm(tmp_path)
    result = _build_rule(tmp_path, _config(tmp_path, 3))
    assert result.returncode == 0, result.stderr[-3000:]
    folder = tmp_path / "results" / "reader_study"
    study = folder / "study"
    assert json.loads((folder / "study.json").read_text())["study"] == "study"
    assert len(load_study(study).images) == 9  # 3 clean, 3 pixel, 3 color
    (study / "answers").mkdir()
    (study / "answers" / "drsmith.csv").write_bytes(DRSMITH)
    before = _tree(study)

    # another n_per_condition: Snakemake reruns the rule (params changed) and deletes its output first — the pointer
    result = _build_rule(tmp_path, _config(tmp_path, 2))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reader_study_build" in result.stderr  # it did rerun
    assert (study / "answers" / "drsmith.csv").read_bytes() == DRSMITH
    assert _tree(study) == before  # the old study is whole
    pointer = json.loads((folder / "study.json").read_text())
    assert pointer["study"] == "study_v2" and pointer["n_images"] == 6
    assert load_study(folder / "study.json").directory == folder / "study_v2"

    # simulated readers and the analysis follow the pointer to the current study; the real answers stay untouched
    result = _build_rule(tmp_path, _config(tmp_path, 2), "results/tables/reader_study_auc.tsv",
                         ("reader_study_build", "reader_study_simulate", "reader_study_analyse"))
    assert result.returncode == 0, result.stderr[-3000:]
    answers = pd.read_csv(tmp_path / "results" / "reader_study" / "answers.tsv", sep="\t")
    assert answers.groupby("reader")["image"].count().tolist() == [6] * 5  # 5 simulated readers × study_v2's 6
    assert (folder / "simulated_answers" / ".simulated").is_file() and _tree(study) == before
