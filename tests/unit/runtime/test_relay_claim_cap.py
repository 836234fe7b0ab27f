"""The per-shard cap of a relay claim and the "claim again at once" decision (pure)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from smartflow_runtime.outbox.model import OutboxRow, Status
from smartflow_runtime.outbox.store import claim_may_have_left_rows, per_shard_claim_cap


def row(id: int, shard: int) -> OutboxRow:
    return OutboxRow(
        id=id, event_id=uuid.uuid4(), event_type="t", event_version=1, aggregate_id="a",
        message_key="k", topic="t", payload={}, shard=shard, status=Status.PENDING, attempts=0,
        max_attempts=3, available_at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip


def test_cap_is_twice_a_fair_share_at_least_50_never_above_the_limit() -> None:
    assert per_shard_claim_cap(500, 32) == 50
    assert per_shard_claim_cap(500, 4) == 250
    assert per_shard_claim_cap(500, 1) == 500
    assert per_shard_claim_cap(20, 32) == 20
    assert per_shard_claim_cap(500, 0) == 500


def test_claim_again_when_the_limit_or_one_shards_cap_was_hit() -> None:
    assert claim_may_have_left_rows([row(i, i % 2) for i in range(10)], limit=10, shards=2)
    assert claim_may_have_left_rows([row(i, 0) for i in range(50)], limit=500, shards=32)
    assert not claim_may_have_left_rows([row(i, i % 32) for i in range(64)], limit=500, shards=32)
    assert not claim_may_have_left_rows([], limit=500, shards=32)
