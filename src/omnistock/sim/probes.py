"""One request of the kind each service serves, as its clients make it, to tell whether that
traffic flows: a checkout's reservation at inventory, an order placed, a price quoted, a
storefront answer that is fresh, a timeline read. Each try is recorded (``probe <service>``),
so the drill's figures show every service's outage and return side by side."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from omnistock.sim.fleet import Fleet
from omnistock.sim.metrics import Recorder
from omnistock.sim.world import World

CUSTOMER = "drill-probe"
TIMEOUT_S = 3.0
# A storefront answer older than this is not fresh: its read model stopped following the topics.
FRESH_MS = 2_000
HOME = {"name": "Probe", "street": "Drill street 1", "city": "Warsaw", "postal_code": "00-001"}
IDENTITIES = {
    "shop": ("inventory:reserve", "storefront:read"),
    "checkout": ("orders:write", "orders:read"),
    "staff": (
        "pricing:read",
        "payments:read",
        "loyalty:read",
        "collection-points:read",
        "customer-sync:read",
    ),
}


@dataclass
class Probes:
    fleet: Fleet
    world: World
    recorder: Recorder
    client: httpx.AsyncClient = field(
        default_factory=lambda: httpx.AsyncClient(timeout=httpx.Timeout(TIMEOUT_S))
    )
    _headers: dict[str, dict[str, str]] = field(default_factory=dict)
    _skus: Any = None
    _answers: dict[str, str] = field(default_factory=dict)  # service → its last failure
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)  # (service, kind)

    def __post_init__(self) -> None:
        self._headers = {
            who: self.fleet.headers(f"drill-{who}", s) for who, s in IDENTITIES.items()
        }
        self.channel = self.world.channels[0]
        deep = [s for s in self.world.skus if self.world.brand_of[s] == self.channel.brand]
        # The deepest stock, and many SKUs of it: a drill of every fault places thousands of
        # probe orders, and a probe that empties its SKUs would report stock as an outage.
        self._skus = itertools.cycle(deep[:200])
        self.locker = next(x for x in self.world.lockers if x.market == self.channel.market)
        self._checks: dict[str, Callable[[], Awaitable[bool]]] = {
            "inventory": self._reserve_and_release,
            "orders": self._place_order,
            "pricing": self._quote,
            "payments": self._payments,
            "storefront": self._storefront,
            "loyalty": self._loyalty,
            "collection-points": self._point,
            "customer-sync": self._timeline,
        }

    async def close(self) -> None:
        await self.client.aclose()

    async def ok(self, service: str) -> bool:
        """One request to ``service`` of the kind its clients make; True if it was served."""
        started = time.monotonic()
        try:
            served = await self._checks[service]()
        except httpx.HTTPError as exc:
            self._answers[service] = (
                f"{type(exc).__name__} after {time.monotonic() - started:.1f} s"
            )
            self.failures[(service, type(exc).__name__)] += 1
            served = False
        self.recorder.record(f"probe {service}", time.monotonic() - started, served)
        if served:
            self._answers.pop(service, None)
        return served

    def failure(self, service: str) -> str:
        """How the last request to ``service`` failed."""
        return self._answers.get(service, "not served")

    def _answered(self, service: str, answer: httpx.Response, served: bool, why: str = "") -> bool:
        if not served:
            self._answers[service] = f"{answer.status_code} {why} {answer.text[:160]}"
            if not why:
                with contextlib.suppress(ValueError, AttributeError):
                    why = str(answer.json().get("type", "")).rsplit(":", 1)[-1]
            self.failures[(service, f"{answer.status_code} {why}".strip())] += 1
        return served

    async def all_ok(self, services: tuple[str, ...]) -> bool:
        results = await asyncio.gather(*(self.ok(s) for s in services))
        return all(results)

    def _url(self, service: str, path: str) -> str:
        return f"{self.fleet.url(service)}{path}"

    async def _reservation(self, ttl_s: int) -> httpx.Response:
        return await self.client.post(
            self._url("inventory", "/v1/reservations"),
            json={
                "channel_id": self.channel.channel_id,
                "customer_id": CUSTOMER,
                "lines": [{"sku": next(self._skus), "quantity": 1}],
                "ttl_seconds": ttl_s,
            },
            headers={**self._headers["shop"], "Idempotency-Key": uuid.uuid4().hex},
        )

    async def _reserve_and_release(self) -> bool:
        answer = await self._reservation(30)
        if answer.status_code == 201:
            # Not part of the verdict: an unreleased hold expires in 30 s.
            await self.client.delete(
                self._url("inventory", f"/v1/reservations/{answer.json()['reservation_id']}"),
                headers=self._headers["shop"],
            )
        # A 409 is stock saying no: served.
        return self._answered("inventory", answer, answer.status_code in (201, 409))

    async def _place_order(self) -> bool:
        held = await self._reservation(300)
        for _ in range(5):  # an emptied SKU says nothing about the order path: the next one
            if held.status_code != 409:
                break
            held = await self._reservation(300)
        if held.status_code != 201:
            return self._answered("orders", held, False)
        reservation = held.json()
        lines = [
            {
                "sku": line["sku"],
                "quantity": line["quantity"],
                "unit_price": self.world.price(line["sku"], self.channel.market),
            }
            for line in _by_sku(reservation["lines"])
        ]
        market = self.channel.market
        placed = await self.client.post(
            self._url("orders", "/v1/orders"),
            json={
                "channel_id": self.channel.channel_id,
                "platform": "web",
                "customer_id": CUSTOMER,
                "currency": market.currency,
                "reservation_id": reservation["reservation_id"],
                "lines": lines,
                "delivery": {"kind": "home", "address": {**HOME, "country": market.country}},
                "payment": {"method": "card", "token": "tok_visa"},
            },
            headers={**self._headers["checkout"], "Idempotency-Key": uuid.uuid4().hex},
        )
        return self._answered("orders", placed, placed.status_code == 201)

    async def _quote(self) -> bool:
        path = f"/v1/price-lists/{self.channel.channel_id}/skus/{next(self._skus)}"
        answer = await self.client.get(self._url("pricing", path), headers=self._headers["staff"])
        return self._answered("pricing", answer, answer.status_code == 200)

    async def _payments(self) -> bool:
        answer = await self.client.get(
            self._url("payments", "/v1/payments"),
            params={"order_id": str(uuid.uuid4())},
            headers=self._headers["staff"],
        )
        return self._answered("payments", answer, answer.status_code == 200)

    async def _storefront(self) -> bool:
        path = f"/v1/channels/{self.channel.channel_id}/skus/{next(self._skus)}"
        answer = await self.client.get(self._url("storefront", path), headers=self._headers["shop"])
        if answer.status_code != 200:
            return self._answered("storefront", answer, False)
        staleness = answer.json().get("staleness_ms")
        fresh = staleness is not None and staleness <= FRESH_MS
        return self._answered("storefront", answer, fresh, "stale")

    async def _loyalty(self) -> bool:
        answer = await self.client.get(
            self._url("loyalty", "/v1/members"),
            params={"customer_id": CUSTOMER},
            headers=self._headers["staff"],
        )
        return self._answered("loyalty", answer, answer.status_code == 200)

    async def _point(self) -> bool:
        path = f"/v1/points/{self.locker.point_id}"
        answer = await self.client.get(
            self._url("collection-points", path), headers=self._headers["staff"]
        )
        return self._answered("collection-points", answer, answer.status_code == 200)

    async def _timeline(self) -> bool:
        path = f"/v1/customers/{CUSTOMER}/timeline"
        answer = await self.client.get(
            self._url("customer-sync", path), headers=self._headers["staff"]
        )
        # 404: no order of the probe's customer yet.
        return self._answered("customer-sync", answer, answer.status_code in (200, 404))


def _by_sku(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A reservation's lines are per location; an order's per SKU."""
    units: dict[str, int] = {}
    for line in lines:
        units[line["sku"]] = units.get(line["sku"], 0) + line["quantity"]
    return [{"sku": sku, "quantity": n} for sku, n in units.items()]
