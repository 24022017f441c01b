"""The transactional outbox and its relay.

A use case calls ``add_to_outbox`` inside the transaction that changes state, so the events and
the change commit or vanish together. The relay takes committed rows in id order, publishes them
with an idempotent producer and deletes them in a transaction that commits only after Kafka has
acknowledged them; a crash in between publishes them again, and consumers' inboxes absorb the
duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import asyncpg
import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from prometheus_client import Counter, Gauge

from omnistock.platform import db, events, faults
from omnistock.platform.clock import Clock, ensure_utc
from omnistock.platform.kafka import create_producer
from omnistock.platform.observability import current_traceparent
from omnistock.platform.settings import Settings

log = structlog.get_logger(__name__)

PUBLISHED = Counter("omnistock_outbox_published_total", "Events published by the relay", ["schema"])
PUBLISH_FAILURES = Counter(
    "omnistock_outbox_publish_failures_total", "Relay batches Kafka did not acknowledge", ["schema"]
)
BACKLOG = Gauge("omnistock_outbox_backlog", "Unpublished outbox rows seen by the relay", ["schema"])
DEAD = Counter(
    "omnistock_outbox_dead_total", "Events Kafka refused for good, moved to outbox_dead", ["schema"]
)

# Refusals of one message that no retry can cure; anything else (a broker away, a topic not yet
# created, a timeout) fails the whole batch, which is tried again.
PERMANENT = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError._INVALID_ARG,
    }
)


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """An event to publish: its payload, the aggregate it is about, and that aggregate's version."""

    payload: Any
    aggregate_id: str
    aggregate_version: int
    key: str | None = None  # the Kafka key; the aggregate id unless a stream keys otherwise
    correlation_id: str | None = None
    event_id: str | None = None
    topic: str | None = None  # the payload's own topic unless overridden (tests, benchmarks)


class OutboxRows(NamedTuple):
    """Outbox rows column by column, as an ``unnest`` INSERT takes them."""

    event_ids: list[str]
    topics: list[str]
    keys: list[str]
    payloads: list[bytes]
    traceparent: str | None


def outbox_rows(source: str, messages: Sequence[OutboxMessage], clock: Clock) -> OutboxRows:
    """The rows that write ``messages`` into an outbox: for a statement that inserts them along
    with other changes (``add_to_outbox`` is the usual way)."""
    now = ensure_utc(clock.now())
    fresh_ids = iter(events.new_event_ids(len(messages)))
    rows = OutboxRows([], [], [], [], current_traceparent())
    ids, topics, keys, payloads = rows.event_ids, rows.topics, rows.keys, rows.payloads
    for message in messages:
        event_id, body = events.encode(
            message.payload,
            source=source,
            subject=message.aggregate_id,
            time=now,
            aggregate_version=message.aggregate_version,
            correlation_id=message.correlation_id,
            event_id=message.event_id or next(fresh_ids),
        )
        ids.append(event_id)
        topics.append(message.topic or message.payload.TOPIC)
        keys.append(message.key or message.aggregate_id)
        payloads.append(body)
    return rows


def insert_rows(first: int, when: str = "true") -> str:
    """The INSERT of ``OutboxRows`` given as the parameters ``$first`` to ``$first + 4``, if
    the condition ``when`` holds: in a WITH that writes the change its events tell of, so that
    the change and its events take one round trip."""
    ids, topics, keys, payloads, traceparent = range(first, first + 5)
    return f"""INSERT INTO outbox (event_id, topic, message_key, payload, traceparent)
           SELECT e, t, k, p, ${traceparent}
           FROM unnest(${ids}::uuid[], ${topics}::text[], ${keys}::text[], ${payloads}::bytea[])
                AS u(e, t, k, p)
           WHERE {when}"""


async def add_to_outbox(
    conn: asyncpg.Connection, source: str, messages: Sequence[OutboxMessage], clock: Clock
) -> list[str]:
    """Write events into the outbox of the connection's schema; call inside the transaction."""
    if not messages:
        return []
    rows = outbox_rows(source, messages, clock)
    await conn.execute(insert_rows(1), *rows)
    await written(conn)
    return rows.event_ids


_LEADING: dict[str, OutboxRelay] = {}
"""The relays leading in this process, by schema."""


