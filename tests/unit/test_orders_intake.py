"""The orders intake's calls to pricing and inventory, against recorded answers: the checks run
side by side, and an order placed without a reservation reserves once per request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
import orjson
import pytest

from omnistock.orders.api import intake
from omnistock.orders.api.schemas import OrderIn
from omnistock.orders.participants import Participants
from omnistock.orders.settings import OrdersSettings
from omnistock.platform.client import Answer, CallFailed, ServiceClient
from omnistock.platform.problems import Problem
from omnistock.platform.settings import Settings

RESERVATION = "5b0c7c1e-2f55-4a43-8a2b-4f7a5a7c9e01"
OTHER_RESERVATION = "0d9f3f5e-7c4b-4a84-9d9e-1a2b3c4d5e6f"
Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


def order(*lines: tuple[str, int], reservation_id: str | None = None) -> OrderIn:
    return OrderIn.model_validate(
        {
            "channel_id": "brand-pl",
            "platform": "web",
            "currency": "PLN",
            "reservation_id": reservation_id,
            "lines": [{"sku": sku, "quantity": q, "unit_price": 1000} for sku, q in lines],
            "delivery": {"kind": "store", "store_id": "waw-1"},
            "payment": {"method": "card", "token": "tok_visa"},
        }
    )


class Recorded(ServiceClient):
    """A service answering from ``handler``: it sees the request as it would go out, and a
    transport error it raises is the client's CallFailed."""

    def __init__(self, base_url: str, handler: Handler) -> None:
        super().__init__(base_url, 5.0)
        self._handler = handler

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        content = orjson.dumps(json) if json is not None else b""
        sent = httpx.Request(method, self.base_url + path, content=content, headers=headers)
        try:
            response = await self._handler(sent)
        except httpx.TransportError as exc:
            raise CallFailed(str(exc)) from exc
        return Answer(response.status_code, response.content, response.headers, method, path)


def participants(inventory: Handler, pricing: Handler | None = None) -> Participants:
    found = Participants(Settings(), OrdersSettings())
    found.inventory = Recorded("http://inventory", inventory)
    if pricing is not None:
        found.pricing = Recorded("http://pricing", pricing)
    return found


def answer(status: int, body: Any, **headers: str) -> httpx.Response:
    return httpx.Response(status, content=orjson.dumps(body), headers=headers)


def reservation(reservation_id: str, status: str = "active") -> dict[str, Any]:
    return {"reservation_id": reservation_id, "channel_id": "brand-pl", "status": status}


def test_the_reservation_key_is_one_per_caller_key_and_request() -> None:
    key = intake.reservation_key("anna", "k1", "f1")
    assert key == intake.reservation_key("anna", "k1", "f1")
    others = {
        intake.reservation_key("bob", "k1", "f1"),
        intake.reservation_key("anna", "k2", "f1"),
        intake.reservation_key("anna", "k1", "f2"),
    }
    assert key not in others
    assert len(others) == 3
    assert len(key) < 150  # room for the try number within inventory's 200 characters


