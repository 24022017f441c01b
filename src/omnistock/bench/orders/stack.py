"""The services an orders run drives, each an ``omnistock serve`` process on a fresh schema of
the run, and the channel they sell in: SKUs stocked in inventory and priced in pricing."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from confluent_kafka import Consumer, KafkaException, TopicPartition

from omnistock.bench.common import console, create_topics, delete_topics, drop_schema, fresh_schema
from omnistock.bench.host import process_cpu_ms, stack_cpu_ms
from omnistock.contracts import ALL_TOPICS
from omnistock.orders import consumers
from omnistock.platform import db, kafka
from omnistock.platform.auth import mint_token
from omnistock.platform.children import free_ports
from omnistock.platform.clock import SystemClock
from omnistock.platform.consumer import Subscription
from omnistock.platform.settings import Settings

T = TypeVar("T")
SERVICES = ("inventory", "pricing", "payments", "orders")
CHANNEL, WAREHOUSE, CURRENCY = "bench-pl", "bench-wh", "PLN"
ON_HAND = 1_000  # units of each SKU: plenty for a run, so that no order is refused for stock
PRICE_CHUNK = 1_000  # prices per request, pricing's limit


def sku_of(n: int) -> str:
    return f"SKU-{n:06d}"


def price_of(n: int) -> int:
    return 1_999 + (n % 100) * 100


@dataclass(frozen=True, slots=True)
class Stack:
    settings: Settings
    run: str
    urls: dict[str, str]
    schemas: dict[str, str]
    pids: dict[str, int]

    def cpu_ms(self) -> dict[str, float]:
        """CPU time each service process (and this one, the load), and the local stack's
        PostgreSQL and Kafka when they run here, have used so far: a cost per order that the
        other work on a shared machine inflates far less than it does rates."""
        used = {name: process_cpu_ms(pid) for name, pid in self.pids.items()}
        return {**used, "load": process_cpu_ms(os.getpid()), **stack_cpu_ms()}

    def token(self, subject: str, scopes: list[str]) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(self.settings, subject, scopes, 24 * 3600)}"}


def _environment(
    name: str, urls: dict[str, str], subscriptions: list[Subscription]
) -> dict[str, str]:
    env = {**os.environ, "OMNISTOCK_LOG_LEVEL": "WARNING"}
    if name == "inventory":
        # The bench is one client making every checkout's reservation, and the orders service
        # is one client reserving for every order: far beyond a storefront's share.
        env["OMNISTOCK_INVENTORY_RESERVATIONS_PER_CLIENT_PER_S"] = "1000000"
        env["OMNISTOCK_INVENTORY_RESERVATION_BURST"] = "1000000"
    if name == "orders":
        env.update(
            {
                "OMNISTOCK_ORDERS_INVENTORY_URL": urls["inventory"],
                "OMNISTOCK_ORDERS_PRICING_URL": urls["pricing"],
                "OMNISTOCK_ORDERS_PAYMENTS_URL": urls["payments"],
                # Groups of this run only: no other orders service shares their events.
                "OMNISTOCK_ORDERS_PAYMENTS_GROUP": subscriptions[0].group,
                "OMNISTOCK_ORDERS_FULFILMENT_GROUP": subscriptions[1].group,
            }
        )
    # No OMNISTOCK_PAYMENTS_PSP_URL: payments runs the PSP simulator inside itself, which
    # answers at once and approves every card but the test tokens that decline.
    return env


def _subscriptions(run: str) -> list[Subscription]:
    """What the run's orders service reads, in groups of the run."""
    clock = SystemClock()
    return [
        consumers.subscription(clock, f"omnistock.bench.{run}.payment-decisions"),
        consumers.fulfilment_subscription(clock, f"omnistock.bench.{run}.fulfilment"),
    ]


def patiently(action: Callable[[], T], timeout_s: float = 120) -> T:
    """``action()``, tried again while the broker cannot answer yet (a restarted broker
    changes leaders and loads its group coordinators for a while)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return action()
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def end_of(consumer: Consumer, topic: str, partition: int) -> int:
    """The partition's end offset."""
    place = TopicPartition(topic, partition)
    _, high = patiently(lambda: consumer.get_watermark_offsets(place, timeout=10))
    return int(high)


def _start_at_the_ends(settings: Settings, subscriptions: list[Subscription]) -> None:
    """The run's groups begin where the topics end now: the shared topics hold days of other
    runs' events, which a new group would otherwise read first, while the run measures."""
    for subscription in subscriptions:
        consumer = Consumer(kafka.consumer_config(settings, subscription.group))
        try:
            ends = []
            for topic in subscription.topics:
                for partition in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                    ends.append(
                        TopicPartition(topic, partition, end_of(consumer, topic, partition))
                    )
            patiently(functools.partial(consumer.commit, offsets=ends, asynchronous=False))
        finally:
            consumer.close()


