"""The front of the shop, as the brands' websites and apps, the tills and the warehouses' WMS
use the public APIs: product and listing pages from the storefront; checkouts that reserve at
inventory under the brand platform's identity and place the order with the customer's own
token, booking a locker slot for a locker delivery; store sales, receipts and WMS counts
racing the web for the same units."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from omnistock.sim.client import Answer, Api
from omnistock.sim.demand import Checkout, StockEvent, View
from omnistock.sim.world import World

# The brand platform's own identity: it holds the checkout's reservation and books lockers.
PLATFORM_SCOPES = ("inventory:reserve", "storefront:read", "collection-points:book")
TILL_SCOPES = ("inventory:write",)
WMS_SCOPES = ("inventory:write", "inventory:read")
CART_TTL_S = 120  # a cart left alone frees its stock after two minutes


@dataclass
class Placed:
    """What the checkout hands on to the fulfilment side."""

    order_id: str
    checkout: Checkout
    placed_at: float  # monotonic
    booking_id: str | None = None


@dataclass
class Shoppers:
    api: Api
    world: World
    nonce: str  # this run's: Idempotency-Keys of another run on the same fleet never collide
    on_placed: Callable[[Placed], None]
    checkouts: Counter[str] = field(default_factory=Counter)
    flash: Counter[str] = field(default_factory=Counter)
    stock: Counter[str] = field(default_factory=Counter)
    touched: set[str] = field(default_factory=set)  # SKUs whose stock this run changed
    _sequence: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _counted: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    _wms_base: int = field(default_factory=lambda: int(time.time() * 1000) * 1000)

    def _platform(self, channel_id: str) -> dict[str, str]:
        brand = channel_id.rsplit("-", 1)[0]
        return self.api.headers(f"web-{brand}", PLATFORM_SCOPES)

    # -- browsing --

    async def browse(self, view: View) -> None:
        headers = self._platform(view.channel_id)
        if len(view.skus) == 1:
            path = f"/v1/channels/{view.channel_id}/skus/{view.skus[0]}"
            await self.api.call("browse.product", "storefront", "GET", path, headers=headers)
            return
        await self.api.call(
            "browse.listing",
            "storefront",
            "GET",
            f"/v1/channels/{view.channel_id}/skus",
            headers=headers,
            params={"skus": ",".join(view.skus)},
        )

    # -- checkout --

    async def checkout(self, checkout: Checkout) -> None:
        counts = self.flash if checkout.flash else self.checkouts
        counts["intended"] += 1
        first = checkout.lines[0].sku
        await self.browse(View(checkout.channel_id, (first,)))  # the product page seen
        reservation = await self._reserve(checkout)
        if not reservation.ok:
            refused = reservation.outcome == "business" and reservation.problem()
            counts[_name(refused or f"reserve_{reservation.outcome}")] += 1
            return
        counts["reserved"] += 1
        self.touched.update(line.sku for line in checkout.lines)
        reservation_id = str(reservation.body["reservation_id"])
        if checkout.fate.abandon is not None:
            counts[f"abandoned_{checkout.fate.abandon}"] += 1
            if checkout.fate.abandon == "release":
                await self._release(checkout, reservation_id)
            return
        answer = await self.api.call(
            "order.place",
            "orders",
            "POST",
            "/v1/orders",
            headers=self.api.customer(checkout.customer_id),
            body=order_body(checkout, reservation_id),
            key=self._key(checkout, "order"),
        )
        if not answer.ok:
            counts[_name(f"order_{answer.problem() or answer.outcome}")] += 1
            await self._release(checkout, reservation_id)
            return
        counts["placed"] += 1
        placed = Placed(str(answer.body["order_id"]), checkout, time.monotonic())
        self.on_placed(placed)
        if checkout.delivery.kind == "locker":
            placed.booking_id = await self._book(checkout, placed.order_id)

    async def _reserve(self, checkout: Checkout) -> Answer:
        body: dict[str, Any] = {
            "channel_id": checkout.channel_id,
            "lines": [{"sku": line.sku, "quantity": line.quantity} for line in checkout.lines],
            "customer_id": checkout.customer_id,
            "ttl_seconds": CART_TTL_S,
        }
        if checkout.delivery.kind == "store":
            body["pickup_location"] = checkout.delivery.place
        return await self.api.call(
            "checkout.reserve",
            "inventory",
            "POST",
            "/v1/reservations",
            headers=self._platform(checkout.channel_id),
            body=body,
            key=self._key(checkout, "reserve"),
        )

    async def _release(self, checkout: Checkout, reservation_id: str) -> None:
        await self.api.call(
            "checkout.release",
            "inventory",
            "DELETE",
            f"/v1/reservations/{reservation_id}",
            headers=self._platform(checkout.channel_id),
        )

    async def _book(self, checkout: Checkout, order_id: str) -> str | None:
        answer = await self.api.call(
            "points.book",
            "collection-points",
            "POST",
            f"/v1/points/{checkout.delivery.place}/bookings",
            headers=self._platform(checkout.channel_id),
            body={"order_id": order_id, "customer_id": checkout.customer_id},
            key=self._key(checkout, "book"),
        )
        if answer.ok:
            return str(answer.body["booking_id"])
        self.checkouts[_name(f"locker_{answer.problem() or answer.outcome}")] += 1
        return None

    def _key(self, checkout: Checkout, step: str) -> str:
        return f"sim-{self.nonce}-{checkout.number}-{step}"

    # -- tills and warehouses --

    async def stock_event(self, event: StockEvent) -> None:
        self.touched.add(event.sku)
        if event.kind == "count":
            await self._count(event)
            return
        number = next(self._sequence)
        op = "store.sale" if event.kind == "store_sale" else "wms.receipt"
        subject = f"pos-{event.location_id}" if event.kind == "store_sale" else "wms"
        answer = await self.api.call(
            op,
            "inventory",
            "POST",
            f"/v1/stock/{event.location_id}/{event.sku}/adjustments",
            headers=self.api.headers(subject, TILL_SCOPES),
            body={"quantity": event.delta, "reason": event.kind, "reference": f"sim-{number}"},
            key=f"sim-{self.nonce}-stock-{number}",
        )
        self.stock[_name(f"{event.kind}_{answer.problem() or answer.outcome}")] += 1

    async def _count(self, event: StockEvent) -> None:
        """A cycle count: what is on the shelf is what the system holds for the location, held
        units included (they have not left yet), give or take the drift the counter finds."""
        headers = self.api.headers("wms", WMS_SCOPES)
        place = (event.location_id, event.sku)
        if event.resend and place in self._counted:
            sequence, on_hand = self._counted[place]
        else:
            read = await self.api.call(
                "wms.read", "inventory", "GET", f"/v1/stock/{event.sku}", headers=headers
            )
            if not read.ok:
                self.stock["count_unread"] += 1
                return
            rows = [r for r in read.body["locations"] if r["location_id"] == event.location_id]
            held = rows[0]["reserved"] + rows[0]["allocated"] if rows else 0
            shelf = rows[0]["on_hand"] if rows else 0
            on_hand = max(held, shelf + event.drift, 0)
            sequence = self._wms_base + next(self._sequence)
            self._counted[place] = (sequence, on_hand)
        answer = await self.api.call(
            "wms.count",
            "inventory",
            "PUT",
            f"/v1/stock/{event.location_id}/{event.sku}",
            headers=headers,
            body={"on_hand": on_hand, "source": f"wms-{event.location_id}", "sequence": sequence},
        )
        status = answer.body.get("status") if answer.ok else answer.problem() or answer.outcome
        self.stock[_name(f"count_{status}")] += 1


def _name(outcome: str) -> str:
    """A counter's name: ``order_price-changed`` → ``order_price_changed``."""
    return outcome.replace("-", "_")


