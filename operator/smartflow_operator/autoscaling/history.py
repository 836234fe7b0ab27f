"""The autoscaler's memory between polls: a small serialisable value kept in the CR status.

The HPA keeps its recommendations and scale events in controller memory, so a controller
restart forgets the scale-down window. Here the same data lives in the object (status), so an
operator restart resumes where it left off. ``decide`` takes one of these and returns the next;
nothing here reads a clock.

The loop keeps the history in memory and writes it to the status only when a restart would
otherwise see something different (:meth:`ScalingHistory.worth_persisting_over`): a new scale
event, a changed failure count, or a change of the *standing* recommendation (the latest one,
which the loop repeats every poll while the lag is steady). The standing recommendation's
timestamp is therefore the time it was last written, not the last poll's: after a restart
:meth:`ScalingHistory.resumed` takes it as standing until the restart, which is what the loop was
doing when it stopped. So a steady runtime costs no status write per poll, and a restart never
shortens a window (it may lengthen the standing value's by the operator's downtime).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel


class _Value(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class Recommendation(_Value):
    """One poll's unstabilised recommendation (what the metric alone asked for)."""

    at: datetime
    replicas: int


class ScaleEvent(_Value):
    """One change the autoscaler made, by ``change`` replicas (positive; the list it is in says
    whether up or down), as the HPA's ``timestampedScaleEvent``."""

    at: datetime
    change: int
    # Older than its direction's longest policy period when the last event of that direction was
    # stored: the next event of that direction takes its slot (the HPA's ``outdated`` flag).
    outdated: bool = False


def replicas_changed(events: tuple[ScaleEvent, ...], *, period_seconds: int, now: datetime) -> int:
    """Replicas changed by ``events`` strictly after ``now - period`` (``getReplicasChangePerPeriod``)."""
    cutoff = now - timedelta(seconds=period_seconds)
    return sum(e.change for e in events if e.at > cutoff)


def stored_event(
    events: tuple[ScaleEvent, ...], *, change: int, longest_period_seconds: int, now: datetime
) -> tuple[ScaleEvent, ...]:
    """``events`` with a new one (the HPA's ``storeScaleEvent`` for one direction): events older
    than the direction's longest policy period are marked outdated and the last outdated one is
    replaced by the new event, else it is appended. Older events are kept, as by the HPA: the
    other direction's policies (with longer periods) still count them until they are replaced."""
    cutoff = now - timedelta(seconds=longest_period_seconds)
    marked = [e.model_copy(update={"outdated": True}) if e.at < cutoff else e for e in events]
    new = ScaleEvent(at=now, change=change)
    slot = max((i for i, e in enumerate(marked) if e.outdated), default=None)
    if slot is None:
        return (*marked, new)
    marked[slot] = new
    return tuple(marked)


