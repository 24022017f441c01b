"""Orders offered to the service, closed loop (as fast as it answers) or open loop (at a fixed
rate), and where they end up: each order's 201 and its final status read from Kafka."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition
from rich.progress import Progress

from omnistock.bench.common import console
from omnistock.bench.orders.client import ConnectionLost, LoadClient
from omnistock.bench.orders.stack import CHANNEL, CURRENCY, end_of, price_of, sku_of
from omnistock.contracts.orders import ORDERS, OrderStatusChanged
from omnistock.platform import events, kafka
from omnistock.platform.settings import Settings

LINES = 2  # SKUs per order, one unit each
CUSTOMERS = 5_000
FINAL = frozenset({"confirmed", "cancelled"})
REQUEST_TIMEOUT_S = 30.0

Body = dict[str, Any]


def order_body(rng: random.Random, skus: int, reservation_id: str | None = None) -> Body:
    picked = sorted(rng.sample(range(skus), LINES))
    body: Body = {
        "channel_id": CHANNEL,
        "platform": "web",
        "customer_id": f"customer-{rng.randrange(CUSTOMERS)}",
        "currency": CURRENCY,
        "lines": [{"sku": sku_of(n), "quantity": 1, "unit_price": price_of(n)} for n in picked],
        "delivery": {"kind": "locker", "collection_point_id": "locker-waw-17"},
        "payment": {"method": "card", "token": "tok_visa"},
    }
    if reservation_id is not None:
        body["reservation_id"] = reservation_id
    return body


class Outcomes:
    """Every order placed in the run: when its 201 came (monotonic clock of this process) and,
    from the orders topic, when it was seen confirmed or cancelled. Kafka is read in a thread
    of its own from the offsets the topic had when the run began."""

    def __init__(self, settings: Settings) -> None:
        self.replied: dict[str, float] = {}
        self.final: dict[str, tuple[str, float]] = {}
        self._settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="orders-topic", daemon=True)
        self._ready = threading.Event()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(90):
            raise RuntimeError("the orders topic could not be read")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _read(self) -> None:
        decoder = events.EventDecoder(frozenset({OrderStatusChanged.TYPE}))
        consumer = Consumer(
            kafka.consumer_config(
                self._settings, f"bench-{uuid.uuid4().hex}", **{"fetch.wait.max.ms": 5}
            )
        )
        try:
            partitions = (
                consumer.list_topics(ORDERS.name, timeout=10).topics[ORDERS.name].partitions
            )
            ends = [
                TopicPartition(ORDERS.name, p, end_of(consumer, ORDERS.name, p)) for p in partitions
            ]
            consumer.assign(ends)
            self._ready.set()
            while not self._stop.is_set():
                for message in consumer.consume(1000, 0.05):
                    if message.error() is not None:
                        continue
                    try:
                        event = decoder.decode(message.value())
                    except events.InvalidEvent:
                        continue  # not ours to judge: the topic is shared with other runs
                    if event is not None and event.data.status in FINAL:
                        self.final.setdefault(
                            event.data.order_id, (event.data.status, time.monotonic())
                        )
        finally:
            consumer.close()

    def unsettled(self, order_ids: list[str] | None = None) -> list[str]:
        return [o for o in (order_ids or list(self.replied)) if o not in self.final]

    async def settle(self, timeout_s: float, what: str) -> float:
        """Until every order placed so far is confirmed or cancelled, or ``timeout_s``; how
        long that took."""
        placed = list(self.replied)
        started = time.monotonic()
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(what, total=len(placed))
            while True:
                left = self.unsettled(placed)
                progress.update(task, completed=len(placed) - len(left))
                waited = time.monotonic() - started
                if not left or waited > timeout_s:
                    return waited
                placed = left
                await asyncio.sleep(0.1)

    def settled(self) -> dict[str, int]:
        """How the orders of this run ended (the topic also carries other services' orders)."""
        ends = [self.final[o][0] for o in self.replied if o in self.final]
        return {status: ends.count(status) for status in sorted(FINAL)}

    def confirm_latencies_ms(self, order_ids: list[str]) -> list[float]:
        return [
            (self.final[o][1] - self.replied[o]) * 1000
            for o in order_ids
            if o in self.final and self.final[o][0] == "confirmed"
        ]


@dataclass
class Tally:
    placed: list[str] = field(default_factory=list)
    refused: dict[int, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def per_s(self) -> float:
        return len(self.placed) / self.elapsed_s if self.elapsed_s else 0.0


async def place(client: LoadClient, body: Body, outcomes: Outcomes, tally: Tally) -> None:
    sent = time.monotonic()
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            status, answer = await client.post(
                "/v1/orders", orjson.dumps(body), {"Idempotency-Key": uuid.uuid4().hex}
            )
    except (OSError, TimeoutError, ConnectionLost, asyncio.IncompleteReadError):
        tally.refused[0] = tally.refused.get(0, 0) + 1
        return
    now = time.monotonic()
    if status != 201:
        tally.refused[status] = tally.refused.get(status, 0) + 1
        if sum(tally.refused.values()) <= 3:
            console.print(f"[yellow]  {status}: {answer[:300].decode(errors='replace')}")
        return
    order_id = orjson.loads(answer)["order_id"]
    outcomes.replied[order_id] = now
    tally.placed.append(order_id)
    tally.latencies_ms.append((now - sent) * 1000)


async def closed_loop(
    client: LoadClient,
    bodies: Iterator[Body],
    clients: int,
    seconds: float,
    outcomes: Outcomes,
    what: str,
) -> Tally:
    """``clients`` clients each placing one order after the other, for ``seconds`` or until
    the bodies run out."""
    tally = Tally()
    started = time.monotonic()
    deadline = started + seconds

    async def one_client() -> None:
        for body in bodies:
            await place(client, body, outcomes, tally)
            if time.monotonic() >= deadline:
                return

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(what, total=seconds)
        runners = asyncio.gather(*(one_client() for _ in range(clients)))
        while not runners.done():
            progress.update(
                task,
                completed=time.monotonic() - started,
                description=f"{what}: {len(tally.placed):,} placed",
            )
            await asyncio.wait([runners], timeout=0.2)
        await runners
    tally.elapsed_s = time.monotonic() - started
    return tally


async def open_loop(
    client: LoadClient,
    make_body: Callable[[], Body],
    rate: float,
    seconds: float,
    outcomes: Outcomes,
    what: str,
) -> Tally:
    """Orders sent at ``rate`` per second whether or not earlier ones were answered."""
    tally = Tally()
    tick = 0.01
    pending: set[asyncio.Task[None]] = set()
    total = int(rate * seconds)
    started = time.monotonic()
    sent = 0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(what, total=total)
        for number in itertools.count(1):
            if sent >= total:
                break
            due = min(total, int((time.monotonic() - started) * rate) + 1)
            for _ in range(due - sent):
                runner = asyncio.create_task(place(client, make_body(), outcomes, tally))
                pending.add(runner)
                runner.add_done_callback(pending.discard)
            sent = max(sent, due)
            if number % 20 == 0:
                progress.update(
                    task, completed=sent, description=f"{what}: {len(tally.placed):,} placed"
                )
            # Paced against the start, so a slow tick does not lower the offered rate.
            await asyncio.sleep(max(0.0, started + number * tick - time.monotonic()))
        await asyncio.gather(*pending)
    tally.elapsed_s = time.monotonic() - started
    return tally
