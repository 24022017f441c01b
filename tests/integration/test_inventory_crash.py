"""kill -9 of the inventory service under load loses no acknowledged change and no availability
event: a real server process is killed mid-load and restarted on the same schema and port."""

from __future__ import annotations

import asyncio
import random
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import asyncpg
import httpx
import pytest

from omnistock.contracts.inventory import AVAILABILITY  # registers every event type
from omnistock.platform import db, events
from omnistock.platform.settings import Settings
from tests.integration.conftest import (
    bearer,
    create_service_schema,
    drop_schema,
    end_offsets,
    free_port,
    read_topic_to_end,
    serve,
    wait_for,
    wait_ready,
)

pytestmark = pytest.mark.integration

SCOPES = ["inventory:admin", "inventory:read", "inventory:write", "inventory:reserve"]
WORKERS = 8
LOAD_BEFORE_KILL_S = 1.5
LOAD_AFTER_RESTART_S = 1.5


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Server:
    """``omnistock serve inventory`` as its own process, on a fixed schema and port."""

    schema: str
    port: int
    log: IO[bytes]
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = serve("inventory", self.schema, self.port, stderr=self.log)

    async def ready(self) -> None:
        await wait_ready(self.base_url)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()  # SIGKILL: no shutdown, no flush, exactly like kill -9
        assert self.process.wait(10) == -9

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
async def server(settings: Settings, tmp_path: Path) -> AsyncIterator[Server]:
    schema = await create_service_schema(settings, "inventory", "omnistock.inventory")
    with (tmp_path / "inventory.log").open("wb") as log:
        server = Server(schema, free_port(), log)
        try:
            yield server
        finally:
            server.stop()
            await drop_schema(settings, schema)


@dataclass
class Network:
    locations: list[str]
    channels: list[str]
    skus: list[str]


async def setup_network(client: httpx.AsyncClient) -> Network:
    """Two locations feeding two channels, with stock of three SKUs everywhere."""
    net = Network(
        [unique("wh"), unique("store")],
        [unique("crash-web"), unique("crash-app")],
        [unique("CRASH") for _ in range(3)],
    )
    for location in net.locations:
        response = await client.put(
            f"/v1/locations/{location}",
            json={"kind": "warehouse", "country": "PL", "name": location},
        )
        assert response.status_code == 200, response.text
    for n, channel in enumerate(net.channels):
        sourcing = [
            {"location_id": location, "priority": priority, "safety_stock": n}
            for priority, location in enumerate(net.locations, start=1)
        ]
        response = await client.put(
            f"/v1/channels/{channel}",
            json={"brand": "b", "market": "PL", "sourcing": sourcing},
        )
        assert response.status_code == 200, response.text
    for location in net.locations:
        for sku in net.skus:
            response = await client.put(
                f"/v1/stock/{location}/{sku}",
                json={"on_hand": 200, "source": "setup", "sequence": 1},
            )
            assert response.status_code == 200, response.text
    return net


@dataclass
class Acknowledged:
    """Every change the service answered with a 2xx."""

    reservations: list[str] = field(default_factory=list)
    adjustments: dict[str, int] = field(default_factory=dict)  # reference -> quantity
    counts: list[tuple[str, str, str, int]] = field(default_factory=list)
    failures: int = 0  # requests that got no answer: the service was down

    @property
    def total(self) -> int:
        return len(self.reservations) + len(self.adjustments) + len(self.counts)


async def load(
    server: Server,
    token: dict[str, str],
    net: Network,
    worker: int,
    acked: Acknowledged,
    stop: asyncio.Event,
) -> None:
    """Reservations, adjustments and counts (each worker its own counting source, with an
    increasing sequence) until ``stop``; records what was acknowledged."""
    rng = random.Random(worker)
    source, sequence = f"wms-{worker}", 1
    async with httpx.AsyncClient(base_url=server.base_url, headers=token, timeout=10) as client:
        while not stop.is_set():
            sku, location = rng.choice(net.skus), rng.choice(net.locations)
            kind = rng.choice(["reserve", "reserve", "adjust", "count"])
            try:
                if kind == "reserve":
                    response = await client.post(
                        "/v1/reservations",
                        json={
                            "channel_id": rng.choice(net.channels),
                            "lines": [{"sku": sku, "quantity": rng.randint(1, 2)}],
                        },
                        headers={"Idempotency-Key": unique("key")},
                    )
                    if response.status_code == 201:
                        acked.reservations.append(response.json()["reservation_id"])
                elif kind == "adjust":
                    reference, quantity = unique("adj"), rng.choice([5, 3, -1])
                    response = await client.post(
                        f"/v1/stock/{location}/{sku}/adjustments",
                        json={
                            "quantity": quantity,
                            "reason": "receipt" if quantity > 0 else "store_sale",
                            "reference": reference,
                        },
                        headers={"Idempotency-Key": unique("key")},
                    )
                    if response.status_code == 201:
                        acked.adjustments[reference] = quantity
                else:
                    sequence += 1
                    response = await client.put(
                        f"/v1/stock/{location}/{sku}",
                        json={
                            "on_hand": rng.randint(150, 250),
                            "source": source,
                            "sequence": sequence,
                        },
                    )
                    if response.status_code == 200 and response.json()["status"] == "applied":
                        acked.counts.append((source, sku, location, sequence))
            except httpx.TransportError:
                acked.failures += 1
                await asyncio.sleep(0.02)


