"""The workflow as a user drives it: lint, format, dry runs, bad config, a tiny real run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.helpers import report_figures_in_chromium

from .conftest import REPO, SNAKEMAKE, job_counts, snakemake


def test_lint_is_clean() -> None:
    result = subprocess.run([str(SNAKEMAKE), "--lint"], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "good condition" in result.stdout + result.stderr


def test_snakefmt_is_clean() -> None:
    snakefmt = SNAKEMAKE.with_name("snakefmt")
    files = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    result = subprocess.run([str(snakefmt), "--check", *map(str, files)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr


def expected_plan(config: dict) -> dict[str, int]:
    """The jobs a full run of `config` must plan, computed from the config with the library's own matrices."""
    from vulnbench.img.plan import build_image_jobs
    from vulnbench.img.plots import IMAGE_FIGURES
    from vulnbench.sc.attacks import ATTACKS
    from vulnbench.sc.plan import build

    jobs = build(config)
    attacks = sorted(set(jobs["attack"]))
    n_models = len(config["datasets"]) * len(config["classifiers"])
    n_figures = sum(len(ATTACKS.get(a).figures) for a in attacks)
    plan = {"prepare_dataset": len(config["datasets"]), "train_classifier": n_models, "run_attack": len(jobs),
            "classifier_table": 1, "aggregate_attack": len(attacks), "plot_attack": n_figures, "sc_comparison": 1,
            "job_status": 1}
    if config.get("detectability"):
        plan["sc_detectability"] = 1
    images = config.get("images")
    if images:
        img_jobs = build_image_jobs(config)
        n_img_models = len(images["datasets"]) * len(images["models"])
        plan.update({"prepare_images": len(images["datasets"]), "train_image_model": n_img_models,
                     "image_attack": len(img_jobs), "image_perturbations": n_img_models, "img_metrics_table": 1,
                     "img_attack_table": 1, "img_perturbation_table": 1, "img_figure": len(IMAGE_FIGURES),
                     "reader_study_build": 1, "reader_study_simulate": 1, "reader_study_analyse": 1})
    plan["all"] = 1
    plan["total"] = sum(plan.values())
    return plan


def test_dry_run_of_the_default_config_plans_the_matrix(workdir: Path) -> None:
    from vulnbench.sc.attacks import ATTACKS

    result = snakemake(workdir, "-n", "--configfile", str(REPO / "config" / "config.yaml"))
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert set(config["attacks"]) == set(ATTACKS.names())  # the default run exercises every attack
    assert set(config["classifiers"]) == {"scrf", "scmlp", "sctype", "chetah", "scannotatr", "singler"}
    assert set(config["images"]["attacks"]) == {"fgsm", "pixel", "color", "rotation"}
    assert job_counts(result.stdout) == expected_plan(config)


def test_dry_run_of_the_paper_config_plans_the_full_matrix(workdir: Path) -> None:
    """pbmc3k × 6 classifiers × every mode × every cluster, ISIC × 3 models × 4 attacks, downloads first."""
    result = snakemake(workdir, "-n", "--configfile", str(REPO / "config" / "paper.yaml"))
    assert result.returncode == 0, result.stderr[-2000:]
    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    plan = job_counts(result.stdout)
    downloads = {k: plan.pop(k) for k in ("download_dataset", "download_image_dataset", "download_resource")}
    assert downloads == {"download_dataset": 1, "download_image_dataset": 1, "download_resource": 3}
    expected = expected_plan(config)
    plan["total"] -= sum(downloads.values())
    assert plan == expected
    assert len(config["classifiers"]) == 6 and len(config["images"]["models"]) == 3
    assert set(config["attacks"]["single_gene"]["grid"]["method"]) >= {"perc1", "perc99", "positive_aberrant",
                                                                       "negative_aberrant"}
    assert config["images"]["datasets"]["isic2019"]["image_size"] == 299


