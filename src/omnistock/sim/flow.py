"""The event flow of a fleet as an operator watches it: how far each consumer group of the run
is behind its topics, and how old the oldest event waiting in each service's outbox is. A
drill counts the flow current again once both are back to nothing; the invariant checker waits
for it before it compares a reader's view with the writer's."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import asyncpg
from confluent_kafka import Consumer, KafkaException, TopicPartition

from omnistock.platform import kafka
from omnistock.services import SERVICES as REGISTRY
from omnistock.sim.fleet import GROUP_TOPICS, GROUPS, Fleet

# An event is in flight, not stuck, while it is younger than this: the relay wakes on every
# commit and polls every half second.
OUTBOX_GRACE_S = 2.0
CALL_TIMEOUT_S = 3.0
# What a query raises while the database is away or on its way back.
DATABASE_DOWN = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def with_schema(service: str) -> bool:
    package = REGISTRY[service].package
    return resources.files(package).joinpath("migrations").is_dir()


@dataclass
class Schemas:
    """One connection per service schema for the auditor, opened again after the database
    went away (a drill kills it)."""

    fleet: Fleet
    _connections: dict[str, Any] = field(default_factory=dict)
    # A connection runs one query at a time; the drill's watchers share them.
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    @property
    def services(self) -> list[str]:
        return [s for s in self.fleet.services if with_schema(s)]

    @contextlib.asynccontextmanager
    async def connection(self, service: str) -> AsyncIterator[Any]:
        async with self._locks.setdefault(service, asyncio.Lock()):
            conn: Any = self._connections.get(service)
            if conn is None or conn.is_closed():
                conn = await asyncio.wait_for(self.fleet.connect(service), CALL_TIMEOUT_S)
                self._connections[service] = conn
            try:
                yield conn
            except BaseException:
                # Whatever went wrong, the next use starts from a fresh connection.
                self._connections.pop(service, None)
                conn.terminate()
                raise

    @contextlib.asynccontextmanager
    async def snapshot(self, service: str) -> AsyncIterator[Any]:
        """A read-only transaction that sees the whole schema as of one instant."""
        async with (
            self.connection(service) as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            yield conn

    async def close(self) -> None:
        for conn in self._connections.values():
            conn.terminate()
        self._connections.clear()


@dataclass(frozen=True, slots=True)
class Backlog:
    """What the flow held at one look: events behind per consumer group (None: the broker did
    not answer) and events waiting per outbox, with the oldest one's age."""

    lag: dict[str, int] | None
    outbox: dict[str, tuple[int, float]]


