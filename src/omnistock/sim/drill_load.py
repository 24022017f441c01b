"""The load a drill runs its faults under: the traffic simulator (``--load traffic``), or
the drill's own small load (``--load builtin``), kept for a fleet without a storefront and for
a smaller, steadier test: checkouts (a reservation, then an order; some carts abandoned so
that reservations expire), the warehouse shipping confirmed orders and the carrier delivering
them (so that payments are captured), a few customers cancelling, and storefront reads. Open
loop: requests go out at their rate whether or not the platform answers, as shoppers' do;
what is in flight is capped so that an outage does not pile up tasks without end."""

from __future__ import annotations

import asyncio
import functools
import random
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx

from omnistock.sim.fleet import Fleet
from omnistock.sim.metrics import Recorder
from omnistock.sim.probes import HOME
from omnistock.sim.traffic import SimOptions, run_simulation
from omnistock.sim.world import Channel, World

IN_FLIGHT = 200
TRACK_S = 120.0  # an order is followed this long at most
CUSTOMERS = 500
ABANDONED = 0.15  # carts that reserve and never order: their holds expire
CANCELLED = 0.08  # confirmed orders their customer cancels
DECLINED = 0.04  # cards the PSP declines
SCOPES = {
    "shop": ("inventory:reserve", "storefront:read"),
    "checkout": ("orders:write", "orders:read"),
    "wms": ("inventory:fulfil",),
    "carrier": ("orders:fulfil",),
}


# Of the arrivals, as in a shop under a drill: mostly product pages, a checkout in six, and
# now and then a till or a warehouse changing stock.
CHECKOUT_SHARE, STOCK_SHARE = 0.16, 0.04


@dataclass(frozen=True, slots=True)
class LoadOptions:
    rate: float = 25.0  # arrivals per second
    seed: int = 7

    @property
    def checkouts_per_s(self) -> float:
        return self.rate * CHECKOUT_SHARE

    @property
    def reads_per_s(self) -> float:
        return self.rate * (1 - CHECKOUT_SHARE - STOCK_SHARE)


@dataclass
class _Tracked:
    order_id: str
    placed: float
    due: float
    cancel: bool  # decided once: the customer cancels it once confirmed, or it ships


