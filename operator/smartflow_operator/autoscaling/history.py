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

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class _Value(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class Recommendation(_Value):
    """One poll's unstabilised recommendation (what the metric alone asked for)."""

    at: datetime
    replicas: int


class ScaleEvent(_Value):
    """One change the autoscaler made: positive for scale-up, negative for scale-down."""

    at: datetime
    change: int


class ScalingHistory(_Value):
    recommendations: tuple[Recommendation, ...] = ()
    scale_events: tuple[ScaleEvent, ...] = ()
    consecutive_failures: int = 0
    # Consumer only, for persistent-lag exclusion: the group's committed offset per partition
    # at the previous poll (JSON keys are strings; pydantic converts them back).
    committed_offsets: dict[int, int] = Field(default_factory=dict)

    def recommendations_since(self, cutoff: datetime) -> list[int]:
        """Recommendations strictly after ``cutoff`` (the HPA's ``timestamp.After(cutoff)``)."""
        return [r.replicas for r in self.recommendations if r.at > cutoff]

    def change_since(self, cutoff: datetime) -> tuple[int, int]:
        """Replicas (added, removed) by scale events strictly after ``cutoff``."""
        recent = [e.change for e in self.scale_events if e.at > cutoff]
        return sum(c for c in recent if c > 0), -sum(c for c in recent if c < 0)

    def pruned(self, now: datetime, *, keep_recommendations: int, keep_events: int) -> ScalingHistory:
        """Drop entries older than what any window or policy period can still look at."""
        rec_cutoff = now - timedelta(seconds=keep_recommendations)
        event_cutoff = now - timedelta(seconds=keep_events)
        recent = [r for r in self.recommendations if r.at > rec_cutoff]
        # A recommendation followed by a later one of the same value can never be the min or max of
        # a window the later one is not also in: dropping it keeps the history at a few entries.
        latest: dict[int, Recommendation] = {}
        for r in recent:
            if r.replicas not in latest or r.at >= latest[r.replicas].at:
                latest[r.replicas] = r
        return self.model_copy(
            update={
                "recommendations": tuple(sorted(latest.values(), key=lambda r: r.at)),
                "scale_events": tuple(e for e in self.scale_events if e.at > event_cutoff),
            }
        )

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
        :meth:`resumed`), entries pruned because no window or period can see them any more
        (``decide`` ignores those in ``stored`` too), and the consumer's committed offsets alone
        (after a restart they are at worst one poll old, which delays a stuck-partition exclusion
        by one poll and never excludes a partition that moved).
        """
        if self.consecutive_failures != stored.consecutive_failures:
            return True
        if not set(self.scale_events) <= set(stored.scale_events):
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
