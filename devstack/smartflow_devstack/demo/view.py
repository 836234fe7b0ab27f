"""Pure helpers of the demo: one readable line per observation, and the run's summary."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

ROLES = ("api", "relay", "consumer", "memory-worker")


@dataclass(frozen=True)
class Observation:
    """What the demo saw at one instant (seconds since the burst started): desired replicas from the
    role Deployments, ready from the role *pods* (what ``kubectl get pods`` shows)."""

    at: float
    desired: Mapping[str, int]
    ready: Mapping[str, int]
    relay_backlog: int | None
    consumer_lag: int | None
    unfinished_events: int
    sent: int
    # The relay probe stops counting at targetPerReplica x maxReplicas (more cannot change the
    # decision); a reading at that cap is shown as "800+", next to the true count of due rows.
    relay_backlog_cap: int | None = None
    due_rows: int | None = None


@dataclass
class Timeline:
    observations: list[Observation] = field(default_factory=list)

    def add(self, observation: Observation) -> None:
        self.observations.append(observation)

    def peak(self, role: str) -> int:
        return max((o.desired.get(role, 0) for o in self.observations), default=0)

    def first(self, role: str) -> int:
        return self.observations[0].desired.get(role, 0) if self.observations else 0

    def last(self, role: str) -> int:
        return self.observations[-1].desired.get(role, 0) if self.observations else 0


def format_line(observation: Observation) -> str:
    cells = []
    for role in ROLES:
        short = "memory" if role == "memory-worker" else role
        cells.append(f"{short} {observation.ready.get(role, 0)}/{observation.desired.get(role, 0)}")
    backlog = "?" if observation.relay_backlog is None else str(observation.relay_backlog)
    cap = observation.relay_backlog_cap
    if observation.relay_backlog is not None and cap is not None and observation.relay_backlog >= cap:
        backlog = f"{cap}+"
    if observation.due_rows is not None:
        backlog += f" (due {observation.due_rows})"
    lag = "?" if observation.consumer_lag is None else str(observation.consumer_lag)
    return (
        f"t={observation.at:6.1f}s  "
        + "  ".join(cells)
        + f"  | relay backlog {backlog:>6}  consumer lag {lag:>6}"
        f"  | sent {observation.sent:>6}  unfinished events {observation.unfinished_events:>6}"
    )


@dataclass(frozen=True)
class DemoSummary:
    messages_sent: int
    events_written: int
    events_consumed: int
    events_dead: int
    chat_messages_stored: int
    memory_jobs: int
    token_adjustments: int
    relay_start: int
    relay_peak: int
    relay_end: int
    consumer_start: int
    consumer_peak: int
    consumer_end: int
    burst_seconds: float
    drain_seconds: float | None
    scale_down_seconds: float | None
    pods_left: list[str]

    @property
    def exactly_once(self) -> bool:
        return (
            self.events_consumed == self.events_written
            and self.events_dead == 0
            and self.chat_messages_stored == self.messages_sent
            and self.memory_jobs == self.messages_sent
            # Token adjustments add up per event: a second effect of any event would show here.
            and self.token_adjustments == self.messages_sent
        )

    def render(self) -> str:
        drain = "not within the time limit" if self.drain_seconds is None else f"{self.drain_seconds:.1f}s"
        down = (
            "not within the time limit"
            if self.scale_down_seconds is None
            else f"{self.scale_down_seconds:.1f}s"
        )
        return "\n".join(
            [
                "Summary",
                f"  messages sent to the api role  {self.messages_sent} (in {self.burst_seconds:.1f}s)",
                f"  outbox events written          {self.events_written}",
                f"  events consumed / dead         {self.events_consumed} / {self.events_dead}",
                f"  chat messages stored           {self.chat_messages_stored}",
                f"  memory jobs enqueued           {self.memory_jobs}",
                f"  token usage adjustments        {self.token_adjustments}",
                f"  relay replicas                 {self.relay_start} -> peak {self.relay_peak}"
                f" -> {self.relay_end}",
                f"  consumer replicas              {self.consumer_start} -> peak {self.consumer_peak}"
                f" -> {self.consumer_end}",
                f"  time to drain (from burst)     {drain}",
                f"  time to scale down (from burst) {down}",
                f"  every event exactly one effect {'yes' if self.exactly_once else 'NO'}",
                f"  pods left after deleting it    {len(self.pods_left)}",
            ]
        )
