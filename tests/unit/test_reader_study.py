"""Reader study: blinded study building, DeLong/bootstrap AUC intervals, the effect test and the CLI."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from vulnbench.cli import main as vulnbench_main
from vulnbench.core.errors import ConfigError, DataError
from vulnbench.reader.analysis import (
    bootstrap_auc_ci,
    delong_auc,
    effect_test,
    normal_ci,
    plot_reader_auc,
    read_answers,
    reader_auc,
    simulate_readers,
)
from vulnbench.reader.study import MANIFEST, build_study, load_study


def _images(folder: Path, prefix: str, n: int, seed: int, fmt: str = "png") -> list[tuple[Path, str]]:
    """Tiny random images with telling names (the study must hide them), alternating melanoma / nevus."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        path = folder / f"{prefix}_ISIC_{i:04d}_melanoma.{fmt}"
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(path)
        items.append((path, "melanoma" if i % 2 == 0 else "nevus"))
    return items


@pytest.fixture
def sources(tmp_path: Path) -> tuple[list[tuple[Path, str]], dict[str, list[tuple[Path, str]]]]:
    clean = _images(tmp_path / "src" / "clean", "orig", 10, seed=1, fmt="jpg")
    adversarial = {"pixel": _images(tmp_path / "src" / "pixel", "pixel", 8, seed=2),
                   "color": _images(tmp_path / "src" / "color", "color", 3, seed=3)}
    return clean, adversarial


# -- building the study ----------------------------------------------------------------------------------------------
def test_build_study_is_seeded_blind_and_samples_n_per_condition(tmp_path, sources, caplog):
    clean, adversarial = sources
    with caplog.at_level(logging.WARNING):
        first = build_study(clean, adversarial, tmp_path / "a", n_per_condition=5, seed=7)
    assert "condition color has 3 images" in caplog.text  # fewer than N: all used, and said so
    second = build_study(clean, adversarial, tmp_path / "b", n_per_condition=5, seed=7)
    other = build_study(clean, adversarial, tmp_path / "c", n_per_condition=5, seed=8)

    manifest = pd.read_csv(first / MANIFEST)
    assert list(manifest.columns) == ["image", "source", "condition", "truth", "order"]
    assert manifest["condition"].value_counts().to_dict() == {"clean": 5, "pixel": 5, "color": 3}
    assert manifest["order"].tolist() == list(range(13))
    # names are opaque: img_0001.png … in display order, nothing about condition, attack, label or source
    assert manifest["image"].tolist() == [f"img_{i:04d}.png" for i in range(1, 14)]
    assert sorted(p.name for p in (first / "images").iterdir()) == manifest["image"].tolist()
    for name in manifest["image"]:
        with Image.open(first / "images" / name) as image:
            assert image.format == "PNG" and image.mode == "RGB" and image.size == (10, 12)
            assert not {k for k in image.info if k not in ("dpi", "gamma")}  # no text chunks / EXIF / ICC carried
    # the chosen sources are real, unique per condition, and their labels travel to the key
    labels = {str(path): label for items in (clean, *adversarial.values()) for path, label in items}
    assert all(labels[row.source] == row.truth for row in manifest.itertuples())
    assert not manifest.duplicated(["condition", "source"]).any()
    # same seed → same sample, same order, same bytes; another seed → another order
    again = pd.read_csv(second / MANIFEST)
    pd.testing.assert_frame_equal(manifest, again)
    assert (first / "images" / "img_0004.png").read_bytes() == (second / "images" / "img_0004.png").read_bytes()
    assert pd.read_csv(other / MANIFEST)["source"].tolist() != manifest["source"].tolist()
    # the shuffle interleaves conditions (not 5 clean, then 5 pixel, then 3 color)
    assert manifest["condition"].tolist() != sorted(manifest["condition"], key=["clean", "color", "pixel"].index)


def test_build_study_is_atomic_and_validates(tmp_path, sources):
    clean, adversarial = sources
    out = build_study(clean, adversarial, tmp_path / "study", n_per_condition=2, seed=0, image_size=16)
    with Image.open(out / "images" / "img_0001.png") as image:
        assert image.size == (16, 16)
    before = (out / MANIFEST).read_text()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"cannot read image .*broken\.png"):
        build_study([*clean, (broken, "nevus")], {}, out, n_per_condition=20, seed=0)
    assert (out / MANIFEST).read_text() == before  # the old study is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.png", "src", "study"]  # no temp dirs left
    with pytest.raises(DataError, match="label 'benign'"):
        build_study([(clean[0][0], "benign")], {}, tmp_path / "x", 1, 0)
    with pytest.raises(ConfigError, match="invalid attack name 'clean'"):
        build_study(clean, {"clean": clean}, tmp_path / "x", 1, 0)
    with pytest.raises(DataError, match="listed twice"):
        build_study([clean[0], clean[0]], {}, tmp_path / "x", 1, 0)