def order_body(checkout: Checkout, reservation_id: str) -> dict[str, Any]:
    """``POST /v1/orders`` as the customer's app sends it (the customer is the token's)."""
    delivery: dict[str, Any]
    if checkout.delivery.kind == "store":
        delivery = {"kind": "store", "store_id": checkout.delivery.place}
    elif checkout.delivery.kind == "locker":
        delivery = {"kind": "locker", "collection_point_id": checkout.delivery.place}
    else:
        number = checkout.customer_id.rsplit("-", 1)[-1]
        delivery = {
            "kind": "home",
            "address": {
                "name": f"Customer {checkout.customer_id}",
                "street": f"Market street {int(number) % 200 + 1}",
                "city": checkout.market.upper(),
                "postal_code": f"{int(number) % 90 + 10}-{int(number) % 900 + 100}",
                "country": checkout.country,
            },
        }
    return {
        "channel_id": checkout.channel_id,
        "platform": checkout.platform,
        "currency": checkout.currency,
        "reservation_id": reservation_id,
        "lines": [
            {"sku": x.sku, "quantity": x.quantity, "unit_price": x.unit_price}
            for x in checkout.lines
        ],
        "delivery": delivery,
        "payment": {"method": checkout.payment_method, "token": checkout.payment_token},
    }
