"""Database schema and migrations for every role; `smartflow-runtime migrate` calls :func:`migrate`."""

from .schema import (
    DEFAULT_SHARD_COUNT,
    MIGRATIONS,
    REQUIRED_SCHEMA_VERSION,
    Migration,
    MigrationResult,
    migrate,
    schema_version,
)

__all__ = [
    "DEFAULT_SHARD_COUNT",
    "MIGRATIONS",
    "REQUIRED_SCHEMA_VERSION",
    "Migration",
    "MigrationResult",
    "migrate",
    "schema_version",
]
