"""The replicas of every role Deployment as the operator's watch last saw them, so an autoscaling
poll needs no GET of the Deployment. Fed by ``handlers`` from the Deployment watch events kopf
delivers anyway (the child events), read by :class:`.loop.Autoscaler`.

Why: a poll read the runtime and the role's Deployment from the API every interval; at 1,000
runtimes with two scaled roles on the default 5 s that was 800 GETs a second while nothing
happened. The runtime comes from the loops' live view (``runtime_loops``), the count from here.

A watch event can trail a write: right after the autoscaler scaled a role, the entry may still hold
the old count. Each entry records when it arrived, and the autoscaler trusts only an entry that
arrived after its own last scale of the role (else it takes the count it set). A Deployment the
watch has not seen does not exist yet for the autoscaler (its loop tries again next poll; it used
to GET it every poll until the reconciler had created it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Clock = Callable[[], float]


@dataclass(frozen=True)
class Seen:
    replicas: int
    at: float  # the monotonic clock when the event arrived


class WatchedReplicas:
    def __init__(self, *, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._seen: dict[tuple[str, str], Seen] = {}

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """One watch event of a Deployment."""
        metadata = body.get("metadata") or {}
        key = (str(metadata.get("namespace")), str(metadata.get("name")))
        if event_type == "DELETED":
            self._seen.pop(key, None)
            return
        replicas = (body.get("spec") or {}).get("replicas", 1)
        self._seen[key] = Seen(replicas=int(replicas), at=self._clock())

    def now(self) -> float:
        """This map's clock, to compare with an entry's ``at``."""
        return self._clock()

    def get(self, namespace: str, name: str) -> Seen | None:
        return self._seen.get((namespace, name))

    def __len__(self) -> int:
        return len(self._seen)
