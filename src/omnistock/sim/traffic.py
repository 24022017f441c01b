"""Retail traffic against a running fleet, open loop: arrivals at a fixed rate, each a product
or listing page (most of them), a checkout, or a till's or warehouse's stock change, drawn
from the seeded streams of ``omnistock.sim.demand``; a flash sale's crowd all at once; the
fulfilment side answering every order. It ends after its duration (or when the caller's
event is set), lets open orders finish for a while, then checks at inventory's public stock
API that no location holds more than it has, and sums it all up.

``run_simulation`` runs on a fleet already started and seeded (the demo and the fault drills
call it); ``omnistock simulate`` starts one, seeds it, runs and saves."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
import uuid
from collections import Counter
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.live import Live

from omnistock.sim import demand as streams
from omnistock.sim.client import Api
from omnistock.sim.fleet import Fleet
from omnistock.sim.fulfilment import Fulfilment, OrderFeed
from omnistock.sim.live import Board, read_lag, render
from omnistock.sim.metrics import Recorder
from omnistock.sim.shoppers import Shoppers
from omnistock.sim.world import World

ERRORS = frozenset({"client", "server", "timeout", "transport", "sim"})
REFUSALS = frozenset({"business", "throttled"})
BROWSING = ("browse.product", "browse.listing")


@dataclass(frozen=True)
class SimOptions:
    seed: int = 7
    rate: float = 200.0  # arrivals per second, open loop
    duration_s: float | None = 60.0  # None: until the caller's stop event is set
    drain_s: float = 30.0  # after the arrivals stop, time for open orders to come to rest
    checkout_share: float = 0.012  # of arrivals (see demand.SHARES); browsing is the rest
    stock_share: float = 0.028
    flash_customers: int = 120  # 0: no flash sale
    flash_skus: int = 3
    flash_at: float = 0.4  # when in the run the crowd comes, as a share of the duration
    pace: float = 1.0  # the partners' delays (pick, transit, pickup, trial) scale by it
    live: bool = True
    timeout_s: float = 10.0
    retries: int = 3
    max_in_flight: int = 2_000

    def shares(self) -> list[tuple[str, float]]:
        browse = 1.0 - self.checkout_share - self.stock_share
        return [("browse", browse), ("checkout", self.checkout_share), ("stock", self.stock_share)]

    def flash(self) -> streams.FlashSale | None:
        """The crowd comes ``flash_at`` into the run (of 60 s when it has no end): its first
        customer is the first checkout the schedule has from then on."""
        if self.flash_customers <= 0:
            return None
        moment = self.flash_at * (self.duration_s or 60.0)
        schedule = streams.arrivals(self.seed, self.rate, self.shares())
        before = itertools.takewhile(lambda arrival: arrival[0] < moment, schedule)
        start = sum(1 for _, kind in before if kind == "checkout")
        return streams.FlashSale(start, self.flash_customers, self.flash_skus)


def run_simulation(
    fleet: Fleet,
    world: World,
    options: SimOptions,
    recorder: Recorder,
    stop: asyncio.Event | None = None,
    console: Console | None = None,
) -> Coroutine[Any, Any, dict[str, Any]]:
    """The traffic on ``fleet`` (started, with ``world`` seeded into it); the summary."""
    return Simulation(fleet, world, options, recorder, stop or asyncio.Event(), console).run()


@dataclass
class Simulation:
    fleet: Fleet
    world: World
    options: SimOptions
    recorder: Recorder
    stop: asyncio.Event
    console: Console | None
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    failures: dict[str, str] = field(default_factory=dict)
    window: tuple[float, float] = (0.0, 0.0)  # the traffic's start and end, Recorder time

    def __post_init__(self) -> None:
        self.api = Api(self.fleet, self.recorder, self.options.timeout_s, self.options.retries)
        self.fulfilment = Fulfilment(self.api, self.spawn, self.options.pace)
        self.shoppers = Shoppers(self.api, self.world, self.nonce, self.fulfilment.placed)
        self.board = Board(self.options.rate, self.options.duration_s)

    def spawn(self, work: Coroutine[Any, Any, None], op: str) -> None:
        """Start ``work``; whatever it raises is counted against ``op``, never lost."""
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self.tasks.discard(finished)
            if finished.cancelled():
                return
            failure = finished.exception()
            if failure is not None:
                kind = f"sim {type(failure).__name__}"
                self.api.count(op, "sim", kind)
                self.failures.setdefault(kind, f"{op}: {failure!r}"[:300])

        task.add_done_callback(done)

    async def run(self) -> dict[str, Any]:
        started = time.monotonic()
        feed = OrderFeed(self.fleet.settings, asyncio.get_running_loop(), self.fulfilment.deliver)
        await asyncio.to_thread(feed.start)
        try:
            with self._live() as display:
                watcher = asyncio.create_task(self._watch(display))
                try:
                    unfinished, audit = await self._phases()
                finally:
                    watcher.cancel()
                    await asyncio.gather(watcher, return_exceptions=True)
                    if display is not None:
                        display.update(render(self.recorder, self.api, self.board))
        finally:
            await asyncio.to_thread(feed.stop)
            await self.api.close()
        return self._summary(time.monotonic() - started, unfinished, audit, feed.invalid)

    def _live(self) -> contextlib.AbstractContextManager[Live | None]:
        if self.options.live and self.console is not None:
            return Live(console=self.console, refresh_per_second=2, transient=False)
        return contextlib.nullcontext()

    async def _phases(self) -> tuple[int, dict[str, Any]]:
        flash = self.options.flash()
        if flash is not None:
            await self._put_on_sale(flash)
        self.recorder.mark("traffic started", rate=self.options.rate)
        self.window = (self.recorder.now(), self.window[1])
        await self._traffic(flash)
        self.window = (self.window[0], self.recorder.now())
        self.recorder.mark("traffic stopped", offered=self.board.offered)
        unfinished = await self._drain()
        self.board.phase = "checking stock"
        return unfinished, await self._audit()

    # -- the phases --

    async def _put_on_sale(self, flash: streams.FlashSale) -> None:
        """The hot SKUs on sale in every market of their brand for the run (a price the
        demand's checkouts carry): one sale per channel at pricing."""
        hot = streams.hot_skus(self.world, self.options.seed, flash.skus)
        now = datetime.now(UTC)
        length = (self.options.duration_s or 3600.0) + self.options.drain_s + 300
        headers = self.api.headers("merchandising", ("pricing:write", "pricing:read"))
        for channel in self.world.channels:
            lines = [
                {"sku": sku, "amount": streams.sale_price(self.world, sku, channel.market)}
                for sku in hot
                if self.world.brand_of[sku] == channel.brand
            ]
            if not lines:
                continue
            await self.api.call(
                "pricing.sale",
                "pricing",
                "POST",
                f"/v1/price-lists/{channel.channel_id}/sales",
                headers=headers,
                body={
                    "starts_at": now.isoformat(),
                    "ends_at": (now + timedelta(seconds=length)).isoformat(),
                    "lines": lines,
                },
                key=f"sim-{self.nonce}-sale-{channel.channel_id}",
            )
        self.shoppers.touched.update(hot)
        self.recorder.mark("flash sale priced", skus=list(hot))

    async def _traffic(self, flash: streams.FlashSale | None) -> None:
        options = self.options
        self.board.phase = "traffic"
        start = time.monotonic()
        until = options.duration_s if options.duration_s is not None else math.inf
        planned = streams.intentions(
            self.world, options.seed, options.rate, options.shares(), flash
        )
        for at, intention in planned:
            late = time.monotonic() - start >= until
            if late:
                # An open loop that fell behind (the simulator's machine too slow) stops on
                # time all the same; what it did not send is counted, not hidden.
                rest = itertools.chain([(at, intention)], planned)
                self.board.missed = sum(
                    1 for _ in itertools.takewhile(lambda x: x[0] < until, rest)
                )
            if at >= until or self.stop.is_set() or late:
                return
            wait = start + at - time.monotonic()
            self.board.behind_s = max(0.0, -wait)
            await asyncio.sleep(max(0.0, wait))
            if len(self.tasks) >= options.max_in_flight:
                # The fleet answers slower than the arrivals come: the backlog is capped (and
                # counted as the simulator's error) rather than growing without bound.
                self.api.count("arrival", "sim", "sim overloaded: not sent")
                continue
            self.board.offered += 1
            if isinstance(intention, streams.View):
                self.spawn(self.shoppers.browse(intention), "browse")
            elif isinstance(intention, streams.StockEvent):
                self.spawn(self.shoppers.stock_event(intention), "stock")
            elif isinstance(intention, streams.Checkout):
                self.spawn(self.shoppers.checkout(intention), "checkout")
            else:
                self.spawn(self._flash_sale(intention), "checkout")

    async def _flash_sale(self, crowd: streams.Crowd) -> None:
        """The drop lands at the warehouses, then the whole crowd checks out at once."""
        await asyncio.gather(*(self.shoppers.stock_event(event) for event in crowd.drop))
        self.recorder.mark("flash sale crowd", customers=len(crowd.checkouts))
        for checkout in crowd.checkouts:
            self.spawn(self.shoppers.checkout(checkout), "checkout")

    async def _drain(self) -> int:
        """Until what was sent is answered and every order is at rest, or the drain time is
        up; the number of actions still under way then (cancelled)."""
        self.board.phase = "draining"
        deadline = time.monotonic() + self.options.drain_s
        while time.monotonic() < deadline:
            if not self.tasks and not self.fulfilment.open_orders():
                break
            await asyncio.sleep(0.2)
        self.recorder.mark("drained", open_orders=len(self.fulfilment.open_orders()))
        unfinished = list(self.tasks)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        return len(unfinished)

    async def _audit(self) -> dict[str, Any]:
        """Reserved + allocated against on-hand, per location, for every SKU this run moved:
        through the public stock API, as an auditor with read access would."""
        headers = self.api.headers("auditor", ("inventory:read",))
        skus = sorted(self.shoppers.touched)
        gate = asyncio.Semaphore(16)
        oversold: list[dict[str, Any]] = []
        unread: list[str] = []
        rows = 0

        async def check(sku: str) -> None:
            nonlocal rows
            async with gate:
                answer = await self.api.call(
                    "audit.stock", "inventory", "GET", f"/v1/stock/{sku}", headers=headers
                )
            if not answer.ok:
                unread.append(sku)
                return
            for row in answer.body["locations"]:
                rows += 1
                if row["reserved"] + row["allocated"] > row["on_hand"] or row["on_hand"] < 0:
                    oversold.append({"sku": sku, **row})

        await asyncio.gather(*(check(sku) for sku in skus))
        return {"skus": len(skus), "rows": rows, "oversold": oversold, "unread": unread}

    async def _watch(self, display: Live | None) -> None:
        """Once a second: the storefront's lag, gauges of the run, the live view."""
        while True:
            open_orders = len(self.fulfilment.open_orders())
            reached = self.fulfilment.reached
            self.board.in_flight = len(self.tasks)
            self.board.orders = {
                **{s: reached[s] for s in ("placed", "confirmed", "shipped", "completed")},
                "cancelled": reached["cancelled"],
                "open": open_orders,
            }
            self.recorder.gauge("sim.in_flight", len(self.tasks))
            self.recorder.gauge("sim.behind_s", self.board.behind_s)
            self.recorder.gauge("orders.open", open_orders)
            if display is not None:
                display.update(render(self.recorder, self.api, self.board))
            await read_lag(self.api, self.board.lag)
            await asyncio.sleep(1.0)

    # -- the summary --

    def _summary(
        self, elapsed_s: float, unfinished: int, audit: dict[str, Any], invalid_events: int
    ) -> dict[str, Any]:
        options = self.options
        ops = {op: self.recorder.summary(op) for op in self.recorder.ops()}
        calls = [op for op in ops if not op.startswith("saga.")]
        requests = sum(ops[op]["count"] for op in calls)
        # Rates over the whole seconds of traffic: draining and checking are not traffic.
        since, until = math.ceil(self.window[0]), math.floor(self.window[1])
        traffic_s = max(1, until - since)
        during = {op: self.recorder.summary(op, since, until)["count"] for op in calls}
        browsing = sum(during.get(op, 0) for op in BROWSING)
        fulfilment = self.fulfilment
        open_orders = fulfilment.open_orders()
        return {
            "seed": options.seed,
            "options": asdict(options),
            "world": {
                "skus": len(self.world.skus),
                "brands": len({c.brand for c in self.world.channels}),
                "markets": len({c.market.code for c in self.world.channels}),
                "channels": len(self.world.channels),
                "locations": len(self.world.locations),
            },
            "elapsed_s": round(elapsed_s, 1),
            "offered": self.board.offered,
            "missed": self.board.missed,
            "traffic_s": round(self.window[1] - self.window[0], 1),
            "requests": requests,
            "requests_per_s": round(sum(during.values()) / traffic_s, 1),
            "offered_per_s": round(
                self.board.offered / max(1.0, self.window[1] - self.window[0]), 1
            ),
            "browse_share": round(browsing / max(1, sum(during.values())), 3),
            "ops": ops,
            "refusals": self.api.kinds(REFUSALS),
            "errors": self.api.kinds(ERRORS),
            "error_count": sum(self.api.kinds(ERRORS).values()),
            "server_errors": sum(self.api.kinds(frozenset({"server"})).values()),
            "error_samples": {**self.api.samples, **self.failures},
            "checkouts": dict(self.shoppers.checkouts),
            "flash_sale": {
                **dict(self.shoppers.flash),
                "skus": list(streams.hot_skus(self.world, options.seed, options.flash_skus))
                if options.flash_customers
                else [],
            },
            "stock_changes": dict(self.shoppers.stock),
            "orders": {
                "placed": fulfilment.reached["placed"],
                "confirmed": fulfilment.reached["confirmed"],
                "completed": fulfilment.reached["completed"],
                "cancelled": sum(fulfilment.cancelled.values()),
                "cancelled_by_reason": dict(fulfilment.cancelled),
                "reached": dict(fulfilment.reached),
                "by_payment": {k: dict(v) for k, v in sorted(fulfilment.by_method.items())},
                "by_delivery": {k: dict(v) for k, v in sorted(fulfilment.by_delivery.items())},
                "open_at_end": dict(Counter(t.status for t in open_orders)),
            },
            "storefront_lag": {
                "worst_messages": self.board.lag.worst_messages,
                "worst_staleness_ms": round(self.board.lag.worst_staleness_s * 1000, 1),
                "reads": self.board.lag.reads,
            },
            "unfinished_actions": unfinished,
            "invalid_order_events": invalid_events,
            "stock_checked": {"skus": audit["skus"], "rows": audit["rows"]},
            "stock_unread": len(audit["unread"]),
            "oversold_rows": audit["oversold"][:20],
            "oversold": len(audit["oversold"]),
        }
