"""The same config gives the same tables: two runs of one config in two fresh working directories agree on every
TSV under results/tables, once the columns that hold times are dropped.

The config is issue 16's: pbmc68k_reduced (embedded in scanpy), scrf, and attacks whose results depend on random
choices (`random` modification, max-change's seeded split order, the random walk)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.workflow.conftest import REPO, SNAKEMAKE

pytestmark = pytest.mark.slow

CONFIG = {
    "seed": 0,
    "datasets": {"pbmc68k_reduced": {"test_size": 0.3}},
    "classifiers": {"scrf": {"n_estimators": 20}},
    "attacks": {
        "single_gene": {"grid": {"method": ["random"]}, "params": {"first_dichot": 50}},
        "max_change": {"grid": {"method": ["perc99"]}},
        "overview_max_change": {"grid": {"method": ["perc1"]}, "params": {"max_split_size": 100}},
        "random_walk_min_change": {"grid": {"n_genes": [6]}, "params": {"walk_length": 20}},
    },
}


def is_time_column(name: str) -> bool:
    """Columns that hold durations or clock times (`runtime_s`, `fit_s`, …): the only ones allowed to differ."""
    return name.endswith("_s") or "time" in name


def comparable(path: Path) -> pd.DataFrame:
    """A table as text (no float re-formatting, no NA coercion) without its time columns."""
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    return table[[c for c in table.columns if not is_time_column(c)]]


def start_run(workdir: Path) -> subprocess.Popen:
    workdir.mkdir(parents=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    command = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile",
               str(workdir / "config.yaml"), "--cores", "1", "--quiet"]
    log = open(workdir / "snakemake.out", "w")  # noqa: SIM115 - closed with the process below
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ,
                               "PYTHONWARNINGS": "ignore"})
    process.log = log  # type: ignore[attr-defined]
    return process


def test_two_runs_of_one_config_give_identical_tables(tmp_path: Path) -> None:
    runs = [start_run(tmp_path / name) for name in ("first", "second")]  # side by side: one core each
    for process in runs:
        process.wait(timeout=1200)
        process.log.close()  # type: ignore[attr-defined]
    for name in ("first", "second"):
        out = (tmp_path / name / "snakemake.out").read_text()
        assert runs[("first", "second").index(name)].returncode == 0, out[-3000:]

    first, second = tmp_path / "first" / "results" / "tables", tmp_path / "second" / "results" / "tables"
    names = sorted(p.name for p in first.glob("*.tsv"))
    assert names == sorted(p.name for p in second.glob("*.tsv"))
    assert {"single_gene.tsv", "max_change.tsv", "overview_max_change.tsv", "random_walk_min_change.tsv",
            "classifiers.tsv"} <= set(names)
    for name in names:
        a, b = comparable(first / name), comparable(second / name)
        assert list(a.columns) == list(b.columns), name
        different = [c for c in a.columns if not a[c].equals(b[c])]
        assert not different, f"{name}: columns {different} differ between two runs of one config"
    # the randomised attacks really drew from seeded streams: every attacked cluster records its own job seed
    single_gene = comparable(first / "single_gene.tsv")
    assert single_gene["job_seed"].str.fullmatch(r"\d+").all()
    assert single_gene["job_seed"].nunique() == len(single_gene)


@pytest.fixture(scope="module")
def image_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A prepared synthetic lesion set and an untrained MobileNetV3-small that calls some test melanomas melanoma:
    the attack job only needs a model whose correct calls DE can try to flip, drawing random numbers."""
    from vulnbench.img.base import MELANOMA
    from vulnbench.img.models import build_image_model
    from vulnbench.img.plan import image_dataset_settings
    from vulnbench.img.stages import attack_set, run_prepare_images

    folder = tmp_path_factory.mktemp("img")
    config = {"seed": 0, "images": {"datasets": {"synthetic_lesions": {"n_images": 60, "image_size": 32}},
                                    "models": {"mobilenet_v3_small": {}}, "attacks": {"pixel": {}}}}
    params, prepare = image_dataset_settings(config, "synthetic_lesions")
    manifest = folder / "data" / "manifest.tsv"
    run_prepare_images("synthetic_lesions", params, prepare, None, manifest)
    images, _, _ = attack_set(manifest, None)
    for seed in range(20):
        model = build_image_model("mobilenet_v3_small", image_size=32, seed=seed)
        if (model.logits(images).argmax(axis=1) == MELANOMA).any():
            model.save(folder / "model.pt")
            return manifest, folder / "model.pt"
    raise AssertionError("no random model calls a melanoma melanoma")


def attack_once(image_job: tuple[Path, Path], out: Path, pid: str) -> dict:
    from vulnbench.core.io import read_json
    from vulnbench.img.stages import run_image_attack

    settings = {"max_attack_images": None, "seed": 0, "device": "cpu"}
    params = {"n_pixels": 1, "popsize": 2, "max_generations": 2}
    run_image_attack(image_job[0], image_job[1], "pixel", params, settings, out / "result.json", out / "images",
                     threads=1, identity={"dataset": "synthetic_lesions", "model": "mobilenet_v3_small", "pid": pid})
    return read_json(out / "result.json")


@pytest.mark.slow
def test_an_image_attack_job_repeats_exactly_and_its_seed_follows_its_identity(image_job, tmp_path: Path) -> None:
    first, again = attack_once(image_job, tmp_path / "a", "p1"), attack_once(image_job, tmp_path / "b", "p1")
    other = attack_once(image_job, tmp_path / "c", "p2")
    attacked = [r for r in first["records"] if r["outcome"] != "skipped"]
    assert attacked, "no melanoma was attacked: the check would prove nothing"

    def drawn(payload: dict) -> list:
        return [(r["image"], r["outcome"], r["params"], r["n_forward"]) for r in payload["records"]]

    assert first["job"]["seed"] == again["job"]["seed"] and drawn(first) == drawn(again)
    assert other["job"]["seed"] != first["job"]["seed"] and drawn(other) != drawn(first)
    assert first["job"]["pid"] == "p1" and first["job"]["arm"] == "img"