def test_a_misspelt_classifier_stops_the_run_before_any_job(workdir: Path) -> None:
    config = yaml.safe_load((REPO / "tests" / "config" / "config.yaml").read_text())
    config["classifiers"]["scfr"] = config["classifiers"].pop("scrf")
    (workdir / "bad.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "--cores", "1", "--configfile", str(workdir / "bad.yaml"))
    assert result.returncode != 0
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "vulnbench config error" in line]
    assert errors == [
        "vulnbench config error: config classifiers: unknown classifier 'scfr' "
        "(known: chetah, scannotatr, scmlp, scrf, sctype, singler); did you mean 'scrf'?"
    ]
    assert "Traceback" not in result.stderr
    assert not (workdir / "results").exists()


@pytest.mark.slow
def test_tiny_end_to_end_run(workdir: Path) -> None:
    config = REPO / "tests" / "config" / "config.yaml"
    result = snakemake(workdir, "--cores", "2", "--configfile", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(workdir / "results" / "tables" / "single_gene.tsv", sep="\t")
    for column in ("dataset", "classifier", "attack", "params", "cluster", "n_genes_flipping", "genes", "n_calls",
                   "runtime_s", "status"):
        assert column in table.columns
    assert set(table["classifier"]) == {"scrf", "scmlp"}
    assert set(table["mode"]) == {"perc99", "positive_aberrant"}
    assert len(table) == 2 * 2 * 3  # classifiers × modes × clusters
    assert (table["status"] == "ok").all()
    assert (table["n_genes_flipping"] >= 0).all() and (table["n_calls"] >= 1).all()
    for figure in ("single_gene_heatmap", "max_change_signature", "overview_single_gene_heatmap",
                   "overview_max_change_heatmap", "cgd_genes_needed", "cgd_trajectory"):
        path = workdir / "results" / "figures" / f"{figure}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000, figure
    max_change = pd.read_csv(workdir / "results" / "tables" / "max_change.tsv", sep="\t")
    assert (max_change["n_genes"] + max_change["signature_size"] == 300).all()
    assert max_change["verified"].all()
    cgd = pd.read_csv(workdir / "results" / "tables" / "cgd.tsv", sep="\t")
    for column in ("dataset", "classifier", "runtime_s", "oriType", "targType", "alpha", "epsilon",
                   "nbModifiedGenes", "nbTestedGenes", "oriPourcEnd", "targPourcEnd", "wholeClust_targOdd_end"):
        assert column in cgd.columns
    assert len(cgd) == 2 * 2 * 3
    for name in ("overview_single_gene", "overview_max_change"):
        assert not pd.read_csv(workdir / "results" / "tables" / f"{name}.tsv", sep="\t").empty
    metrics = pd.read_csv(workdir / "results" / "tables" / "classifiers.tsv", sep="\t")
    assert set(metrics["classifier"]) == {"scrf", "scmlp"} and (metrics["accuracy"] > 0.5).all()
    params_file = workdir / "results/attacks/synthetic/scrf/single_gene/method~perc99/params.json"
    params = json.loads(params_file.read_text())
    assert params["attack"] == "single_gene" and params["params"]["method"] == "perc99"
    assert list((workdir / "logs" / "attack").rglob("*.log"))
    again = snakemake(workdir, "-n", "--configfile", str(config))
    assert "Nothing to be done" in again.stdout + again.stderr

    # the HTML report opens in a browser and shows every figure with its caption
    report = workdir / "results" / "report.html"
    made = snakemake(workdir, "--configfile", str(config), "--report", str(report))
    assert made.returncode == 0, made.stderr[-2000:]
    figures = {f"results/figures/{p.name}": "Single-cell attacks"
               for p in (workdir / "results" / "figures").glob("*.png") if p.name != "sc_comparison.png"}
    figures["results/figures/sc_comparison.png"] = "Single-cell comparison"
    assert len(figures) == len(list((workdir / "results" / "figures").glob("*.png"))) >= 8
    for figure, (shown, caption) in report_figures_in_chromium(report, figures).items():
        assert shown, f"{figure} is not displayed in the report"
        assert len(caption) > 100, f"{figure} has no caption in the report"
