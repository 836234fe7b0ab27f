"""What every section gets: the servers, the run mode and the versions, plus its sizes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .results import RESULTS_DIR, Result
from .servers import WORK_ROOT, Servers


@dataclass
class Context:
    servers: Servers
    smoke: bool
    versions: dict[str, Any]
    results_dir: Path = RESULTS_DIR
    work_dir: Path = WORK_ROOT
    log: list[str] = field(default_factory=list)
    settings_dsn: str = ""  # the DSN the operator's runtimes point at (set by the operator section)

    @property
    def mode(self) -> str:
        return "smoke" if self.smoke else "full"

    def result(self, name: str, title: str) -> Result:
        result = Result(name=name, title=title, mode=self.mode, versions=self.versions)
        result.settings["servers"] = self.servers.describe()
        return result

    def say(self, message: str) -> None:
        print(f"[bench] {message}", flush=True)
        self.log.append(message)
