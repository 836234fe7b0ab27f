"""The committed benchmark report is reproducible: ``python -m bench.report`` on the committed
``bench/results/*.json`` writes ``bench/REPORT.md`` byte for byte.

The result files are committed with the report they produced (they are not git-ignored), so anyone
can regenerate and check it. The plots (``plots/*.png``) are regenerated too but not compared: a
PNG depends on matplotlib's and FreeType's versions, the report's text only on the JSON.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from smartflow_devstack.versions import REPO_ROOT

BENCH = Path(REPO_ROOT) / "bench"


def test_the_committed_report_regenerates_byte_for_byte_from_the_committed_results(tmp_path: Path) -> None:
    # With no result committed yet the report says so ("No results yet"), and that is compared too.
    done = subprocess.run(
        [sys.executable, "-m", "bench.report", "--results", str(BENCH / "results"), "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "REPORT.md").read_bytes() == (BENCH / "REPORT.md").read_bytes(), (
        "bench/REPORT.md differs from what bench/results/*.json give: run `python -m bench.report`"
    )
    for plot in (tmp_path / "plots").glob("*.png"):
        assert (BENCH / "plots" / plot.name).exists(), f"plots/{plot.name} is referenced but not committed"


def test_result_files_are_not_git_ignored() -> None:
    done = subprocess.run(
        ["git", "check-ignore", "-q", "bench/results/operator.json"], cwd=REPO_ROOT, check=False, timeout=30
    )
    assert done.returncode == 1, "bench/results/*.json must be committed, not ignored"
