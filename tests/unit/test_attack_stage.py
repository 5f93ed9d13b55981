"""The attack stage (vulnbench.sc.stages.run_attack): seeded from the config seed and the job's identity, per
cluster; clusters the data do not have are refused with the valid names."""

from __future__ import annotations

from pathlib import Path

import pytest

from vulnbench.core.io import read_json
from vulnbench.sc.stages import collect_results, run_attack


@pytest.fixture(scope="module")
def prepared_and_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    from vulnbench.sc.classifiers import get as get_classifier
    from vulnbench.sc.data import get, prepare

    folder = tmp_path_factory.mktemp("stage")
    raw = get("synthetic", n_cells=160, n_genes=120, n_types=3, n_markers=8, seed=1).load()
    adata = prepare(raw, test_size=0.5, seed=0)
    adata.write_h5ad(folder / "prepared.h5ad")
    train = adata[adata.obs["split"] == "train"]
    model = get_classifier("scrf", n_estimators=10, seed=0).fit(train, train.obs["label"].astype(str))
    model.save(folder / "model.pkl")
    clusters = sorted(set(adata.obs["label"].astype(str)))
    return folder / "prepared.h5ad", folder / "model.pkl", clusters


def attack(files: tuple[Path, Path, list[str]], out: Path, clusters: object, *, seed: int = 0,
           pid: str = "method~random", params: dict | None = None) -> dict:
    prepared, model, _ = files
    identity = {"dataset": "synthetic", "classifier": "scrf", "pid": pid, "grid": {"method": "random"},
                "seed": seed}
    run_attack(prepared, model, "single_gene", params or {"method": "random", "search": "exhaustive"}, clusters,
               out, identity)
    return {record["cluster"]: record for record in read_json(out)["records"]}


def test_a_clusters_result_does_not_depend_on_the_other_clusters_attacked(prepared_and_model, tmp_path) -> None:
    target = prepared_and_model[2][-1]
    alone = attack(prepared_and_model, tmp_path / "alone.json", [target])[target]
    together = attack(prepared_and_model, tmp_path / "all.json", "all")[target]
    again = attack(prepared_and_model, tmp_path / "again.json", [target])[target]
    keys = ["job_seed", "genes", "n_genes_flipping", "n_calls"]
    assert {k: alone[k] for k in keys} == {k: together[k] for k in keys} == {k: again[k] for k in keys}


def test_the_seed_follows_the_config_seed_and_the_grid_cell(prepared_and_model, tmp_path) -> None:
    target = prepared_and_model[2][0]
    base = attack(prepared_and_model, tmp_path / "a.json", [target])[target]["job_seed"]
    other_seed = attack(prepared_and_model, tmp_path / "b.json", [target], seed=1)[target]["job_seed"]
    other_cell = attack(prepared_and_model, tmp_path / "c.json", [target], pid="other")[target]["job_seed"]
    assert len({base, other_seed, other_cell}) == 3


def test_an_explicit_attack_seed_is_kept(prepared_and_model, tmp_path) -> None:
    target = prepared_and_model[2][0]
    record = attack(prepared_and_model, tmp_path / "a.json", [target],
                    params={"method": "random", "search": "exhaustive", "seed": 5})[target]
    assert "job_seed" not in record


def test_an_unknown_cluster_stops_the_job_as_its_result_naming_the_valid_ones(prepared_and_model, tmp_path) -> None:
    attack(prepared_and_model, tmp_path / "bogus.json", ["Bogus T cells"])
    result = read_json(tmp_path / "bogus.json")
    assert result["status"] == "job_failed" and result["records"] == []
    assert "unknown cluster 'Bogus T cells'" in result["reason"] and "\n" not in result["reason"]
    assert all(name in result["reason"] for name in prepared_and_model[2])
    assert result["job"]["attack"] == "single_gene" and result["job"]["arm"] == "sc"
    row = collect_results([tmp_path / "bogus.json"]).iloc[0]
    assert (row["status"], row["reason"], row["classifier"]) == ("job_failed", result["reason"], "scrf")


@pytest.mark.parametrize(("params", "words"), [
    ({"method": "perc99", "genes": ["gene0", "gene_1"]}, ("genes", "'gene_1'", "not in the data", "close: ")),
    ({"method": "perc99", "exclude_genes": ["CD3E"]}, ("exclude_genes", "'CD3E'")),
])
def test_genes_the_data_lack_stop_the_job_before_any_cluster(prepared_and_model, tmp_path, params, words) -> None:
    attack(prepared_and_model, tmp_path / "genes.json", "all", params=params)
    result = read_json(tmp_path / "genes.json")
    assert result["status"] == "job_failed" and result["records"] == []
    assert all(w in result["reason"] for w in words), result["reason"]


def test_the_result_carries_its_whole_job(prepared_and_model, tmp_path) -> None:
    attack(prepared_and_model, tmp_path / "r.json", [prepared_and_model[2][0]])
    job = read_json(tmp_path / "r.json")["job"]
    assert {"arm", "dataset", "classifier", "attack", "pid", "grid", "params", "seed", "versions"} <= set(job)
    assert (job["arm"], job["attack"], job["seed"]) == ("sc", "single_gene", 0) and "vulnbench" in job["versions"]
