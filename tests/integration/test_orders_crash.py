"""kill -9 of the orders and the payments service, several times each, while 500 orders flow
through the saga. Once both run again, every order has ended (cancelled) or waits, confirmed,
for its shipment; no stock is held for a cancelled order, no money is held for one, nothing is
captured twice and what was captured is what the customers kept.

Inventory, pricing and the PSP simulator run as processes of their own; so do orders and
payments, each on a schema and port of its own that they keep across their restarts. Customers
reserve, order and cancel over the public HTTP APIs, a bounded number at a time, sending a
request again under the same Idempotency-Key while a service is down. Kills and restarts
are timed by how many orders have been placed, cancellations by that or by how far the order
has got, never by the clock: a seed (``OMNISTOCK_TEST_SEED``) draws the same run on a fast
machine and a slow one.
"""

from __future__ import annotations

import asyncio
import heapq
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg
import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from omnistock.contracts import collection_points, inventory, orders, payments, pricing
from omnistock.payments.psp import DEVELOPMENT_PSP_API_KEY
from omnistock.platform import db, kafka
from omnistock.platform.settings import Settings
from tests.integration.conftest import (
    bearer,
    create_service_schema,
    drop_schema,
    end_offsets,
    free_port,
    wait_for,
)

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("OMNISTOCK_TEST_SEED", "20250611"))
ORDERS = 500
CLIENTS = 12  # customers at their checkout at any one time
KILLS = 3  # of each of orders and payments
CANCEL_SHARE = 0.16
ON_HAND = 2_000  # of every SKU: stock never runs out, so every refusal has another cause
PRICES = {"TEE": 1_900, "CAP": 2_500, "SNEAKERS": 3_400, "JEANS": 4_900}
DECLINE_ABOVE = 10_000  # the PSP declines larger authorizations
ANSWER_WITHIN_S = 60  # a request unanswered this long (the service never came back) fails
SETTLE_WITHIN_S = 60
RETRY_PAUSE_S = 0.1
FULFIL_SHARE = 1 / 3  # of the orders no customer cancels: shipped, handed over and settled
SPLIT_SHARE = 0.3  # of fulfilled orders of several SKUs: a parcel per allocation
KILL_WITHIN = 30  # the fulfilment kills land within this many handovers

TERMINAL = frozenset({"cancelled", "completed"})
WAITING = frozenset({"confirmed"})  # for its shipment; fulfil() adds where it leaves orders
HOLDS_MONEY = frozenset({"authorizing", "authorized", "reauthorizing", "voiding"})
DECLINING_TOKENS = frozenset({"tok_declined", "tok_insufficient_funds", "tok_async_declined"})
# Weighted PSP tokens per payment method: approvals, declines, decisions that come later by
# webhook, and answers or requests the PSP loses the first time.
TOKENS = {
    "card": {
        "tok_visa": 80,
        "tok_declined": 5,
        "tok_insufficient_funds": 2,
        "tok_async": 5,
        "tok_timeout": 4,
        "tok_lost": 4,
    },
    "pay_later": {"tok_klarna": 80, "tok_async": 10, "tok_async_declined": 10},
    "try_before_you_buy": {"tok_tbyb": 90, "tok_async": 5, "tok_declined": 5},
}
METHODS = {"card": 6, "pay_later": 2, "try_before_you_buy": 2}
DELIVERIES: list[dict[str, Any]] = [
    {
        "kind": "home",
        "address": {
            "name": "Ola Nowak",
            "street": "Prosta 1",
            "city": "Warszawa",
            "postal_code": "00-001",
            "country": "PL",
        },
    },
    {"kind": "store", "store_id": "store-waw-1"},
    {"kind": "locker", "collection_point_id": "locker-waw-17"},
]


# -- the services, as processes --