@dataclass
class DrillLoad:
    fleet: Fleet
    world: World
    options: LoadOptions
    recorder: Recorder
    client: httpx.AsyncClient = field(
        default_factory=lambda: httpx.AsyncClient(timeout=httpx.Timeout(5.0))
    )
    tracked: list[_Tracked] = field(default_factory=list)
    _pending: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.options.seed)
        self.headers = {who: self.fleet.headers(f"drill-{who}", s) for who, s in SCOPES.items()}

    async def run(self, stop: asyncio.Event) -> None:
        started = time.monotonic()
        checkouts = reads = 0
        next_follow = started
        try:
            while not stop.is_set():
                elapsed = time.monotonic() - started
                for _ in range(int(elapsed * self.options.checkouts_per_s) - checkouts):
                    checkouts += 1
                    self._launch(self._checkout)
                for _ in range(int(elapsed * self.options.reads_per_s) - reads):
                    reads += 1
                    if "storefront" in self.fleet.members:
                        self._launch(self._read)
                if time.monotonic() >= next_follow:
                    next_follow += 0.5
                    self._follow_due()
                await asyncio.sleep(0.02)
        finally:
            for task in list(self._pending):
                task.cancel()
            await asyncio.gather(*self._pending, return_exceptions=True)
            await self.client.aclose()

    def _launch(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if len(self._pending) >= IN_FLIGHT:
            self.recorder.record("shed", 0.0, False)
            return
        task = asyncio.create_task(work())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _call(
        self, op: str, method: str, url: str, ok: tuple[int, ...], **kwargs: Any
    ) -> httpx.Response | None:
        started = time.monotonic()
        try:
            answer = await self.client.request(method, url, **kwargs)
        except httpx.HTTPError:
            self.recorder.record(op, time.monotonic() - started, False)
            return None
        self.recorder.record(op, time.monotonic() - started, answer.status_code in ok)
        return answer

    def _keyed(self, who: str) -> dict[str, str]:
        return {**self.headers[who], "Idempotency-Key": uuid.uuid4().hex}

    async def _read(self) -> None:
        channel = self.rng.choice(self.world.channels)
        sku = self.world.draw_sku(self.rng, channel.brand)
        url = f"{self.fleet.url('storefront')}/v1/channels/{channel.channel_id}/skus/{sku}"
        await self._call("storefront read", "GET", url, (200,), headers=self.headers["shop"])

    async def _checkout(self) -> None:
        channel = self.rng.choice(self.world.channels)
        skus = {
            self.world.draw_sku(self.rng, channel.brand) for _ in range(self.rng.choice((1, 2)))
        }
        customer = f"drill-{channel.market.code}-{self.rng.randrange(CUSTOMERS)}"
        abandoned = self.rng.random() < ABANDONED
        held = await self._call(
            "reserve",
            "POST",
            f"{self.fleet.url('inventory')}/v1/reservations",
            (201, 409),  # 409: out of stock, the business saying no
            json={
                "channel_id": channel.channel_id,
                "customer_id": customer,
                "lines": [{"sku": sku, "quantity": 1} for sku in sorted(skus)],
                "ttl_seconds": 30 if abandoned else 600,
            },
            headers=self._keyed("shop"),
        )
        if held is None or held.status_code != 201 or abandoned:
            return
        await self._place(channel, customer, held.json()["reservation_id"], sorted(skus))

    async def _place(
        self, channel: Channel, customer: str, reservation: str, skus: list[str]
    ) -> None:
        token = "tok_declined" if self.rng.random() < DECLINED else "tok_visa"
        market = channel.market
        placed = await self._call(
            "place order",
            "POST",
            f"{self.fleet.url('orders')}/v1/orders",
            (201, 409),
            json={
                "channel_id": channel.channel_id,
                "platform": self.rng.choice(("web", "ios", "android")),
                "customer_id": customer,
                "currency": market.currency,
                "reservation_id": reservation,
                "lines": [
                    {"sku": sku, "quantity": 1, "unit_price": self.world.price(sku, market)}
                    for sku in skus
                ],
                "delivery": {"kind": "home", "address": {**HOME, "country": market.country}},
                "payment": {"method": "card", "token": token},
            },
            headers=self._keyed("checkout"),
        )
        if placed is not None and placed.status_code == 201:
            now = time.monotonic()
            cancel = self.rng.random() < CANCELLED
            self.tracked.append(_Tracked(placed.json()["order_id"], now, now + 1.0, cancel))

    # -- the other side of each order --

    def _follow_due(self) -> None:
        now = time.monotonic()
        due = [t for t in self.tracked if t.due <= now]
        self.tracked = [t for t in self.tracked if t.due > now and now - t.placed < TRACK_S]
        for tracked in due:
            if now - tracked.placed < TRACK_S:
                self._launch(functools.partial(self._follow, tracked))

    async def _follow(self, tracked: _Tracked) -> None:
        orders = self.fleet.url("orders")
        answer = await self._call(
            "order read",
            "GET",
            f"{orders}/v1/orders/{tracked.order_id}",
            (200,),
            headers=self.headers["checkout"],
        )
        order = answer.json() if answer is not None and answer.status_code == 200 else None
        status = order["status"] if order else None
        if status in ("completed", "cancelled"):
            return
        if order is not None and status == "confirmed":
            await self._confirmed(order, tracked)
        elif order is not None and status == "shipped":
            for shipment in order["shipments"]:
                if shipment["status"] == "shipped":
                    await self._call(
                        "deliver",
                        "POST",
                        f"{orders}/v1/orders/{tracked.order_id}/shipments/"
                        f"{shipment['shipment_id']}/delivered",
                        (200, 201, 409),
                        headers=self._keyed("carrier"),
                    )
        tracked.due = time.monotonic() + 1.0
        self.tracked.append(tracked)

    async def _confirmed(self, order: dict[str, Any], tracked: _Tracked) -> None:
        if tracked.cancel:
            await self._call(
                "cancel",
                "POST",
                f"{self.fleet.url('orders')}/v1/orders/{tracked.order_id}/cancel",
                (200, 202, 409),
                headers=self._keyed("checkout"),
            )
            return
        for allocation in order["allocations"]:
            if allocation.get("shipment_id") is not None:
                continue
            shipment = f"{tracked.order_id[:8]}-{allocation['location_id']}"
            await self._call(
                "ship",
                "POST",
                f"{self.fleet.url('inventory')}/v1/orders/{tracked.order_id}/allocations/"
                f"{allocation['allocation_id']}/ship",
                (200, 409),
                json={"shipment_id": shipment},
                headers=self._keyed("wms"),
            )


LoadDriver = Callable[
    [Fleet, World, LoadOptions, Recorder, asyncio.Event], Coroutine[Any, Any, Any]
]


async def builtin_load(
    fleet: Fleet, world: World, options: LoadOptions, recorder: Recorder, stop: asyncio.Event
) -> None:
    await DrillLoad(fleet, world, options, recorder).run(stop)


async def simulated_load(
    fleet: Fleet, world: World, options: LoadOptions, recorder: Recorder, stop: asyncio.Event
) -> None:
    """The traffic simulator until ``stop``, its own display off (the drill shows its own)."""
    simulation = SimOptions(
        seed=options.seed,
        rate=options.rate,
        duration_s=None,
        drain_s=5.0,  # the drill waits for the platform to settle itself
        checkout_share=CHECKOUT_SHARE,
        stock_share=STOCK_SHARE,
        flash_customers=0,
        live=False,
    )
    await run_simulation(fleet, world, simulation, recorder, stop)


LOADS: dict[str, LoadDriver] = {"traffic": simulated_load, "builtin": builtin_load}