class ScalingHistory(_Value):
    recommendations: tuple[Recommendation, ...] = ()
    # Kept apart per direction, as the HPA does: each direction's policies subtract what it added
    # and add back what the other removed within their period.
    scale_up_events: tuple[ScaleEvent, ...] = ()
    scale_down_events: tuple[ScaleEvent, ...] = ()
    consecutive_failures: int = 0
    # Consumer only, for persistent-lag exclusion: the group's committed offset per partition
    # at the previous poll (JSON keys are strings; pydantic converts them back).
    committed_offsets: dict[int, int] = Field(default_factory=dict)

    def recommendations_since(self, cutoff: datetime) -> list[int]:
        """Recommendations strictly after ``cutoff`` (the HPA's ``timestamp.After(cutoff)``)."""
        return [r.replicas for r in self.recommendations if r.at > cutoff]

    @model_validator(mode="before")
    @classmethod
    def _split_legacy_events(cls, value: Any) -> Any:
        """A status written before the directions were kept apart: one signed ``scaleEvents`` list."""
        if not isinstance(value, dict) or "scaleEvents" not in value:
            return value
        value = dict(value)
        legacy = value.pop("scaleEvents") or []
        if isinstance(legacy, list) and all(isinstance(e, dict) for e in legacy):
            changes = [(e, int(e.get("change") or 0)) for e in legacy]
            value.setdefault("scaleUpEvents", [{**e, "change": c} for e, c in changes if c > 0])
            value.setdefault("scaleDownEvents", [{**e, "change": -c} for e, c in changes if c < 0])
        return value

    @property
    def started(self) -> bool:
        """Whether a decision was made before (the HPA's ``recommendations[key] != nil``)."""
        return bool(self.recommendations)

    def pruned(self, now: datetime, *, keep_recommendations: int) -> ScalingHistory:
        """Drop recommendations no stabilization window can see any more, keeping the latest.

        The HPA keeps a fixed slot list and overwrites a slot once it is older than both windows;
        dropping such entries, and an entry followed by a later one of the same value (it can never
        be the min or max of a window the later one is not also in), gives the same windows with a
        few entries. The latest one always stays, so a started history never looks new (a new one
        records the current count first, :func:`.decision.decide`). Scale events are not pruned:
        :func:`stored_event` reuses their slots exactly as the HPA does, so the list stays short.
        """
        cutoff = now - timedelta(seconds=keep_recommendations)
        standing = self.standing
        recent = [r for r in self.recommendations if r.at > cutoff or r is standing]
        latest: dict[int, Recommendation] = {}
        for r in recent:
            if r.replicas not in latest or r.at >= latest[r.replicas].at:
                latest[r.replicas] = r
        return self.model_copy(update={"recommendations": tuple(sorted(latest.values(), key=lambda r: r.at))})

    def with_scale_event(
        self, *, current: int, desired: int, up_period_seconds: int, down_period_seconds: int, now: datetime
    ) -> ScalingHistory:
        """This history after scaling ``current -> desired`` (unchanged when they are equal)."""
        if desired > current:
            events = stored_event(
                self.scale_up_events,
                change=desired - current,
                longest_period_seconds=up_period_seconds,
                now=now,
            )
            return self.model_copy(update={"scale_up_events": events})
        if desired < current:
            events = stored_event(
                self.scale_down_events,
                change=current - desired,
                longest_period_seconds=down_period_seconds,
                now=now,
            )
            return self.model_copy(update={"scale_down_events": events})
        return self

    @property
    def standing(self) -> Recommendation | None:
        """The latest recommendation (they are kept in time order), i.e. the one of the last poll."""
        return self.recommendations[-1] if self.recommendations else None

    def resumed(self, now: datetime) -> ScalingHistory:
        """This history as read back from the status after an operator (re)start: the standing
        recommendation was still being made when the operator stopped, so it counts until ``now``."""
        standing = self.standing
        if standing is None or standing.at >= now:
            return self
        earlier = self.recommendations[:-1]
        return self.model_copy(
            update={"recommendations": (*earlier, standing.model_copy(update={"at": now}))}
        )

    def worth_persisting_over(self, stored: ScalingHistory) -> bool:
        """Whether the status' ``stored`` history must be replaced by this one so that a restart
        decides as this process would.

        Not worth a write: the standing recommendation repeated at a later time (see
        :meth:`resumed`), recommendations pruned because no window can see them any more
        (``decide`` ignores those in ``stored`` too), and the consumer's committed offsets alone
        (after a restart they are at worst one poll old, which delays a stuck-partition exclusion
        by one poll and never excludes a partition that moved).
        """
        if self.consecutive_failures != stored.consecutive_failures:
            return True
        if (self.scale_up_events, self.scale_down_events) != (
            stored.scale_up_events,
            stored.scale_down_events,
        ):
            return True
        standing = self.standing
        if standing is None:
            return False
        stored_standing = stored.standing
        if stored_standing is None or stored_standing.replicas != standing.replicas:
            return True
        return not set(self.recommendations[:-1]) <= set(stored.recommendations)

    def to_status(self) -> dict[str, object]:
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def from_status(cls, value: object) -> ScalingHistory:
        """Read it back from the status; a missing or unreadable value starts afresh."""
        if not isinstance(value, dict):
            return cls()
        try:
            return cls.model_validate(value)
        except ValueError:
            return cls()
