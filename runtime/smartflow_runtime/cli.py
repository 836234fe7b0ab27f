"""The ``smartflow-runtime`` command: the image's entrypoint, one binary for every role.

Parses arguments, validates configuration (all problems reported at once, before anything
starts), sets up logging, and hands over to the role runner, the migrator or the outbox tools.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, TextIO

from .config import ConfigError, Need, Role, Settings, load_settings
from .logging_setup import configure_logging
from .security import ClientSecurity, load_client_security

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3

EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_OK}  success; for `run`, drained cleanly after SIGTERM/SIGINT
  {EXIT_FAILURE}  failure: for `run`, a loop ended (a bug; an unreachable PostgreSQL or Kafka only makes the
     role unready) or a service overran the grace period; for the others, a dependency was
     unreachable, a migration or outbox command failed, the topic has fewer partitions than configured
  {EXIT_USAGE}  bad command line
  {EXIT_CONFIG}  invalid configuration (the message names every bad or missing SMARTFLOW_* variable)
"""

ENV_HELP = """\
configuration (environment; every variable, its default and meaning: docs/runtime.md):
  SMARTFLOW_DATABASE_DSN                PostgreSQL DSN, required by every command
  SMARTFLOW_KAFKA_BOOTSTRAP_SERVERS     host:port[,host:port], required by roles that relay or consume
  SMARTFLOW_ROLE                        role when --role is not given
  SMARTFLOW_KAFKA_TOPIC                 outbox topic (default smartflow.agent.outbox)
  SMARTFLOW_KAFKA_TOPIC_PARTITIONS      partitions `migrate` ensures the topic has (default 12)
  SMARTFLOW_KAFKA_CONSUMER_GROUP        consumer group (default smartflow-agent-outbox-consumer)
  SMARTFLOW_BIND_HOST                   interface the HTTP servers listen on (default 0.0.0.0)
  SMARTFLOW_ADMIN_PORT                  /healthz /readyz /metrics port (default 9090)
  SMARTFLOW_HTTP_PORT                   api role business HTTP port (default 8080)
  SMARTFLOW_SHUTDOWN_GRACE_SECONDS      drain budget on SIGTERM (default 25)
  SMARTFLOW_DB_POOL_MAX_SIZE            PostgreSQL pool size per process (default 20)
  SMARTFLOW_LOG_LEVEL                   DEBUG, INFO, WARNING, ERROR (default INFO)
  SMARTFLOW_LOG_FORMAT                  json or text (default json)
  SMARTFLOW_RELAY_BATCH_SIZE            rows the relay claims and sends per batch (default 500)
  SMARTFLOW_RELAY_LEASE_SECONDS         relay shard lease, renewed every third (default 15)
  SMARTFLOW_RELAY_POLL_INTERVAL_SECONDS relay fallback poll (default 2)
  SMARTFLOW_RELAY_LISTEN_NOTIFY         true: wake on LISTEN/NOTIFY; false: poll only (default true)
  SMARTFLOW_RELAY_NOTIFY_LINGER_SECONDS wait after a NOTIFY so batches grow (default 0.005)
  SMARTFLOW_OUTBOX_MAX_ATTEMPTS         attempts an event gets before it goes dead (default 20)
  SMARTFLOW_OUTBOX_BACKOFF_BASE_SECONDS retry backoff, doubling from this (default 1)
  SMARTFLOW_OUTBOX_BACKOFF_CAP_SECONDS  retry backoff cap (default 32)
  SMARTFLOW_CONSUMER_MAX_POLL_RECORDS   Kafka records per consumer poll (default 500)
  SMARTFLOW_MEMORY_WORKER_CONCURRENCY   memory jobs run at once per process (default 1)
  SMARTFLOW_MEMORY_WORKER_LEASE_SECONDS memory job lease (default 30)
  SMARTFLOW_KAFKA_SECURITY_PROTOCOL     PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL
  SMARTFLOW_KAFKA_SASL_MECHANISM        PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with SASL_*)
  SMARTFLOW_KAFKA_SASL_USERNAME         SASL user (with SASL_*)
  SMARTFLOW_KAFKA_SASL_PASSWORD         SASL password (with SASL_*)
  SMARTFLOW_KAFKA_SSL_CAFILE            CA file for the brokers' certificates (default: system store)
  SMARTFLOW_KAFKA_SSL_CERTFILE          client certificate (mutual TLS), with ..._SSL_KEYFILE
  SMARTFLOW_KAFKA_SSL_KEYFILE           the client certificate's key
  SMARTFLOW_KAFKA_SSL_CHECK_HOSTNAME    check the brokers' hostnames (default true)
  SMARTFLOW_KAFKA_ALLOW_PLAINTEXT_PASSWORD  allow PLAIN over SASL_PLAINTEXT (default false)
  SMARTFLOW_DATABASE_SSLMODE            disable, prefer, require, verify-ca, verify-full (default: the DSN's)
  SMARTFLOW_DATABASE_SSLROOTCERT        CA file for PostgreSQL's certificate (default: system store)
  SMARTFLOW_DATABASE_SSLCERT            client certificate for PostgreSQL, with ..._SSLKEY
  SMARTFLOW_DATABASE_SSLKEY             the client certificate's key
"""