async def written(conn: asyncpg.Connection) -> None:
    """Call after a statement that put rows into the outbox of ``conn``'s schema: the relay
    hears of them once they are committed, rather than at its next poll.

    A relay leading in this process is woken directly. Another process's (a replica's) is
    sent a NOTIFY after the commit, in a transaction of its own. A trigger on the outbox used to
    send it from inside every writing transaction, and a transaction that notifies takes a lock
    that PostgreSQL holds for the whole cluster from its commit until its WAL is flushed: every
    such commit waited for the one before it (about one backend waiting at any moment under
    the orders benchmark)."""
    schema = getattr(conn, "schema", None)
    if schema is None:
        return  # not a connection of db's making: the relay's poll finds the rows
    if conn.is_in_transaction():
        conn.after_commit("outbox", _announce)
    else:
        await _announce(conn)


async def _announce(conn: asyncpg.Connection) -> None:
    schema: str = conn.schema
    relay = _LEADING.get(schema)
    if relay is not None:
        relay.wake()
        return
    # Committed without waiting for the disk: a prompt that is lost only waits for the poll.
    await conn.execute(
        "SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, '')",
        f"{schema}_outbox",
    )


class DeliveryFailed(RuntimeError):
    pass


class OutboxRelay:
    """Publishes one schema's outbox. One relay per schema is active, elected by a session
    advisory lock, which keeps per-key order; a standby blocks on the lock and takes over the
    moment the leader's connection ends."""

    def __init__(self, settings: Settings, schema: str, producer: Producer | None = None) -> None:
        self._settings = settings
        self._schema = db.checked_identifier(schema)
        self._producer = producer
        self._wake = asyncio.Event()
        self.lock_key = zlib.crc32(f"omnistock.outbox.{schema}".encode())
        self.published = 0
        self.is_leader = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set; reconnects after database or broker failures."""
        producer = self._producer or create_producer(
            self._settings, **{"client.id": f"omnistock-relay-{self._schema}"}
        )
        backoff = 0.1
        while not stop.is_set():
            try:
                await self._lead_and_relay(producer, stop)
                backoff = 0.1
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, DeliveryFailed) as exc:
                log.warning("outbox relay interrupted", schema=self._schema, error=str(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 5.0)
        await asyncio.to_thread(producer.flush, 10)

    async def _lead_and_relay(self, producer: Producer, stop: asyncio.Event) -> None:
        conn = await db.connect(self._settings.database_url, self._schema)
        try:
            if not await _until_stopped(
                conn.execute("SELECT pg_advisory_lock($1)", self.lock_key), stop
            ):
                return
            self.is_leader = True
            self._loop = asyncio.get_running_loop()
            _LEADING[self._schema] = self
            log.info("outbox relay leading", schema=self._schema)
            await conn.add_listener(f"{self._schema}_outbox", self._on_notify)
            while not stop.is_set():
                self._wake.clear()
                if await self.publish_batch(conn, producer) >= self._settings.outbox_batch_size:
                    continue
                await _until_stopped(self._wake.wait(), stop, self._settings.outbox_poll_interval_s)
        finally:
            if _LEADING.get(self._schema) is self:
                del _LEADING[self._schema]
            self.is_leader = False
            await conn.close(timeout=5)

    def wake(self) -> None:
        """Rows were committed to the outbox: relay them now rather than at the next poll."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:  # a writer on another thread's loop
            loop.call_soon_threadsafe(self._wake.set)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def publish_batch(self, conn: asyncpg.Connection, producer: Producer) -> int:
        """Publish the oldest rows; they leave the outbox only once Kafka acknowledged them."""
        async with conn.transaction():
            rows = await conn.fetch(
                # No FOR UPDATE: only the leader deletes, and a row lock would be one more
                # write to every tuple. ANY(ARRAY(...)) evaluates the batch's ids once: with
                # `id IN (subquery)` and statistics from an empty table, after a burst the
                # planner may rescan the subquery for every row (seen: 50 s for one batch).
                """DELETE FROM outbox
                   WHERE id = ANY(ARRAY(SELECT id FROM outbox ORDER BY id LIMIT $1))
                   RETURNING id, event_id, topic, message_key, payload, traceparent, created_at""",
                self._settings.outbox_batch_size,
            )
            if not rows:
                BACKLOG.labels(self._schema).set(0)
                return 0
            rows.sort(key=lambda row: row["id"])  # RETURNING promises no order
            refused = await self._publish(rows, producer)
            if refused:
                await self._set_aside(conn, [r for r in rows if r["id"] in refused], refused)
            faults.point("relay.after_publish")
        self.published += len(rows)
        PUBLISHED.labels(self._schema).inc(len(rows))
        BACKLOG.labels(self._schema).set(len(rows))
        return len(rows)

    async def _publish(self, rows: list[asyncpg.Record], producer: Producer) -> dict[int, str]:
        """Publish the rows; returns those Kafka refused for good (id → reason). Raises
        ``DeliveryFailed`` when any other row was not acknowledged."""
        refused: dict[int, str] = {}
        transient: list[tuple[KafkaError, Message]] = []
        failed: list[tuple[KafkaError, Message]] = []

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                (failed if error.code() in PERMANENT else transient).append((error, message))

        for row in rows:
            headers: list[tuple[str, str | bytes | None]] = [
                ("content-type", events.CONTENT_TYPE.encode())
            ]
            traceparent = row["traceparent"]
            if traceparent:
                headers.append(("traceparent", traceparent.encode()))
            try:
                _produce(
                    producer,
                    row["topic"],
                    row["message_key"],
                    row["payload"],
                    headers,
                    delivered,
                )
            except KafkaException as exc:  # refused before it left: too large, a bad topic
                error = exc.args[0]
                if error.code() not in PERMANENT:
                    raise DeliveryFailed(f"Kafka refused a message: {error.str()}") from None
                refused[row["id"]] = error.str()
        remaining = await asyncio.to_thread(producer.flush, 30)
        if remaining or transient:
            PUBLISH_FAILURES.labels(self._schema).inc()
            reason = transient[0][0].str() if transient else f"{remaining} not acknowledged"
            raise DeliveryFailed(f"Kafka did not acknowledge the batch: {reason}")
        if failed:  # rare: find the rows of the refused messages
            by_message = {
                (r["topic"], r["message_key"], bytes(r["payload"])): r["id"] for r in rows
            }
            for error, message in failed:
                key = message.key()
                text_key = key.decode() if isinstance(key, bytes) else str(key)
                row_id = by_message.get((message.topic(), text_key, message.value() or b""))
                if row_id is None:  # cannot tell which row: keep the batch, try it again
                    raise DeliveryFailed(f"Kafka refused a message: {error.str()}")
                refused[row_id] = error.str()
        return refused

    async def _set_aside(
        self, conn: asyncpg.Connection, rows: list[asyncpg.Record], reasons: dict[int, str]
    ) -> None:
        """The refused rows were deleted with their batch: keep them, and why, in outbox_dead.
        The rest of the batch goes on; consumers see a gap in those keys' versions."""
        await conn.executemany(
            """INSERT INTO outbox_dead
                   (id, event_id, topic, message_key, payload, traceparent, created_at, reason)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            [(*tuple(r.values()), reasons[r["id"]]) for r in rows],
        )
        DEAD.labels(self._schema).inc(len(rows))
        log.error(
            "events refused by Kafka set aside in outbox_dead",
            schema=self._schema,
            ids=[r["id"] for r in rows],
            reason=next(iter(reasons.values())),
        )


async def _until_stopped(
    work: Awaitable[Any], stop: asyncio.Event, limit_s: float | None = None
) -> bool:
    """Await ``work`` unless ``stop`` comes first (or ``limit_s`` passes); True if it finished."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait(
        {task, stopper}, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED
    )
    stopper.cancel()
    if task not in done:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False
    task.result()
    return True


def _produce(
    producer: Producer,
    topic: str,
    key: str,
    value: bytes,
    headers: list[tuple[str, str | bytes | None]],
    on_delivery: Any,
) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
            return
        except BufferError:
            # The local queue is full: let librdkafka drain some deliveries, then go on.
            producer.poll(0.05)


async def requeue_dead(conn: asyncpg.Connection, ids: Sequence[int] | None = None) -> int:
    """Put set-aside events back in the outbox (all, or those ``ids``), once their cause is
    fixed; they keep their event ids, so consumers that somehow saw them already skip them."""
    async with conn.transaction():
        moved = await conn.fetch(
            """DELETE FROM outbox_dead WHERE $1::bigint[] IS NULL OR id = ANY($1::bigint[])
               RETURNING id, event_id, topic, message_key, payload, traceparent, created_at""",
            None if ids is None else list(ids),
        )
        await conn.executemany(
            """INSERT INTO outbox (event_id, topic, message_key, payload, traceparent, created_at)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            [tuple(r.values())[1:] for r in sorted(moved, key=lambda r: r["id"])],
        )
        await written(conn)
    return len(moved)
