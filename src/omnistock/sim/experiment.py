"""The cancellation experiment: does omnistock end the overselling the case started from? The
same seeded demand (web orders in every channel, store sales, WMS deliveries) is run twice:
against the old shop's way of keeping stock (``legacy``: channel copies synchronised every few
minutes, on MariaDB) and against omnistock's services, started fresh and reached only through
their HTTP APIs. Each run counts the orders it accepted and later cancelled for lack of stock;
a checkout refused at once is counted apart, since that customer was never promised anything."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import math
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from omnistock.platform.settings import get_settings
from omnistock.sim.fleet import Fleet
from omnistock.sim.legacy import LegacyRun, Timing, legacy_shop
from omnistock.sim.metrics import Recorder
from omnistock.sim.seed import seed
from omnistock.sim.world import World, build

# Orders cancelled for these reasons were promised stock they did not get.
STOCK_REASONS = frozenset({"reservation_not_committable", "allocation_not_shippable"})
RETRY_FOR_S = 60.0
# A shop this busy runs the saga worker with bigger batches than the default of 20, which let
# the sagas fall behind the checkouts here (the demo took 105 s instead of 62 s to get through
# its orders, five status reads per order instead of one).
TUNING = {"orders": {"OMNISTOCK_ORDERS_WORKER_BATCH_SIZE": "100"}}
SAGA_RUNNING = frozenset({"placed", "allocated", "authorized", "cancelling"})
ACCEPTED = ("fulfilled", "cancelled_for_stock", "cancelled_other", "open")
# What an order's saga calls, and the lockers the world seeds; the read models are left out.
SERVICES = ("inventory", "pricing", "payments", "loyalty", "orders", "collection-points")


class Kind(StrEnum):
    WEB_ORDER = "web_order"
    STORE_SALE = "store_sale"
    RECEIPT = "receipt"


@dataclass(frozen=True, slots=True)
class Demand:
    index: int
    at_s: float  # simulated seconds since the opening
    kind: Kind
    sku: str
    quantity: int
    place: str  # the web order's channel, the sale's store, the delivery's warehouse


@dataclass(frozen=True, slots=True)
class Options:
    """The defaults are the demo: 1,000 events in about 17 simulated minutes of a busy day,
    57 channels, 200 SKUs."""

    seed: int = 7
    events: int = 1000
    sync_minutes: float = 5.0
    fulfil_after_minutes: float = 30.0
    events_per_minute: float = 60.0
    skus: int = 200
    markets: int = 19
    brands: int = 3
    stores_per_market: int = 2
    store_range: int = 20  # the most popular SKUs of each brand that a store carries
    # Warehouse depth relative to the world's: fashion sells sizes of which a few units exist.
    stock_scale: float = 0.1
    concurrency: int = 24  # requests in flight; the client's pool holds as many connections
    subtract_open_orders: bool = False

    @property
    def timing(self) -> Timing:
        return Timing(self.sync_minutes, self.fulfil_after_minutes, self.subtract_open_orders)


def scarce_world(options: Options) -> World:
    """The seeded world with its warehouses thinned out, so that the demand meets real
    scarcity: the head of the catalogue a few dozen units deep per warehouse, the tail one or
    none."""
    world = build(
        seed=options.seed,
        skus=options.skus,
        brands=options.brands,
        markets=options.markets,
        stores_per_market=options.stores_per_market,
        store_range=options.store_range,
        lockers_per_market=1,
    )
    warehouses = {x.location_id for x in world.locations if x.kind == "warehouse"}
    world.stock = {
        (sku, loc): math.ceil(units * options.stock_scale) if loc in warehouses else units
        for (sku, loc), units in world.stock.items()
    }
    return world


def demand(world: World, seed: int, events: int, per_minute: float) -> list[Demand]:
    """The seeded stream both runs replay: web orders spread over every channel (80 %), store
    sales (15 %) and WMS deliveries (5 %), popular SKUs far more often, at Poisson times.
    (The traffic simulator's generator can take its place: only this list is shared.)"""
    rng = random.Random(f"cancellations-{seed}")
    stores = [x.location_id for x in world.locations if x.kind == "store"]
    warehouses = [x.location_id for x in world.locations if x.kind == "warehouse"]
    brands = sorted({c.brand for c in world.channels})
    stream = []
    at_s = 0.0
    for index in range(events):
        at_s += rng.expovariate(per_minute / 60)
        roll = rng.random()
        if roll < 0.80:
            channel = rng.choice(world.channels)
            sku = world.draw_sku(rng, channel.brand)
            quantity = 1 if rng.random() < 0.85 else 2
            stream.append(Demand(index, at_s, Kind.WEB_ORDER, sku, quantity, channel.channel_id))
        elif roll < 0.95 and stores:
            sku = world.draw_sku(rng, rng.choice(brands))
            stream.append(Demand(index, at_s, Kind.STORE_SALE, sku, 1, rng.choice(stores)))
        else:
            sku = world.draw_sku(rng, rng.choice(brands))
            units = rng.randint(1, 6)
            stream.append(Demand(index, at_s, Kind.RECEIPT, sku, units, rng.choice(warehouses)))
    return stream


def run_legacy(
    url: str, world: World, events: list[Demand], timing: Timing, advance: Callable[[], None]
) -> LegacyRun:
    """The stream through the old shop, one request after another on its virtual clock."""
    with legacy_shop(url, world, timing) as shop:
        for event in events:
            shop.advance_to(event.at_s)
            if event.kind is Kind.WEB_ORDER:
                shop.sell(event.index, event.place, event.sku, event.quantity)
            elif event.kind is Kind.STORE_SALE:
                shop.store_sale(event.place, event.sku, event.quantity)
            else:
                shop.receive(event.place, event.sku, event.quantity)
            advance()
        return shop.finish()


class UnexpectedAnswer(RuntimeError):
    pass


@dataclass
class OmnistockRun:
    """``outcomes``: per web order's demand index, ``refused_at_checkout``,
    ``refused_at_order`` or one of ``ACCEPTED``."""

    outcomes: dict[int, str] = field(default_factory=dict)
    cancel_reasons: Counter[str] = field(default_factory=Counter)
    store_sales: int = 0
    store_sales_refused: int = 0
    receipts: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    calls: dict[str, dict[str, float]] = field(default_factory=dict)  # per call: latency


class Omnistock:
    """The stream as a retailer's systems would send it: storefronts reserve at checkout and
    place the order; tills post sales as deltas; the WMS reports absolute counts; the
    warehouse ships what each order was allocated once its fulfilment is due. Calls for one
    shelf (SKU at a location) that change its count go one at a time, as one WMS or till would
    send them, so that a count is what is on that shelf."""

    def __init__(
        self,
        fleet: Fleet,
        world: World,
        options: Options,
        client: httpx.AsyncClient,
        progress: Progress,
    ) -> None:
        self.inventory = fleet.url("inventory")
        self.orders = fleet.url("orders")
        self.channels = {c.channel_id: c for c in world.channels}
        self.prices = world.price
        self.options = options
        self.client = client
        self.tag = fleet.run
        # A client id per storefront, as each has its own reservation rate.
        self.storefront = {
            c: fleet.headers(f"storefront-{c}", ["inventory:reserve"]) for c in self.channels
        }
        self.staff = fleet.headers("checkout", ["orders:write", "orders:read"])
        self.wms = fleet.headers("wms", ["inventory:write", "inventory:read", "inventory:fulfil"])
        self.run = OmnistockRun()
        self.recorder = Recorder()
        self.shelves: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        self.gate = asyncio.Semaphore(options.concurrency)  # demand events under way
        # Never more requests than pooled connections: a queue in the pool costs its
        # scheduler a scan of every connection per request.
        self.in_flight = asyncio.Semaphore(options.concurrency)
        self.tasks: list[asyncio.Task[None]] = []
        self.failure: BaseException | None = None
        self.due: list[tuple[float, int, str]] = []  # (simulated due time, index, order id)
        self.accepted = 0
        self.progress = progress
        self.demand_task = progress.add_task("omnistock: demand", total=0)
        self.fulfil_task = progress.add_task("omnistock: fulfilment", total=0)

    async def replay(self, events: list[Demand]) -> OmnistockRun:
        self.progress.update(self.demand_task, total=len(events))
        for event in events:
            self._fulfil_due(event.at_s)
            await self.gate.acquire()
            self._start(self._apply(event), self.gate.release, self.demand_task)
        await self._settle()
        self._fulfil_due(float("inf"))  # the warehouse works through what is left
        await self._settle()
        self.run.calls = {op: self.recorder.summary(op) for op in self.recorder.ops()}
        return self.run

    def _fulfil_due(self, until_s: float) -> None:
        # Not gated like the demand: an order waiting for its saga holds no slot.
        while self.due and self.due[0][0] <= until_s:
            _, index, order_id = heapq.heappop(self.due)
            self._start(self._fulfil(index, order_id))

    def _start(
        self,
        work: Coroutine[Any, Any, None],
        release: Callable[[], None] | None = None,
        advances: TaskID | None = None,
    ) -> None:
        if self.failure is not None:
            work.close()
            for running in self.tasks:
                running.cancel()
            raise self.failure
        task = asyncio.create_task(work)

        def done(finished: asyncio.Task[None]) -> None:
            if release is not None:
                release()
            if not finished.cancelled() and finished.exception() is not None:
                self.failure = self.failure or finished.exception()
            elif advances is not None:
                self.progress.advance(advances)

        task.add_done_callback(done)
        self.tasks.append(task)

    async def _settle(self) -> None:
        try:
            await asyncio.gather(*self.tasks)
        except BaseException:
            for task in self.tasks:
                task.cancel()
            raise
        self.tasks.clear()

    async def _apply(self, event: Demand) -> None:
        if event.kind is Kind.WEB_ORDER:
            await self._web_order(event)
        elif event.kind is Kind.STORE_SALE:
            await self._store_sale(event)
        else:
            await self._receive(event)

    async def _call(
        self, op: str, method: str, url: str, expected: set[int], **request: Any
    ) -> httpx.Response:
        """The call, again on a 429, a 5xx or a dropped connection for up to a minute (a
        service or its database restarting; writes carry their idempotency key); any other
        answer than ``expected`` is a bug worth stopping for."""
        give_up = time.monotonic() + RETRY_FOR_S
        for attempt in itertools.count():
            async with self.in_flight:
                sent = time.monotonic()
                try:
                    response = await self.client.request(method, url, **request)
                except httpx.TransportError as exc:
                    response, problem = None, repr(exc)
                ok = response is not None and response.status_code in expected
                self.recorder.record(op, time.monotonic() - sent, ok=ok)
            if response is not None and ok:
                return response
            if response is not None:
                problem = f"{response.status_code} {response.text[:300]}"
                if response.status_code != 429 and response.status_code < 500:
                    break
            if time.monotonic() > give_up:
                break
            retry_after = response.headers.get("Retry-After") if response is not None else None
            await asyncio.sleep(float(retry_after or min(2.0, 0.1 * 2**attempt)))
        raise UnexpectedAnswer(f"{method} {url}: {problem}")

    async def _web_order(self, event: Demand) -> None:
        channel = self.channels[event.place]
        key = f"experiment-{self.tag}-{event.index}"
        customer = f"shopper-{event.index}"
        reserved = await self._call(
            "reserve",
            "POST",
            f"{self.inventory}/v1/reservations",
            {201, 409},
            json={
                "channel_id": channel.channel_id,
                "lines": [{"sku": event.sku, "quantity": event.quantity}],
                "customer_id": customer,
            },
            headers={**self.storefront[channel.channel_id], "Idempotency-Key": f"{key}-hold"},
        )
        if reserved.status_code == 409:
            self.run.outcomes[event.index] = "refused_at_checkout"
            return
        reservation_id = reserved.json()["reservation_id"]
        body = {
            "channel_id": channel.channel_id,
            "platform": "web",
            "customer_id": customer,
            "currency": channel.market.currency,
            "reservation_id": reservation_id,
            "lines": [
                {
                    "sku": event.sku,
                    "quantity": event.quantity,
                    "unit_price": self.prices(event.sku, channel.market),
                }
            ],
            "delivery": {
                "kind": "home",
                "address": {
                    "name": customer,
                    "street": "Main street 1",
                    "city": channel.market.code.upper(),
                    "postal_code": "00-001",
                    "country": channel.market.country,
                },
            },
            "payment": {"method": "card", "token": "tok_visa"},
            "loyalty_points": 0,
        }
        placed = await self._call(
            "place_order",
            "POST",
            f"{self.orders}/v1/orders",
            {201, 409},
            json=body,
            headers={**self.staff, "Idempotency-Key": f"{key}-order"},
        )
        if placed.status_code == 409:
            self.run.outcomes[event.index] = "refused_at_order"
            await self._call(
                "release",
                "DELETE",
                f"{self.inventory}/v1/reservations/{reservation_id}",
                {200, 204, 404, 409},
                headers=self.storefront[channel.channel_id],
            )
            return
        self.run.outcomes[event.index] = "open"
        due_s = event.at_s + self.options.fulfil_after_minutes * 60
        heapq.heappush(self.due, (due_s, event.index, placed.json()["order_id"]))
        self.accepted += 1
        self.progress.update(self.fulfil_task, total=self.accepted)

    async def _store_sale(self, event: Demand) -> None:
        async with self.shelves[(event.sku, event.place)]:
            sold = await self._call(
                "store_sale",
                "POST",
                f"{self.inventory}/v1/stock/{event.place}/{event.sku}/adjustments",
                {201, 409},
                json={"quantity": -event.quantity, "reason": "store_sale"},
                headers={**self.wms, "Idempotency-Key": f"experiment-{self.tag}-{event.index}"},
            )
        self.run.store_sales += 1
        self.run.store_sales_refused += sold.status_code == 409

    async def _receive(self, event: Demand) -> None:
        async with self.shelves[(event.sku, event.place)]:
            stock = await self._call(
                "stock_read",
                "GET",
                f"{self.inventory}/v1/stock/{event.sku}",
                {200},
                headers=self.wms,
            )
            shelf = [x for x in stock.json()["locations"] if x["location_id"] == event.place]
            counted = (shelf[0]["on_hand"] if shelf else 0) + event.quantity
            await self._call(
                "count",
                "PUT",
                f"{self.inventory}/v1/stock/{event.place}/{event.sku}",
                {200},
                json={"on_hand": counted, "source": "experiment-wms", "sequence": event.index + 1},
                headers=self.wms,
            )
        self.run.receipts += 1

    async def _fulfil(self, index: int, order_id: str) -> None:
        order = await self._saga_outcome(order_id)
        if order is not None:  # else still `open`, reported as unfinished
            self.run.outcomes[index] = await self._settle_order(order)
        self.progress.advance(self.fulfil_task)

    async def _saga_outcome(self, order_id: str, within_s: float = 180) -> Any:
        """The order once its saga has confirmed or cancelled it (None: not in time)."""
        deadline = time.monotonic() + within_s
        pause_s = 0.5
        while True:
            answer = await self._call(
                "order_read",
                "GET",
                f"{self.orders}/v1/orders/{order_id}",
                {200},
                headers=self.staff,
            )
            order = answer.json()
            if order["status"] not in SAGA_RUNNING:
                return order
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(pause_s)
            pause_s = min(3.0, pause_s * 1.5)

    async def _settle_order(self, order: dict[str, Any]) -> str:
        if order["status"] != "cancelled":
            return await self._ship(order)
        reason = order.get("cancel_reason") or "unknown"
        self.run.cancel_reasons[reason] += 1
        detail = order.get("cancel_detail") or ""
        # A commit that failed is stock the order was promised and did not get, whatever
        # reason the saga gave after its retries.
        for_stock = reason in STOCK_REASONS or detail.startswith("commit_reservation")
        return "cancelled_for_stock" if for_stock else "cancelled_other"

    async def _ship(self, order: dict[str, Any]) -> str:
        for allocation in order["allocations"]:
            async with self.shelves[(allocation["sku"], allocation["location_id"])]:
                shipped = await self._call(
                    "ship",
                    "POST",
                    f"{self.inventory}/v1/orders/{order['order_id']}/allocations/"
                    f"{allocation['allocation_id']}/ship",
                    {200, 404, 409},
                    json={"shipment_id": f"parcel-{order['order_id']}"},
                    headers=self.wms,
                )
            if shipped.status_code != 200:
                self.run.cancel_reasons["allocation_not_shippable"] += 1
                return "cancelled_for_stock"
        return "fulfilled"


def legacy_outcomes(events: list[Demand], run: LegacyRun) -> dict[int, str]:
    named = {"fulfilled": "fulfilled", "cancelled": "cancelled_for_stock", "open": "open"}
    return {
        e.index: named[run.orders[e.index]] if e.index in run.orders else "refused_at_checkout"
        for e in events
        if e.kind is Kind.WEB_ORDER
    }


def counts(outcomes: dict[int, str]) -> dict[str, Any]:
    seen = Counter(outcomes.values())
    accepted = sum(seen[x] for x in ACCEPTED)
    return {
        "accepted": accepted,
        "cancelled_for_stock": seen["cancelled_for_stock"],
        "refused_at_checkout": seen["refused_at_checkout"],
        "refused_at_order": seen["refused_at_order"],
        "cancelled_other": seen["cancelled_other"],
        "fulfilled": seen["fulfilled"],
        "unfinished": seen["open"],
        "cancel_rate": round(seen["cancelled_for_stock"] / accepted, 4) if accepted else 0.0,
    }


def series(events: list[Demand], runs: dict[str, dict[int, str]]) -> list[dict[str, Any]]:
    """Per slice of simulated time (whole minutes, at most 30 slices), by when the customer
    ordered: what each run accepted, later cancelled for stock, and refused at checkout."""
    width = 60 * max(1, math.ceil(events[-1].at_s / 60 / 30)) if events else 60
    slices: defaultdict[int, Counter[str]] = defaultdict(Counter)
    for event in events:
        if event.kind is not Kind.WEB_ORDER:
            continue
        slot = slices[int(event.at_s // width)]
        for name, outcomes in runs.items():
            outcome = outcomes.get(event.index, "open")
            slot[f"{name}_accepted"] += outcome in ACCEPTED
            slot[f"{name}_cancelled_for_stock"] += outcome == "cancelled_for_stock"
            slot[f"{name}_refused_at_checkout"] += outcome == "refused_at_checkout"
    return [
        {"t_min": n * width // 60, **dict(sorted(slices[n].items()))}
        for n in range(max(slices) + 1 if slices else 0)
    ]


@contextmanager
def _bars(console: Console) -> Iterator[Progress]:
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description:<30}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        yield progress


async def _start(fleet: Fleet, progress: Progress) -> float:
    """Seconds until every service answered ready."""
    task = progress.add_task("omnistock: services starting", total=1)
    started = time.monotonic()
    await fleet.start()
    progress.update(task, completed=1, description="omnistock: services ready")
    return time.monotonic() - started


async def cancellations(options: Options, out: Path, console: Console) -> dict[str, Any]:
    """Both runs; the summary (also written to ``out`` with each run's details)."""
    settings = get_settings()
    started = time.monotonic()
    world = scarce_world(options)
    events = demand(world, options.seed, options.events, options.events_per_minute)
    logs = out / "logs"
    for previous in logs.glob("*.log"):  # a member's log is appended to, run after run
        previous.unlink()
    fleet = Fleet(settings, uuid.uuid4().hex[:6], logs, services=SERVICES, extra_env=TUNING)
    try:
        with _bars(console) as progress:
            legacy_task = progress.add_task("legacy monolith: demand", total=len(events))
            # The old shop replays on its own clock while the services come up.
            legacy, fleet_start_s = await asyncio.gather(
                asyncio.to_thread(
                    run_legacy,
                    settings.legacy_mysql_url,
                    world,
                    events,
                    options.timing,
                    lambda: progress.advance(legacy_task),
                ),
                _start(fleet, progress),
            )
        ready = time.monotonic()
        seeding = await seed(fleet, world, console)
        seeded = time.monotonic()
        limits = httpx.Limits(
            max_connections=options.concurrency, max_keepalive_connections=options.concurrency
        )
        async with httpx.AsyncClient(timeout=httpx.Timeout(30), limits=limits) as client:
            with _bars(console) as progress:
                omnistock = await Omnistock(fleet, world, options, client, progress).replay(events)
        omnistock.seconds = {
            "fleet_start": round(fleet_start_s, 1),
            "both_ready": round(ready - started, 1),  # the old shop replays meanwhile
            "seeding": round(seeded - ready, 1),
            "demand_and_fulfilment": round(time.monotonic() - seeded, 1),
            **{k: round(v, 1) for k, v in seeding.items()},
        }
    finally:
        fleet.stop()
        await fleet.drop()
    return _report(options, world, events, legacy, omnistock, out, time.monotonic() - started)


def _report(
    options: Options,
    world: World,
    events: list[Demand],
    legacy: LegacyRun,
    omnistock: OmnistockRun,
    out: Path,
    seconds: float,
) -> dict[str, Any]:
    runs = {"legacy": legacy_outcomes(events, legacy), "omnistock": omnistock.outcomes}
    tallies = {name: counts(outcomes) for name, outcomes in runs.items()}
    kinds = Counter(e.kind.value for e in events)
    summary: dict[str, Any] = {
        "experiment": "cancellations",
        "legacy_cancel_rate": tallies["legacy"]["cancel_rate"],
        "omnistock_cancel_rate": tallies["omnistock"]["cancel_rate"],
        **{
            f"{name}_{key}": tally[key]
            for name, tally in tallies.items()
            for key in ("accepted", "cancelled_for_stock", "refused_at_checkout")
        },
        "omnistock_refused_at_order": tallies["omnistock"]["refused_at_order"],
        "omnistock_cancelled_other": tallies["omnistock"]["cancelled_other"],
        "omnistock_unfinished": tallies["omnistock"]["unfinished"],
        # Tills refused: in the old shop an empty shelf; in omnistock also units held for
        # web orders, which the old shop sold at the till and then cancelled online.
        "legacy_store_sales_refused": legacy.store_sales_refused,
        "omnistock_store_sales_refused": omnistock.store_sales_refused,
        "legacy_sync": "open orders subtracted" if options.subtract_open_orders else "real stock",
        "sync_minutes": options.sync_minutes,
        "fulfil_after_minutes": options.fulfil_after_minutes,
        "seed": options.seed,
        "events": len(events),
        "web_orders": kinds[Kind.WEB_ORDER.value],
        "store_sales": kinds[Kind.STORE_SALE.value],
        "receipts": kinds[Kind.RECEIPT.value],
        "events_per_minute": options.events_per_minute,
        "skus": len(world.skus),
        "markets": options.markets,
        "brands": options.brands,
        "channels": len(world.channels),
        "locations": len(world.locations),
        "units": world.units(),
        "seconds": round(seconds, 1),
    }
    details = {
        "legacy": {
            **tallies["legacy"],
            "store_sales": legacy.store_sales,
            "store_sales_refused": legacy.store_sales_refused,
            "receipts": legacy.receipts,
            "syncs": legacy.syncs,
            "seconds": round(legacy.seconds, 2),
            "cancelled": [
                {**asdict(e), "t_min": round(e.at_s / 60, 2)}
                for e in events
                if runs["legacy"].get(e.index) == "cancelled_for_stock"
            ],
        },
        "omnistock": {
            **tallies["omnistock"],
            "store_sales": omnistock.store_sales,
            "store_sales_refused": omnistock.store_sales_refused,
            "receipts": omnistock.receipts,
            "cancel_reasons": dict(omnistock.cancel_reasons),
            "seconds": omnistock.seconds,
            "calls": omnistock.calls,
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "summary.json": {**summary, "options": asdict(options)},
        "legacy.json": details["legacy"],
        "omnistock.json": details["omnistock"],
        "series.json": series(events, runs),
    }
    for name, content in files.items():
        (out / name).write_text(json.dumps(content, indent=1) + "\n")
    return summary


def print_table(summary: dict[str, Any], console: Console) -> None:
    table = Table(title="orders cancelled for lack of stock after they were accepted")
    table.add_column("")
    for column in ("accepted", "cancelled for stock", "rate", "refused at checkout"):
        table.add_column(column, justify="right")
    for name in ("legacy", "omnistock"):
        table.add_row(
            name,
            str(summary[f"{name}_accepted"]),
            str(summary[f"{name}_cancelled_for_stock"]),
            f"{summary[f'{name}_cancel_rate']:.2%}",
            str(summary[f"{name}_refused_at_checkout"]),
        )
    console.print(table)


def run_experiment(options: Options, out: Path, as_json: bool) -> dict[str, Any]:
    """The command: progress and a table on stderr; with ``as_json`` the summary as the last
    line of stdout."""
    console = Console(stderr=True)
    summary = asyncio.run(cancellations(options, out, console))
    print_table(summary, console)
    console.print(f"details in {out}/")
    if as_json:
        print(json.dumps(summary, separators=(",", ":")), flush=True)
    return summary
