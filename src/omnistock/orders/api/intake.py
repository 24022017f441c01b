"""What an order is checked against before it is written: pricing's current prices and the
checkout reservation in inventory. Both are HTTP calls made before any transaction opens."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx

from omnistock.orders import domain
from omnistock.orders.api.schemas import OrderIn
from omnistock.orders.participants import Participants
from omnistock.platform.problems import Problem


def unavailable(what: str) -> Problem:
    return Problem(
        503,
        "Unavailable",
        f"{what} did not answer: try again",
        type_="unavailable",
        headers={"Retry-After": "1"},
    )


async def check_prices(participants: Participants, order: OrderIn, tolerance_bp: int) -> None:
    """Each line's price against the channel's effective price now: a move beyond the
    tolerance refuses the order (409), naming the lines."""
    try:
        response = await participants.call(
            participants.pricing,
            "POST",
            f"/v1/price-lists/{order.channel_id}/quotes",
            body={"skus": [line.sku for line in order.lines]},
        )
    except httpx.HTTPError:
        raise unavailable("pricing") from None
    if response.status_code == 404:
        raise Problem(
            422,
            "Invalid request",
            f"channel {order.channel_id} has no price list",
            type_="validation-error",
            errors=[{"field": "channel_id", "message": "no price list"}],
        )
    if response.status_code != 200:
        raise unavailable("pricing")
    body: dict[str, Any] = response.json()
    prices: dict[str, Any] = body["prices"]
    currencies = {quote["currency"] for quote in prices.values() if quote}
    if currencies and currencies != {order.currency}:
        raise Problem(
            422,
            "Invalid request",
            f"the channel sells in {', '.join(sorted(currencies))}",
            type_="validation-error",
            errors=[{"field": "currency", "message": "not the channel's currency"}],
        )
    current = {sku: (quote["effective"] if quote else None) for sku, quote in prices.items()}
    differences = domain.price_differences(
        [(line.sku, line.unit_price) for line in order.lines], current, tolerance_bp
    )
    if differences:
        raise Problem(
            409,
            "Prices changed",
            "the price of some lines changed: show the customer the new prices",
            type_="price-changed",
            errors=[
                {
                    "field": f"lines[{d.line}].unit_price",
                    "sku": d.sku,
                    "seen": d.seen,
                    "current": d.current,
                    "message": "not for sale" if d.current is None else "price changed",
                }
                for d in differences
            ],
        )


async def check_reservation(participants: Participants, order: OrderIn, customer_id: str) -> None:
    """The reservation exists, is still held, is for the order's channel and holds exactly
    the order's units (per SKU, whatever the locations)."""
    try:
        response = await participants.call(
            participants.inventory, "GET", f"/v1/reservations/{order.reservation_id}"
        )
    except httpx.HTTPError:
        raise unavailable("inventory") from None
    if response.status_code not in (200, 404):
        raise unavailable("inventory")
    reservation: dict[str, Any] | None = response.json() if response.status_code == 200 else None
    # Unknown, or held for another customer: answered alike, so ids cannot be probed.
    if reservation is None or reservation.get("customer_id") not in (None, customer_id):
        raise Problem(
            422,
            "Invalid request",
            f"no reservation {order.reservation_id}",
            type_="validation-error",
            errors=[{"field": "reservation_id", "message": "unknown"}],
        )
    if reservation["status"] != "active" or reservation["channel_id"] != order.channel_id:
        raise Problem(
            409,
            "Reservation not usable",
            f"the reservation is {reservation['status']} in {reservation['channel_id']}",
            type_="reservation-not-usable",
            errors=[{"field": "reservation_id", "message": "not active in this channel"}],
        )
    held: Counter[str] = Counter()
    for line in reservation["lines"]:
        held[line["sku"]] += int(line["quantity"])
    wanted = Counter({line.sku: line.quantity for line in order.lines})
    if held != wanted:
        raise Problem(
            409,
            "Reservation does not match",
            "the reservation holds other units than the order's lines",
            type_="reservation-mismatch",
            errors=[
                {
                    "field": f"lines[{number}].quantity",
                    "sku": line.sku,
                    "message": f"{held.get(line.sku, 0)} reserved",
                }
                for number, line in enumerate(order.lines)
                if held.get(line.sku, 0) != line.quantity
            ]
            or [{"field": "reservation_id", "message": "holds SKUs the order does not"}],
        )
