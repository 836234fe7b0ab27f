"""Every SQL statement of the outbox, in one place. Only :mod:`.store` executes these.

Parameters are positional (asyncpg ``$n``); each statement's comment names them. Table and
column names are the shared contract in ``docs/contracts.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

_ROW_COLUMNS = """
    e.id, e.event_id, e.event_type, e.event_version, e.aggregate_id, e.message_key, e.topic,
    e.payload, e.shard, e.status, e.attempts, e.max_attempts, e.available_at, e.last_error
"""

# $1 event_id, $2 type, $3 version, $4 aggregate, $5 key, $6 topic, $7 payload json,
# $8 key hash, $9 max_attempts, $10 now, $11 notify channel.
# The shard is computed here from the fixed shard count, so writers need no configuration;
# pg_notify is delivered on commit only, so the relay never wakes for a rolled-back event.
INSERT_EVENT = """
WITH ins AS (
    INSERT INTO outbox_events (
        event_id, event_type, event_version, aggregate_id, message_key, topic, payload, shard,
        status, attempts, max_attempts, available_at, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb,
            ($8::bigint % (SELECT count(*) FROM outbox_shards))::int,
            'pending', 0, $9, $10, $10, $10)
    RETURNING id, shard
)
SELECT id, shard, pg_notify($11, shard::text) FROM ins
"""

# Bulk variant: parallel arrays $1..$9 as in INSERT_EVENT, $10 now. Ids follow the input order.
INSERT_EVENTS = """
WITH n AS (SELECT count(*)::bigint AS c FROM outbox_shards)
INSERT INTO outbox_events (
    event_id, event_type, event_version, aggregate_id, message_key, topic, payload, shard,
    status, attempts, max_attempts, available_at, created_at, updated_at)
SELECT e.event_id, e.event_type, e.event_version, e.aggregate_id, e.message_key, e.topic,
       e.payload::jsonb, (e.key_hash % n.c)::int, 'pending', 0, e.max_attempts, $10, $10, $10
FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::bigint[], $9::int[])
         WITH ORDINALITY AS e(event_id, event_type, event_version, aggregate_id, message_key, topic,
                              payload, key_hash, max_attempts, ord),
     n
