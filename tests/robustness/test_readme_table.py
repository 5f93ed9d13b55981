"""The README's robustness table is generated from the test collection: this test fails when it is stale.

Regenerate it with `.venv/bin/python -m tests.robustness.test_readme_table` (prints the table to paste between the
README's `robustness-table` markers)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
START, END = "<!-- robustness-table -->", "<!-- /robustness-table -->"

#: (kind of bad input or fault, test node-id prefixes that try it)
KINDS: list[tuple[str, list[str]]] = [
    ("Config values: types, choices, ranges, names that become paths, references, unknown keys (before any job)",
     ["tests/robustness/test_plan_time.py::test_a_wrong_value", "tests/robustness/test_plan_time.py::test_the_shipped",
      "tests/workflow/test_bad_input.py::test_a_bad_config", "tests/workflow/test_bad_input.py::test_more_bad_configs",
      "tests/unit/test_matrix.py"]),
    ("Names only the data know: clusters, genes (the first job that reads the data)",
     ["tests/robustness/test_plan_time.py::test_an_unknown_cluster",
      "tests/unit/test_attack_stage.py::test_an_unknown_cluster", "tests/unit/test_attack_stage.py::test_genes"]),
    ("Input that is not expression (negative, z-scored, one negative count); labels named NA, nan, None",
     ["tests/robustness/test_expression_input.py", "tests/robustness/test_na_labels.py"]),
    ("Corrupt, truncated or malformed data files (h5ad, 10x archive, image folders), through the real rules",
     ["tests/workflow/test_bad_input.py::test_bad_data", "tests/workflow/test_bad_input.py::test_a_corrupt_h5ad",
      "tests/workflow/test_bad_input.py::test_a_bad_image_folder",
      "tests/workflow/test_bad_input.py::test_the_undamaged",
      "tests/unit/test_data.py::test_a_placed_pbmc3k", "tests/unit/test_data.py::test_corrupt_archive"]),
    ("Downloads: checksums of placed and fetched files, truncation, silent and trickling servers, offline",
     ["tests/robustness/test_downloads.py", "tests/unit/test_download.py", "tests/workflow/test_download_rule.py"]),
    ("What users and readers made: answers through rebuilds, simulated readers, torn, old-format and duplicate "
     "files, two servers for one reader, `make clean`; one config's tables under another config's run",
     ["tests/robustness/test_reader_rebuild.py", "tests/robustness/test_reader_answers.py",
      "tests/robustness/test_clean.py", "tests/robustness/test_other_config.py"]),
    ("Reader server: per-reader tokens, Host header, malformed and oversized requests, stalled uploads",
     ["tests/robustness/test_reader_server.py"]),
    ("Faults: `kill -9` and restart, stale locks, a live run, failed jobs as status rows",
     ["tests/robustness/test_restart.py", "tests/unit/test_runner.py", "tests/workflow/test_faults.py"]),
    ("Same config, same tables; edited code reruns exactly its jobs",
     ["tests/robustness/test_determinism.py", "tests/unit/test_seeding.py",
      "tests/unit/test_attack_stage.py::test_a_clusters", "tests/unit/test_attack_stage.py::test_the_seed",
      "tests/unit/test_attack_stage.py::test_an_explicit", "tests/robustness/test_code_changes.py",
      "tests/unit/test_codehash.py"]),
]


def collected() -> list[str]:
    files = sorted({prefix.split("::")[0] for _, prefixes in KINDS for prefix in prefixes})
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
                            cwd=REPO, capture_output=True, text=True, check=False, timeout=600)
    ids = [line for line in result.stdout.splitlines() if "::" in line]
    assert ids, result.stdout[-2000:] + result.stderr[-2000:]
    return ids


def table(ids: list[str]) -> str:
    counts: Counter[str] = Counter()
    rows = ["| kind of bad input or fault | tests | in |", "|---|---|---|"]
    for kind, prefixes in KINDS:
        n = sum(1 for node in ids if any(node.startswith(prefix) for prefix in prefixes))
        counts[kind] = n
        files = ", ".join(dict.fromkeys(f"`{Path(prefix.split('::')[0]).name}`" for prefix in prefixes))
        rows.append(f"| {kind} | {n} | {files} |")
    rows.append(f"| **all** | **{sum(counts.values())}** | all hold (`make test`) |")
    return "\n".join(rows)


def test_the_readme_robustness_table_matches_the_tests() -> None:
    ids = collected()
    for kind, prefixes in KINDS:  # every listed prefix still names tests: a renamed test would drop out silently
        for prefix in prefixes:
            assert any(node.startswith(prefix) for node in ids), f"{kind}: no test starts with {prefix}"
    readme = (REPO / "README.md").read_text()
    assert START in readme and END in readme
    shown = readme.split(START, 1)[1].split(END, 1)[0].strip()
    expected = table(ids)
    assert shown == expected, f"README robustness table is stale; paste this between the markers:\n{expected}"


if __name__ == "__main__":
    print(table(collected()))
