"""Atomic writers: a failed block leaves nothing behind, a finished one follows the umask."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from vulnbench.core.io import atomic_path, write_table


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "out.tsv"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_finished_write_follows_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        write_table(tmp_path / "t.tsv", pd.DataFrame({"a": [1]}))
    finally:
        os.umask(previous)
    mode = (tmp_path / "t.tsv").stat().st_mode & 0o777
    assert mode == 0o644, oct(mode)
    assert [p.name for p in tmp_path.iterdir()] == ["t.tsv"]
