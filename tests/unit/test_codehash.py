"""vulnbench.core.codehash: a job's code hash follows the modules it runs, and only those."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vulnbench.core import codehash
from vulnbench.core.codehash import code_hash, module_closure

MODULES = {
    "__init__.py": "from vbfake.attack_a import attack_a\nfrom vbfake.attack_c import attack_c\n",
    "attack_a.py": "from vbfake.helpers import helper\n\ndef attack_a():\n    return helper()\n",
    "helpers.py": "def helper():\n    return 1\n",
    "attack_c.py": "import numpy as np\n\ndef attack_c():\n    return np.zeros(1)\n",
    "lazy.py": "def run():\n    from vbfake import attack_a\n    return attack_a()\n",
    "sub/__init__.py": "",
    "sub/rel.py": "from ..helpers import helper\nfrom . import leaf\n",
    "sub/leaf.py": "X = 1\n",
}


@pytest.fixture
def package(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "vbfake"
    for name, text in MODULES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    sys.path.insert(0, str(tmp_path))
    codehash.clear_caches()
    yield root
    sys.path.remove(str(tmp_path))
    codehash.clear_caches()


def edit(path: Path) -> None:
    path.write_text(path.read_text() + "# edited\n")
    codehash.clear_caches()


def test_the_closure_follows_imports_and_re_exports_but_not_the_hub(package: Path) -> None:
    assert module_closure(["vbfake.attack_a"], root="vbfake") == ["vbfake.attack_a", "vbfake.helpers"]
    # `from vbfake import attack_a` inside a function goes to the module that defines it, not the whole hub
    assert module_closure(["vbfake.lazy"], root="vbfake") == ["vbfake.attack_a", "vbfake.helpers", "vbfake.lazy"]
    assert module_closure(["vbfake.sub.rel"], root="vbfake") == ["vbfake.helpers", "vbfake.sub.leaf",
                                                                 "vbfake.sub.rel"]


def test_editing_a_module_changes_exactly_the_hashes_that_reach_it(package: Path) -> None:
    before_a = code_hash("vbfake.attack_a", root="vbfake")
    before_c = code_hash("vbfake.attack_c", root="vbfake")
    edit(package / "helpers.py")
    assert code_hash("vbfake.attack_a", root="vbfake") != before_a
    assert code_hash("vbfake.attack_c", root="vbfake") == before_c
    before_a = code_hash("vbfake.attack_a", root="vbfake")
    edit(package / "attack_c.py")
    assert code_hash("vbfake.attack_a", root="vbfake") == before_a
    assert code_hash("vbfake.attack_c", root="vbfake") != before_c


def test_a_source_only_function_counts_its_text_not_its_module() -> None:
    def summary_one() -> int:
        return 1

    def summary_two() -> int:
        return 2

    assert code_hash("vulnbench.core.errors", sources=[summary_one]) != code_hash("vulnbench.core.errors",
                                                                             sources=[summary_two])


def test_the_pipelines_hashes_separate_attacks_and_classifiers() -> None:
    from vulnbench.sc.plan import attack_code, classifier_code

    assert classifier_code("scrf") != classifier_code("scmlp")
    assert attack_code("single_gene", "scrf") != attack_code("single_gene", "scmlp")
    assert attack_code("single_gene", "scrf") != attack_code("cgd", "scrf")
    # the two overviews run the same functions as their full attacks
    assert attack_code("overview_single_gene", "scrf") == attack_code("single_gene", "scrf")
    closure = module_closure(["vulnbench.sc.attacks._single_gene"])
    assert "vulnbench.sc.attacks._cgd" not in closure and "vulnbench.sc.attacks.registry" not in closure
