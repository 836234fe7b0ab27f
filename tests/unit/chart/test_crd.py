"""The chart ships the generated CRD, byte for byte: never a hand-edited or stale copy.

Regenerate both with ``make crds`` and ``smartflow-operator crds --output charts/smartflow-operator/crds``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from smartflow_operator.crd import write_crds

from .helm import CHART_CRD, GENERATED_CRD, OPERATOR_CHART, helm

FIX = "run: .venv/bin/smartflow-operator crds --output charts/smartflow-operator/crds"


def test_chart_crd_is_the_generated_file() -> None:
    assert CHART_CRD.read_bytes() == GENERATED_CRD.read_bytes(), f"the chart's CRD differs from crds/; {FIX}"


def test_chart_crd_matches_the_spec_models_now(tmp_path: Path) -> None:
    # Also catches the case where crds/ itself is stale: compare with a fresh generation.
    written = write_crds(tmp_path)
    assert [path.name for path in written] == [CHART_CRD.name], "one CRD file, named like the chart's"
    assert CHART_CRD.read_text() == written[0].read_text(), f"the chart's CRD is stale; {FIX}"


def test_the_crd_is_the_only_thing_in_the_crds_folder() -> None:
    # Helm installs crds/ verbatim and never templates it: anything else there would be unmanaged.
    assert sorted(path.name for path in (OPERATOR_CHART / "crds").iterdir()) == [CHART_CRD.name]


def test_helm_show_crds_prints_the_generated_crd() -> None:
    # The documented CRD upgrade path (`helm show crds ... | kubectl apply`) starts from this output.
    shown = [doc for doc in yaml.safe_load_all(helm("show", "crds", str(OPERATOR_CHART)).stdout) if doc]
    assert shown == [yaml.safe_load(GENERATED_CRD.read_text())]
