"""Bad input, fuzz style: corrupted datasets and configs, each through the entry point a user hits.

Every case must reach the user as ONE line that names the problem (the key, the file, the column), without a
traceback, and leave no partial output behind (no prepared file, no temporary file).

* config errors: `snakemake -n` (common.smk prints `vulnbench config error: …` and stops before any job);
* data errors: a few through the real prepare rules (`logged_stage` prints `vulnbench error: …` to the rule's log
  and to stderr), the rest through the same stage functions in-process, which is where the rules send them.

The Snakemake runs of this module start together, two at a time (see `runs`), to keep the file near a minute.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml
from PIL import Image

from vulnbench.core.errors import DataError, VulnbenchError

from .conftest import REPO, snakemake

pytestmark = pytest.mark.filterwarnings("ignore:(Observation|Variable) names are not unique")

BASE = yaml.safe_load((REPO / "tests" / "config" / "config.yaml").read_text())
SPLIT = {"test_size": 0.5, "seed": 0, "min_cells_per_type": 5}
#: how a failing rule reports a VulnbenchError (vulnbench.core.logsetup.logged_stage)
DATA_PREFIX = "vulnbench error: "
CONFIG_PREFIX = "vulnbench config error: "
IMAGES = {"models": {"mobilenet_v3_small": {"epochs": 1, "batch_size": 4}},
          "attacks": {"fgsm": {"grid": {"eps_levels": [8]}}}}


# -- corrupted inputs ------------------------------------------------------------------------------------------------
def user_anndata(types: tuple[str, ...] = ("B", "NK", "T"), n_per_type: int = 12, n_genes: int = 15) -> ad.AnnData:
    """A valid user dataset (raw counts, labels in obs['cell_type']) for the cases below to damage."""
    labels = np.repeat(types, n_per_type)
    counts = np.random.default_rng(0).poisson(2.0, (len(labels), n_genes)).astype(np.float32) + 1
    return ad.AnnData(X=counts, obs=pd.DataFrame({"cell_type": labels}, index=[f"cell{i}" for i in range(len(labels))]),
                      var=pd.DataFrame(index=[f"G{j}" for j in range(n_genes)]))


def written(adata: ad.AnnData) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        path = folder / "user.h5ad"
        adata.write_h5ad(path)
        return path

    return write


def damaged(edit: Callable[[ad.AnnData], Any], **kwargs: Any) -> Callable[[Path], Path]:
    adata = user_anndata(**kwargs)
    edit(adata)
    return written(adata)


def truncated(folder: Path) -> Path:
    path = written(user_anndata())(folder)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def not_hdf5(folder: Path) -> Path:
    path = folder / "user.h5ad"
    path.write_text("cell,G0\ncell0,1\n")  # a CSV renamed to .h5ad
    return path


def with_x(matrix: Any) -> Callable[[ad.AnnData], None]:
    def edit(adata: ad.AnnData) -> None:
        adata.X = matrix(adata.X)

    return edit


def set_value(value: float, sparse: bool = False) -> Callable[[ad.AnnData], None]:
    def edit(adata: ad.AnnData) -> None:
        matrix = adata.X.copy()
        matrix[2, 3] = value
        adata.X = sp.csr_matrix(matrix) if sparse else matrix

    return edit


def rename(axis: str, position: int, name: str) -> Callable[[ad.AnnData], None]:
    def edit(adata: ad.AnnData) -> None:
        names = list(getattr(adata, f"{axis}_names"))
        names[position] = name
        setattr(adata, f"{axis}_names", names)

    return edit


def relabel(labels: Callable[[int], list[Any]]) -> Callable[[ad.AnnData], None]:
    def edit(adata: ad.AnnData) -> None:
        adata.obs["cell_type"] = labels(adata.n_obs)

    return edit


def zero_cell(adata: ad.AnnData) -> None:
    adata.X[5] = 0


@dataclass(frozen=True)
class H5adCase:
    make: Callable[[Path], Path]
    expected: tuple[str, ...]  #: substrings of the one-line message
    params: tuple[tuple[str, Any], ...] = ()


H5AD_CASES = {
    "truncated": H5adCase(truncated, ("cannot read h5ad file", "user.h5ad", "truncated")),
    "not_hdf5": H5adCase(not_hdf5, ("cannot read h5ad file", "user.h5ad")),
    "missing_file": H5adCase(lambda folder: folder / "absent.h5ad", ("h5ad file not found", "absent.h5ad")),
    "string_x": H5adCase(damaged(with_x(lambda x: x.astype(int).astype(str).astype(object))),
                         ("user.h5ad", "must be real numbers", "object")),
    "complex_x": H5adCase(damaged(with_x(lambda x: x.astype(np.complex64))), ("user.h5ad", "complex64")),
    "bool_x": H5adCase(damaged(with_x(lambda x: x > 2)), ("user.h5ad", "dtype bool")),
    "nan": H5adCase(damaged(set_value(np.nan)), ("user.h5ad", "NaN")),
    "inf_sparse": H5adCase(damaged(set_value(np.inf, sparse=True)), ("user.h5ad", "infinite")),
    "duplicated_genes": H5adCase(damaged(rename("var", 4, "G0")), ("user.h5ad", "duplicated gene name(s): G0")),
    "duplicated_cells": H5adCase(damaged(rename("obs", 7, "cell0")), ("user.h5ad", "duplicated cell name(s): cell0")),
    "label_column_missing": H5adCase(written(user_anndata()), ("user.h5ad", "no label column 'celltype'",
                                                              "columns: cell_type"), (("label_column", "celltype"),)),
    "layer_missing": H5adCase(written(user_anndata()), ("user.h5ad", "no layer 'counts'"), (("layer", "counts"),)),
    "empty_label": H5adCase(damaged(relabel(lambda n: ["B"] * (n - 1) + [""])),
                            ("user.h5ad", "'cell_type'", "missing or empty label", "cell35")),
    "missing_label": H5adCase(damaged(relabel(lambda n: [None] + ["B"] * (n - 1))),
                              ("user.h5ad", "missing or empty label", "cell0")),
    "rare_type_leaves_one": H5adCase(damaged(relabel(lambda n: ["B"] * (n - 3) + ["rare"] * 3)),
                                    ("fewer than two cell types", "min_cells_per_type", "rare (3)")),
    "single_type": H5adCase(damaged(lambda a: None, types=("T",), n_per_type=30),
                            ("fewer than two cell types", "T (30)")),
    "no_genes": H5adCase(written(user_anndata()[:, []].copy()), ("user.h5ad", "no expression matrix")),
    "cell_without_counts": H5adCase(damaged(zero_cell), ("no counts at all", "cell5")),
    "negative_counts": H5adCase(damaged(set_value(-2.0)), ("raw counts contain negative values",),
                                (("normalised", False),)),
}


def image_folder(root: Path, classes: tuple[str, ...] = ("melanoma", "nevus"), n: int = 6) -> Path:
    rng = np.random.default_rng(1)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / name / f"{name}{i}.png")
    return root


def with_notes(root: Path) -> Path:
    image_folder(root)
    (root / "nevus" / "notes.txt").write_text("scanned on Tuesday\n")
    return root


def with_truncated_png(root: Path) -> Path:
    image_folder(root)
    png = root / "melanoma" / "melanoma2.png"
    png.write_bytes(png.read_bytes()[:80])
    return root


def emptied(name: str) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        image_folder(root)
        for file in (root / name).iterdir():
            file.unlink()
        return root

    return make


FOLDER_CASES: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "non_image_file": (with_notes, ("nevus/notes.txt", "not a readable image")),
    "truncated_png": (with_truncated_png, ("melanoma/melanoma2.png", "not a readable image")),
    "missing_class_folder": (lambda root: image_folder(root, classes=("nevus",)), ("no melanoma/ sub-folder",)),
    "empty_class_folder": (emptied("nevus"), ("nevus: class folder holds no images",)),
    "unknown_class_folder": (lambda root: image_folder(root, classes=("melanoma", "nevus", "benign")),
                             ("benign", "unknown class folder")),
    "folder_missing": (lambda root: root / "nowhere", ("image folder not found", "nowhere")),
}


# -- config cases (snakemake -n) and data cases through the real rules -----------------------------------------------
def edited(edit: Callable[[dict[str, Any]], Any]) -> Callable[[Path], dict[str, Any]]:
    def make(workdir: Path) -> dict[str, Any]:
        config = copy.deepcopy(BASE)
        edit(config)
        return config

    return make


def h5ad_config(path: str, **params: Any) -> Callable[[Path], dict[str, Any]]:
    return edited(lambda c: c.update(datasets={"h5ad": {"path": path, **params}}))


def with_images(**section: Any) -> Callable[[dict[str, Any]], None]:
    return lambda c: c.update(images={"datasets": {"synthetic_lesions": {"n_images": 40, "image_size": 16}},
                                      **copy.deepcopy(IMAGES), **section})


#: through `snakemake -n`; CONFIG_CHECKS below go through the same parse-time functions in-process (time budget)
CONFIG_CASES: dict[str, tuple[Callable[[Path], dict[str, Any]], tuple[str, ...]]] = {
    "unknown_top_level_key": (edited(lambda c: c.update(atacks={})), ("unknown key 'atacks'", "'attacks'")),
    "unknown_dataset_param": (edited(lambda c: c["datasets"]["synthetic"].update(n_cell=50)),
                              ("dataset 'synthetic'", "unknown parameter 'n_cell'")),
    "unknown_classifier_param": (edited(lambda c: c["classifiers"]["scrf"].update(n_trees=5)),
                                 ("classifier 'scrf'", "unknown parameter 'n_trees'")),
    "unknown_attack_param": (edited(lambda c: c["attacks"]["single_gene"]["params"].update(first_dichott=5)),
                             ("attack 'single_gene'", "unknown parameter 'first_dichott'")),
    "negative_first_dichot": (edited(lambda c: c["attacks"]["single_gene"]["params"].update(first_dichot=-20)),
                              ("attack 'single_gene' params", "first_dichot must be a positive integer", "-20")),
    "negative_epochs": (edited(lambda c: c["classifiers"]["scmlp"].update(epochs=-5)),
                        ("classifier 'scmlp'", "epochs must be a positive integer", "-5")),
    "negative_max_attack_images": (edited(with_images(max_attack_images=-3)), ("max_attack_images", "-3")),
    "h5ad_file_missing": (h5ad_config("data/absent.h5ad"), ("dataset 'h5ad'", "input file not found",
                                                            "data/absent.h5ad")),
}


CONFIG_CHECKS: dict[str, tuple[Callable[[Path], dict[str, Any]], tuple[str, ...]]] = {
    "zero_n_genes": (edited(lambda c: c["attacks"]["cgd"]["params"].update(n_genes=0)),
                     ("attack 'cgd' params", "n_genes must be a positive integer", "got 0")),
    "negative_alpha_in_tied_grid": (edited(lambda c: c["attacks"]["cgd"]["grid"].update(
        {"alpha,epsilon": [[0.5, 0.5], [-1.0, 0.5]]})), ("attack 'cgd' grid", "alpha must be a number ≥ 0", "-1.0")),
    "negative_dataset_size": (edited(lambda c: c["datasets"]["synthetic"].update(n_cells=-240)),
                              ("dataset 'synthetic'", "n_cells must be a positive integer")),
    "zero_image_epochs": (edited(with_images(models={"mobilenet_v3_small": {"epochs": 0}})),
                          ("image model 'mobilenet_v3_small'", "epochs must be a positive integer", "got 0")),
    "h5ad_without_path": (edited(lambda c: c.update(datasets={"h5ad": {"label_column": "cell_type"}})),
                          ("dataset 'h5ad'", "set path")),
    "negative_timeout": (edited(lambda c: c.update(resources={"sctype": {"ScTypeDB_full.xlsx": {"timeout": -1}}})),
                         ("resources/sctype/ScTypeDB_full.xlsx/timeout",)),
}


@dataclass(frozen=True)
class RuleCase:
    setup: Callable[[Path], dict[str, Any]]  #: writes the inputs into the workdir, returns the config
    target: str
    log: str
    expected: tuple[str, ...]


def h5ad_run(make: Callable[[Path], Path]) -> Callable[[Path], dict[str, Any]]:
    def setup(workdir: Path) -> dict[str, Any]:
        (workdir / "data").mkdir()
        path = make(workdir / "data")
        return h5ad_config(str(path.relative_to(workdir)))(workdir)

    return setup


def folder_run(make: Callable[[Path], Path]) -> Callable[[Path], dict[str, Any]]:
    def setup(workdir: Path) -> dict[str, Any]:
        make(workdir / "lesions")
        config = copy.deepcopy(BASE)
        config["images"] = {"datasets": {"folder": {"path": "lesions", "image_size": 16}}, **copy.deepcopy(IMAGES)}
        return config

    return setup


PREPARED = "results/data/h5ad/prepared.h5ad"
RULE_CASES = {
    "truncated_h5ad": RuleCase(h5ad_run(truncated), PREPARED, "logs/prepare/h5ad.log",
                               ("cannot read h5ad file data/user.h5ad", "truncated")),
    "nan_in_h5ad": RuleCase(h5ad_run(H5AD_CASES["nan"].make), PREPARED, "logs/prepare/h5ad.log",
                            ("data/user.h5ad", "NaN")),
    "notes_in_image_folder": RuleCase(folder_run(with_notes), "results/img/data/folder/manifest.tsv",
                                      "logs/img/prepare/folder.log", ("lesions/nevus/notes.txt",
                                                                       "not a readable image")),
}


def _start(kind: str, name: str, workdir: Path) -> Any:
    workdir.mkdir(parents=True)
    if kind == "config_case":
        config, args = CONFIG_CASES[name][0](workdir), ["-n"]
    else:
        case = RULE_CASES[name]
        config, args = case.setup(workdir), [case.target, "--cores", "1"]
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    return snakemake(workdir, *args, "--configfile", str(workdir / "config.yaml"), timeout=300)


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    """Every Snakemake run this session selected from this module, two at a time: (workdir, completed process)."""
    module = sys.modules[__name__]
    wanted = sorted({(key, item.callspec.params[key]) for item in request.session.items
                     if getattr(item, "module", None) is module and hasattr(item, "callspec")
                     for key in ("config_case", "rule_case") if key in item.callspec.params})
    root = tmp_path_factory.mktemp("bad_input")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(_start, kind, name, root / name) for kind, name in wanted}
        return {name: (root / name, future.result()) for name, future in futures.items()}


def leftovers(folder: Path) -> list[Path]:
    """Temporary files and folders of vulnbench.core.io.atomic_path / prepare_images that a failure must not leave."""
    return [p for p in folder.rglob("*") if p.name.endswith((".tmp", ".old")) and ".snakemake" not in p.parts]


@pytest.mark.slow
@pytest.mark.parametrize("config_case", sorted(CONFIG_CASES))
def test_a_bad_config_is_one_line_before_any_job(config_case: str, runs: dict[str, tuple[Path, Any]]) -> None:
    workdir, result = runs[config_case]
    output = result.stdout + result.stderr
    assert result.returncode != 0
    lines = [line for line in output.splitlines() if "vulnbench config error" in line]
    assert len(lines) == 1, output[-2000:]
    assert lines[0].startswith(CONFIG_PREFIX)
    for expected in CONFIG_CASES[config_case][1]:
        assert expected in lines[0]
    assert "Traceback" not in output
    assert not (workdir / "results").exists() and not leftovers(workdir)


@pytest.mark.slow
@pytest.mark.parametrize("rule_case", sorted(RULE_CASES))
def test_bad_data_fails_its_rule_in_one_line_and_leaves_nothing(rule_case: str,
                                                                runs: dict[str, tuple[Path, Any]]) -> None:
    workdir, result = runs[rule_case]
    case = RULE_CASES[rule_case]
    output = result.stdout + result.stderr
    assert result.returncode != 0
    log = (workdir / case.log).read_text()
    errors = [line for line in log.splitlines() if line.startswith(DATA_PREFIX)]
    assert len(errors) == 1, log[-2000:]
    for expected in case.expected:
        assert expected in errors[0]
    # Snakemake echoes the rule's log, so the line can show twice on stderr, but it is the only error line
    assert {line for line in output.splitlines() if "vulnbench error" in line} == {errors[0]}
    assert "Traceback" not in output and "Traceback" not in log
    assert not (workdir / case.target).exists()
    assert not (workdir / Path(case.target).parent).exists() or not any((workdir / Path(case.target).parent).iterdir())
    assert not leftovers(workdir)


@pytest.mark.parametrize("case", sorted(CONFIG_CHECKS))
def test_more_bad_configs_are_one_line_at_parse_time(case: str, tmp_path: Path) -> None:
    """What workflow/rules/common.smk runs before planning; it prints CONFIG_PREFIX + the message and exits."""
    from vulnbench.core.errors import ConfigError
    from vulnbench.img.plan import build_image_jobs
    from vulnbench.sc.plan import build, validate_config

    make, expected = CONFIG_CHECKS[case]
    config = make(tmp_path)
    with pytest.raises(ConfigError) as info:
        validate_config(config, schema=REPO / "workflow" / "schemas" / "config.schema.yaml")
        build(config)
        build_image_jobs(config)
    line = CONFIG_PREFIX + str(info.value)
    assert "\n" not in line
    for text in expected:
        assert text in line


# -- the remaining data cases, in-process through the stage functions the rules call -----------------------------
@pytest.mark.parametrize("case", sorted(H5AD_CASES))
def test_a_corrupt_h5ad_is_one_named_data_error(case: str, tmp_path: Path) -> None:
    from vulnbench.sc.stages import run_prepare

    spec = H5AD_CASES[case]
    path = spec.make(tmp_path)
    output = tmp_path / "results" / "prepared.h5ad"
    with pytest.raises(DataError) as info:
        run_prepare("h5ad", {"path": str(path), **dict(spec.params)}, SPLIT, None, output)
    message = str(info.value)
    assert "\n" not in message
    for expected in spec.expected:
        assert expected in message
    assert not output.exists() and not leftovers(tmp_path)


@pytest.mark.parametrize("case", sorted(FOLDER_CASES))
def test_a_bad_image_folder_is_one_named_data_error(case: str, tmp_path: Path) -> None:
    from vulnbench.img.stages import run_prepare_images

    make, expected = FOLDER_CASES[case]
    root = make(tmp_path / "lesions")
    manifest = tmp_path / "results" / "folder" / "manifest.tsv"
    prepare = {"image_size": 16, "resize": "crop", "val_fraction": 0.2, "test_fraction": 0.2, "seed": 0}
    with pytest.raises(VulnbenchError) as info:
        run_prepare_images("folder", {"path": str(root)}, prepare, None, manifest)
    message = str(info.value)
    assert isinstance(info.value, DataError) and "\n" not in message
    for text in expected:
        assert text in message
    assert not manifest.parent.exists() and not leftovers(tmp_path)


def test_the_undamaged_inputs_prepare_cleanly(tmp_path: Path) -> None:
    """The cases above fail because of their damage, not because the base inputs were already bad."""
    from vulnbench.img.stages import run_prepare_images
    from vulnbench.sc.stages import run_prepare

    path = written(user_anndata())(tmp_path)
    run_prepare("h5ad", {"path": str(path)}, SPLIT, None, tmp_path / "prepared.h5ad")
    assert ad.read_h5ad(tmp_path / "prepared.h5ad").n_obs == 36
    root = image_folder(tmp_path / "lesions")
    prepare = {"image_size": 16, "resize": "crop", "val_fraction": 0.2, "test_fraction": 0.2, "seed": 0}
    run_prepare_images("folder", {"path": str(root)}, prepare, None, tmp_path / "img" / "manifest.tsv")
    assert len(pd.read_csv(tmp_path / "img" / "manifest.tsv", sep="\t")) == 12
    assert not leftovers(tmp_path)