async def check_acknowledged_changes(pool: asyncpg.Pool, acked: Acknowledged) -> None:
    found = await pool.fetchval(
        """SELECT count(DISTINCT r.reservation_id) FROM reservations r
           JOIN reservation_lines l USING (reservation_id)
           WHERE r.reservation_id = ANY($1::uuid[])""",
        acked.reservations,
    )
    assert found == len(acked.reservations), "an acknowledged reservation is missing"
    movements = {
        r["reference"]: (r["movements"], r["quantity"])
        for r in await pool.fetch(
            """SELECT reference, count(*) AS movements, sum(quantity) AS quantity
               FROM stock_movements WHERE reference = ANY($1::text[]) GROUP BY reference""",
            list(acked.adjustments),
        )
    }
    assert movements == {ref: (1, qty) for ref, qty in acked.adjustments.items()}, (
        "an acknowledged adjustment is missing from the ledger, or there twice"
    )
    last = {
        (r["source"], r["sku"], r["location_id"]): r["last_sequence"]
        for r in await pool.fetch("SELECT * FROM source_sequences")
    }
    for source, sku, location, sequence in acked.counts:
        assert last.get((source, sku, location), -1) >= sequence, "an acknowledged count is lost"
    drift = await pool.fetchval(
        """SELECT count(*) FROM stock s
           WHERE s.on_hand <> (SELECT coalesce(sum(quantity), 0) FROM stock_movements m
                               WHERE m.sku = s.sku AND m.location_id = s.location_id)"""
    )
    assert drift == 0, "the ledger does not sum to on_hand after the crash"


async def check_availability_reached_kafka(
    settings: Settings, pool: asyncpg.Pool, net: Network, start: dict[int, int]
) -> None:
    """Once the outbox is empty, the last event of every figure carries the figure and version
    of the availability table; and, unless the log cleaner compacted this stretch of the topic
    meanwhile, every version of every figure is there: none was lost to the crash."""

    async def outbox_empty() -> bool:
        return bool(await pool.fetchval("SELECT count(*) = 0 FROM outbox"))

    await wait_for(outbox_empty, 30, what="the restarted relay to empty the outbox")
    figures = {
        f"{r['channel_id']}:{r['sku']}": (r["available"], r["version"])
        for r in await pool.fetch(
            "SELECT * FROM availability WHERE channel_id = ANY($1::text[])", net.channels
        )
    }
    assert len(figures) == len(net.channels) * len(net.skus)
    messages = await asyncio.to_thread(read_topic_to_end, settings, AVAILABILITY.name, 20, start)
    published: dict[str, dict[int, int]] = {key: {} for key in figures}
    offsets: dict[int, list[int]] = {}
    for message in messages:
        offsets.setdefault(message.partition(), []).append(message.offset())
        key = message.key().decode()
        if key not in figures:
            continue  # another test's channel
        event = events.decode(message.value())
        assert event is not None
        assert event.data.version == event.aggregate_version
        # A republished event (the relay died before deleting its row) says the same.
        known = published[key].setdefault(event.aggregate_version, event.data.available)
        assert known == event.data.available
    latest = {
        key: (versions[max(versions)], max(versions)) if versions else None
        for key, versions in published.items()
    }
    assert latest == figures, "the last published figure differs from the service's own"
    compacted = any(
        sorted(found) != list(range(start.get(p, 0), start.get(p, 0) + len(found)))
        for p, found in offsets.items()
    )
    if not compacted:
        missing = {
            key: len(lost)
            for key, (_, version) in figures.items()
            if (lost := set(range(1, version + 1)) - set(published[key]))
        }
        assert not missing, f"versions that never reached Kafka, per figure: {missing}"


async def test_kill_9_under_load_loses_no_acknowledged_change_and_no_availability_event(
    settings: Settings, server: Server
) -> None:
    token = bearer(settings, "crash-test", SCOPES)
    availability_before = await asyncio.to_thread(end_offsets, settings, AVAILABILITY.name)
    server.start()
    await server.ready()
    async with httpx.AsyncClient(base_url=server.base_url, headers=token, timeout=30) as admin:
        net = await setup_network(admin)

    acked, stop = Acknowledged(), asyncio.Event()
    workers = [
        asyncio.create_task(load(server, token, net, n, acked, stop)) for n in range(WORKERS)
    ]
    try:
        # Time under load, and at least that much acknowledged work (a loaded machine is slow).
        await asyncio.sleep(LOAD_BEFORE_KILL_S)
        await wait_for(lambda: acked.total > 50, 60, what="load before the kill")
        before_kill = acked.total
        server.kill()
        server.start()
        await server.ready()
        after_restart = acked.total
        await asyncio.sleep(LOAD_AFTER_RESTART_S)
        await wait_for(lambda: acked.total - after_restart > 50, 60, what="load after the restart")
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert before_kill > 50, "too little load before the kill"
    assert acked.total - after_restart > 50, "too little load after the restart"
    assert acked.failures > 0, "no request met the dead service: the kill was not under load"

    pool = await db.create_pool(settings.database_url, server.schema, min_size=1, max_size=2)
    try:
        await check_acknowledged_changes(pool, acked)
        await check_availability_reached_kafka(settings, pool, net, availability_before)
    finally:
        await pool.close()
