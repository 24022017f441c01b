"""The one way omnistock consumes: decode, dedupe in the inbox, apply, then commit the offset.

For each polled batch the effect and the inbox rows commit in one transaction, and only then are
the offsets committed to Kafka. A crash anywhere replays from the last committed offset and the
inbox drops what was already applied. A message that cannot be decoded, or whose handler keeps
failing, goes to the consumer group's dead-letter topic with the reason in its headers, and the
consumer carries on. Database or broker outages are retried until they pass: they are never a
reason to dead-letter.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Counter, Gauge

from omnistock.platform import events, faults
from omnistock.platform.kafka import consumer_config, create_producer, dead_letter_topic
from omnistock.platform.settings import Settings

log = structlog.get_logger(__name__)

Handler = Callable[[asyncpg.Connection, Sequence[events.Event[Any]]], Awaitable[None]]
"""Applies consecutive events of one type, inside the batch's transaction."""

APPLIED = Counter("omnistock_consumer_applied_total", "Events applied", ["group"])
DUPLICATES = Counter("omnistock_consumer_duplicates_total", "Redelivered events dropped", ["group"])
DEAD_LETTERED = Counter("omnistock_consumer_dead_lettered_total", "Events dead-lettered", ["group"])
RESTARTS = Counter(
    "omnistock_consumer_restarts_total", "Kafka clients replaced after a fatal error", ["group"]
)
LAG = Gauge("omnistock_consumer_lag", "Messages behind the end of the topic", ["group", "topic"])

TRANSIENT = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
)


PARALLEL_FROM = 500
# Offsets of applied batches go to the broker at most this often (redelivery absorbs the rest).
COMMIT_INTERVAL_S = 0.2
"""Batches of at least this many events are applied a partition at a time, concurrently."""


@dataclass(frozen=True, slots=True)
class Subscription:
    group: str
    topics: Sequence[str]
    handlers: dict[str, Handler]
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Decoded:
    message: Message
    event: events.Event[Any] | None = None
    error: str | None = None


