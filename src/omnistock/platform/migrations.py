"""Plain SQL migrations, per service, applied in order as their own step before a service starts.

Each service owns a PostgreSQL schema. The platform's own migrations (outbox, inbox, idempotency
keys) are applied into every service schema first, then the service's ``migrations/*.sql``.
Applied files are recorded with a checksum: editing an applied migration is refused, since the
database would silently differ from the code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import asyncpg

from omnistock.platform.db import checked_identifier

_LOCK_KEY = 0x6F6D6E69  # one advisory lock for all migration runs: they are rare and short


@dataclass(frozen=True, slots=True)
class Migration:
    component: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(RuntimeError):
    pass


def load_migrations(component: str, package: str) -> list[Migration]:
    """Read ``NNNN_name.sql`` files from the ``migrations`` folder of ``package``."""
    folder = resources.files(package).joinpath("migrations")
    found: list[Migration] = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        number, _, rest = entry.name.partition("_")
        if not number.isdigit():
            raise MigrationError(f"{package}: migration file without a number: {entry.name}")
        found.append(
            Migration(component, int(number), rest.removesuffix(".sql"), entry.read_text())
        )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{package}: two migrations share a number")
    return found


def migrations_for(service: str, package: str | None) -> list[Migration]:
    platform = load_migrations("platform", "omnistock.platform")
    own = load_migrations(service, package) if package else []
    return platform + own


async def migrate(conn: asyncpg.Connection, schema: str, migrations: list[Migration]) -> list[str]:
    """Apply pending migrations into ``schema``; return the names of those applied."""
    schema = checked_identifier(schema)
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                component text NOT NULL,
                version integer NOT NULL,
                name text NOT NULL,
                checksum text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (component, version))"""
        )
        rows = await conn.fetch(
            f"SELECT component, version, checksum FROM {schema}.schema_migrations"
        )
        done = {(r["component"], r["version"]): r["checksum"] for r in rows}
        for migration in migrations:
            key = (migration.component, migration.version)
            if key in done:
                if done[key] != migration.checksum:
                    raise MigrationError(
                        f"{schema}: applied migration {migration.component}/{migration.version}"
                        f"_{migration.name} was edited; add a new migration instead"
                    )
                continue
            async with conn.transaction():
                await conn.execute(f"SET LOCAL search_path TO {schema}, public")
                await conn.execute(migration.sql)
                await conn.execute(
                    f"INSERT INTO {schema}.schema_migrations (component, version, name, checksum)"
                    " VALUES ($1, $2, $3, $4)",
                    migration.component,
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            applied_now.append(f"{migration.component}/{migration.version:04d}_{migration.name}")
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now
