"""Integration fixtures: the real PostgreSQL and Kafka of the local stack (``make test`` starts
it). Each test gets a schema and topics of its own, so tests run in parallel without sharing
state. A stack that does not answer fails the run: these tests never skip themselves."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

import asyncpg
import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from fastapi import FastAPI

from omnistock.demo import workers
from omnistock.platform import db, kafka
from omnistock.platform.auth import mint_token
from omnistock.platform.migrations import migrate, migrations_for
from omnistock.platform.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def settings() -> Settings:
    settings = Settings()
    try:
        kafka.admin_client(settings).list_topics(timeout=10)
    except Exception as exc:
        pytest.fail(
            f"Kafka at {settings.kafka_bootstrap} does not answer ({exc}); run `omnistock stack up`"
        )
    _warm_up_idempotent_producers(settings)
    return settings


def _warm_up_idempotent_producers(settings: Settings, timeout_s: float = 120) -> None:
    """A fresh broker answers before it can hand out producer ids: the first idempotent
    producers wait ("coordinator load in progress") for tens of seconds on a busy machine.
    One acknowledged message before the tests start keeps that wait out of their deadlines."""
    topic = "omnistock.test.warm-up"
    kafka.ensure_topics(settings, [kafka.TopicSpec(topic, partitions=1, retention_ms=3_600_000)])
    producer = kafka.create_producer(settings)
    delivered: list[Any] = []
    producer.produce(topic, value=b"warm-up", on_delivery=lambda e, _m: delivered.append(e))
    producer.flush(timeout_s)
    if delivered != [None]:
        pytest.fail(f"Kafka did not acknowledge an idempotent producer's message: {delivered}")


@dataclass
class Sandbox:
    """A schema with the demo's tables and a topic, both private to one test."""

    settings: Settings
    schema: str
    topic: str
    group: str
    pool: asyncpg.Pool

    @property
    def dead_letter_topic(self) -> str:
        return kafka.dead_letter_topic(self.group)


@pytest.fixture
async def sandbox(settings: Settings) -> AsyncIterator[Sandbox]:
    suffix = uuid.uuid4().hex[:10]
    schema, topic, group = f"test_{suffix}", f"test.{suffix}.pings", f"test.{suffix}.pongs"
    conn = await db.connect(settings.database_url, schema)
    try:
        await migrate(conn, schema, migrations_for("demo", "omnistock.demo"))
    finally:
        await conn.close()
    await asyncio.to_thread(
        kafka.ensure_topics,
        settings,
        [
            kafka.TopicSpec(topic, partitions=3),
            kafka.TopicSpec(kafka.dead_letter_topic(group), partitions=1),
        ],
    )
    pool = await db.create_pool(settings.database_url, schema, min_size=1, max_size=8)
    try:
        yield Sandbox(settings, schema, topic, group, pool)
    finally:
        await pool.close()
        conn = await db.connect(settings.database_url, "public")
        try:
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        finally:
            await conn.close()
        await asyncio.to_thread(
            kafka.delete_topics, settings, [topic, kafka.dead_letter_topic(group)]
        )


@pytest.fixture
def processes() -> Iterator[Callable[[BaseProcess], BaseProcess]]:
    """Tracks worker processes and ends whatever a test leaves running."""
    started: list[BaseProcess] = []

    def track(process: BaseProcess) -> BaseProcess:
        started.append(process)
        return process

    yield track
    for process in started:
        if process.is_alive():
            process.kill()
        process.join(10)


def start_relay(sandbox: Sandbox, faults: str = "") -> BaseProcess:
    return workers.start_relay(sandbox.settings, sandbox.schema, {"OMNISTOCK_FAULTS": faults})


def start_consumer(
    sandbox: Sandbox, faults: str = "", instance_id: str | None = None
) -> BaseProcess:
    # Small batches, so that a crash lands in the middle of the stream, not after its end.
    settings = sandbox.settings.model_copy(
        update={"consumer_batch_size": 100, "consumer_instance_id": instance_id}
    )
    return workers.start_consumer(
        settings, sandbox.schema, sandbox.topic, sandbox.group, {"OMNISTOCK_FAULTS": faults}
    )


async def wait_for(
    condition: Callable[[], Any], timeout_s: float = 60.0, what: str = "condition"
) -> Any:
    """Poll until ``condition()`` (sync or async) is truthy; fails the test after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.05)


def read_topic(settings: Settings, topic: str, timeout_s: float = 20.0) -> list[Any]:
    """Every message currently in ``topic``, read from the beginning without a group."""
    consumer = Consumer(kafka.consumer_config(settings, f"reader-{uuid.uuid4().hex}"))
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        partitions = [TopicPartition(topic, p, 0) for p in metadata.partitions]
        ends = {
            tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions
        }
        consumer.assign(partitions)
        messages: list[Any] = []
        deadline = time.monotonic() + timeout_s
        want = sum(ends.values())
        while len(messages) < want and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.5):
                if message.error() is None:
                    messages.append(message)
        return messages
    finally:
        consumer.close()


async def create_service_schema(settings: Settings, service: str, package: str) -> str:
    """A fresh schema with ``service``'s tables (its migrations applied, as before a start)."""
    schema = f"test_{service.replace('-', '_')}_{uuid.uuid4().hex[:10]}"
    conn = await db.connect(settings.database_url, schema)
    try:
        await migrate(conn, schema, migrations_for(service, package))
    finally:
        await conn.close()
    return schema