class EventConsumer:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        subscription: Subscription,
        dead_letter_producer: Producer | None = None,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._sub = subscription
        self._decoder = events.EventDecoder(frozenset(subscription.handlers))
        self._dlq = dead_letter_producer
        self._consumer: Consumer | None = None
        self.applied = 0
        self.assigned: list[TopicPartition] = []
        self._applied: dict[tuple[str, int], int] = {}  # next offsets, until committed for sure
        self._unsent: dict[tuple[str, int], int] = {}  # next offsets not yet sent to the broker
        # The revoke callback reads _applied from the polling thread while batches add to it.
        self._applied_lock = threading.Lock()
        self._inbox_group_id: int | None = None
        self._last_commit = 0.0
        self._fatal: str | None = None  # why the current client failed for good
        self.restarts = 0

    async def run(self, stop: asyncio.Event) -> None:
        if not await self._resolve_group_id(stop):
            return
        self._dlq = self._dlq or create_producer(self._settings)
        try:
            while not stop.is_set():
                self._fatal = None
                consumer = Consumer(
                    consumer_config(self._settings, self._sub.group, **self._sub.config)
                )
                self._consumer = consumer
                await self._consume(consumer, stop)
                if self._fatal is not None and not stop.is_set():
                    # A fatal error ends a Kafka client for good (a static member fenced after
                    # the broker came back, say): a new one joins again from the committed
                    # offsets, and the inbox drops what this one applied but never committed.
                    self.restarts += 1
                    RESTARTS.labels(self._sub.group).inc()
                    log.error(
                        "consumer failed for good, joining again",
                        group=self._sub.group,
                        error=self._fatal,
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            await asyncio.to_thread(self._dlq.flush, 10)

    async def _consume(self, consumer: Consumer, stop: asyncio.Event) -> None:
        """Until asked to stop or the client fails for good."""
        consumer.subscribe(
            list(self._sub.topics), on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        # While one batch is applied (waiting on the database), the next is fetched and decoded.
        # Batches are still applied one after the other, in order.
        applying: asyncio.Task[bool] | None = None
        try:
            while not stop.is_set() and self._fatal is None:
                messages = await asyncio.to_thread(self._next_batch, consumer)
                decoded = self._decode(messages)
                if applying is not None:
                    complete = await applying
                    applying = None
                    if not complete:
                        # A batch was left unapplied (we are stopping): applying the prefetched
                        # one would commit offsets past it. Both are redelivered instead.
                        break
                if messages and not stop.is_set():
                    applying = asyncio.create_task(self._process(consumer, messages, decoded, stop))
            if applying is not None:
                await applying
        finally:
            if applying is not None and not applying.done():
                applying.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await applying
            # Close leaves the group at once, so partitions move to a survivor without waiting
            # for the session timeout; what was applied is committed first.
            await asyncio.to_thread(self._commit_applied, consumer)
            with contextlib.suppress(KafkaException, RuntimeError):
                await asyncio.to_thread(consumer.close)
            self.assigned = []

    def _next_batch(self, consumer: Consumer) -> list[Message]:
        # consume(n, timeout) waits until it has n messages or the timeout passes, which at a
        # low rate adds the whole timeout to every event's latency. Wait for the first message
        # only, then take what has already been fetched.
        # At most one commit per interval: each is a request to the group coordinator, and a
        # queue of them holds back the heartbeats behind it until the session times out.
        unsent: list[TopicPartition] = []
        if time.monotonic() - self._last_commit >= COMMIT_INTERVAL_S:
            with self._applied_lock:
                unsent = [TopicPartition(t, p, o) for (t, p), o in self._unsent.items()]
                self._unsent.clear()
        if unsent:
            self._last_commit = time.monotonic()
            try:
                consumer.commit(offsets=unsent, asynchronous=True)
            except KafkaException as exc:  # a lost commit only means redelivery
                self._note_fatal(exc)
                log.warning("offset commit failed", group=self._sub.group, error=str(exc))
        first = consumer.poll(0.2)
        if first is None:
            return []
        return [first, *consumer.consume(self._settings.consumer_batch_size - 1, 0)]

    def _note_fatal(self, exc: KafkaException) -> None:
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and _is_fatal(error):
            self._fatal = str(error)

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned = list(partitions)
        log.info("partitions assigned", group=self._sub.group, count=len(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # This runs inside a poll. Offsets of applied batches were committed asynchronously:
        # make sure they have landed before the partitions move, so the next owner starts
        # where this one stopped. A batch still being applied commits its offsets too late
        # for this generation; the next owner gets it again and its inbox drops it.
        self._commit_applied(consumer)
        self.assigned = []
        log.info("partitions revoked", group=self._sub.group, count=len(partitions))

    def _commit_applied(self, consumer: Consumer) -> None:
        with self._applied_lock:
            if not self._applied:
                return
            offsets = [TopicPartition(t, p, o) for (t, p), o in self._applied.items()]
            self._applied.clear()
            self._unsent.clear()
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # Losing the commit only means redelivery, which the inbox absorbs.
            log.warning("offset commit failed", group=self._sub.group, error=str(exc))

    def _decode(self, messages: list[Message]) -> list[_Decoded]:
        decoded: list[_Decoded] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if _is_fatal(error):
                    self._fatal = str(error)
                elif error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error", error=str(error))
                continue
            try:
                decoded.append(_Decoded(message, self._decoder.decode(message.value())))
            except events.InvalidEvent as exc:
                decoded.append(_Decoded(message, error=str(exc)))
        return decoded

    async def _process(
        self,
        consumer: Consumer,
        messages: list[Message],
        decoded: list[_Decoded],
        stop: asyncio.Event,
    ) -> bool:
        """Apply a batch and commit its offsets; False if part of it was left unapplied."""
        for item in decoded:
            if item.error is not None and not await self._park(item.message, item.error, stop):
                return False
        # A large batch (a backlog) is applied a partition at a time, concurrently, each in a
        # transaction of its own and in its own order: Kafka promises no order across
        # partitions, so neither do we, and the database works on several at once. A small
        # batch is one transaction: one commit instead of several keeps latency low.
        valid = [item for item in decoded if item.event is not None]
        by_partition: dict[tuple[str | None, int | None], list[_Decoded]] = {}
        if len(valid) < PARALLEL_FROM:
            by_partition = {(None, None): valid} if valid else {}
        else:
            for item in valid:
                key = (item.message.topic(), item.message.partition())
                by_partition.setdefault(key, []).append(item)
        outcomes = await asyncio.gather(
            *(self._apply_with_retry(items, stop) for items in by_partition.values())
        )
        # What was not applied (we are stopping) is not committed: it will be redelivered.
        failed = {key for key, done in zip(by_partition, outcomes, strict=True) if not done}
        if (None, None) in failed:
            return False
        offsets = [tp for tp in _next_offsets(messages) if (tp.topic, tp.partition) not in failed]
        if offsets:
            faults.point("consumer.before_commit")
            # Committed asynchronously by the fetching thread before its next poll: the effect
            # is already durable, and a commit lost in a crash only means redelivery, which the
            # inbox absorbs. Keeps the broker round trip and librdkafka's locks off this loop.
            with self._applied_lock:
                for tp in offsets:
                    self._applied[(tp.topic, tp.partition)] = tp.offset
                    self._unsent[(tp.topic, tp.partition)] = tp.offset
        return not failed

    async def _apply_with_retry(self, batch: list[_Decoded], stop: asyncio.Event) -> bool:
        """Apply the batch in one transaction; False if asked to stop while it kept failing."""
        backoff = 0.05
        while True:
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    await self._apply(conn, [item.event for item in batch if item.event])
                return True
            except TRANSIENT as exc:
                log.warning("transient failure, retrying", group=self._sub.group, error=str(exc))
            except Exception:
                # Some event in the batch fails: apply them one by one to find it.
                return await self._apply_one_by_one(batch, stop)
            if stop.is_set():
                return False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _resolve_group_id(self, stop: asyncio.Event) -> bool:
        """The group's inbox number, before any event is taken. Committed on its own, never in
        an effect's transaction, whose rollback would take it along; until the database
        answers (or has its migrations) nothing is consumed, so nothing is dead-lettered."""
        while not stop.is_set():
            try:
                async with self._pool.acquire() as conn:
                    self._inbox_group_id = await group_id(conn, self._sub.group)
                return True
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("inbox not reachable, waiting", group=self._sub.group, error=str(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        return False

    async def _apply(self, conn: asyncpg.Connection, batch: list[events.Event[Any]]) -> None:
        fresh_ids = set(
            await conn.fetchval(
                """WITH ins AS (
                       INSERT INTO inbox (group_id, event_id)
                       SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING RETURNING event_id)
                   SELECT coalesce(array_agg(event_id::text), '{}') FROM ins""",
                self._inbox_group_id,
                list(dict.fromkeys(event.id for event in batch)),
            )
        )
        fresh: list[events.Event[Any]] = []
        for event in batch:
            if event.id in fresh_ids:
                fresh_ids.discard(event.id)  # a duplicate inside one batch is applied once
                fresh.append(event)
        DUPLICATES.labels(self._sub.group).inc(len(batch) - len(fresh))
        for run in _runs_of_one_type(fresh):
            await self._sub.handlers[run[0].type](conn, run)
            faults.point("consumer.mid_batch")
        self.applied += len(fresh)
        APPLIED.labels(self._sub.group).inc(len(fresh))

    async def _apply_one_by_one(self, batch: list[_Decoded], stop: asyncio.Event) -> bool:
        """Apply each event alone; one that keeps failing is dead-lettered with the reason."""
        for item in batch:
            assert item.event is not None
            # Only the handler's own failures count towards dead-lettering: an outage of the
            # database is waited out however long it lasts, and costs the event nothing.
            failures = outages = 0
            while True:
                try:
                    async with self._pool.acquire() as conn, conn.transaction():
                        await self._apply(conn, [item.event])
                    break
                except TRANSIENT:
                    if stop.is_set():
                        return False
                    outages += 1
                    await asyncio.sleep(min(0.05 * 2**outages, 5.0))
                except Exception as exc:
                    failures += 1
                    if failures >= self._settings.consumer_max_attempts:
                        reason = f"handler failed {failures} times: {exc!r}\n" + "".join(
                            traceback.format_exception(exc, limit=-5)
                        )
                        if not await self._park(item.message, reason, stop):
                            return False
                        break
                    await asyncio.sleep(0.05 * failures)
        return True

    async def _park(self, message: Message, reason: str, stop: asyncio.Event) -> bool:
        """Dead-letter a message, retrying while the broker does not acknowledge; False if
        asked to stop first (then nothing past it is committed)."""
        backoff = 0.1
        while True:
            try:
                await self._dead_letter(message, reason)
                return True
            except OSError as exc:
                log.warning("dead-letter topic unavailable, retrying", error=str(exc))
            if stop.is_set():
                return False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _dead_letter(self, message: Message, reason: str) -> None:
        assert self._dlq is not None
        original = message.headers() or []
        # Consumed messages carry headers as a list of pairs (a dict only when producing).
        headers: list[tuple[str, str | bytes | None]] = list(original)  # type: ignore[arg-type]
        headers += [
            ("dlq.reason", reason.encode()[:8000]),
            ("dlq.consumer_group", self._sub.group.encode()),
            ("dlq.topic", str(message.topic()).encode()),
            ("dlq.partition", str(message.partition()).encode()),
            ("dlq.offset", str(message.offset()).encode()),
        ]
        errors: list[KafkaError] = []
        self._dlq.produce(
            dead_letter_topic(self._sub.group),
            value=message.value(),
            key=message.key(),
            headers=headers,
            on_delivery=lambda err, _msg: errors.append(err) if err else None,
        )
        remaining = await asyncio.to_thread(self._dlq.flush, 30)
        if remaining or errors:
            # Never commit past a message we could not park: retry the whole batch later.
            raise OSError(f"dead-letter topic did not acknowledge: {errors or remaining}")
        DEAD_LETTERED.labels(self._sub.group).inc()
        log.warning(
            "event dead-lettered",
            group=self._sub.group,
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            reason=reason.splitlines()[0],
        )

    def lag(self) -> dict[str, int]:
        """Messages between the committed position and the end of each assigned partition."""
        consumer = self._consumer
        if consumer is None:
            return {}
        totals: dict[str, int] = {}
        for tp in consumer.position(self.assigned):
            with contextlib.suppress(Exception):
                _low, high = consumer.get_watermark_offsets(tp, cached=True) or (0, 0)
                behind = max(0, high - tp.offset) if tp.offset >= 0 else high
                totals[tp.topic] = totals.get(tp.topic, 0) + behind
        for topic, behind in totals.items():
            LAG.labels(self._sub.group, topic).set(behind)
        return totals


def _runs_of_one_type(batch: list[events.Event[Any]]) -> list[list[events.Event[Any]]]:
    runs: list[list[events.Event[Any]]] = []
    for event in batch:
        if runs and runs[-1][0].type == event.type:
            runs[-1].append(event)
        else:
            runs.append([event])
    return runs


def _next_offsets(messages: list[Message]) -> list[TopicPartition]:
    last: dict[tuple[str, int], int] = {}
    for message in messages:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if message.error() is None and topic is not None and partition is not None:
            last[(topic, partition)] = offset if offset is not None else -1
    return [TopicPartition(topic, part, offset + 1) for (topic, part), offset in last.items()]


async def group_id(conn: asyncpg.Connection, group: str) -> int:
    """The consumer group's number in the inbox, given on first use."""
    found: int | None = await conn.fetchval(
        "SELECT group_id FROM consumer_groups WHERE name = $1", group
    )
    if found is None:
        found = await conn.fetchval(
            """INSERT INTO consumer_groups (name) VALUES ($1)
               ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING group_id""",
            group,
        )
    assert found is not None
    return found


def _is_fatal(error: KafkaError) -> bool:
    # The client reports its fatal state as an error event whose own fatal flag is unset.
    return bool(error.fatal()) or error.code() == KafkaError._FATAL