@contextlib.asynccontextmanager
async def started(settings: Settings, run: str) -> AsyncIterator[Stack]:
    """The four services until the block ends; their warnings and errors in the temp folder."""
    subscriptions = _subscriptions(run)
    dead_letters = [
        kafka.TopicSpec(kafka.dead_letter_topic(s.group), partitions=1) for s in subscriptions
    ]
    await create_topics(settings, [*ALL_TOPICS, *dead_letters])
    await asyncio.to_thread(_start_at_the_ends, settings, subscriptions)
    schemas = {name: f"bench_orders_{run}_{name}" for name in SERVICES}
    for name, schema in schemas.items():
        await fresh_schema(settings, schema, name, f"omnistock.{name}")
    ports = free_ports(len(SERVICES))
    urls = {name: f"http://127.0.0.1:{port}" for name, port in zip(SERVICES, ports, strict=True)}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    logs = Path(tempfile.gettempdir())
    try:
        for name in SERVICES:
            processes[name] = await asyncio.to_thread(
                _spawn,
                name,
                urls,
                schemas[name],
                logs / f"omnistock-bench-orders-{name}.log",
                subscriptions,
            )
        await asyncio.gather(*(_wait_ready(urls[name], processes[name]) for name in SERVICES))
        pids = {name: process.pid for name, process in processes.items()}
        yield Stack(settings, run, urls, schemas, pids)
    except BaseException:
        console.print(f"[red]the services' logs: {logs}/omnistock-bench-orders-*.log")
        raise
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        for schema in schemas.values():
            await drop_schema(settings, schema)
        await delete_topics(settings, [spec.name for spec in dead_letters])


def _spawn(
    name: str,
    urls: dict[str, str],
    schema: str,
    log_path: Path,
    subscriptions: list[Subscription],
) -> subprocess.Popen[bytes]:
    port = urls[name].rsplit(":", 1)[1]
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "omnistock.cli",
                "serve",
                name,
                "--port",
                port,
                "--schema",
                schema,
            ],
            env=_environment(name, urls, subscriptions),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


async def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=url) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the service at {url} exited with {process.returncode}")
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} was not ready after {timeout_s} s")


async def seed(stack: Stack, skus: int) -> None:
    """A warehouse holding ON_HAND units of every SKU, a channel selling from it, and a price
    for each SKU there."""
    admin = stack.token("bench-admin", ["inventory:admin", "inventory:write"])
    async with httpx.AsyncClient(
        base_url=stack.urls["inventory"], headers=admin, timeout=120
    ) as client:
        for path, body in (
            (
                f"/v1/locations/{WAREHOUSE}",
                {"kind": "warehouse", "country": "PL", "name": "bench"},
            ),
            (
                f"/v1/channels/{CHANNEL}",
                {
                    "brand": "bench",
                    "market": "PL",
                    "sourcing": [{"location_id": WAREHOUSE, "priority": 1}],
                },
            ),
        ):
            (await client.put(path, json=body)).raise_for_status()
        snapshot = "sku,location_id,on_hand\n" + "".join(
            f"{sku_of(n)},{WAREHOUSE},{ON_HAND}\n" for n in range(skus)
        )
        imported = await client.post(
            "/v1/stock/bulk",
            params={"source": "bench"},
            content=snapshot.encode(),
            headers={"Content-Type": "text/csv"},
        )
        imported.raise_for_status()
        if imported.json()["applied"] != skus:
            raise RuntimeError(f"stock not seeded: {imported.text}")
    erp = stack.token("bench-erp", ["pricing:admin", "pricing:write"])
    async with httpx.AsyncClient(
        base_url=stack.urls["pricing"], headers=erp, timeout=120
    ) as client:
        listed = await client.put(
            f"/v1/price-lists/{CHANNEL}",
            json={"currency": CURRENCY, "vat_rate_basis_points": 2300},
        )
        listed.raise_for_status()
        for start in range(0, skus, PRICE_CHUNK):
            prices = [
                {"sku": sku_of(n), "amount": price_of(n)}
                for n in range(start, min(skus, start + PRICE_CHUNK))
            ]
            priced = await client.post(
                f"/v1/price-lists/{CHANNEL}/prices",
                json={"prices": prices},
                headers={"Idempotency-Key": f"bench-{stack.run}-{start}"},
            )
            priced.raise_for_status()


async def stock_check(settings: Settings, schema: str) -> dict[str, Any]:
    """Oversold: stock rows holding more than on hand, reserved or allocated counters that
    disagree with the reservations and allocations behind them, SKUs with more units
    allocated than were ever stocked."""
    conn = await db.connect(settings.database_url, schema)
    try:
        row = await conn.fetchrow(
            """WITH allocated AS (
                   SELECT sku, location_id, sum(quantity) AS units FROM allocations
                   WHERE status = 'allocated' GROUP BY 1, 2),
               held AS (
                   SELECT l.sku, l.location_id, sum(l.quantity) AS units
                   FROM reservation_lines l JOIN reservations r USING (reservation_id)
                   WHERE r.status = 'active' GROUP BY 1, 2)
               SELECT
                   (SELECT count(*) FROM stock WHERE reserved + allocated > on_hand)
                   + (SELECT count(*) FROM stock s LEFT JOIN allocated a USING (sku, location_id)
                      WHERE s.allocated <> coalesce(a.units, 0))
                   + (SELECT count(*) FROM stock s LEFT JOIN held h USING (sku, location_id)
                      WHERE s.reserved <> coalesce(h.units, 0))
                   + (SELECT count(*) FROM (
                          SELECT sku, sum(quantity) AS units FROM allocations
                          WHERE status <> 'released' GROUP BY sku) a
                      JOIN (SELECT sku, sum(on_hand) AS units FROM stock GROUP BY sku) s
                      USING (sku) WHERE a.units > s.units) AS oversold,
                   (SELECT coalesce(sum(units), 0)::bigint FROM allocated) AS allocated_units"""
        )
    finally:
        await conn.close()
    return {"oversold": row["oversold"], "allocated_units": row["allocated_units"]}
