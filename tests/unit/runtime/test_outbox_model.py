"""Pure outbox rules: backoff, shard hashing, fair shard share, envelope encoding and parsing."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from smartflow_runtime.errors import EnvelopeError
from smartflow_runtime.outbox.model import (
    BackoffPolicy,
    Envelope,
    OutboxRow,
    Status,
    key_hash,
    outbox_id_of,
    parse_envelope,
    shard_for_key,
    shard_target,
)


class TestBackoff:
    @pytest.mark.parametrize(
        ("attempt", "seconds"), [(0, 0), (1, 1), (2, 2), (3, 4), (4, 8), (5, 16), (6, 32), (7, 32), (500, 32)]
    )
    def test_default_is_one_second_doubling_capped_at_32(self, attempt: int, seconds: float) -> None:
        assert BackoffPolicy().delay(attempt) == timedelta(seconds=seconds)

    def test_configurable_base_and_cap(self) -> None:
        policy = BackoffPolicy(base_seconds=0.5, cap_seconds=3)
        assert [policy.delay(n).total_seconds() for n in range(1, 6)] == [0.5, 1, 2, 3, 3]

    def test_negative_settings_are_rejected(self) -> None:
        with pytest.raises(ValueError):
            BackoffPolicy(base_seconds=-1)


class TestSharding:
    def test_hash_is_crc32_and_stable_across_processes(self) -> None:
        # Known CRC-32 values: a salted hash() would differ between runs and relays.
        assert key_hash("") == 0
        assert key_hash("123456789") == 0xCBF43926  # the standard CRC-32 check value

    def test_shard_is_hash_mod_count(self) -> None:
        assert shard_for_key("123456789", 32) == 0xCBF43926 % 32
        assert all(0 <= shard_for_key(f"k{i}", 7) < 7 for i in range(100))

    def test_keys_spread_over_all_shards(self) -> None:
        counts = Counter(shard_for_key(f"conversation-{i}", 32) for i in range(3200))
        assert len(counts) == 32 and min(counts.values()) > 50

    def test_shard_count_must_be_positive(self) -> None:
        with pytest.raises(ValueError):
            shard_for_key("k", 0)

    @pytest.mark.parametrize(
        ("shards", "relays", "target"),
        [(32, 1, 32), (32, 2, 16), (32, 3, 11), (32, 5, 7), (32, 40, 1), (32, 0, 32)],
    )
    def test_each_relay_targets_ceil_of_shards_over_relays(
        self, shards: int, relays: int, target: int
    ) -> None:
        assert shard_target(shards, relays) == target
        if relays:
            assert target * relays >= shards  # together the targets always cover every shard


def row(**changes: object) -> OutboxRow:
    values: dict[str, object] = {
        "id": 7,
        "event_id": uuid.UUID(int=1),
        "event_type": "chat.history.persist.requested",
        "event_version": 1,
        "aggregate_id": "c1",
        "message_key": "c1",
        "topic": "t",
        "payload": {"a": [1, 2]},
        "shard": 3,
        "status": Status.PENDING,
        "attempts": 0,
        "max_attempts": 20,
        "available_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    values.update(changes)
    return OutboxRow(**values)  # type: ignore[arg-type]


class TestEnvelope:
    def test_a_row_read_from_postgres_is_encoded_with_its_stored_payload_text(self) -> None:
        # jsonb's text output: spaces after separators, keys in jsonb's order, UTF-8 unescaped.
        stored = '{"b": [1, 2.5, null], "aa": "ü \\"q\\" \\n", "nested": {"z": true}}'
        record = {**vars(row(aggregate_id='c"1 ü')), "payload": stored}
        from_db = OutboxRow.from_record(record)
        raw = Envelope.encode_row(from_db)
        assert raw.endswith(b',"payload":' + stored.encode() + b"}"), "the stored text, as it is"
        assert json.loads(raw) == json.loads(Envelope.of_row(from_db).encode())
        assert parse_envelope(raw) == Envelope.of_row(from_db)
        # Everything before the payload is byte for byte what encode() writes.
        head = Envelope.of_row(from_db).encode().split(b',"payload":')[0]
        assert raw.startswith(head + b',"payload":')

    def test_encode_writes_the_bytes_of_json_dumps_with_sorted_keys(self) -> None:
        payload = {"z": {"b": 1, "a": [1.5, None, True]}, "\u00e9": '\u00fc "q"\n'}
        envelope = Envelope(9, uuid.UUID(int=5), "t.e", 2, 'agg "\u00fc"', payload)
        expected = {
            "outbox_id": 9,
            "event_id": str(uuid.UUID(int=5)),
            "event_type": "t.e",
            "event_version": 2,
            "aggregate_id": 'agg "\u00fc"',
            "payload": payload,
        }
        assert envelope.encode() == json.dumps(expected, separators=(",", ":"), sort_keys=True).encode()

    def test_a_row_without_stored_text_is_encoded_as_before(self) -> None:
        assert Envelope.encode_row(row()) == Envelope.of_row(row()).encode()

    def test_round_trip_with_contract_field_names(self) -> None:
        raw = Envelope.of_row(row()).encode()
        assert set(json.loads(raw)) == {
            "outbox_id",
            "event_id",
            "event_type",
            "event_version",
            "aggregate_id",
            "payload",
        }
        parsed = parse_envelope(raw)
        assert parsed == Envelope(
            7, uuid.UUID(int=1), "chat.history.persist.requested", 1, "c1", {"a": [1, 2]}
        )

    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            (None, "no value"),
            (b"\xff\xfe garbage", "not JSON"),
            (b"[1, 2]", "JSON object"),
            (b'{"outbox_id": 1}', "event_id missing"),
            (b'{"outbox_id": "1", "event_id": "x", "event_type": "t", "event_version": 1, '
             b'"aggregate_id": "a", "payload": {}}', "outbox_id has the wrong type"),
            (b'{"outbox_id": 1, "event_id": "x", "event_type": "t", "event_version": 1, '
             b'"aggregate_id": "a", "payload": {}}', "not a UUID"),
            (b'{"outbox_id": true, "event_id": "00000000-0000-0000-0000-000000000001", "event_type": "t", '
             b'"event_version": 1, "aggregate_id": "a", "payload": {}}', "outbox_id has the wrong type"),
            (b'{"outbox_id": 1, "event_id": "00000000-0000-0000-0000-000000000001", "event_type": "", '
             b'"event_version": 1, "aggregate_id": "a", "payload": []}', "payload has the wrong type"),
        ],
    )  # fmt: skip
    def test_bad_envelopes_name_what_is_wrong(self, raw: bytes | None, reason: str) -> None:
        with pytest.raises(EnvelopeError, match=reason):
            parse_envelope(raw)

    def test_outbox_id_is_recovered_from_a_broken_envelope_when_possible(self) -> None:
        assert outbox_id_of(b'{"outbox_id": 42, "event_type": 5}') == 42
        assert outbox_id_of(b'{"outbox_id": true}') is None
        assert outbox_id_of(b'{"outbox_id": -1}') is None
        assert outbox_id_of(b"nope") is None
        assert outbox_id_of(None) is None
