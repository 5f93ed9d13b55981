"""Fixtures shared by the robustness tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """A six-image reader study (four clean, two `pixel` images), built in `tmp_path/study`."""
    from vulnbench.reader.study import build_study

    rng = np.random.default_rng(0)
    items = []
    for k in range(6):
        path = tmp_path / "src" / f"i{k}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(path)
        items.append((path, "melanoma" if k % 2 else "nevus"))
    return build_study(items[:4], {"pixel": items[4:]}, tmp_path / "study", n_per_condition=4, seed=0)
