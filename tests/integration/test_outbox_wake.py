"""How the relay hears of committed events, on the real database and broker: from its own
process directly, from another process by a NOTIFY sent after the commit, never from inside the
writing transaction, and not at all for a transaction rolled back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

from omnistock.demo import service
from omnistock.platform import db
from omnistock.platform.clock import SystemClock
from omnistock.platform.outbox import OutboxRelay
from tests.integration.conftest import Sandbox, wait_for

pytestmark = pytest.mark.integration
clock = SystemClock()


@contextlib.asynccontextmanager
async def notifications(sandbox: Sandbox) -> AsyncIterator[list[str]]:
    """The NOTIFYs on the schema's outbox channel while the block runs."""
    heard: list[str] = []
    conn = await asyncpg.connect(sandbox.settings.database_url)
    try:
        await conn.add_listener(f"{sandbox.schema}_outbox", lambda *args: heard.append(args[2]))
        yield heard
    finally:
        await conn.close()


async def ping(conn: asyncpg.Connection, sandbox: Sandbox, message: str) -> None:
    await service.send_pings(conn, "wake", [message], clock, topic=sandbox.topic)


async def outbox_rows(sandbox: Sandbox) -> int:
    value: int = await sandbox.pool.fetchval("SELECT count(*) FROM outbox")
    return value


async def failing_write(sandbox: Sandbox) -> None:
    async with sandbox.pool.acquire() as conn, conn.transaction():
        await ping(conn, sandbox, "rolled back")
        raise RuntimeError("the use case fails after writing its event")


async def rolled_back(conn: asyncpg.Connection, work: db.AfterCommit) -> None:
    async with conn.transaction():
        conn.after_commit("a", work)
        raise RuntimeError("rolled back")


async def test_a_commit_wakes_the_relay_of_its_own_process_with_no_notify(
    sandbox: Sandbox,
) -> None:
    # Polling once a minute: only a wake-up explains an event published within seconds.
    settings = sandbox.settings.model_copy(update={"outbox_poll_interval_s": 60.0})
    relay = OutboxRelay(settings, sandbox.schema)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    try:
        await wait_for(lambda: relay.is_leader, 10, what="the relay leading")
        await asyncio.sleep(0.2)  # past its first look at the empty outbox
        async with notifications(sandbox) as heard:
            async with sandbox.pool.acquire() as conn, conn.transaction():
                await ping(conn, sandbox, "one")
            await wait_for(lambda: relay.published == 1, 10, what="the event published")
            await asyncio.sleep(0.2)
        assert heard == []
        assert await outbox_rows(sandbox) == 0
    finally:
        stop.set()
        await running


async def test_a_writer_without_the_relay_notifies_once_committed_and_not_on_rollback(
    sandbox: Sandbox,
) -> None:
    async with notifications(sandbox) as heard:
        with pytest.raises(RuntimeError):
            await failing_write(sandbox)
        async with sandbox.pool.acquire() as conn, conn.transaction():
            await ping(conn, sandbox, "kept")
            await ping(conn, sandbox, "kept too")
            async with conn.transaction():  # a savepoint's commit is not the transaction's
                await ping(conn, sandbox, "in a savepoint")
            await asyncio.sleep(0.2)
            assert heard == []
        await wait_for(lambda: len(heard) == 1, 10, what="a NOTIFY after the commit")
        await asyncio.sleep(0.2)
        assert len(heard) == 1, "one per transaction, however many rows it wrote"
    assert await outbox_rows(sandbox) == 3
    # The outbox itself no longer notifies from inside the writing transaction.
    triggers = await sandbox.pool.fetchval(
        """SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = $1 AND c.relname = 'outbox' AND NOT t.tgisinternal""",
        sandbox.schema,
    )
    assert triggers == 0


async def test_work_after_commit_runs_once_per_name_and_only_for_a_commit(
    sandbox: Sandbox,
) -> None:
    ran: list[str] = []

    def note(what: str) -> db.AfterCommit:
        async def work(_conn: db.Connection) -> None:
            ran.append(what)

        return work

    async with sandbox.pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            await rolled_back(conn, note("rolled back"))
        async with conn.transaction():
            conn.after_commit("a", note("first"))
            conn.after_commit("a", note("second under the same name"))
            async with conn.transaction():
                conn.after_commit("b", note("from a savepoint"))
            assert ran == []
        assert ran == ["first", "from a savepoint"]
        async with conn.transaction():
            pass
        assert ran == ["first", "from a savepoint"]
