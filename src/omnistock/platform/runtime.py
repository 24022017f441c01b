"""A service process: its pool, its outbox relay, its consumers and background jobs, started
with the HTTP app and stopped gracefully (in-flight batches finish, offsets are committed)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import structlog

from omnistock.platform import db
from omnistock.platform.consumer import EventConsumer, Subscription
from omnistock.platform.kafka import admin_client
from omnistock.platform.outbox import OutboxRelay
from omnistock.platform.settings import Settings

log = structlog.get_logger(__name__)

BackgroundJob = Callable[["ServiceRuntime", asyncio.Event], Awaitable[None]]


def settle_memory() -> None:
    """Once a process has loaded its code and connections: what exists now lives as long as the
    process, so the garbage collector stops walking it. Full collections otherwise walk every
    module and class again and stall the event loop for tens of milliseconds each."""
    gc.collect()
    gc.freeze()


def periodic(
    name: str, step: Callable[[asyncpg.Connection], Awaitable[int]], interval_s: float
) -> BackgroundJob:
    """A job that runs ``step`` in a transaction again and again, pausing ``interval_s`` once a
    step finds nothing to do (it returns how much it did). Its state lives in the tables
    ``step`` reads, so a restart picks up exactly where it left off."""

    async def run(runtime: ServiceRuntime, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with runtime.pool.acquire() as conn, conn.transaction():
                    done = await step(conn)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # A database blip or a lost lock race: the work is still there to do.
                log.warning("job step failed, trying again", job=name, error=str(exc))
                done = 0
            if done == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)

    return run


class ServiceRuntime:
    def __init__(
        self,
        name: str,
        settings: Settings,
        *,
        schema: str | None = None,
        subscriptions: Sequence[Subscription] = (),
        jobs: Sequence[BackgroundJob] = (),
        relay: bool = True,
    ) -> None:
        self.name = name
        self.schema = schema or name.replace("-", "_")
        self.settings = settings
        self._subscriptions = subscriptions
        self._jobs = jobs
        self._with_relay = relay
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._pool: asyncpg.Pool | None = None
        self.relay: OutboxRelay | None = None
        self.consumers: list[EventConsumer] = []

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._pool

    async def start(self) -> None:
        self._pool = await db.create_pool(
            self.settings.database_url,
            self.schema,
            min_size=self.settings.db_pool_min,
            max_size=self.settings.db_pool_max,
        )
        if self._with_relay:
            self.relay = OutboxRelay(self.settings, self.schema)
            self._spawn(self.relay.run(self._stop), "relay")
        for subscription in self._subscriptions:
            consumer = EventConsumer(self.settings, self.pool, subscription)
            self.consumers.append(consumer)
            self._spawn(consumer.run(self._stop), f"consumer {subscription.group}")
        self._spawn(self._housekeeping(self._stop), "housekeeping")
        for job in self._jobs:
            self._spawn(job(self, self._stop), getattr(job, "__name__", "job"))
        settle_memory()

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        """Forget processed event ids once Kafka can no longer redeliver their events, and
        idempotency keys once no client retries that late."""
        retention = {
            "inbox": self.settings.inbox_retention_s,
            "idempotency_keys": self.settings.idempotency_retention_s,
        }
        while not stop.is_set():
            for table, retention_s in retention.items():
                try:
                    await prune_older_than(self.pool, table, retention_s)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("pruning failed", table=table, error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 3600)

    def _spawn(self, work: Awaitable[None], label: str) -> None:
        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                # A background loop that dies takes readiness with it: the pod gets restarted.
                log.exception("background task died", task=label, service=self.name)
                raise

        self._tasks.append(asyncio.create_task(guarded(), name=label))

    async def stop(self, timeout_s: float = 20.0) -> None:
        self._stop.set()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*pending, return_exceptions=True)
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def check_database(self) -> str | None:
        try:
            async with asyncio.timeout(2):
                await self.pool.fetchval("SELECT 1")
        except Exception as exc:
            return f"database: {exc!r}"
        return None

    async def check_kafka(self) -> str | None:
        try:
            await asyncio.to_thread(admin_client(self.settings).list_topics, timeout=2)
        except Exception as exc:
            return f"kafka: {exc!r}"
        return None

    async def check_tasks(self) -> str | None:
        dead = [task.get_name() for task in self._tasks if task.done()]
        if dead and not self._stop.is_set():
            return f"background tasks stopped: {', '.join(dead)}"
        return None

    def readiness(self) -> dict[str, Callable[[], Awaitable[str | None]]]:
        return {
            "database": self.check_database,
            "kafka": self.check_kafka,
            "tasks": self.check_tasks,
        }

    @asynccontextmanager
    async def lifespan(self, _app: Any = None) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()


# What housekeeping forgets, by age: (table, timestamp column).
PRUNED = {"inbox": "processed_at", "idempotency_keys": "created_at"}


async def prune_older_than(
    pool: asyncpg.Pool, table: str, retention_s: float, batch: int = 10_000
) -> int:
    """Delete rows of ``table`` older than ``retention_s``, a batch at a time; returns how
    many. Small batches keep each transaction short next to the service's own writes."""
    column = PRUNED[table]
    deleted = 0
    while True:
        status = await pool.execute(
            f"""DELETE FROM {table} WHERE ctid = ANY(ARRAY(
                    SELECT ctid FROM {table}
                    WHERE {column} < now() - make_interval(secs => $1) LIMIT $2))""",
            retention_s,
            batch,
        )
        count = int(status.split()[-1])
        deleted += count
        if count < batch:
            return deleted
