"""The other side of every order, as the retailer's partners play it over the public APIs: the
warehouse ships confirmed orders' allocations at inventory; the carrier delivers home, the
store and the locker network report parcels ready and collected; the customer answers a
try-before-you-buy trial, cancels now and then and sends some goods back; the returns desk
books them in. What each order is doing comes from the documented orders topic, read from
where it ended when the run began; the order's own API answers the rest."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from omnistock.contracts.orders import ORDERS, OrderStatusChanged, ReturnUpdated
from omnistock.platform import events, kafka
from omnistock.platform.settings import Settings
from omnistock.sim.client import Api
from omnistock.sim.shoppers import Placed

WAREHOUSE = ("wms", ("inventory:fulfil", "orders:read"))
PARTNER = ("partners", ("orders:fulfil",))  # carrier, stores, returns desk
LOCKERS = ("locker-network", ("collection-points:parcels", "collection-points:book"))
AT_REST = frozenset({"completed", "cancelled"})
# Seconds each partner takes, at pace 1, for a customer of middling patience (Fate.delay
# 0.5); a day in the life of an order pressed into a few seconds.
PICK_S, TRANSIT_S, PICKUP_S, TRIAL_S, RETURN_S, CANCEL_S = 1.0, 1.5, 1.0, 1.0, 1.0, 0.3
STRANGERS_KEPT_S = 120.0  # events of orders not (yet) known to the run


class OrderFeed:
    """The orders topic, read in a thread from the end offsets it had at ``start``; every
    status change and return update is handed to the event loop."""

    def __init__(
        self,
        settings: Settings,
        loop: asyncio.AbstractEventLoop,
        deliver: Callable[[events.Event[Any]], None],
    ) -> None:
        self._settings = settings
        self._loop = loop
        self._deliver = deliver
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._read, name="sim-orders-feed", daemon=True)
        self.invalid = 0

    def start(self, timeout_s: float = 30) -> None:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError(f"the orders topic could not be read: {self._failure}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _read(self) -> None:
        decoder = events.EventDecoder(frozenset({OrderStatusChanged.TYPE, ReturnUpdated.TYPE}))
        group = f"omnistock.sim.feed.{uuid.uuid4().hex}"  # nothing is committed under it
        consumer = Consumer(
            kafka.consumer_config(self._settings, group, **{"fetch.wait.max.ms": 5})
        )
        try:
            topic = consumer.list_topics(ORDERS.name, timeout=10).topics[ORDERS.name]
            ends = []
            for partition in topic.partitions:
                end = consumer.get_watermark_offsets(
                    TopicPartition(ORDERS.name, partition), timeout=10
                )[1]
                ends.append(TopicPartition(ORDERS.name, partition, end))
            consumer.assign(ends)
            self._ready.set()
            while not self._stop.is_set():
                for message in consumer.consume(500, 0.1):
                    if message.error() is not None:
                        continue
                    try:
                        event = decoder.decode(message.value())
                    except events.InvalidEvent:
                        self.invalid += 1  # another run's or test's message; not ours to judge
                        continue
                    if event is not None:
                        self._loop.call_soon_threadsafe(self._deliver, event)
        except BaseException as exc:
            self._failure = exc
            raise
        finally:
            consumer.close()


@dataclass
class Tracked:
    placed: Placed
    status: str = "placed"
    reached: list[str] = field(default_factory=list)
    cancel_reason: str | None = None
    shipments: list[str] = field(default_factory=list)
    shipped_from: dict[str, str] = field(default_factory=dict)  # sku → location
    pickup_code: str | None = None
    returns: dict[str, str] = field(default_factory=dict)  # return id → status
    return_asked: bool = False
    returns_expected: int = 0  # returns asked for and accepted, not all announced yet
    busy: int = 0  # partner actions under way

    @property
    def order_id(self) -> str:
        return self.placed.order_id

    def at_rest(self) -> bool:
        settled = all(status == "settled" for status in self.returns.values())
        announced = len(self.returns) >= self.returns_expected
        asked = not self.wants_return() or self.return_asked
        return self.status in AT_REST and settled and announced and asked and self.busy == 0

    def wants_return(self) -> bool:
        checkout = self.placed.checkout
        return (
            self.status == "completed"
            and checkout.fate.return_first_line
            and checkout.payment_method != "try_before_you_buy"
        )


@dataclass
class Fulfilment:
    api: Api
    spawn: Callable[[Coroutine[Any, Any, None], str], None]
    pace: float = 1.0
    orders: dict[str, Tracked] = field(default_factory=dict)
    reached: Counter[str] = field(default_factory=Counter)  # status → orders that reached it
    cancelled: Counter[str] = field(default_factory=Counter)  # reason → orders
    by_method: dict[str, Counter[str]] = field(default_factory=dict)
    by_delivery: dict[str, Counter[str]] = field(default_factory=dict)
    _strangers: dict[str, list[tuple[float, events.Event[Any]]]] = field(default_factory=dict)

    # -- what the feed says --

    def placed(self, placed: Placed) -> None:
        tracked = Tracked(placed)
        self.orders[placed.order_id] = tracked
        self._count(tracked, "placed")
        if placed.checkout.fate.cancel:
            self._act(tracked, self._cancel(tracked), "order.cancel")
        for _, event in self._strangers.pop(placed.order_id, []):
            self.deliver(event)

    def deliver(self, event: events.Event[Any]) -> None:
        data = event.data
        tracked = self.orders.get(data.order_id)
        if tracked is None:
            self._keep_stranger(data.order_id, event)
            return
        if isinstance(data, ReturnUpdated):
            tracked.returns[data.return_id] = data.status
            if data.status == "requested":
                sku = data.items[0].sku if data.items else tracked.placed.checkout.lines[0].sku
                self._act(tracked, self._receive(tracked, data.return_id, sku), "return.receive")
            return
        if data.status in tracked.reached:
            return  # a redelivery
        tracked.status = data.status
        self._count(tracked, data.status)
        if data.status == "cancelled":
            tracked.cancel_reason = data.reason or "unknown"
            self.cancelled[tracked.cancel_reason] += 1
        reaction = self._reaction(tracked, data.status)
        if reaction is not None:
            self._act(tracked, reaction[0], reaction[1])

    def _reaction(
        self, tracked: Tracked, status: str
    ) -> tuple[Coroutine[Any, Any, None], str] | None:
        kind = tracked.placed.checkout.delivery.kind
        if status == "confirmed":
            return self._ship(tracked), "wms.ship"
        if status == "shipped" and kind == "home":
            return self._deliver_home(tracked), "carrier.deliver"
        if status == "shipped":
            return self._arrive(tracked), f"{kind}.ready"
        if status == "ready_for_pickup":
            return self._collect(tracked), f"{kind}.collect"
        if status == "in_trial":
            return self._decide(tracked), "trial.decide"
        if status == "completed" and tracked.wants_return():
            return self._return(tracked), "return.request"
        if status == "cancelled" and tracked.placed.booking_id and not tracked.shipments:
            return self._release_slot(tracked), "points.release"
        return None

    def _count(self, tracked: Tracked, status: str) -> None:
        tracked.reached.append(status)
        self.reached[status] += 1
        checkout = tracked.placed.checkout
        self.by_method.setdefault(checkout.payment_method, Counter())[status] += 1
        self.by_delivery.setdefault(checkout.delivery.kind, Counter())[status] += 1
        if status in ("confirmed", "completed"):
            elapsed = time.monotonic() - tracked.placed.placed_at
            self.api.recorder.record(f"saga.{status}", elapsed, True)

    def _keep_stranger(self, order_id: str, event: events.Event[Any]) -> None:
        now = time.monotonic()
        self._strangers.setdefault(order_id, []).append((now, event))
        if len(self._strangers) > 10_000:  # other runs' orders: forget the old ones
            self._strangers = {
                o: kept
                for o, kept in self._strangers.items()
                if now - kept[-1][0] < STRANGERS_KEPT_S
            }

    def open_orders(self) -> list[Tracked]:
        return [t for t in self.orders.values() if not t.at_rest()]

    # -- the partners' actions --

    def _act(self, tracked: Tracked, action: Coroutine[Any, Any, None], op: str) -> None:
        tracked.busy += 1

        async def run() -> None:
            try:
                await action
            finally:
                tracked.busy -= 1

        self.spawn(run(), op)

    async def _pause(self, tracked: Tracked, seconds: float) -> None:
        # The same order waits the same in every run of a seed; only the pace scales it.
        jitter = random.Random(f"{tracked.placed.checkout.number}:{len(tracked.reached)}")
        patience = 0.5 + tracked.placed.checkout.fate.delay
        await asyncio.sleep(self.pace * seconds * patience * (0.75 + jitter.random() / 2))

    def _who(self, identity: tuple[str, tuple[str, ...]]) -> dict[str, str]:
        return self.api.headers(*identity)

    async def _cancel(self, tracked: Tracked) -> None:
        await self._pause(tracked, CANCEL_S)
        await self.api.call(
            "order.cancel",
            "orders",
            "POST",
            f"/v1/orders/{tracked.order_id}/cancel",
            headers=self.api.customer(tracked.placed.checkout.customer_id),
            key=f"{tracked.order_id}-cancel",
        )

    async def _ship(self, tracked: Tracked) -> None:
        await self._pause(tracked, PICK_S)
        order = await self.api.call(
            "wms.order",
            "orders",
            "GET",
            f"/v1/orders/{tracked.order_id}",
            headers=self._who(WAREHOUSE),
        )
        if not order.ok or order.body["status"] != "confirmed":
            return  # cancelled meanwhile: nothing to pick
        by_location: dict[str, list[dict[str, Any]]] = {}
        for allocation in order.body["allocations"]:
            by_location.setdefault(allocation["location_id"], []).append(allocation)
        for number, (location, allocations) in enumerate(sorted(by_location.items()), 1):
            shipment = f"parcel-{tracked.order_id}-{number}"
            tracked.shipments.append(shipment)
            for allocation in allocations:
                tracked.shipped_from.setdefault(allocation["sku"], location)
                await self.api.call(
                    "wms.ship",
                    "inventory",
                    "POST",
                    f"/v1/orders/{tracked.order_id}/allocations/{allocation['allocation_id']}/ship",
                    headers=self._who(WAREHOUSE),
                    body={"shipment_id": shipment},
                    repeatable=True,  # a repeated shipment of an allocation changes nothing
                )

    async def _deliver_home(self, tracked: Tracked) -> None:
        await self._pause(tracked, TRANSIT_S)
        for shipment in tracked.shipments:
            await self.api.call(
                "carrier.deliver",
                "orders",
                "POST",
                f"/v1/orders/{tracked.order_id}/shipments/{shipment}/delivered",
                headers=self._who(PARTNER),
                key=f"{shipment}-delivered",
            )

    async def _arrive(self, tracked: Tracked) -> None:
        """The parcel reaches the store or the locker: a locker reports it to the collection
        points (which hand out the pickup code) and the code goes to the order."""
        await self._pause(tracked, TRANSIT_S)
        code: str | None = None
        booking = tracked.placed.booking_id
        if booking is not None:
            arrived = await self.api.call(
                "points.arrive",
                "collection-points",
                "POST",
                f"/v1/bookings/{booking}/arrive",
                headers=self._who(LOCKERS),
                body={},
                key=f"{booking}-arrive",
            )
            code = arrived.body.get("pickup_code") if arrived.ok else None
        kind = tracked.placed.checkout.delivery.kind
        ready = await self.api.call(
            f"{kind}.ready",
            "orders",
            "POST",
            f"/v1/orders/{tracked.order_id}/ready-for-pickup",
            headers=self._who(PARTNER),
            body={"pickup_code": code} if code else {},
            key=f"{tracked.order_id}-ready",
        )
        if ready.ok:
            tracked.pickup_code = str(ready.body["pickup_code"])

    async def _collect(self, tracked: Tracked) -> None:
        await self._pause(tracked, PICKUP_S)
        code = tracked.pickup_code
        if code is None:
            return  # the ready call's answer was lost: the failure is counted there
        kind = tracked.placed.checkout.delivery.kind
        booking = tracked.placed.booking_id
        if booking is not None:
            await self.api.call(
                "points.collect",
                "collection-points",
                "POST",
                f"/v1/bookings/{booking}/collect",
                headers=self._who(LOCKERS),
                body={"pickup_code": code},
                key=f"{booking}-collect",
            )
        await self.api.call(
            f"{kind}.collect",
            "orders",
            "POST",
            f"/v1/orders/{tracked.order_id}/collect",
            headers=self._who(PARTNER),
            body={"pickup_code": code},
            key=f"{tracked.order_id}-collect",
        )

    async def _decide(self, tracked: Tracked) -> None:
        await self._pause(tracked, TRIAL_S)
        checkout = tracked.placed.checkout
        answers = [
            {"sku": line.sku, "decision": "keep" if keep else "return"}
            for line, keep in zip(checkout.lines, checkout.fate.keep, strict=True)
        ]
        decided = await self.api.call(
            "trial.decide",
            "orders",
            "POST",
            f"/v1/orders/{tracked.order_id}/trial-decisions",
            headers=self.api.customer(checkout.customer_id),
            body={"lines": answers},
            key=f"{tracked.order_id}-decisions",
        )
        if decided.ok and not all(checkout.fate.keep):
            tracked.returns_expected += 1  # the lines sent back come as a return

    async def _return(self, tracked: Tracked) -> None:
        await self._pause(tracked, RETURN_S)
        checkout = tracked.placed.checkout
        tracked.return_asked = True
        asked = await self.api.call(
            "return.request",
            "orders",
            "POST",
            f"/v1/orders/{tracked.order_id}/returns",
            headers=self.api.customer(checkout.customer_id),
            body={"lines": [{"sku": checkout.lines[0].sku, "quantity": 1}], "reason": "fit"},
            key=f"{tracked.order_id}-return",
        )
        if asked.ok:
            tracked.returns_expected += 1

    async def _receive(self, tracked: Tracked, return_id: str, sku: str) -> None:
        await self._pause(tracked, RETURN_S)
        checkout = tracked.placed.checkout
        location = tracked.shipped_from.get(sku) or next(iter(tracked.shipped_from.values()), None)
        if location is None:
            self.api.count("return.receive", "sim", "sim return-without-shipment")
            return
        await self.api.call(
            "return.receive",
            "orders",
            "POST",
            f"/v1/orders/{tracked.order_id}/returns/{return_id}/receive",
            headers=self._who(PARTNER),
            body={"location_id": location, "sellable": checkout.fate.sellable},
            key=f"{return_id}-receive",
        )

    async def _release_slot(self, tracked: Tracked) -> None:
        await self.api.call(
            "points.release",
            "collection-points",
            "POST",
            f"/v1/bookings/{tracked.placed.booking_id}/release",
            headers=self._who(LOCKERS),
            key=f"{tracked.placed.booking_id}-release",
        )
