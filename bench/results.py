"""Reading and writing ``bench/results/<name>.json``: one file per section, one shape for all.

Shape: ``{"name", "title", "mode" (full|smoke), "started_at", "finished_at", "duration_seconds",
"machine", "versions", "settings", "figures", "targets", "notes"}``. ``figures`` holds the raw
measurements; ``targets`` holds each target with the measured value and whether it was met.
The report is generated from these files only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .machine import describe_machine, load_average

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Target:
    """One goal from the issue: ``measured <op> goal``; ``met`` is None when nothing was measured."""

    name: str
    goal: float
    op: str  # ">=" or "<="
    unit: str
    measured: float | None
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.measured is None:
            return None
        return self.measured >= self.goal if self.op == ">=" else self.measured <= self.goal

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "goal": self.goal,
            "op": self.op,
            "unit": self.unit,
            "measured": self.measured,
            "met": self.met,
            "note": self.note,
        }


@dataclass
class Result:
    """What a section fills in while it runs; :meth:`write` stamps the machine and the end time."""

    name: str
    title: str
    mode: str
    versions: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started_at: str = field(default_factory=now_iso)
    load_at_start: list[float] = field(default_factory=load_average)
    _started: float = field(default_factory=lambda: datetime.now(UTC).timestamp())

    def write(self, directory: Path = RESULTS_DIR) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        machine = describe_machine()
        machine["load_average_at_start"] = self.load_at_start
        machine["load_average_at_end"] = machine.pop("load_average_1_5_15")
        body = {
            "name": self.name,
            "title": self.title,
            "mode": self.mode,
            "started_at": self.started_at,
            "finished_at": now_iso(),
            "duration_seconds": round(datetime.now(UTC).timestamp() - self._started, 1),
            "machine": machine,
            "versions": self.versions,
            "settings": self.settings,
            "figures": self.figures,
            "targets": [t.as_dict() for t in self.targets],
            "notes": self.notes,
        }
        path = directory / f"{self.name}.json"
        path.write_text(json.dumps(body, indent=2, sort_keys=False, default=str) + "\n")
        return path


def load_results(directory: Path = RESULTS_DIR) -> dict[str, dict[str, Any]]:
    """Every result file in ``directory`` by section name."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text())
        found[str(data.get("name", path.stem))] = data
    return found
