"""Input that is not expression must not pass as expression (issue 16, item 4).

Scaled or z-scored values (scanpy's `pbmc68k_reduced().X`) and counts with a negative entry used to be taken for
log-normalised expression; cell types called "NA", "nan" or "None" used to turn into missing values on the way
through label files and tables.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from vulnbench.core.errors import DataError

SPLIT = {"test_size": 0.5, "seed": 0, "min_cells_per_type": 5}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def zscored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scanpy's pbmc68k_reduced as shipped: X z-scored (min −2.03), the log-normalised values in .raw."""
    import scanpy as sc

    path = tmp_path_factory.mktemp("zscored") / "pbmc68k_zscored.h5ad"
    sc.datasets.pbmc68k_reduced().write_h5ad(path)
    return path


def prepare_h5ad(path: Path, output: Path, **params: object) -> ad.AnnData:
    from vulnbench.sc.stages import run_prepare

    run_prepare("h5ad", {"path": str(path), "label_column": "bulk_labels", **params}, SPLIT, None, output)
    return ad.read_h5ad(output)


def test_a_zscored_h5ad_is_refused_in_one_line_that_says_what_and_how(zscored: Path, tmp_path: Path) -> None:
    output = tmp_path / "prepared.h5ad"
    with pytest.raises(DataError) as info:
        prepare_h5ad(zscored, output)
    message = str(info.value)
    assert "\n" not in message and not output.exists()
    for expected in ("pbmc68k_zscored.h5ad", "X has 397,164 negative value(s) of 535,500", "minimum -2.032",
                     "z-scored", "layer:", "raw = the file's .raw", "normalised: true"):
        assert expected in message, message


def test_the_hint_works_layer_raw_prepares_the_log_normalised_values(zscored: Path, tmp_path: Path) -> None:
    import scanpy as sc

    prepared = prepare_h5ad(zscored, tmp_path / "prepared.h5ad", layer="raw")
    shipped = sc.datasets.pbmc68k_reduced()
    assert prepared.X.min() >= 0 and prepared.shape == shipped.raw.shape
    np.testing.assert_allclose(prepared.X.toarray(), shipped.raw.X.toarray(), rtol=1e-6)


def test_normalised_true_takes_negative_values_with_a_warning(zscored: Path, tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="vulnbench"):
        prepared = prepare_h5ad(zscored, tmp_path / "prepared.h5ad", normalised=True)
    assert prepared.X.min() == pytest.approx(-2.032, abs=1e-3)
    assert not any(key.startswith("allow_negative") for key in prepared.uns)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("397,164 negative value(s)" in w and "normalised: true" in w for w in warnings), warnings


def test_the_embedded_pbmc68k_reduced_still_prepares_from_raw(tmp_path: Path) -> None:
    from vulnbench.sc.stages import run_prepare

    run_prepare("pbmc68k_reduced", {}, SPLIT, None, tmp_path / "prepared.h5ad")
    prepared = ad.read_h5ad(tmp_path / "prepared.h5ad")
    assert prepared.n_obs == 700 and prepared.X.min() >= 0


def counts_file(folder: Path, negative: float | None, sparse: bool, labels: tuple[str, ...] = ("B", "NK", "T"),
                **layers: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    counts = rng.poisson(2.0, (12 * len(labels), 20)).astype(np.float32) + 1
    if negative is not None:
        counts[3, 7] = negative
    adata = ad.AnnData(X=sp.csr_matrix(counts) if sparse else counts,
                       obs=pd.DataFrame({"cell_type": np.repeat(labels, 12)},
                                        index=[f"cell{i}" for i in range(counts.shape[0])]),
                       var=pd.DataFrame(index=[f"G{j}" for j in range(counts.shape[1])]))
    for name, values in layers.items():
        adata.layers[name] = values
    path = folder / "counts.h5ad"
    adata.write_h5ad(path)
    return path


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_one_negative_count_is_refused_not_taken_for_normalised(tmp_path: Path, sparse: bool) -> None:
    from vulnbench.sc.stages import run_prepare

    path = counts_file(tmp_path, -1.0, sparse)
    with pytest.raises(DataError) as info:
        run_prepare("h5ad", {"path": str(path)}, SPLIT, None, tmp_path / "prepared.h5ad")
    message = str(info.value)
    assert "X has 1 negative value(s) of 720, minimum -1" in message and "\n" not in message
    assert "this file has no other layer" in message and "normalised: true" in message


def test_a_negative_layer_names_the_layer_and_the_other_choices(tmp_path: Path) -> None:
    from vulnbench.sc.stages import run_prepare

    scaled = np.full((36, 20), -0.5, dtype=np.float32)
    path = counts_file(tmp_path, None, True, scaled=scaled, lognorm=np.ones((36, 20), dtype=np.float32))
    with pytest.raises(DataError, match=r"layer 'scaled' has 720 negative value\(s\) of 720, minimum -0\.5: .*"
                                        r"\(this file has: lognorm\) or set normalised: true to use layer 'scaled'"):
        run_prepare("h5ad", {"path": str(path), "layer": "scaled"}, SPLIT, None, tmp_path / "prepared.h5ad")


def test_cell_types_called_na_nan_none_stay_labels_from_h5ad_to_tables(tmp_path: Path) -> None:
    from vulnbench.core.io import read_table, write_table

    names = ("NA", "nan", "None")
    prepared = prepare_h5ad(counts_file(tmp_path, None, False, labels=names), tmp_path / "prepared.h5ad",
                            label_column="cell_type")
    assert sorted(prepared.obs["label"].astype(str).value_counts().items()) == [(n, 12) for n in sorted(names)]
    write_table(tmp_path / "t.tsv", pd.DataFrame({"cluster": [*names, "B"], "value": [1.0, np.nan, 3, 4]}))
    table = read_table(tmp_path / "t.tsv")
    assert table["cluster"].tolist() == [*names, "B"]
    assert table["value"].dtype == float and np.isnan(table["value"][1])  # missing numbers stay missing
    assert table.groupby("cluster")["value"].size().to_dict() == {"B": 1, "NA": 1, "None": 1, "nan": 1}


def test_the_prepare_rule_fails_on_the_zscored_h5ad(zscored: Path, tmp_path: Path) -> None:
    """The real rule (`snakemake --directory`): exit code, and one "negative" line in the log and on stderr."""
    from tests.workflow.conftest import snakemake

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "z.h5ad").write_bytes(zscored.read_bytes())
    config = yaml.safe_load((REPO / "tests" / "config" / "config.yaml").read_text())
    config["datasets"] = {"h5ad": {"path": "data/z.h5ad", "label_column": "bulk_labels"}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    target = "results/data/h5ad/prepared.h5ad"
    result = snakemake(tmp_path, target, "--cores", "1", "--configfile", str(tmp_path / "config.yaml"), timeout=300)
    assert result.returncode != 0
    errors = [line for line in (tmp_path / "logs" / "prepare" / "h5ad.log").read_text().splitlines()
              if line.startswith("vulnbench error: ")]
    assert len(errors) == 1 and "negative" in errors[0] and "minimum -2.032" in errors[0], errors
    assert errors[0] in result.stderr and "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / target).exists()
