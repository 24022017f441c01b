"""Storefront replicas as real processes reading a stream of availability and price events from
compacted topics of their own: one killed with SIGKILL mid-stream and started again is ready
only once it has caught up, and then answers what a replica that never stopped answers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

import omnistock.contracts  # noqa: F401 - registers the event types
from omnistock.contracts.inventory import AvailabilityChanged
from omnistock.contracts.pricing import PriceChanged
from omnistock.platform import events, kafka
from omnistock.platform.settings import Settings
from tests.integration.conftest import bearer, free_port, unique, wait_for, wait_ready

pytestmark = pytest.mark.integration

CHANNELS = [f"brand-{market}" for market in ("pl", "cz", "sk")]
SKUS = [f"SKU-{n:04d}" for n in range(1000)]
# Versions per (channel, SKU) and topic: 120,000 events in all, enough for a catch-up to take
# a while, so that readiness answered too early would show in the first answers.
ROUNDS = 20
NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)


@pytest.fixture
def topics(settings: Settings) -> Iterator[tuple[str, str]]:
    suffix = unique("storefront")
    names = (f"test.{suffix}.availability", f"test.{suffix}.prices")
    kafka.ensure_topics(
        settings, [kafka.TopicSpec(name, compacted=True, partitions=3) for name in names]
    )
    yield names
    kafka.delete_topics(settings, list(names))


class Replica:
    """``omnistock serve storefront`` on topics of the test's own."""

    def __init__(self, topics: tuple[str, str]) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "omnistock.cli",
                "serve",
                "storefront",
                "--port",
                str(self.port),
            ],
            env={
                **os.environ,
                "OMNISTOCK_LOG_LEVEL": "ERROR",
                "OMNISTOCK_STOREFRONT_AVAILABILITY_TOPIC": topics[0],
                "OMNISTOCK_STOREFRONT_PRICES_TOPIC": topics[1],
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


@pytest.fixture
def replicas(topics: tuple[str, str]) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for replica in started:
        replica.stop()


@pytest.fixture
async def reader(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    headers = bearer(settings, "indexer", ["storefront:quantities"])
    async with httpx.AsyncClient(headers=headers, timeout=10) as client:
        yield client


def stream(round_: int) -> Iterator[Any]:
    """Round ``round_`` of the stream: every SKU's availability and price, each a version up."""
    for channel in CHANNELS:
        for n, sku in enumerate(SKUS):
            version = round_ + 1
            yield AvailabilityChanged(channel, sku, (n + round_) % 9, version)
            yield PriceChanged(channel, sku, version, 1_000 + round_, 1_000 + n, "PLN", False)


def produce(settings: Settings, topics: tuple[str, str], rounds: range) -> None:
    producer = kafka.create_producer(settings)
    for round_ in rounds:
        for payload in stream(round_):
            topic = topics[0] if isinstance(payload, AvailabilityChanged) else topics[1]
            key = f"{payload.channel_id}:{payload.sku}"
            _, value = events.encode(
                payload, source="/test", subject=key, time=NOW, aggregate_version=payload.version
            )
            producer.produce(topic, value=value, key=key)
        producer.poll(0)
    assert producer.flush(30) == 0


async def answers(client: httpx.AsyncClient, replica: Replica) -> dict[str, Any]:
    """Every SKU of every channel as the replica shows it, a listing page at a time."""
    found: dict[str, Any] = {channel: {} for channel in CHANNELS}
    for channel in CHANNELS:
        for start in range(0, len(SKUS), 200):
            page = ",".join(SKUS[start : start + 200])
            answer = await client.get(
                f"{replica.base_url}/v1/channels/{channel}/skus", params={"skus": page}
            )
            assert answer.status_code == 200, answer.text
            found[channel].update(answer.json()["skus"])
    return found


async def readiness_until_ready(client: httpx.AsyncClient, replica: Replica) -> list[int]:
    """Every /readyz status from the moment the replica listens until it is ready."""
    seen: list[int] = []

    async def ready() -> bool:
        try:
            seen.append((await client.get(f"{replica.base_url}/readyz")).status_code)
        except httpx.TransportError:
            return False
        return seen[-1] == 200

    await wait_for(ready, 60, what="the restarted replica to be ready")
    return seen


def expected() -> dict[str, Any]:
    last = ROUNDS - 1
    return {
        channel: {
            sku: {
                "available": (n + last) % 9,
                "price": 1_000 + last,
                "regular_price": 1_000 + n,
                "versions": {"availability": ROUNDS, "price": ROUNDS},
            }
            for n, sku in enumerate(SKUS)
        }
        for channel in CHANNELS
    }


def essentials(found: dict[str, Any]) -> dict[str, Any]:
    keys = ("available", "price", "regular_price", "versions")
    return {
        channel: {sku: {k: figures[k] for k in keys} for sku, figures in skus.items()}
        for channel, skus in found.items()
    }


async def test_a_replica_killed_mid_stream_comes_back_ready_with_the_same_answers(
    settings: Settings,
    topics: tuple[str, str],
    replicas: list[Replica],
    reader: httpx.AsyncClient,
) -> None:
    steady, doomed = Replica(topics), Replica(topics)
    replicas += [steady, doomed]
    await wait_ready(steady.base_url)
    await wait_ready(doomed.base_url)
    metrics = bearer(settings, "prometheus", ["metrics:read"])

    # A first part of the stream, then the rest while the doomed replica is killed.
    await asyncio.to_thread(produce, settings, topics, range(ROUNDS // 3))

    async def reading() -> bool:
        answer = await reader.get(f"{doomed.base_url}/metrics", headers=metrics)
        return "omnistock_storefront_events_total" in answer.text

    await wait_for(reading, 30, what="the replica to read the stream")
    rest = threading.Thread(
        target=produce, args=(settings, topics, range(ROUNDS // 3, ROUNDS)), daemon=True
    )
    rest.start()
    doomed.process.kill()  # SIGKILL: no shutdown of any kind
    doomed.process.wait(10)
    await asyncio.to_thread(rest.join, 60)

    restarted = Replica(topics)
    replicas.append(restarted)
    probes = await readiness_until_ready(reader, restarted)
    # Ready means caught up: the very first answers already hold the whole stream.
    assert essentials(await answers(reader, restarted)) == expected()
    assert 503 in probes, "it listened before it had caught up, and said it was not ready"

    async def steady_caught_up() -> bool:
        return essentials(await answers(reader, steady)) == expected()

    await wait_for(steady_caught_up, 30, what="the replica that never stopped to catch up")
    assert await answers(reader, restarted) == await answers(reader, steady)
