"""PostgreSQL access: one asyncpg pool per service, confined to the service's own schema."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import asyncpg
import orjson
import structlog
from asyncpg.transaction import Transaction

log = structlog.get_logger(__name__)

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

AfterCommit = Callable[["Connection"], Awaitable[None]]


class Connection(asyncpg.Connection):  # type: ignore[misc]
    """asyncpg's connection, knowing its schema, with work to do once the transaction under way
    has committed (what a trigger could only do inside it, holding the transaction open)."""

    schema: str | None = None
    _after_commit: dict[str, AfterCommit] | None = None

    def transaction(
        self, *, isolation: str | None = None, readonly: bool = False, deferrable: bool = False
    ) -> Transaction:
        return _Transaction(self, isolation, readonly, deferrable)

    def after_commit(self, name: str, work: AfterCommit) -> None:
        """Run ``work`` once the outermost ``transaction()`` block under way commits (once per
        ``name``, however often it is asked for); nothing if it rolls back."""
        if self._after_commit is None:
            self._after_commit = {}
        self._after_commit.setdefault(name, work)

    async def _ended(self, committed: bool) -> None:
        pending, self._after_commit = self._after_commit, None
        if not committed or not pending:
            return
        for name, work in pending.items():
            try:
                await work(self)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # Committed already: what is lost is a prompt, which a poll makes up for.
                log.warning("after-commit work failed", work=name, error=str(exc))


class _Transaction(Transaction):  # type: ignore[misc]
    async def __aexit__(self, extype: Any, ex: Any, tb: Any) -> None:
        connection: Connection = self._connection
        outermost = not self._nested
        committed = False
        try:
            await super().__aexit__(extype, ex, tb)
            committed = extype is None
        finally:
            if outermost:
                await connection._ended(committed)


def checked_identifier(name: str) -> str:
    """A schema or table name that is safe to put into SQL text."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a valid SQL identifier: {name!r}")
    return name


async def _init_connection(conn: asyncpg.Connection, schema: str | None = None) -> None:
    if isinstance(conn, Connection):
        conn.schema = schema
    # jsonb columns go in and out as Python objects, encoded by orjson.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: b"\x01" + orjson.dumps(value),
        decoder=lambda data: orjson.loads(data[1:]),
        schema="pg_catalog",
        format="binary",
    )


def _session_settings(schema: str) -> dict[str, str]:
    # The application name shows in pg_stat_activity which service a connection belongs to.
    return {
        "search_path": f"{checked_identifier(schema)},public",
        "application_name": f"omnistock-{schema}",
    }


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """What the pool does to a connection it takes back, beyond asyncpg's own rollback of a
    transaction left open: nothing. asyncpg's default sends ``SELECT pg_advisory_unlock_all();
    CLOSE ALL; UNLISTEN *; RESET ALL`` every time, a round trip per acquire that costs both
    processes CPU, for session state pooled connections never hold here: settings are fixed
    at connect, advisory locks are taken per transaction, cursors live within one, and the
    outbox relay's session lock and LISTEN are on a connection of its own."""


async def create_pool(
    dsn: str, schema: str, *, min_size: int = 2, max_size: int = 20, **kwargs: Any
) -> asyncpg.Pool:
    """A pool whose connections see only ``schema`` (then ``public``) by default."""

    async def init(conn: asyncpg.Connection) -> None:
        await _init_connection(conn, schema)

    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=init,
        reset=_keep_session,
        server_settings=_session_settings(schema),
        connection_class=Connection,
        **kwargs,
    )
    return pool


async def connect(dsn: str, schema: str) -> asyncpg.Connection:
    conn: asyncpg.Connection = await asyncpg.connect(
        dsn, server_settings=_session_settings(schema), connection_class=Connection
    )
    await _init_connection(conn, schema)
    return conn


async def keep_plans(conn: asyncpg.Connection) -> None:
    """For the rest of the transaction, statements run on their cached generic plan instead
    of being planned afresh for their parameters. For statements that join on keys over
    unnested arrays PostgreSQL tends to plan every call anew, and the planning then costs more
    than the run: call this first in such a transaction."""
    await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")


T = TypeVar("T")


async def transaction_with_retries(
    conn: asyncpg.Connection,
    work: Callable[[asyncpg.Connection], Awaitable[T]],
    retry_on: tuple[type[BaseException], ...] = (),
    attempts: int = 5,
) -> T:
    """``work`` in a transaction, run again after a short pause when it fails with one of
    ``retry_on`` or a deadlock: the loser of a lock race rolls back and tries again."""

    async def attempt() -> T:
        async with conn.transaction():
            return await work(conn)

    return await with_retries(attempt, retry_on, attempts)


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    retry_on: tuple[type[BaseException], ...] = (),
    attempts: int = 5,
) -> T:
    """``attempt()`` (a whole transaction), run again after a short pause when it fails with
    one of ``retry_on`` or a deadlock; the last failure is raised."""
    for number in range(1, attempts + 1):
        try:
            return await attempt()
        except (*retry_on, asyncpg.DeadlockDetectedError):
            if number == attempts:
                raise
            await asyncio.sleep(0.01 * number)
    raise AssertionError("unreachable")


async def lock_keys(conn: asyncpg.Connection, namespace: str, keys: Iterable[str]) -> None:
    """Transaction-scoped advisory locks on ``namespace:key``, taken in sorted order so that
    writers never deadlock."""
    await conn.execute(
        """SELECT pg_advisory_xact_lock(hashtextextended($1 || ':' || key, 0))
           FROM (SELECT DISTINCT unnest($2::text[]) AS key ORDER BY 1) AS ordered""",
        namespace,
        sorted(set(keys)),
    )


async def try_lock_keys(conn: asyncpg.Connection, namespace: str, keys: Iterable[str]) -> list[str]:
    """The keys whose lock this transaction got without waiting; the others are busy."""
    rows = await conn.fetch(
        """SELECT key FROM unnest($2::text[]) AS key
           WHERE pg_try_advisory_xact_lock(hashtextextended($1 || ':' || key, 0))""",
        namespace,
        sorted(set(keys)),
    )
    return [r["key"] for r in rows]