# -- DeLong and bootstrap --------------------------------------------------------------------------------------------
def test_delong_on_a_hand_computed_case():
    """Positives 0.9, 0.8, 0.4; negatives 0.7, 0.2, 0.4.

    Pairs won by the positive (tie ½): 0.9 → 3, 0.8 → 3, 0.4 → 0 + 1 + ½ = 1.5; AUC = 7.5 / 9 = 5/6.
    V10 = (1, 1, ½): mean 5/6, sample variance (1/36 + 1/36 + 4/36) / 2 = 1/12.
    V01 = (2/3, 1, 5/6) (share of positives above each negative, tie ½): sample variance (1/36 + 1/36 + 0) / 2 = 1/36.
    var = (1/12)/3 + (1/36)/3 = 1/27 ≈ 0.0370, SE ≈ 0.1925, 95 % CI = 5/6 ± 0.3772 → [0.456, 1] (clipped).
    """
    scores = [0.9, 0.8, 0.4, 0.7, 0.2, 0.4]
    truth = [True, True, True, False, False, False]
    auc, variance = delong_auc(scores, truth)
    assert auc == pytest.approx(5 / 6)
    assert auc == pytest.approx(roc_auc_score(truth, scores))
    assert variance == pytest.approx(1 / 27)
    low, high = normal_ci(auc, variance)
    assert low == pytest.approx(5 / 6 - 1.959964 * math.sqrt(1 / 27), abs=1e-6)
    assert high == 1.0


def test_binary_ratings_give_mean_of_sensitivity_and_specificity():
    """Answers on 4 melanomas: 1, 1, 1, 0 (sensitivity 3/4); on 4 naevi: 1, 1, 0, 0 (specificity 2/4) → AUC 0.625."""
    answers = [1, 1, 1, 0, 1, 1, 0, 0]
    truth = [True] * 4 + [False] * 4
    auc, _ = delong_auc(answers, truth)
    assert auc == pytest.approx(0.625)
    assert auc == pytest.approx(roc_auc_score(truth, answers))


def test_delong_variance_matches_brute_force_structural_components():
    rng = np.random.default_rng(4)
    scores = rng.integers(0, 4, 11).astype(float)  # few distinct values: plenty of ties
    truth = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0], dtype=bool)
    x, y = scores[truth], scores[~truth]
    psi = np.array([[1.0 if a > b else 0.5 if a == b else 0.0 for b in y] for a in x])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    expected = np.var(v10, ddof=1) / len(x) + np.var(v01, ddof=1) / len(y)
    auc, variance = delong_auc(scores, truth)
    assert auc == pytest.approx(psi.mean())
    assert variance == pytest.approx(expected, rel=1e-12)


def test_clustered_delong_accounts_for_repeated_readings():
    rng = np.random.default_rng(5)
    scores = rng.normal(size=40) + np.repeat([1.0, 0.0], 20)
    truth = np.repeat([True, False], 20)
    auc, variance = delong_auc(scores, truth)
    # singleton clusters: exactly DeLong
    assert delong_auc(scores, truth, clusters=np.arange(40)) == pytest.approx((auc, variance))
    # every image read twice with the same answer: no new information, so the clustered variance stays the same …
    doubled = np.concatenate([scores, scores])
    doubled_truth = np.concatenate([truth, truth])
    images = np.concatenate([np.arange(40), np.arange(40)])
    auc2, variance2 = delong_auc(doubled, doubled_truth, clusters=images)
    assert auc2 == pytest.approx(auc)
    assert variance2 == pytest.approx(variance, rel=1e-10)
    # … while treating the 80 answers as independent halves it (the overconfidence the clustering prevents)
    assert delong_auc(doubled, doubled_truth)[1] < 0.55 * variance
    # the image bootstrap agrees: resampling images of the doubled data = resampling the original answers
    assert (bootstrap_auc_ci(doubled, doubled_truth, clusters=images, n_boot=500, seed=1)
            == bootstrap_auc_ci(scores, truth, n_boot=500, seed=1))