class Flow:
    """Consumer lag of the run's groups (from the broker) and outbox backlogs (from the
    schemas). Kafka's clients are blocking: they run in a thread, one call at a time."""

    def __init__(self, fleet: Fleet, schemas: Schemas) -> None:
        self.fleet = fleet
        self.schemas = schemas
        self.topics = {
            fleet.group(setting): GROUP_TOPICS[setting]
            for service, settings in GROUPS.items()
            if service in fleet.services
            for setting in settings
        }
        self.groups = list(self.topics)
        # A consumer per group that never joins it, only to read what the group committed.
        # (The admin client's group requests can abort the process when the broker dies
        # under them: a librdkafka assertion, seen in these drills.)
        self._readers = {
            group: Consumer(kafka.consumer_config(fleet.settings, group)) for group in self.groups
        }
        self._offsets = Consumer(
            kafka.consumer_config(fleet.settings, f"omnistock.sim.watch.{uuid.uuid4().hex}")
        )
        self._partitions: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            for reader in self._readers.values():
                reader.close()
            self._offsets.close()

    async def look(self) -> Backlog:
        outbox = await self._outboxes()
        try:
            lag: dict[str, int] | None = await asyncio.to_thread(self._lag)
        except KafkaException:
            lag = None
        return Backlog(lag, outbox)

    async def current(self, within_s: float = 2.0) -> bool:
        """Every outbox empty of all but in-flight events, and every group at the end offsets
        the topics had now, within ``within_s`` (groups commit every few hundred ms, so under
        steady traffic a lag of exactly 0 is seldom seen at one instant)."""
        if not (await self._outboxes_current()):
            return False
        try:
            return await asyncio.to_thread(self._caught_up, within_s)
        except KafkaException:
            return False

    async def outbox_drained_until(self, service: str, instant: Any, timeout_s: float) -> bool:
        """Until ``service``'s outbox holds nothing written at or before ``instant`` (a
        database timestamp)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(*DATABASE_DOWN):
                async with self.schemas.connection(service) as conn:
                    waiting = await conn.fetchval(
                        "SELECT count(*) FROM outbox WHERE created_at <= $1", instant
                    )
                if waiting == 0:
                    return True
            await asyncio.sleep(0.2)
        return False

    async def group_caught_up(self, group: str, timeout_s: float) -> bool:
        """Until ``group`` has read every partition to the end it has now."""
        try:
            return await asyncio.to_thread(self._caught_up, timeout_s, [group])
        except KafkaException:
            return False

    async def _outboxes(self) -> dict[str, tuple[int, float]]:
        found: dict[str, tuple[int, float]] = {}
        for service in self.schemas.services:
            with contextlib.suppress(*DATABASE_DOWN):
                async with self.schemas.connection(service) as conn:
                    row = await asyncio.wait_for(
                        conn.fetchrow(
                            """SELECT count(*) AS waiting,
                                      coalesce(extract(epoch FROM clock_timestamp()
                                                       - min(created_at)), 0) AS age
                               FROM outbox"""
                        ),
                        CALL_TIMEOUT_S,
                    )
                found[service] = (int(row["waiting"]), float(row["age"]))
        return found

    async def _outboxes_current(self) -> bool:
        outbox = await self._outboxes()
        return len(outbox) == len(self.schemas.services) and all(
            age < OUTBOX_GRACE_S for _, age in outbox.values()
        )

    # -- Kafka, in a thread --

    def _committed(self, groups: list[str]) -> dict[str, dict[tuple[str, int], int]]:
        """The offsets each group committed, per partition of the topics it reads."""
        found: dict[str, dict[tuple[str, int], int]] = {}
        with self._lock:
            for group in groups:
                asked = [
                    TopicPartition(topic, partition)
                    for topic in self.topics[group]
                    for partition in self._partitions_of(topic)
                ]
                committed = self._readers[group].committed(asked, timeout=CALL_TIMEOUT_S)
                found[group] = {(tp.topic, tp.partition): tp.offset for tp in committed}
        return found

    def _partitions_of(self, topic: str) -> list[int]:
        if topic not in self._partitions:
            listed = self._offsets.list_topics(topic, timeout=CALL_TIMEOUT_S).topics[topic]
            self._partitions[topic] = sorted(listed.partitions)
        return self._partitions[topic]

    def _ends(self, partitions: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
        with self._lock:
            return {
                (topic, partition): self._offsets.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=CALL_TIMEOUT_S, cached=False
                )[1]
                for topic, partition in partitions
            }

    def _lag(self) -> dict[str, int]:
        committed = self._committed(self.groups)
        ends = self._ends({tp for offsets in committed.values() for tp in offsets})
        return {
            group: sum(max(0, ends[tp] - max(0, offset)) for tp, offset in offsets.items())
            for group, offsets in committed.items()
        }

    def _caught_up(self, within_s: float, groups: list[str] | None = None) -> bool:
        chosen = groups or self.groups
        committed = self._committed(chosen)
        ends = self._ends({tp for offsets in committed.values() for tp in offsets})
        deadline = time.monotonic() + within_s
        while True:
            behind = [
                group
                for group, offsets in committed.items()
                if any(offsets[tp] < ends[tp] for tp in offsets)
            ]
            if not behind:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
            committed.update(self._committed(behind))