ORDER BY e.ord
RETURNING id, shard
"""

# $1 channel, $2 shards
NOTIFY_SHARDS = "SELECT pg_notify($1, s::text) FROM unnest($2::int[]) AS s"

SHARD_COUNT = "SELECT count(*) FROM outbox_shards"

# --- relay membership and shard leases ------------------------------------------------------

# $1 relay id, $2 now
HEARTBEAT = """
INSERT INTO outbox_relays (relay_id, heartbeat_at) VALUES ($1, $2)
ON CONFLICT (relay_id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at
"""

# $1 oldest heartbeat still counted as alive
LIVE_RELAYS = "SELECT count(*) FROM outbox_relays WHERE heartbeat_at > $1"

# $1 heartbeats older than this are forgotten
FORGET_RELAYS = "DELETE FROM outbox_relays WHERE heartbeat_at < $1"

# $1 relay id
LEAVE = "DELETE FROM outbox_relays WHERE relay_id = $1"

# $1 relay id, $2 new lease end. Keeps every shard still recorded as ours.
RENEW_LEASES = """
UPDATE outbox_shards SET lease_until = $2 WHERE owner = $1 RETURNING shard
"""

# $1 relay id, $2 now, $3 new lease end, $4 how many. Free or expired shards only.
ACQUIRE_SHARDS = """
UPDATE outbox_shards s SET owner = $1, lease_until = $3
WHERE s.shard IN (
    SELECT shard FROM outbox_shards
    WHERE owner IS NULL OR lease_until < $2
    ORDER BY shard
    LIMIT $4
    FOR UPDATE SKIP LOCKED)
RETURNING s.shard
"""

# $1 relay id, $2 shards (NULL = all of ours)
RELEASE_SHARDS = """
UPDATE outbox_shards SET owner = NULL, lease_until = NULL
WHERE owner = $1 AND ($2::int[] IS NULL OR shard = ANY($2::int[]))
RETURNING shard
"""

# --- relay claims -----------------------------------------------------------------------------

# $1 shards, $2 now, $3 limit, $4 relay id.
# Due pending rows of shards we hold a live lease on, in id order. A row whose first publish
# failed (pending, never published, waiting out its backoff) blocks later rows of its shard,
# so a Kafka hiccup never lets a later event of the same key overtake an earlier one. Rows
# re-sent after a handler failure (published_at set) do not block: a poison event must not
# stall its shard.
#
# Cost follows the batch, not the backlog: `picked` takes ids only, per shard in id order from
# the partial index outbox_events_pending_by_shard (shard, id) WHERE pending, stopping after the
# per-shard cap (store.per_shard_claim_cap: least($3, greatest(50, ceil(2 * $3 / shards)))), then
# the $3 lowest ids of those. Each shard's pick is therefore a prefix of
# its due rows. Only the picked rows are read whole (payloads) and locked. Plain FOR UPDATE (not
# SKIP LOCKED): if a stale owner still holds a batch, the new owner waits for it instead of
# skipping ahead and breaking per-key order; after the wait, rows the stale owner published no
# longer match `status = 'pending'` and drop out, and a row it sent back to backoff comes back
# with its new `available_at`, which the store treats as a blocker (see store.claim_batch).
#
# The blocker check compares `x.id + 0`, not `x.id`, on purpose: it keeps the id range out of
# reach of the (shard, id) index, so the check can only be answered from the not-yet-due rows
# (outbox_events_shard_status_due / _due_pending, ranges on available_at > $2: usually empty).
# asyncpg prepares this statement once per connection, and after five executions PostgreSQL may
# plan it generically (no value for $2, a default selectivity for `available_at > $2`); with the
# id range indexable that plan walked the shard's pending entries, dead ones included, up to each
# candidate: ~70 entries read per row claimed, and 60-130 ms of PostgreSQL CPU per 1,000 events
# for a relay draining a backlog, instead of ~3 entries and 30-40 ms (test_relay_claim.py).
CLAIM_BATCH = f"""
WITH owned AS (
    SELECT s.shard FROM outbox_shards s
    WHERE s.shard = ANY($1::int[]) AND s.owner = $4 AND s.lease_until > $2
), picked AS MATERIALIZED (
    SELECT p.id
    FROM owned o
    CROSS JOIN LATERAL (
        SELECT b.id FROM outbox_events b
        WHERE b.shard = o.shard AND b.status = 'pending' AND b.available_at <= $2
          AND NOT EXISTS (
              SELECT 1 FROM outbox_events x
              WHERE x.shard = o.shard AND x.status = 'pending' AND x.published_at IS NULL
                AND x.available_at > $2 AND x.id + 0 < b.id)
        ORDER BY b.id
        LIMIT least($3, greatest(50, (2 * $3 + cardinality($1::int[]) - 1)
                                     / greatest(cardinality($1::int[]), 1)))) p
    ORDER BY p.id
    LIMIT $3
)
SELECT {_ROW_COLUMNS}, e.published_at
FROM outbox_events e JOIN picked ON e.id = picked.id
WHERE e.status = 'pending'
ORDER BY e.id
FOR UPDATE OF e
"""

# $1 ids, $2 expected attempts, $3 now. Compare-and-swap: only rows still pending at those attempts.
MARK_PUBLISHED = """
UPDATE outbox_events e
SET status = 'published', published_at = $3, updated_at = $3
FROM unnest($1::bigint[], $2::int[]) AS c(id, attempts)
WHERE e.id = c.id AND e.attempts = c.attempts AND e.status = 'pending'
RETURNING e.id
"""


def mark_published_then_commit(ids: Sequence[int], attempts: Sequence[int], now: datetime) -> str:
    """MARK_PUBLISHED and COMMIT as one simple-protocol query, so a relay batch's last step costs
    one round trip instead of two. Simple queries take no parameters: every value is inlined, and
    every value is ours (integers, and ``now`` from the relay's clock), never user data."""
    id_list = ",".join(str(int(i)) for i in ids)
    attempt_list = ",".join(str(int(a)) for a in attempts)
    at = f"'{now.isoformat()}'::timestamptz"
    return f"""
UPDATE outbox_events e
SET status = 'published', published_at = {at}, updated_at = {at}
FROM unnest('{{{id_list}}}'::bigint[], '{{{attempt_list}}}'::int[]) AS c(id, attempts)
WHERE e.id = c.id AND e.attempts = c.attempts AND e.status = 'pending';
COMMIT
"""


# $1 ids, $2 expected attempts, $3 next available_at, $4 dead?, $5 errors, $6 now, $7 allowed statuses.
MARK_FAILED = """
UPDATE outbox_events e
SET attempts = c.attempts + 1,
    status = CASE WHEN c.dead THEN 'dead' ELSE 'pending' END,
    available_at = c.available_at,
    last_error = c.error,
    updated_at = $6
FROM unnest($1::bigint[], $2::int[], $3::timestamptz[], $4::bool[], $5::text[])
         AS c(id, attempts, available_at, dead, error)
WHERE e.id = c.id AND e.attempts = c.attempts AND e.status = ANY($7::text[])
RETURNING e.id, e.status, e.shard
"""

# --- consumer -----------------------------------------------------------------------------

# $1 id
LOCK_ROW = f"SELECT {_ROW_COLUMNS} FROM outbox_events e WHERE e.id = $1 FOR UPDATE"

# $1 id, $2 now
MARK_CONSUMED = """
UPDATE outbox_events SET status = 'consumed', consumed_at = $2, updated_at = $2 WHERE id = $1
"""

# $1 id, $2 reason, $3 now. For envelopes too broken to hand to a handler.
MARK_DEAD = """
UPDATE outbox_events SET status = 'dead', last_error = $2, updated_at = $3
WHERE id = $1 AND status IN ('pending', 'published')
RETURNING id
"""

# --- operations -------------------------------------------------------------------------------

# Unfinished rows only (pending, published, dead): an index-only scan of the partial index
# outbox_events_unfinished, so the cost follows the backlog, not the table's consumed history.
BACKLOG_BY_STATUS_AND_TYPE = """
SELECT status, event_type, count(*) AS n FROM outbox_events
WHERE status <> 'consumed'
GROUP BY status, event_type
ORDER BY status, event_type
"""

# $1 limit. Consumed rows counted up to a bound: history grows without end until pruned, and a
# sampler must not pay for all of it. The ORDER BY matches outbox_events_consumed so the planner
# walks that small index (index-only) instead of the wide heap.
CONSUMED_UP_TO = """
SELECT count(*) FROM (
    SELECT 1 FROM outbox_events WHERE status = 'consumed' ORDER BY consumed_at, id LIMIT $1) AS c
"""

# The planner's row estimate of the whole table (-1 before the first ANALYZE): constant time.
TABLE_ROWS_ESTIMATE = "SELECT reltuples::bigint FROM pg_class WHERE oid = 'outbox_events'::regclass"

# $1 now. The relay lag the operator probes: due rows not yet published.
DUE_PENDING = """
SELECT count(*) AS due, min(available_at) AS oldest
FROM outbox_events WHERE status = 'pending' AND available_at <= $1
"""

# --- retention --------------------------------------------------------------------------------

# $1 cutoff. How many consumed rows a prune would delete (index-only on outbox_events_consumed).
COUNT_PRUNABLE = """
SELECT count(*) FROM outbox_events WHERE status = 'consumed' AND consumed_at < $1
"""

# $1 cutoff, $2 batch size. One bounded batch, oldest first, in its own short transaction.
# Only `consumed` rows ever match (terminal, no effect left to apply); SKIP LOCKED steps over a
# row a consumer is looking at for a redelivery, so prune never waits on the hot path. The batch
# is a MATERIALIZED CTE on purpose: as `id IN (SELECT ... LIMIT n)` the planner may rescan the
# subquery per outer row, and each rescan picks n more rows, so one "batch" deletes everything.
PRUNE_CONSUMED = """
WITH batch AS MATERIALIZED (
    SELECT id FROM outbox_events
    WHERE status = 'consumed' AND consumed_at < $1
    ORDER BY consumed_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED)
DELETE FROM outbox_events e USING batch WHERE e.id = batch.id AND e.status = 'consumed'
"""

# $1 ids or NULL, $2 event type or NULL
SELECT_DEAD = """
SELECT id FROM outbox_events
WHERE status = 'dead' AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))
  AND ($2::text IS NULL OR event_type = $2)
ORDER BY id
"""

# $1 ids or NULL, $2 event type or NULL, $3 now.
# attempts restart at 0 so the replayed event gets its full retry budget again.
REPLAY_DEAD = """
UPDATE outbox_events
SET status = 'pending', attempts = 0, available_at = $3, updated_at = $3,
    last_error = 'replayed; previously: ' || coalesce(last_error, '')
WHERE status = 'dead' AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))
  AND ($2::text IS NULL OR event_type = $2)
RETURNING id, shard
"""