def test_bootstrap_is_seeded_and_agrees_with_delong():
    rng = np.random.default_rng(6)
    truth = rng.random(300) < 0.4
    scores = rng.normal(size=300) + 0.8 * truth
    first = bootstrap_auc_ci(scores, truth, n_boot=2000, seed=3)
    assert first == bootstrap_auc_ci(scores, truth, n_boot=2000, seed=3)
    assert first != bootstrap_auc_ci(scores, truth, n_boot=2000, seed=4)
    auc, variance = delong_auc(scores, truth)
    low, high = normal_ci(auc, variance)
    assert first[0] < auc < first[1]
    assert (first[1] - first[0]) == pytest.approx(high - low, rel=0.15)
    assert first == pytest.approx((low, high), abs=0.02)
    assert all(math.isnan(v) for v in bootstrap_auc_ci([1, 0, 1], [True, True, True]))  # one class: undefined


# -- answers, AUC table, effect test -----------------------------------------------------------------------------------
@pytest.fixture
def big_study(tmp_path: Path) -> Path:
    clean = _images(tmp_path / "src" / "clean", "orig", 40, seed=11)
    adversarial = {"pixel": _images(tmp_path / "src" / "pixel", "pixel", 20, seed=12),
                   "rotation": _images(tmp_path / "src" / "rotation", "rot", 20, seed=13)}
    return build_study(clean, adversarial, tmp_path / "study", n_per_condition=40, seed=0)


def test_simulated_answers_read_back_and_summarise(big_study, tmp_path):
    answers_dir = tmp_path / "answers"
    paths = simulate_readers(big_study, answers_dir, n_readers=3, seed=2)
    assert [p.name for p in paths] == ["sim01.csv", "sim02.csv", "sim03.csv"]
    copy = simulate_readers(big_study, tmp_path / "again", n_readers=3, seed=2)
    assert paths[1].read_bytes() == copy[1].read_bytes()
    frame = read_answers(big_study, answers_dir)
    assert len(frame) == 3 * 80
    assert frame.groupby("reader")["image"].nunique().tolist() == [80, 80, 80]
    assert (frame["correct"] == (frame["answer"] == (frame["truth"] == "melanoma"))).all()
    assert (frame["adversarial"] == (frame["condition"] != "clean")).all()
    table = reader_auc(frame, n_boot=300, seed=0)
    assert table["reader"].unique().tolist() == ["sim01", "sim02", "sim03", "pooled"]
    assert table["condition_set"].unique().tolist() == ["clean", "adversarial", "pixel", "rotation"]
    per_reader = table[table["reader"] != "pooled"]
    assert per_reader["auc"].to_numpy() == pytest.approx(
        ((per_reader["sensitivity"] + per_reader["specificity"]) / 2).to_numpy())
    pooled = table[table["reader"] == "pooled"].set_index("condition_set")
    clean_nevi = int(((frame["condition"] == "clean") & (frame["truth"] == "nevus")).sum())
    # adversarial sets take the clean naevi as negatives (attacked images are melanomas in the pipeline)
    assert pooled.loc["clean", "n"] == 120 and pooled.loc["adversarial", "n"] == 120 + clean_nevi > 120
    assert pooled.loc["adversarial", "ci_method"] == "delong_clustered_by_image"
    assert (table["ci_low"] <= table["auc"]).all() and (table["auc"] <= table["ci_high"]).all()
    assert (table["boot_low"] <= table["boot_high"]).all()
    figure = tmp_path / "auc.png"
    plot_reader_auc(table, figure)
    with Image.open(figure) as image:
        assert image.width > 500 and image.height > 300


