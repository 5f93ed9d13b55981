"""Cell types called "NA", "nan" or "None" stay labels in the attack tables' readers and in the figures (a label
read back as NaN would silently vanish from a heatmap or be taken for a failed job)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from vulnbench.core.io import write_table
from vulnbench.sc import plots
from vulnbench.sc.plots import run_plot

LABELS = ["NA", "nan", "None", "B cells"]


def attack_table() -> pd.DataFrame:
    return pd.DataFrame({"dataset": "d", "classifier": "scrf", "attack": "single_gene", "pid": "method~perc99",
                         "mode": "perc99", "cluster": LABELS, "n_genes_flipping": [1, 2, 3, 4],
                         "new_labels": ["B cells", "NA", "nan", "None"], "status": "ok", "reason": ""})


def test_every_label_is_a_row_of_the_single_gene_heatmap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = {}

    def keep(fig, output):  # the figure as drawn, before it is written
        drawn["fig"] = fig
        Path(output).write_bytes(b"")

    monkeypatch.setattr(plots, "_save", keep)
    write_table(tmp_path / "single_gene.tsv", attack_table())
    run_plot("single_gene", "heatmap", tmp_path / "single_gene.tsv", tmp_path / "out.png")
    axis = drawn["fig"].axes[0]
    assert sorted(t.get_text() for t in axis.get_yticklabels()) == sorted(LABELS)
    numbers = sorted(t.get_text() for t in axis.texts)
    assert numbers == ["1", "2", "3", "4"]  # no cell shown as missing ("–") or failed ("!")


def test_attack_tables_read_back_keep_na_labels(tmp_path: Path) -> None:
    from vulnbench.core.io import read_table

    write_table(tmp_path / "single_gene.tsv", attack_table())
    table = read_table(tmp_path / "single_gene.tsv")
    assert table["cluster"].tolist() == LABELS and table["new_labels"].tolist() == ["B cells", "NA", "nan", "None"]
    assert table["reason"].isna().all()  # an empty field is still missing