async def test_an_order_reserves_its_lines_all_or_nothing_for_its_customer() -> None:
    sent: list[httpx.Request] = []

    async def inventory(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return answer(201, reservation(RESERVATION))

    found = await intake.reserve_lines(
        participants(inventory), order(("SKU-1", 2), ("SKU-2", 1)), "anna", "order-intake:x"
    )
    assert found == RESERVATION
    (request,) = sent
    assert (request.method, request.url.path) == ("POST", "/v1/reservations")
    assert request.headers["Idempotency-Key"] == "order-intake:x:1"
    assert orjson.loads(request.content) == {
        "channel_id": "brand-pl",
        "lines": [{"sku": "SKU-1", "quantity": 2}, {"sku": "SKU-2", "quantity": 1}],
        "customer_id": "anna",
        "mode": "all_or_nothing",
    }


async def test_a_repeat_keeps_the_reservation_it_made_while_it_holds_the_stock() -> None:
    sent: list[str] = []

    async def inventory(request: httpx.Request) -> httpx.Response:
        sent.append(f"{request.method} {request.url.path}")
        if request.method == "GET":
            return answer(200, reservation(RESERVATION, "active"))
        return answer(201, reservation(RESERVATION), **{"Idempotent-Replayed": "true"})

    found = await intake.reserve_lines(participants(inventory), order(("SKU-1", 1)), "a", "k")
    assert found == RESERVATION
    assert sent == ["POST /v1/reservations", f"GET /v1/reservations/{RESERVATION}"]


async def test_a_repeat_whose_reservation_was_released_reserves_under_the_next_key() -> None:
    keys: list[str] = []

    async def inventory(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return answer(200, reservation(RESERVATION, "released"))
        keys.append(request.headers["Idempotency-Key"])
        if len(keys) == 1:
            return answer(201, reservation(RESERVATION), **{"Idempotent-Replayed": "true"})
        return answer(201, reservation(OTHER_RESERVATION))

    found = await intake.reserve_lines(participants(inventory), order(("SKU-1", 1)), "a", "k")
    assert found == OTHER_RESERVATION
    assert keys == ["k:1", "k:2"]


async def test_a_shortfall_is_a_409_naming_the_order_line_with_what_is_available() -> None:
    async def inventory(_request: httpx.Request) -> httpx.Response:
        return answer(
            409,
            {
                "type": "urn:omnistock:problem:out-of-stock",
                "title": "Out of stock",
                "status": 409,
                "detail": "SKU-2: 5 requested, 3 available",
                "errors": [
                    {
                        "field": "lines",
                        "sku": "SKU-2",
                        "requested": 5,
                        "available": 3,
                        "message": "5 requested, 3 available",
                    }
                ],
            },
        )

    with pytest.raises(Problem) as refused:
        await intake.reserve_lines(
            participants(inventory), order(("SKU-1", 1), ("SKU-2", 5)), "a", "k"
        )
    problem = refused.value.body()
    assert (problem["status"], problem["type"]) == (409, "urn:omnistock:problem:out-of-stock")
    assert problem["detail"] == "SKU-2: 5 requested, 3 available"
    assert problem["errors"] == [
        {
            "field": "lines[1].quantity",
            "sku": "SKU-2",
            "requested": 5,
            "available": 3,
            "message": "5 requested, 3 available",
        }
    ]


async def test_inventory_away_is_a_503_to_try_again() -> None:
    async def inventory(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(Problem) as refused:
        await intake.reserve_lines(participants(inventory), order(("SKU-1", 1)), "a", "k")
    assert (refused.value.status, refused.value.headers) == (503, {"Retry-After": "1"})


def price_list(price: int) -> httpx.Response:
    quote = {"effective": price, "currency": "PLN"}
    return answer(200, {"prices": {"SKU-1": quote}})


async def test_prices_and_the_reservation_are_checked_side_by_side() -> None:
    both_asked = asyncio.Barrier(2)

    async def pricing(_request: httpx.Request) -> httpx.Response:
        await both_asked.wait()
        return price_list(1000)

    async def inventory(_request: httpx.Request) -> httpx.Response:
        await both_asked.wait()
        held = {**reservation(RESERVATION), "customer_id": "a"}
        return answer(200, {**held, "lines": [{"sku": "SKU-1", "quantity": 1}]})

    # One after the other, each would wait for the other for ever.
    async with asyncio.timeout(5):
        await intake.check_prices_and_reservation(
            participants(inventory, pricing),
            order(("SKU-1", 1), reservation_id=RESERVATION),
            RESERVATION,
            "a",
            0,
        )


async def test_when_both_checks_refuse_the_price_check_answers() -> None:
    async def pricing(_request: httpx.Request) -> httpx.Response:
        return price_list(1200)

    async def inventory(_request: httpx.Request) -> httpx.Response:
        return answer(404, {"title": "Reservation not found"})

    with pytest.raises(Problem) as refused:
        await intake.check_prices_and_reservation(
            participants(inventory, pricing),
            order(("SKU-1", 1), reservation_id=RESERVATION),
            RESERVATION,
            "a",
            0,
        )
    assert refused.value.type == "price-changed"