ROLES_HELP = """\
roles:
  api            business HTTP API only; never creates a Kafka consumer or joins the group
  relay          publishes due outbox rows to Kafka (any number of replicas)
  consumer       consumes the outbox topic in the consumer group and applies the handlers
  memory-worker  runs memory extraction jobs
  worker         relay + consumer + memory-worker
  all            everything, including the api
"""


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="smartflow-runtime",
        description="Smartflow runtime: one image, role selected by arguments.",
        epilog=EXIT_CODES_HELP + "\n" + ENV_HELP,
        formatter_class=formatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        help="run one role until SIGTERM/SIGINT, then drain and exit",
        description=(
            "Run the services of one role with the admin server (/healthz, /readyz, /metrics) on "
            "SMARTFLOW_ADMIN_PORT. SIGTERM or SIGINT drains: /readyz turns false, new work stops, "
            "in-flight work finishes, offsets are committed, the group is left; exit 0 within "
            "SMARTFLOW_SHUTDOWN_GRACE_SECONDS."
        ),
        epilog=ROLES_HELP + "\n" + EXIT_CODES_HELP,
        formatter_class=formatter,
    )
    run.add_argument(
        "--role",
        choices=[r.value for r in Role],
        help="which role to run (default: $SMARTFLOW_ROLE)",
    )

    migrate = commands.add_parser(
        "migrate",
        help="create or upgrade the database schema (idempotent)",
        description=(
            "Apply pending schema migrations to SMARTFLOW_DATABASE_DSN. Idempotent: running it again "
            "is a no-op. The outbox shard count (which caps useful relay replicas) is fixed by the "
            "first run. With Kafka configured, also ensure the outbox topic exists with enough "
            "partitions (they cap useful consumer replicas); it is created if missing, never shrunk "
            "or grown."
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=formatter,
    )
    migrate.add_argument(
        "--shards",
        type=int,
        default=32,
        metavar="N",
        help="outbox shard count for a new database (default 32); must match on an existing one",
    )
    migrate.add_argument(
        "--topic-partitions",
        type=int,
        metavar="N",
        help=(
            "when SMARTFLOW_KAFKA_BOOTSTRAP_SERVERS is set, ensure SMARTFLOW_KAFKA_TOPIC exists with at "
            "least N partitions (default: $SMARTFLOW_KAFKA_TOPIC_PARTITIONS or 12); an existing topic "
            "with fewer is an error, never changed"
        ),
    )
    migrate.add_argument(
        "--skip-topic", action="store_true", help="do not touch Kafka, even when it is configured"
    )

    outbox = commands.add_parser(
        "outbox",
        help="inspect the outbox backlog, replay dead events, prune consumed history",
        description="Operational commands for the transactional outbox.",
    )
    outbox_commands = outbox.add_subparsers(dest="outbox_command", metavar="OUTBOX_COMMAND", required=True)
    stats = outbox_commands.add_parser(
        "stats",
        help="backlog by status and event type, and the age of the oldest due event",
        description=(
            "Count unfinished outbox events (pending, published, dead) by status and event type, "
            "the consumed history (exact up to 10000, estimated beyond), and the age of the oldest "
            "due pending event (the relay lag the operator scales on). Cheap on a large table: "
            "every query is bounded by the backlog, not by the history."
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=formatter,
    )
    stats.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    replay = outbox_commands.add_parser(
        "replay",
        help="send dead events back to pending so the relay publishes them again",
        description=(
            "Move dead outbox events back to pending with their attempts reset; the relay then "
            "publishes them again and the consumer applies them once."
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=formatter,
    )
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--id",
        dest="ids",
        action="append",
        metavar="ID",
        type=int,
        help="an outbox row id (outbox_events.id) to replay; repeat for several",
    )
    which.add_argument(
        "--type", dest="event_type", metavar="TYPE", help="replay every dead event of this type"
    )
    which.add_argument("--all", action="store_true", help="replay every dead event")
    replay.add_argument(
        "--dry-run", action="store_true", help="only list what would be replayed; change nothing"
    )

    prune = outbox_commands.add_parser(
        "prune",
        help="delete consumed events older than a cutoff, in small batches",
        description=(
            "Delete outbox rows in status consumed whose consumed_at is older than DURATION ago. "
            "Pending, published and dead rows are never deleted. Rows go in batches of N, each its "
            "own short transaction, so relays and consumers are never blocked for long; run it "
            "while the system is live (e.g. from a CronJob)."
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=formatter,
    )
    prune.add_argument(
        "--older-than",
        required=True,
        type=parse_duration,
        metavar="DURATION",
        help="age of the consumed rows to delete, like 7d, 12h, 90m, 1w or 1d12h (units s m h d w)",
    )
    prune.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    prune.add_argument(
        "--batch",
        type=_batch_size,
        default=1000,
        metavar="N",
        help="rows deleted per transaction, 1..100000 (default 1000)",
    )
    return parser


_DURATION_PART = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``7d``, ``12h``, ``1d12h``, ``90s`` -> timedelta; must be > 0 (an argparse ``type``)."""
    cleaned = text.strip().lower()
    parts = _DURATION_PART.findall(cleaned)
    if not parts or "".join(n + u for n, u in parts) != cleaned:
        raise argparse.ArgumentTypeError(f"not a duration like 7d, 12h or 1d12h: {text!r}")
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"duration must be > 0: {text!r}")
    return timedelta(seconds=seconds)


def _batch_size(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= 100_000:
        raise argparse.ArgumentTypeError(f"must be an integer 1..100000, got {text!r}")
    return int(text)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = os.environ if environ is None else environ
    try:
        if args.command == "run":
            return _run(args, env)
        if args.command == "migrate":
            return _migrate(args, env, sys.stdout)
        if args.outbox_command == "stats":
            return _outbox_stats(args, env, sys.stdout)
        if args.outbox_command == "prune":
            return _outbox_prune(args, env, sys.stdout)
        return _outbox_replay(args, env, sys.stdout)
    except ConfigError as error:
        print(f"smartflow-runtime: {error}", file=sys.stderr)
        return EXIT_CONFIG


def _settings(env: Mapping[str, str], needs: set[Need], **overrides: Any) -> Settings:
    return load_settings(env, needs=needs, overrides=overrides)


def _run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    settings = _settings(env, {Need.ROLE}, role=args.role)
    assert settings.role is not None
    from .metrics import process_registry
    from .roles import build_component, run_role, uses_kafka

    security = load_client_security(settings, kafka=uses_kafka(settings.role))
    configure_logging(role=settings.role.value, level=settings.log_level, fmt=settings.log_format)
    with asyncio.Runner(loop_factory=event_loop_factory(settings.event_loop)) as runner:
        return runner.run(
            run_role(
                role=settings.role,
                settings=settings,
                registry=process_registry(),
                factory=build_component,
                security=security,
            )
        )


def event_loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory of ``run`` for ``SMARTFLOW_EVENT_LOOP``: uvloop's, or None (asyncio's own)."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def _migrate(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    settings = _settings(env, {Need.DATABASE}, kafka_topic_partitions=args.topic_partitions)
    touches_kafka = settings.kafka_bootstrap_servers is not None and not args.skip_topic
    security = load_client_security(settings, kafka=touches_kafka)
    configure_logging(role="migrate", level=settings.log_level, fmt=settings.log_format)
    from .db import migrate
    from .errors import SmartflowError

    async def apply() -> int:
        conn = await _connect(settings, security)
        try:
            result = await migrate(conn, shard_count=args.shards)
        finally:
            await conn.close()
        applied = ", ".join(map(str, result.applied)) or "none (already up to date)"
        print(
            f"schema version {result.version}; applied: {applied}; outbox shards: {result.shard_count}",
            file=out,
        )
        print(await _ensure_topic(settings, security, skip=bool(args.skip_topic)), file=out)
        return EXIT_OK

    try:
        return asyncio.run(apply())
    except (SmartflowError, OSError) as error:
        log.error("migrate failed: %s", error)
        print(f"smartflow-runtime: migrate failed: {error}", file=sys.stderr)
        return EXIT_FAILURE


async def _ensure_topic(settings: Settings, security: ClientSecurity, *, skip: bool) -> str:
    """The topic step of ``migrate``: one line saying what was found or done."""
    if skip:
        return "kafka topic: skipped (--skip-topic)"
    if settings.kafka_bootstrap_servers is None:
        return "kafka topic: skipped (SMARTFLOW_KAFKA_BOOTSTRAP_SERVERS not set)"
    from .outbox.topic import TopicAction, ensure_topic

    result = await ensure_topic(
        settings.kafka_bootstrap_servers,
        settings.kafka_topic,
        partitions=settings.kafka_topic_partitions,
        client_options=security.kafka,
    )
    if result.action is TopicAction.CREATED:
        return f"kafka topic {result.topic}: created with {result.partitions} partitions"
    more = (
        f" (more than the {result.wanted} asked for; left as is)" if result.partitions > result.wanted else ""
    )
    return f"kafka topic {result.topic}: exists with {result.partitions} partitions{more}"


async def _connect(settings: Settings, security: ClientSecurity) -> Any:
    import asyncpg

    from .outbox.store import wrap_driver_error

    try:
        return await asyncpg.connect(settings.require_database_dsn(), timeout=10, **security.database)
    except (OSError, asyncpg.PostgresError) as error:
        # Named by type: "authentication failed: ...", "certificate verify failed: ...".
        raise OSError(f"cannot connect to PostgreSQL: {wrap_driver_error('connect', error)}") from error


def _outbox_stats(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    settings = _settings(env, {Need.DATABASE})
    security = load_client_security(settings, kafka=False)
    configure_logging(role="outbox", level=settings.log_level, fmt=settings.log_format)
    from .errors import SmartflowError
    from .outbox import store

    async def read() -> store.OutboxStats:
        conn = await _connect(settings, security)
        try:
            return await store.stats(conn, store.utcnow())
        finally:
            await conn.close()

    try:
        report = asyncio.run(read())
    except (SmartflowError, OSError) as error:
        print(f"smartflow-runtime: outbox stats failed: {error}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(report.as_dict(), sort_keys=True), file=out)
    else:
        print(format_stats(report.as_dict()), file=out)
    return EXIT_OK


def format_stats(report: Mapping[str, Any]) -> str:
    """The human table of ``outbox stats``: one line per unfinished (status, event type), then the
    consumed history and the relay lag."""
    rows = [("STATUS", "EVENT TYPE", "COUNT")]
    rows += [(e["status"], e["event_type"], str(e["count"])) for e in report["backlog"]]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}" for r in rows]
    if len(rows) == 1:
        lines.append("(no pending, published or dead events)")
    age = report["oldest_due_age_seconds"]
    lines.append("")
    approx = "" if report["consumed_exact"] else " (estimate)"
    lines.append(f"consumed (history, until pruned): {report['consumed']}{approx}")
    lines.append(f"due pending: {report['due_pending']}")
    lines.append(f"oldest due age: {'-' if age is None else f'{age:.1f}s'}")
    return "\n".join(lines)


def _outbox_replay(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    settings = _settings(env, {Need.DATABASE})
    security = load_client_security(settings, kafka=False)
    configure_logging(role="outbox", level=settings.log_level, fmt=settings.log_format)
    from .errors import SmartflowError
    from .outbox import store

    async def replay() -> list[int]:
        conn = await _connect(settings, security)
        try:
            return await store.replay_dead(
                conn, ids=args.ids, event_type=args.event_type, all=bool(args.all), dry_run=bool(args.dry_run)
            )
        finally:
            await conn.close()

    try:
        ids = asyncio.run(replay())
    except (SmartflowError, OSError) as error:
        print(f"smartflow-runtime: outbox replay failed: {error}", file=sys.stderr)
        return EXIT_FAILURE
    verb = "would replay" if args.dry_run else "replayed"
    print(f"{verb} {len(ids)} dead event(s)" + (f": {' '.join(map(str, ids))}" if ids else ""), file=out)
    if args.ids:
        missing = sorted(set(args.ids) - set(ids))
        if missing:
            print(f"not dead (or no such id), left alone: {' '.join(map(str, missing))}", file=out)
    return EXIT_OK


def _outbox_prune(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    settings = _settings(env, {Need.DATABASE})
    security = load_client_security(settings, kafka=False)
    configure_logging(role="outbox", level=settings.log_level, fmt=settings.log_format)
    from .errors import SmartflowError
    from .outbox import store

    async def prune() -> store.PruneResult:
        conn = await _connect(settings, security)
        try:
            return await store.prune_consumed(
                conn,
                older_than=store.utcnow() - args.older_than,
                batch_size=args.batch,
                dry_run=bool(args.dry_run),
            )
        finally:
            await conn.close()

    try:
        result = asyncio.run(prune())
    except (SmartflowError, OSError) as error:
        print(f"smartflow-runtime: outbox prune failed: {error}", file=sys.stderr)
        return EXIT_FAILURE
    cutoff = result.cutoff.isoformat(timespec="seconds")
    if args.dry_run:
        print(f"would prune {result.rows} consumed event(s) consumed before {cutoff}", file=out)
    else:
        print(
            f"pruned {result.rows} consumed event(s) consumed before {cutoff} "
            f"in {result.batches} batch(es) of at most {args.batch}",
            file=out,
        )
    return EXIT_OK