@dataclass
class Process:
    """One ``omnistock`` command as a process of its own. ``kill`` is kill -9: no shutdown, no
    flush; ``start`` brings it back on the same port (and schema, in ``argv``)."""

    name: str
    argv: list[str]
    port: int
    env: dict[str, str]
    log: IO[bytes]
    popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "omnistock.cli", *self.argv],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )

    def kill(self) -> None:
        assert self.popen is not None
        assert self.popen.poll() is None, f"{self.name} died by itself:\n{self.tail()}"
        os.kill(self.popen.pid, signal.SIGKILL)
        assert self.popen.wait(10) == -signal.SIGKILL

    def tail(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    async def ready(self, timeout_s: float = 60) -> None:
        """Answering ``/readyz``; a process that exits meanwhile fails at once, with its log."""

        async def answers() -> bool:
            assert self.popen is not None
            if self.popen.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")
            try:
                async with httpx.AsyncClient(base_url=self.url) as client:
                    return (await client.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_for(answers, timeout_s, what=f"{self.name} to be ready")

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)


KILLABLE = ("orders", "payments")
SERVICES = ("inventory", "pricing", *KILLABLE)


@dataclass
class Stack:
    settings: Settings
    processes: dict[str, Process]
    pools: dict[str, asyncpg.Pool] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return self.processes[name].url

    async def restart(self, name: str) -> None:
        process = self.processes[name]
        await asyncio.to_thread(process.start)
        await process.ready()


def start_group_at_end(settings: Settings, group: str, topics: list[str]) -> None:
    """Commit the ``topics``' end offsets for a new consumer group: it starts after what other
    runs left in shared topics instead of working through all of them on every restart."""
    consumer = Consumer(kafka.consumer_config(settings, group))
    try:
        offsets = [
            TopicPartition(topic, partition, end)
            for topic in topics
            for partition, end in end_offsets(settings, topic).items()
        ]
        consumer.commit(offsets=offsets, asynchronous=False)
    finally:
        consumer.close()


def environment(urls: dict[str, str], groups: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        "OMNISTOCK_LOG_LEVEL": "WARNING",
        # Five services share PostgreSQL with the tests running alongside: pools of a size
        # that their work here needs, not what a production replica takes.
        "OMNISTOCK_DB_POOL_MAX": "10",
        # The PSP answers slowly enough for kills to land while it thinks, declines large
        # amounts, loses a few requests and answers, and delivers every webhook twice and out
        # of order.
        "OMNISTOCK_PSP_SIM_LATENCY_MS": "30",
        "OMNISTOCK_PSP_SIM_DECLINE_ABOVE": str(DECLINE_ABOVE),
        "OMNISTOCK_PSP_SIM_TIMEOUT_RATE": "0.02",
        "OMNISTOCK_PSP_SIM_LOST_RATE": "0.02",
        "OMNISTOCK_PSP_SIM_SEED": str(SEED),
        "OMNISTOCK_PSP_SIM_ASYNC_DECISION_MS": "300",
        "OMNISTOCK_PSP_SIM_WEBHOOK_DUPLICATES": "true",
        "OMNISTOCK_PSP_SIM_WEBHOOK_SHUFFLE": "true",
        "OMNISTOCK_PAYMENTS_PSP_URL": urls["psp"],
        "OMNISTOCK_PAYMENTS_PSP_TIMEOUT_S": "2",
        # An operation left without an answer (a kill) is taken over after a second, not 30.
        "OMNISTOCK_PAYMENTS_RETRY_AFTER_S": "1",
        "OMNISTOCK_PAYMENTS_RETRY_AT_MOST_S": "2",
        "OMNISTOCK_PAYMENTS_SCHEDULER_INTERVAL_S": "0.2",
        "OMNISTOCK_PAYMENTS_RECOVERY_INTERVAL_S": "0.2",
        "OMNISTOCK_ORDERS_INVENTORY_URL": urls["inventory"],
        "OMNISTOCK_ORDERS_PRICING_URL": urls["pricing"],
        "OMNISTOCK_ORDERS_PAYMENTS_URL": urls["payments"],
        # Consumer groups of this run's own: a group shared with other runs would hand
        # their events to this orders service and rebalance theirs at every kill.
        "OMNISTOCK_ORDERS_PAYMENTS_GROUP": groups["payments"],
        "OMNISTOCK_ORDERS_FULFILMENT_GROUP": groups["fulfilment"],
        # More steps a round, so that the saga keeps closer pace with the customers.
        "OMNISTOCK_ORDERS_WORKER_INTERVAL_S": "0.05",
        "OMNISTOCK_ORDERS_WORKER_BATCH_SIZE": "50",
        "OMNISTOCK_ORDERS_PAYMENT_POLL_S": "0.5",
        # A step's lease (4 x its timeout + 5 s) is what an order waits for after a kill.
        "OMNISTOCK_ORDERS_STEP_TIMEOUT_S": "2",
        # Backoff capped low, and tries enough to outlast a restart of payments: an outage of a
        # few seconds is waited out, not turned into cancelled orders.
        "OMNISTOCK_ORDERS_RETRY_AFTER_S": "0.2",
        "OMNISTOCK_ORDERS_RETRY_AT_MOST_S": "1",
        "OMNISTOCK_ORDERS_COMPENSATION_RETRY_AT_MOST_S": "1",
        "OMNISTOCK_ORDERS_MAX_ATTEMPTS": "12",
    }


@pytest.fixture
async def stack(settings: Settings, tmp_path: Path) -> AsyncIterator[Stack]:
    topics = [
        *inventory.TOPICS,
        *pricing.TOPICS,
        *payments.TOPICS,
        *orders.TOPICS,
        *collection_points.TOPICS,
    ]
    await asyncio.to_thread(kafka.ensure_topics, settings, topics)
    schemas = {
        name: await create_service_schema(settings, name, f"omnistock.{name}") for name in SERVICES
    }
    ports = {name: free_port() for name in (*SERVICES, "psp")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    argv = {
        name: ["serve", name, "--port", str(ports[name]), "--schema", schema]
        for name, schema in schemas.items()
    }
    webhooks = f"{urls['payments']}/v1/psp/webhooks"
    argv["psp"] = ["payments", "psp-sim", "--port", str(ports["psp"]), "--webhook-url", webhooks]
    suffix = uuid.uuid4().hex[:8]
    # Every topic each group subscribes to: a topic left out would start from its earliest
    # offset and hand this run everything other runs left there.
    reads = {
        "payments": [payments.PAYMENTS.name],
        "fulfilment": [inventory.ALLOCATIONS.name, collection_points.PARCELS.name],
    }
    groups = {name: f"orders-crash-{name}-{suffix}" for name in reads}
    for name, read in reads.items():
        await asyncio.to_thread(start_group_at_end, settings, groups[name], read)
    env = environment(urls, groups)
    with ExitStack() as logs:
        processes = {
            name: Process(
                name, args, ports[name], env, logs.enter_context(open_log(tmp_path, name))
            )
            for name, args in argv.items()
        }
        running = Stack(settings, processes)
        try:
            for process in processes.values():
                await asyncio.to_thread(process.start)
            await asyncio.gather(*(processes[name].ready() for name in SERVICES))
            await wait_for(lambda: psp_answers(urls["psp"]), 30, what="the PSP simulator")
            for name, schema in schemas.items():
                running.pools[name] = await db.create_pool(
                    settings.database_url, schema, min_size=1, max_size=4
                )
            yield running
        finally:
            for pool in running.pools.values():
                await pool.close()
            for process in processes.values():
                await asyncio.to_thread(process.stop)
            for schema in schemas.values():
                await drop_schema(settings, schema)


def open_log(directory: Path, name: str) -> IO[bytes]:
    return (directory / f"{name}.log").open("wb")


async def psp_answers(url: str) -> bool:
    try:
        async with httpx.AsyncClient(base_url=url, headers=psp_key()) as client:
            return (await client.get("/sim/payments/none")).status_code == 200
    except httpx.TransportError:
        return False


def psp_key() -> dict[str, str]:
    return {"Authorization": f"Bearer {DEVELOPMENT_PSP_API_KEY}"}


# -- the shop and what its customers will do --


@dataclass(frozen=True)
class Shop:
    channel: str
    location: str
    prices: dict[str, int]  # unit price per SKU


def ok(response: httpx.Response) -> None:
    assert response.is_success, f"{response.request.url}: {response.status_code} {response.text}"


async def open_shop(stack: Stack) -> Shop:
    """Over HTTP: a warehouse holding every SKU, a channel selling from it, and its prices."""
    suffix = uuid.uuid4().hex[:8]
    shop = Shop(
        f"crash{suffix}-pl",
        f"wh-{suffix}",
        {f"{name}-{suffix}": price for name, price in PRICES.items()},
    )
    admin = bearer(stack.settings, "crash-admin", ["inventory:admin", "inventory:write"])
    async with httpx.AsyncClient(base_url=stack.url("inventory"), headers=admin) as client:
        location = {"kind": "warehouse", "country": "PL", "name": "crash warehouse"}
        ok(await client.put(f"/v1/locations/{shop.location}", json=location))
        sourcing = [{"location_id": shop.location, "priority": 1}]
        channel = {"brand": "crash", "market": "PL", "sourcing": sourcing}
        ok(await client.put(f"/v1/channels/{shop.channel}", json=channel))
        for sku in shop.prices:
            count = {"on_hand": ON_HAND, "source": "wms", "sequence": 1}
            ok(await client.put(f"/v1/stock/{shop.location}/{sku}", json=count))
    erp = bearer(stack.settings, "crash-erp", ["pricing:admin", "pricing:write"])
    async with httpx.AsyncClient(base_url=stack.url("pricing"), headers=erp) as client:
        price_list = {"currency": "PLN", "vat_rate_basis_points": 2300}
        ok(await client.put(f"/v1/price-lists/{shop.channel}", json=price_list))
        prices = [{"sku": sku, "amount": amount} for sku, amount in shop.prices.items()]
        ok(
            await client.post(
                f"/v1/price-lists/{shop.channel}/prices",
                json={"prices": prices},
                headers={"Idempotency-Key": f"prices-{suffix}"},
            )
        )
    return shop


@dataclass(frozen=True)
class Cancellation:
    """The customer cancels once the order has reached ``once`` (as far as the customer can
    tell) and ``later`` more orders have been placed."""

    once: str  # one of STAGES
    later: int = 0


@dataclass(frozen=True)
class Plan:
    """One customer's order, drawn before the run."""

    customer: str
    lines: dict[str, int]  # units per SKU
    method: str
    token: str
    delivery: dict[str, Any]
    cancellation: Cancellation | None

    def total(self, shop: Shop) -> int:
        return sum(shop.prices[sku] * units for sku, units in self.lines.items())

    def declined(self, shop: Shop) -> bool:
        return self.token in DECLINING_TOKENS or self.total(shop) > DECLINE_ABOVE


def weighted(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def draw_cancellation(rng: random.Random) -> Cancellation | None:
    """Some customers cancel: at once (racing the reservation's commit), once the stock is
    allocated (racing the payment's creation), once the payment exists (racing its
    authorization), or once the order is confirmed and its money held."""
    if rng.random() >= CANCEL_SHARE:
        return None
    once = rng.choice(list(STAGES))
    return Cancellation(once, rng.randint(0, 20) if once == "placed" else 0)


def draw_plans(rng: random.Random, shop: Shop) -> list[Plan]:
    skus = sorted(shop.prices)
    plans = []
    for n in range(ORDERS):
        chosen = rng.sample(skus, rng.choice([1, 1, 2]))
        method = weighted(rng, METHODS)
        plans.append(
            Plan(
                customer=f"shopper-{n}",
                lines={sku: rng.randint(1, 2) for sku in sorted(chosen)},
                method=method,
                token=weighted(rng, TOKENS[method]),
                delivery=rng.choice(DELIVERIES),
                cancellation=draw_cancellation(rng),
            )
        )
    return plans


@dataclass(frozen=True)
class Kill:
    service: str
    at: int  # once this many orders have been placed
    down_until: int  # started again once this many more have been (orders: at once)


def draw_kills(rng: random.Random) -> list[Kill]:
    kills = [Kill("orders", rng.randint(40, ORDERS - 30), 0) for _ in range(KILLS)]
    kills += [
        Kill("payments", rng.randint(40, ORDERS - 30), rng.randint(0, 25)) for _ in range(KILLS)
    ]
    return sorted(kills, key=lambda kill: kill.at)


STAGES = {"placed": 0, "allocated": 1, "paying": 2, "confirmed": 3}
"""How far an order has got, as far as cancelling goes; "paying": allocated, with a payment
created at payments. Any other status is past all of them."""


def stage(status: str, paying: bool) -> int:
    if status == "allocated" and paying:
        return STAGES["paying"]
    return STAGES.get(status, len(STAGES))


class Flow:
    """The orders still to place, the cancellations that come due, and how many orders have
    been placed: the clock that kills, restarts and most cancellations go by (the others wait
    for their order's stage)."""

    def __init__(self, plans: list[Plan]) -> None:
        self.plans = plans
        self.placed: dict[int, str] = {}  # plan index -> order id
        self.watched: dict[str, int] = {}  # order id -> plan index, until its stage comes
        self._next = 0
        self._cancels: list[tuple[int, int]] = []  # (due once this many are placed, plan index)
        self._changed = asyncio.Condition()

    @property
    def placing(self) -> bool:
        return len(self.placed) < len(self.plans)

    async def reached(self, placed: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.placed) >= placed)

    async def record(self, index: int, order_id: str) -> None:
        async with self._changed:
            self.placed[index] = order_id
            cancellation = self.plans[index].cancellation
            if cancellation is not None and cancellation.once == "placed":
                due = min(len(self.placed) + cancellation.later, len(self.plans))
                heapq.heappush(self._cancels, (due, index))
            elif cancellation is not None:
                self.watched[order_id] = index
            self._changed.notify_all()

    async def arrived(self, stages: dict[str, int]) -> None:
        """The watched orders' stages now: those at their customer's are cancelled."""
        async with self._changed:
            for order_id, reached in stages.items():
                index = self.watched[order_id]
                once = self.plans[index].cancellation
                assert once is not None
                if reached >= STAGES[once.once]:
                    del self.watched[order_id]
                    heapq.heappush(self._cancels, (0, index))
            self._changed.notify_all()

    async def next_work(self) -> tuple[str, int] | None:
        """("cancel", plan index) when a cancellation is due, else ("place", plan index);
        None once nothing is left for this client."""
        async with self._changed:
            while True:
                if self._cancels and self._cancels[0][0] <= len(self.placed):
                    return "cancel", heapq.heappop(self._cancels)[1]
                if self._next < len(self.plans):
                    self._next += 1
                    return "place", self._next - 1
                if not self._cancels and not self.watched:
                    # Orders still being placed schedule their own cancellations.
                    return None
                await self._changed.wait()


async def watch_stages(stack: Stack, flow: Flow) -> None:
    """Tells the flow how far the watched orders have got, so that their customers cancel at
    the stage they wait for. Read from the services' tables, which answer whether or not the
    services are up."""
    seen, last_change = (-1, -1), time.monotonic()
    while flow.placing or flow.watched:
        if watched := list(flow.watched):
            rows = await stack.pools["orders"].fetch(
                "SELECT order_id::text, status FROM orders WHERE order_id = ANY($1::uuid[])",
                watched,
            )
            paying = {
                row["order_id"]
                for row in await stack.pools["payments"].fetch(
                    "SELECT order_id FROM payments WHERE order_id = ANY($1::text[])", watched
                )
            }
            await flow.arrived(
                {row["order_id"]: stage(row["status"], row["order_id"] in paying) for row in rows}
            )
        if (len(flow.placed), len(flow.watched)) != seen:
            seen, last_change = (len(flow.placed), len(flow.watched)), time.monotonic()
        elif time.monotonic() - last_change > ANSWER_WITHIN_S:
            pytest.fail(f"orders stopped moving: {list(flow.watched)} never got to their stage")
        await asyncio.sleep(0.1)


# -- customers --


class Clients:
    """A storefront's client of inventory and the customers' client of orders. A request
    that meets a service down is sent again, unchanged and under the same Idempotency-Key,
    until it is answered."""

    def __init__(self, stack: Stack) -> None:
        self.settings = stack.settings
        storefront = bearer(stack.settings, "crash-storefront", ["inventory:reserve"])
        self.inventory = httpx.AsyncClient(
            base_url=stack.url("inventory"), headers=storefront, timeout=10
        )
        self.orders = httpx.AsyncClient(base_url=stack.url("orders"), timeout=10)
        self._names = {process.port: name for name, process in stack.processes.items()}
        self.unanswered: Counter[str] = Counter()  # requests that met a service down

    async def close(self) -> None:
        await self.inventory.aclose()
        await self.orders.aclose()

    def as_customer(self, plan: Plan, key: str) -> dict[str, str]:
        return {**bearer(self.settings, plan.customer, ["customer"]), "Idempotency-Key": key}

    async def answered(
        self, send: Callable[[], Awaitable[httpx.Response]], what: str
    ) -> httpx.Response:
        deadline = time.monotonic() + ANSWER_WITHIN_S
        while True:
            try:
                response = await send()
                if response.status_code < 500 and response.status_code != 429:
                    return response
                self.unanswered[self._names[response.request.url.port or 0]] += 1
            except httpx.TransportError as exc:
                self.unanswered[self._names[exc.request.url.port or 0]] += 1
            if time.monotonic() > deadline:
                pytest.fail(f"no answer to {what} within {ANSWER_WITHIN_S}s")
            await asyncio.sleep(RETRY_PAUSE_S)


async def place(clients: Clients, shop: Shop, plan: Plan, index: int) -> str:
    """Checkout (a reservation), then the order against it."""
    reservation = await clients.answered(
        lambda: clients.inventory.post(
            "/v1/reservations",
            json={
                "channel_id": shop.channel,
                "lines": [{"sku": sku, "quantity": units} for sku, units in plan.lines.items()],
                "customer_id": plan.customer,
            },
            headers={"Idempotency-Key": f"reserve-{index}"},
        ),
        f"the reservation of order {index}",
    )
    assert reservation.status_code == 201, reservation.text
    body = {
        "channel_id": shop.channel,
        "platform": "web",
        "currency": "PLN",
        "reservation_id": reservation.json()["reservation_id"],
        "lines": [
            {"sku": sku, "quantity": units, "unit_price": shop.prices[sku]}
            for sku, units in plan.lines.items()
        ],
        "delivery": plan.delivery,
        "payment": {"method": plan.method, "token": plan.token},
    }
    headers = clients.as_customer(plan, f"place-{index}")
    placed = await clients.answered(
        lambda: clients.orders.post("/v1/orders", json=body, headers=headers), f"order {index}"
    )
    assert placed.status_code == 201, placed.text
    order_id: str = placed.json()["order_id"]
    return order_id


async def cancel(clients: Clients, plan: Plan, index: int, order_id: str) -> None:
    headers = clients.as_customer(plan, f"cancel-{index}")
    cancelled = await clients.answered(
        lambda: clients.orders.post(f"/v1/orders/{order_id}/cancel", headers=headers),
        f"the cancellation of order {index}",
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] in ("cancelling", "cancelled")


async def customer(clients: Clients, shop: Shop, flow: Flow) -> None:
    while (work := await flow.next_work()) is not None:
        kind, index = work
        plan = flow.plans[index]
        if kind == "cancel":
            await cancel(clients, plan, index, flow.placed[index])
        else:
            await flow.record(index, await place(clients, shop, plan, index))


async def place_all(clients: Clients, shop: Shop, flow: Flow) -> None:
    async with asyncio.TaskGroup() as group:
        for _ in range(CLIENTS):
            group.create_task(customer(clients, shop, flow))


# -- the kills --


@dataclass(frozen=True)
class Hit:
    kill: Kill
    mid_saga: int  # orders the saga was still working on when the kill landed


async def mid_saga(stack: Stack) -> int:
    count: int = await stack.pools["orders"].fetchval(
        "SELECT count(*) FROM orders WHERE NOT status = ANY($1::text[])",
        sorted(TERMINAL | WAITING),
    )
    return count


async def chaos(stack: Stack, flow: Flow, kills: list[Kill]) -> list[Hit]:
    """Each kill when its moment comes; a service is started again while the orders go on,
    and both may be down at once."""
    hits = []
    restarts: dict[str, asyncio.Task[None]] = {}
    async with asyncio.TaskGroup() as group:
        for kill in kills:
            await flow.reached(kill.at)
            if kill.service in restarts:
                await restarts.pop(kill.service)
            hits.append(Hit(kill, await mid_saga(stack)))
            await asyncio.to_thread(stack.processes[kill.service].kill)
            back_at = min(len(flow.placed) + kill.down_until, ORDERS)
            restarts[kill.service] = group.create_task(restart(stack, flow, kill.service, back_at))
    return hits


async def restart(stack: Stack, flow: Flow, service: str, placed: int) -> None:
    await flow.reached(placed)
    await stack.restart(service)


@dataclass(frozen=True)
class Handover:
    """How a confirmed order goes on, drawn before the run."""

    index: int  # the plan's
    split: bool  # a parcel per allocation, else all in one
    keeps: dict[str, bool]  # try before you buy: per SKU, kept (else sent back)


def draw_handovers(rng: random.Random, flow: Flow) -> list[Handover]:
    """The same draws for every plan, chosen or not: a seed picks the same orders and the
    same answers whichever orders the saga happens to cancel."""
    drawn = []
    for index, plan in enumerate(flow.plans):
        chosen = rng.random() < FULFIL_SHARE
        handover = Handover(
            index, rng.random() < SPLIT_SHARE, {s: rng.random() < 0.5 for s in plan.lines}
        )
        # A customer who cancels races the shipment; that is the cancellation tests' matter.
        if chosen and plan.cancellation is None:
            drawn.append(handover)
    return drawn


class Handovers:
    """How many orders have been handed to their customers (delivered or collected): the
    clock that the fulfilment's kills and restarts go by."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self._changed = asyncio.Condition()

    async def one_more(self) -> None:
        async with self._changed:
            self.count += 1
            self._changed.notify_all()

    async def reached(self, count: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.count >= min(count, self.expected))


class Statuses:
    """The statuses of the orders being fulfilled, read from the orders table (which answers
    while the service is down) in one query a round for every order waiting on one."""

    def __init__(self, stack: Stack, order_ids: list[str]) -> None:
        self.pool = stack.pools["orders"]
        self.order_ids = order_ids
        self.now: dict[str, str] = {}

    async def watch(self) -> None:
        while True:
            rows = await self.pool.fetch(
                "SELECT order_id::text, status FROM orders WHERE order_id = ANY($1::uuid[])",
                self.order_ids,
            )
            self.now = {row["order_id"]: row["status"] for row in rows}
            await asyncio.sleep(0.2)

    async def reached(self, order_id: str, wanted: frozenset[str]) -> str:
        status: str = await wait_for(
            lambda: self.now.get(order_id) in wanted and self.now[order_id],
            ANSWER_WITHIN_S,
            what=f"order {order_id} to be {sorted(wanted)}",
        )
        return status


async def sent(
    clients: Clients,
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    response = await clients.answered(lambda: client.post(url, json=body, headers=headers), url)
    ok(response)
    answer: dict[str, Any] = response.json()
    return answer


async def hand_over(
    clients: Clients, statuses: Statuses, handovers: Handovers, order_id: str, drawn: Handover
) -> Callable[[], Awaitable[int]]:
    """Ship the order, deliver or collect it and, for a trial, answer for every line; the
    answer waits for its settlement and tells the value kept."""
    settings, index = clients.settings, drawn.index
    staff = bearer(settings, "crash-carrier", ["orders:read", "orders:fulfil"])
    warehouse = bearer(settings, "crash-warehouse", ["inventory:fulfil"])
    url = f"/v1/orders/{order_id}"
    viewed = await clients.answered(lambda: clients.orders.get(url, headers=staff), url)
    ok(viewed)
    view = viewed.json()
    parcels: list[str] = []
    for n, allocation in enumerate(view["allocations"]):
        parcel = f"parcel-{order_id}-{n if drawn.split else 0}"
        parcels += [] if parcel in parcels else [parcel]
        ship = f"{url}/allocations/{allocation['allocation_id']}/ship"
        await sent(clients, clients.inventory, ship, warehouse, {"shipment_id": parcel})
    await statuses.reached(order_id, frozenset({"shipped"}))
    if view["delivery"]["kind"] == "home":
        for parcel in parcels:
            key = {"Idempotency-Key": f"deliver-{index}-{parcel}"}
            await sent(clients, clients.orders, f"{url}/shipments/{parcel}/delivered", staff | key)
    else:
        key = {"Idempotency-Key": f"ready-{index}"}
        ready = await sent(clients, clients.orders, f"{url}/ready-for-pickup", staff | key, {})
        key = {"Idempotency-Key": f"collect-{index}"}
        code = {"pickup_code": ready["pickup_code"]}
        await sent(clients, clients.orders, f"{url}/collect", staff | key, code)
    await handovers.one_more()
    kept: int = view["total"]
    if view["payment"]["method"] == "try_before_you_buy":
        kept = 0
        for line in view["lines"]:
            keep = drawn.keeps[line["sku"]]
            kept += line["quantity"] * line["unit_price"] if keep else 0
            decision = {"sku": line["sku"], "decision": "keep" if keep else "return"}
            # A line at a time: an answer to some lines must wait for the others.
            customer = {
                **bearer(settings, view["customer_id"], ["customer"]),
                "Idempotency-Key": f"decide-{index}-{line['sku']}",
            }
            await sent(
                clients, clients.orders, f"{url}/trial-decisions", customer, {"lines": [decision]}
            )

    async def settled() -> int:
        await statuses.reached(order_id, frozenset({"completed"}))
        return kept

    return settled


async def kill_over(stack: Stack, handovers: Handovers, kill: Kill) -> Hit:
    await handovers.reached(kill.at)
    hit = Hit(kill, await mid_saga(stack))
    await asyncio.to_thread(stack.processes[kill.service].kill)
    await handovers.reached(kill.at + kill.down_until)
    await stack.restart(kill.service)
    return hit


async def fulfil(stack: Stack, flow: Flow, rng: random.Random) -> dict[str, int]:
    """Ship, deliver and settle a share of the confirmed orders while orders and payments are
    killed once more each; returns the value of the lines each customer kept (order id ->
    minor units), which is what the order's payments must have captured, net of refunds, in
    the end.

    A seeded share of the orders no customer cancels goes on once confirmed: their
    allocations shipped at inventory (whose allocation-shipped events move the orders to
    ``shipped``), delivered (home, a parcel at a time) or made ready for pickup and collected
    with the pickup code (store, locker), try-before-you-buy lines kept or sent back, and
    each order waited for until it is ``completed``. The kills go by the orders handed over,
    never by the clock; payments stays down while more are handed over (nothing of that needs
    it), orders comes back at once."""
    started = time.monotonic()
    drawn = draw_handovers(rng, flow)
    kills = [
        Kill("orders", rng.randint(1, KILL_WITHIN), 0),
        Kill("payments", rng.randint(1, KILL_WITHIN), rng.randint(0, 10)),
    ]
    statuses = Statuses(stack, [flow.placed[d.index] for d in drawn])
    watching = asyncio.create_task(statuses.watch())
    try:
        # Only an order the saga confirmed is shipped; the others it cancels meanwhile.
        for order_id in statuses.order_ids:
            await statuses.reached(order_id, frozenset({"confirmed", "cancelled"}))
        going = [d for d in drawn if statuses.now[flow.placed[d.index]] == "confirmed"]
        assert going, "no order to fulfil"
        handovers = Handovers(len(going))
        limit = asyncio.Semaphore(CLIENTS)
        kept: dict[str, int] = {}

        async def one(order_id: str, handover: Handover) -> None:
            async with limit:
                settled = await hand_over(clients, statuses, handovers, order_id, handover)
            # Waiting for a settlement holds no client: the handovers that bring payments
            # back must go on meanwhile.
            kept[order_id] = await settled()

        async with customers_of(stack) as clients, asyncio.TaskGroup() as group:
            hits = [group.create_task(kill_over(stack, handovers, kill)) for kill in kills]
            for handover in going:
                group.create_task(one(flow.placed[handover.index], handover))
    finally:
        watching.cancel()
    landed = [hit.result() for hit in hits]
    print(
        f"fulfilled {len(kept)} orders in {time.monotonic() - started:.1f}s; "
        f"kills (service, at, mid lifecycle) "
        f"{[(h.kill.service, h.kill.at, h.mid_saga) for h in landed]}"
    )
    assert all(hit.mid_saga > 0 for hit in landed), f"a kill landed on idle orders: {landed}"
    return kept


# -- the end state --


async def unsettled(stack: Stack) -> dict[str, Any]:
    """What is still under way: orders in the middle of their saga, payments with an
    authorization or a void in progress or waiting, operations the PSP has not answered."""
    found: dict[str, Any] = {}
    mid = await stack.pools["orders"].fetch(
        """SELECT status, step, step_attempts, last_error FROM orders
           WHERE NOT status = ANY($1::text[]) ORDER BY updated_at LIMIT 3""",
        sorted(TERMINAL | WAITING),
    )
    if mid:
        found["orders, e.g."] = [dict(row) for row in mid]
    busy = await stack.pools["payments"].fetchval(
        """SELECT count(*) FROM payments
           WHERE status IN ('authorizing', 'reauthorizing', 'voiding')
              OR (status = 'authorized' AND void_requested IS NOT NULL)"""
    )
    if busy:
        found["payments in progress"] = busy
    pending = await stack.pools["payments"].fetchval(
        "SELECT count(*) FROM payment_operations WHERE status = 'pending'"
    )
    if pending:
        found["operations pending"] = pending
    return found


async def settle(stack: Stack) -> None:
    deadline = time.monotonic() + SETTLE_WITHIN_S
    while outstanding := await unsettled(stack):
        if time.monotonic() > deadline:
            logs = "\n".join(f"{name}:\n{stack.processes[name].tail()}" for name in KILLABLE)
            pytest.fail(f"still under way {SETTLE_WITHIN_S}s after the run: {outstanding}\n{logs}")
        await asyncio.sleep(0.2)


@dataclass(frozen=True)
class Order:
    """An order as the orders service holds it at the end."""

    order_id: str
    reservation_id: str
    status: str
    cancel_reason: str | None
    payment_id: str | None
    total: int
    lines: dict[str, int]


async def final_orders(stack: Stack) -> dict[str, Order]:
    pool = stack.pools["orders"]
    lines: dict[str, dict[str, int]] = defaultdict(dict)
    for row in await pool.fetch("SELECT order_id::text, sku, quantity FROM order_lines"):
        lines[row["order_id"]][row["sku"]] = row["quantity"]
    rows = await pool.fetch(
        """SELECT order_id::text, reservation_id::text, status, cancel_reason, payment_id, total
           FROM orders"""
    )
    return {row["order_id"]: Order(**row, lines=lines[row["order_id"]]) for row in rows}


def outcome(order: Order) -> str:
    return f"{order.status}:{order.cancel_reason}" if order.cancel_reason else order.status


def check_orders(shop: Shop, flow: Flow, ends: dict[str, Order]) -> None:
    """One order per plan, each where its plan says it must end."""
    assert len(flow.placed) == ORDERS
    assert set(ends) == set(flow.placed.values()), "an order was placed twice or is missing"
    for index, order_id in flow.placed.items():
        plan, order = flow.plans[index], ends[order_id]
        assert order.status in TERMINAL | WAITING, f"order {index} is stuck: {order}"
        assert order.lines == plan.lines
        assert order.total == plan.total(shop)
        # A saga step may fail for good while a participant is down; apart from that, only
        # the customer and the PSP cancel, and only the orders planned so.
        allowed = {"step_failed"}
        if plan.cancellation is not None:
            allowed.add("cancelled_by_customer")
        if plan.declined(shop):
            allowed.add("payment_declined")
        if plan.cancellation is not None or plan.declined(shop):
            assert order.status == "cancelled", f"order {index} should be cancelled: {order}"
        if order.status == "cancelled":
            assert order.cancel_reason in allowed, f"order {index}: {outcome(order)}"


async def check_stock(stack: Stack, shop: Shop, ends: dict[str, Order]) -> None:
    """A confirmed order holds its lines as allocations; a cancelled one holds nothing: its
    reservation is not active and its allocations are released."""
    pool = stack.pools["inventory"]
    reservations = {
        row["reservation_id"]: (row["status"], row["order_id"])
        for row in await pool.fetch(
            """SELECT reservation_id::text, status, order_id FROM reservations
               WHERE channel_id = $1""",
            shop.channel,
        )
    }
    assert len(reservations) == ORDERS, "a retried checkout reserved twice"
    units: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)  # (order, status) -> sku
    for row in await pool.fetch(
        """SELECT order_id, status, sku, sum(quantity)::int AS units FROM allocations
           WHERE channel_id = $1 GROUP BY order_id, status, sku""",
        shop.channel,
    ):
        units[row["order_id"], row["status"]][row["sku"]] = row["units"]
    open_units: Counter[str] = Counter()
    shipped: Counter[str] = Counter()
    for order in ends.values():
        status, committed_to = reservations[order.reservation_id]
        held, gone = units[order.order_id, "allocated"], units[order.order_id, "shipped"]
        open_units.update(held)
        shipped.update(gone)
        if order.status == "cancelled":
            assert status != "active", f"order {order.order_id} left its reservation held"
            assert not held, f"cancelled order {order.order_id} holds {held}"
            assert not gone, f"cancelled order {order.order_id} shipped {gone}"
        else:
            assert (status, committed_to) == ("committed", order.order_id)
            assert held + gone == Counter(order.lines), f"order {order.order_id}: {held}, {gone}"
    stock = await pool.fetch(
        "SELECT sku, on_hand, reserved, allocated FROM stock WHERE location_id = $1",
        shop.location,
    )
    assert {row["sku"]: (row["reserved"], row["allocated"], row["on_hand"]) for row in stock} == {
        sku: (0, open_units[sku], ON_HAND - shipped[sku]) for sku in shop.prices
    }


@dataclass(frozen=True)
class Payment:
    payment_id: str
    order_id: str
    status: str
    amount: int
    authorized: int
    captured: int
    released: int
    refunded: int
    void_requested: str | None


async def psp_view(stack: Stack, payment_ids: list[str]) -> dict[str, dict[str, Any]]:
    """What the PSP itself holds, captured and refunded for each payment."""
    limit = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=stack.url("psp"), headers=psp_key()) as client:

        async def one(payment_id: str) -> tuple[str, dict[str, Any]]:
            async with limit:
                response = await client.get(f"/sim/payments/{payment_id}")
            ok(response)
            return payment_id, response.json()

        return dict(await asyncio.gather(*(one(p) for p in payment_ids)))


async def check_payments(stack: Stack, ends: dict[str, Order], kept: dict[str, int]) -> None:
    """A confirmed order has one payment, authorized for its total and held at the PSP; a
    cancelled order's payments hold nothing, there or here. Every capture was applied once:
    the PSP charged what payments recorded; and the charges are the value of the kept lines."""
    pool = stack.pools["payments"]
    rows = await pool.fetch(
        """SELECT payment_id::text, order_id, status, amount, authorized, captured, released,
                  refunded, void_requested::text FROM payments"""
    )
    of_order: dict[str, list[Payment]] = defaultdict(list)
    for row in rows:
        of_order[row["order_id"]].append(Payment(**row))
    assert set(of_order) <= set(ends), "a payment for an order that does not exist"
    captures: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for row in await pool.fetch(
        """SELECT payment_id::text, amount, psp_reference FROM payment_operations
           WHERE kind = 'capture' AND status = 'succeeded'"""
    ):
        captures[row["payment_id"]].append((row["amount"], row["psp_reference"]))
    psp = await psp_view(stack, [row["payment_id"] for row in rows])
    for order in ends.values():
        for payment in of_order[order.order_id]:
            check_payment(payment, psp[payment.payment_id], captures[payment.payment_id])
        charged = sum(p.captured - p.refunded for p in of_order[order.order_id])
        assert charged == kept.get(order.order_id, 0), f"order {order.order_id}: {charged}"
        if order.status in TERMINAL:
            check_released(order, of_order[order.order_id])
        elif order.status in WAITING:
            check_held(order, of_order[order.order_id])
    assert sum(p.captured - p.refunded for ps in of_order.values() for p in ps) == sum(
        kept.values()
    )


def check_payment(
    payment: Payment, at_psp: dict[str, Any], captures: list[tuple[int, str]]
) -> None:
    """Payments' record of a payment and the PSP's agree: each capture was applied once, and
    only a payment that says it holds money holds any."""
    references = [reference for _, reference in captures]
    assert len(set(references)) == len(references), f"a capture recorded twice: {payment}"
    assert sum(amount for amount, _ in captures) == payment.captured <= payment.authorized
    assert (at_psp["captured"], at_psp["refunded"]) == (payment.captured, payment.refunded), (
        f"the PSP charged otherwise than payments recorded: {payment}, {at_psp}"
    )
    held = payment.authorized - payment.captured - payment.released
    assert at_psp["held"] == (held if payment.status == "authorized" else 0), (
        f"the PSP holds otherwise than payments recorded: {payment}, {at_psp}"
    )


def check_released(order: Order, found: list[Payment]) -> None:
    """An order that ended holds no money: what was authorized was captured or released."""
    for payment in found:
        assert payment.status not in HOLDS_MONEY, f"cancelled {order.order_id}: {payment}"
        assert payment.authorized == payment.released + payment.captured, payment


def check_held(order: Order, found: list[Payment]) -> None:
    live = [p for p in found if p.status not in ("declined", "voided", "expired")]
    assert len(live) == 1, f"order {order.order_id} has payments {found}"
    (payment,) = live
    assert payment.payment_id == order.payment_id
    assert (payment.status, payment.amount, payment.authorized) == (
        "authorized",
        order.total,
        order.total,
    ), payment
    assert payment.void_requested is None, payment


# -- the test --


@asynccontextmanager
async def customers_of(stack: Stack) -> AsyncIterator[Clients]:
    clients = Clients(stack)
    try:
        yield clients
    finally:
        await clients.close()


async def test_orders_and_payments_killed_under_load_leave_every_order_settled_and_consistent(
    stack: Stack,
) -> None:
    rng = random.Random(SEED)
    shop = await open_shop(stack)
    flow = Flow(draw_plans(rng, shop))
    kills = draw_kills(rng)
    started = time.monotonic()
    async with customers_of(stack) as clients, asyncio.TaskGroup() as group:
        killing = group.create_task(chaos(stack, flow, kills))
        group.create_task(watch_stages(stack, flow))
        await place_all(clients, shop, flow)
        # The fulfilment kills services of its own accord: the placing's kills are over first.
        hits = await killing
        kept = await fulfil(stack, flow, rng)
    customers_s = time.monotonic() - started
    await settle(stack)
    ends = await final_orders(stack)
    outcomes = Counter(outcome(order) for order in ends.values())
    # The run's shape, for whoever reads a failing or a slow run.
    print(
        f"seed {SEED}: customers done after {customers_s:.1f}s, all settled after "
        f"{time.monotonic() - started:.1f}s; kills (service, at, mid saga) "
        f"{[(h.kill.service, h.kill.at, h.mid_saga) for h in hits]}; "
        f"unanswered {dict(clients.unanswered)}; outcomes {dict(outcomes)}"
    )

    check_orders(shop, flow, ends)
    await check_stock(stack, shop, ends)
    await check_payments(stack, ends, kept)
    assert len(hits) == 2 * KILLS
    assert all(hit.mid_saga > 0 for hit in hits), f"a kill landed on an idle saga: {hits}"
    assert clients.unanswered["orders"] > 0, "no kill met a customer"
    for process in stack.processes.values():
        assert process.popen is not None
        assert process.popen.poll() is None, f"{process.name} died by itself:\n{process.tail()}"
    # Both the happy path and compensation ran while the services were being killed.
    assert outcomes["confirmed"] + outcomes["completed"] > ORDERS / 2, outcomes
    assert outcomes["completed"] == len(kept), "an order completed that nobody fulfilled"
    assert outcomes["cancelled:cancelled_by_customer"] > 0, outcomes
    assert outcomes["cancelled:payment_declined"] > 0, outcomes