def test_effect_test_finds_a_planted_effect_and_not_a_missing_one(big_study, tmp_path):
    simulate_readers(big_study, tmp_path / "fooled", n_readers=25, seed=1, adversarial_effect=-1.5)
    fooled = effect_test(read_answers(big_study, tmp_path / "fooled"))
    assert fooled.p_adversarial < 0.01
    assert fooled.coef_adversarial == pytest.approx(-1.5, abs=0.4)
    assert fooled.n == 25 * 80 and fooled.n_readers == 25
    assert fooled.formula == "correct ~ C(reader) + C(truth) + adversarial"
    assert "adversarial" in fooled.coefficients["term"].tolist()

    # without an effect p is uniform (measured: 12 of 200 seeds below 0.05); the seed is fixed, not searched per run
    simulate_readers(big_study, tmp_path / "unmoved", n_readers=25, seed=0, adversarial_effect=0.0)
    unmoved = effect_test(read_answers(big_study, tmp_path / "unmoved"))
    assert unmoved.p_adversarial > 0.05
    clustered = effect_test(read_answers(big_study, tmp_path / "unmoved"), cluster="image")
    assert clustered.coef_adversarial == pytest.approx(unmoved.coef_adversarial)
    assert clustered.cov_type == "cluster(image)"


def test_malformed_answers_name_the_file_and_line(big_study, tmp_path, caplog):
    answers_dir = tmp_path / "answers"
    answers_dir.mkdir()
    images = load_study(big_study).images
    bad = answers_dir / "bob.csv"
    bad.write_text("image,answer,response_time_ms,timestamp\n"
                   f"{images[0]},1,812.5,2024-05-01T10:00:00.000+00:00\n"
                   f"{images[1]},2,900.0,2024-05-01T10:00:02.000+00:00\n")
    with pytest.raises(DataError, match=r"bob\.csv line 3: answer '2'") as caught:
        read_answers(big_study, answers_dir)
    assert "\n" not in str(caught.value)
    bad.write_text("image,answer,response_time_ms,timestamp\n"
                   f"{images[0]},1,812.5,2024-05-01T10:00:00.000+00:00\n"
                   f"{images[0]},0,900.0,2024-05-01T10:00:02.000+00:00\n")
    with caplog.at_level(logging.WARNING):  # two servers once wrote one reader's file: the first answer counts
        frame = read_answers(big_study, answers_dir)
    assert frame["answer"].tolist() == [1]
    assert "bob.csv: 1 repeated answer(s) ignored" in caplog.text and "line 3 (img_0001.png)" in caplog.text
    bad.write_text("image,answer\nimg_0001.png,1\n")
    with pytest.raises(DataError, match=r"bob\.csv line 1: header"):
        read_answers(big_study, answers_dir)
    bad.write_text(f"image,answer,response_time_ms,timestamp\n{images[0]},1,fast,yesterday\n")
    with pytest.raises(DataError, match=r"bob\.csv line 2: bad response time"):
        read_answers(big_study, answers_dir)
    # the original PyQt app's export is read too (no response times)
    bad.write_text(f"Image_name,Diagnosis\n{images[0]},1\n{images[1]},0\n")
    frame = read_answers(big_study, answers_dir)
    assert frame["answer"].tolist() == [1, 0] and frame["response_time_ms"].isna().all()


# -- command line ----------------------------------------------------------------------------------------------------
def test_cli_build_simulate_analyse_and_one_line_errors(tmp_path, sources, capsys):
    clean, adversarial = sources
    lists = {}
    for name, items in {"clean": clean, **adversarial}.items():
        lists[name] = tmp_path / f"{name}.tsv"
        lists[name].write_text("path\tlabel\n" + "".join(f"{p}\t{label}\n" for p, label in items))
    study = tmp_path / "study"
    assert vulnbench_main(["reader-study", "build", "--clean", str(lists["clean"]), "--adversarial",
                           f"pixel={lists['pixel']}", "--out", str(study), "--n-per-condition", "4"]) == 0
    assert pd.read_csv(study / MANIFEST)["condition"].value_counts().to_dict() == {"clean": 4, "pixel": 4}
    assert vulnbench_main(["reader-study", "simulate", str(study), "--answers", str(tmp_path / "ans"),
                           "--readers", "3"]) == 0
    out = tmp_path / "out"
    assert vulnbench_main(["reader-study", "analyse", str(study), "--answers", str(tmp_path / "ans"),
                           "--out", str(out), "--n-boot", "200"]) == 0
    assert {p.name for p in out.iterdir()} == {"answers.tsv", "reader_auc.tsv", "effect_test.tsv",
                                               "effect_test.json", "reader_auc.png"}
    assert re.search(r"adversarial: coef [-+]\d\.\d{3}, p = ", capsys.readouterr().out)
    assert vulnbench_main(["reader-study", "analyse", str(study), "--answers", str(tmp_path / "none"),
                           "--out", str(out)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("vulnbench error: no reader answer files") and "\n" not in error
