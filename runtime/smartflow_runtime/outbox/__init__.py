"""The transactional outbox: events written with business data, relayed to Kafka, consumed once.

Modules, bottom-up:

- :mod:`.model` - pure value types and rules (events, rows, envelope, shard hash, backoff);
- :mod:`.sql` - every outbox SQL statement; :mod:`.store` - the narrow store API over it, taking
  the caller's connection and ``now`` (``publish``, claims, leases, ``consume_and_mark``,
  ``stats``, ``replay_dead``);
- :mod:`.kafka` - aiokafka construction and error wrapping;
- :mod:`.relay` - :class:`~.relay.Relay`, the service moving rows to Kafka (leased shards);
- :mod:`.consumer` - :class:`~.consumer.Consumer`, the group member running handlers.

Decisions worth knowing (details in each module's docstring):

- Per-key order rests on: one relay per shard at a time (lease + row locks), id order within a
  shard, a never-published row in backoff blocking later rows of its shard, and Kafka's
  idempotent producer. A *re-publish after a handler failure* is necessarily out of order with
  later events of its key; handlers are written to tolerate that (idempotent or versioned).
- Delivery is at-least-once into Kafka (a relay killed after Kafka acked but before its commit
  re-sends that batch); the consumer's row lock + status check makes the *effect* exactly once.
- Leases and due times use the ``clock`` given to each service (wall clock by default), so all
  replicas' clocks should be NTP-synchronised; leases of seconds tolerate ordinary skew.
"""