async def drop_schema(settings: Settings, schema: str) -> None:
    conn = await db.connect(settings.database_url, "public")
    try:
        await conn.execute(f"DROP SCHEMA {db.checked_identifier(schema)} CASCADE")
    finally:
        await conn.close()


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """The offset the next message of each partition of ``topic`` will get."""
    consumer = Consumer(kafka.consumer_config(settings, f"reader-{uuid.uuid4().hex}"))
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in metadata.partitions
        }
    finally:
        consumer.close()


def read_topic_to_end(
    settings: Settings,
    topic: str,
    timeout_s: float = 20.0,
    start: dict[int, int] | None = None,
) -> list[Any]:
    """Every message in ``topic`` from ``start`` (offsets per partition; the beginning by
    default) up to its current end. Unlike ``read_topic`` it stops at the end offsets rather
    than at a message count, so it is quick on compacted topics too, where the log cleaner
    leaves gaps in the offsets."""
    ends = end_offsets(settings, topic)
    begin = {p: (start or {}).get(p, 0) for p in ends}
    reached = {p: begin[p] for p in ends if ends[p] > begin[p]}
    consumer = Consumer(kafka.consumer_config(settings, f"reader-{uuid.uuid4().hex}"))
    try:
        consumer.assign([TopicPartition(topic, p, begin[p]) for p in reached])
        messages: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any(reached[p] < ends[p] for p in reached):
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout_s}s reading {topic} to its end")
            for message in consumer.consume(500, 0.5):
                if message.error() is None and message.offset() < ends[message.partition()]:
                    messages.append(message)
                    reached[message.partition()] = message.offset() + 1
            # A cleaned-away tail leaves the position past the last message read.
            for tp in consumer.position([TopicPartition(topic, p) for p in reached]):
                if tp.offset >= 0:
                    reached[tp.partition] = max(reached[tp.partition], tp.offset)
        return messages
    finally:
        consumer.close()


def bearer(settings: Settings, subject: str, scopes: list[str]) -> dict[str, str]:
    """The Authorization header of a locally minted token."""
    return {"Authorization": f"Bearer {mint_token(settings, subject, scopes)}"}


@asynccontextmanager
async def served(app: FastAPI, headers: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app`` in this process, with the app's lifespan (pool, relay, background
    jobs) running until the block ends, as it would between a start and a graceful stop."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://service", headers=headers, timeout=30
        ) as client:
            yield client


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, never one handed out before in this process: the kernel may
    offer a just-closed probe's port again, and two servers told the same port leave one
    failing to bind while its URL reaches the other."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def serve(
    service: str, schema: str, port: int, stderr: Any = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    """``omnistock serve SERVICE`` as a process of its own, on a schema and port."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "omnistock.cli",
            "serve",
            service,
            "--port",
            str(port),
            "--schema",
            schema,
        ],
        env={**os.environ, "OMNISTOCK_LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


async def wait_ready(base_url: str, timeout_s: float = 60) -> None:
    async def answers() -> bool:
        try:
            async with httpx.AsyncClient(base_url=base_url) as client:
                return (await client.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    await wait_for(answers, timeout_s, what=f"{base_url} to be ready")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def stocked_channel(
    client: httpx.AsyncClient, sku: str, on_hand: int, max_units_per_customer: int | None = None
) -> str:
    """Over HTTP: a warehouse holding ``on_hand`` units of ``sku`` and a channel selling it."""
    warehouse, channel = unique("wh"), unique("shop")
    response = await client.put(
        f"/v1/locations/{warehouse}",
        json={"kind": "warehouse", "country": "PL", "name": warehouse},
    )
    assert response.status_code == 200, response.text
    response = await client.put(
        f"/v1/channels/{channel}",
        json={
            "brand": "b",
            "market": "PL",
            "sourcing": [{"location_id": warehouse, "priority": 1}],
            "max_units_per_customer": max_units_per_customer,
        },
    )
    assert response.status_code == 200, response.text
    response = await client.put(
        f"/v1/stock/{warehouse}/{sku}", json={"on_hand": on_hand, "source": "wms", "sequence": 1}
    )
    assert response.status_code == 200, response.text
    return channel


async def reserved_units(client: httpx.AsyncClient, sku: str) -> int:
    locations = (await client.get(f"/v1/stock/{sku}")).json()["locations"]
    return sum(location["reserved"] for location in locations)


def start_group_at_end(settings: Settings, group: str, topic: str) -> None:
    """Commit ``group``'s offsets at the end of ``topic`` before its consumer first starts, so
    that it reads only what comes next, not the topic's whole history."""
    consumer = Consumer(kafka.consumer_config(settings, group))
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends = [
            TopicPartition(
                topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            )
            for p in partitions
        ]
        consumer.commit(offsets=ends, asynchronous=False)
    finally:
        consumer.close()
