"""What an order is checked against before it is written: pricing's current prices and the
checkout reservation in inventory, or, for an order placed without one, the reservation the
intake makes itself. All are HTTP calls made before any transaction opens."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from typing import Any

import orjson
import structlog

from omnistock.orders import domain
from omnistock.orders.api.schemas import OrderIn
from omnistock.orders.participants import Participants
from omnistock.platform.client import Answer, CallFailed
from omnistock.platform.problems import Problem

log = structlog.get_logger(__name__)

PROBLEM_TYPE_PREFIX = "urn:omnistock:problem:"
RESERVE_TRIES = 3
"""Reservations tried per request: a repeat whose earlier reservation was released (placing
failed) or lapsed reserves again, under the next key of the same sequence."""


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
    except CallFailed:
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


async def check_reservation(
    participants: Participants, order: OrderIn, reservation_id: str, customer_id: str
) -> None:
    """The reservation exists, is still held, is for the order's channel and holds exactly
    the order's units (per SKU, whatever the locations)."""
    try:
        response = await participants.call(
            participants.inventory, "GET", f"/v1/reservations/{reservation_id}"
        )
    except CallFailed:
        raise unavailable("inventory") from None
    if response.status_code not in (200, 404):
        raise unavailable("inventory")
    reservation: dict[str, Any] | None = response.json() if response.status_code == 200 else None
    # Unknown, or held for another customer: answered alike, so ids cannot be probed.
    if reservation is None or reservation.get("customer_id") not in (None, customer_id):
        raise Problem(
            422,
            "Invalid request",
            f"no reservation {reservation_id}",
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


async def check_prices_and_reservation(
    participants: Participants,
    order: OrderIn,
    reservation_id: str,
    customer_id: str,
    tolerance_bp: int,
) -> None:
    """Both checks side by side: they are independent calls to two services. When both
    refuse, the price check's answer is given, as when they ran one after the other."""
    outcomes = await asyncio.gather(
        check_prices(participants, order, tolerance_bp),
        check_reservation(participants, order, reservation_id, customer_id),
        return_exceptions=True,
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


def reservation_key(subject: str, idempotency_key: str, fingerprint: str) -> str:
    """The Idempotency-Key of the reservation made for an order request: a repeat of the
    request reserves once. The request's fingerprint is part of it: a key reused for another
    body (allowed once the first request failed) must not replay the first one's reservation,
    which holds other lines."""
    raw = orjson.dumps([subject, idempotency_key, fingerprint])
    return f"order-intake:{hashlib.sha256(raw).hexdigest()}"


async def reserve_lines(
    participants: Participants, order: OrderIn, customer_id: str, key: str
) -> str:
    """Reserve the order's lines in its channel for its customer, all or nothing; the
    reservation's id. A shortfall refuses the order (409, naming the lines, with what
    inventory says is available)."""
    body = {
        "channel_id": order.channel_id,
        "lines": [{"sku": line.sku, "quantity": line.quantity} for line in order.lines],
        "customer_id": customer_id,
        "mode": "all_or_nothing",
    }
    for attempt in range(1, RESERVE_TRIES + 1):
        try:
            response = await participants.call(
                participants.inventory,
                "POST",
                "/v1/reservations",
                body=body,
                idempotency_key=f"{key}:{attempt}",
            )
        except CallFailed:
            raise unavailable("inventory") from None
        if response.status_code != 201:
            raise _reservation_refused(order, response)
        reservation_id = str(response.json()["reservation_id"])
        replayed = response.headers.get("Idempotent-Replayed") == "true"
        if not replayed or await _still_held(participants, reservation_id):
            return reservation_id
    raise unavailable("inventory")


async def _still_held(participants: Participants, reservation_id: str) -> bool:
    """Whether a reservation an earlier try of the request made still holds its stock: active,
    or committed (to this request's order, placed by a concurrent repeat)."""
    try:
        response = await participants.call(
            participants.inventory, "GET", f"/v1/reservations/{reservation_id}"
        )
    except CallFailed:
        raise unavailable("inventory") from None
    if response.status_code == 404:
        return False
    if response.status_code != 200:
        raise unavailable("inventory")
    return response.json()["status"] in ("active", "committed")


def _reservation_refused(order: OrderIn, response: Answer) -> Problem:
    """Inventory's refusal as the order's: its 409s (out of stock, a limit per customer)
    passed on with their errors pointed at the order's lines."""
    if response.status_code == 404:
        return Problem(
            422,
            "Invalid request",
            f"channel {order.channel_id} is unknown to inventory",
            type_="validation-error",
            errors=[{"field": "channel_id", "message": "unknown"}],
        )
    if response.status_code != 409:
        log.warning("reservation not made", status=response.status_code, body=response.text)
        return unavailable("inventory")
    problem: dict[str, Any] = response.json()
    lines = {line.sku: number for number, line in enumerate(order.lines)}
    errors = [
        {**error, "field": f"lines[{lines[error['sku']]}].quantity"}
        if error.get("sku") in lines
        else error
        for error in problem.get("errors", [])
    ]
    return Problem(
        409,
        str(problem.get("title", "Not reserved")),
        problem.get("detail"),
        type_=str(problem.get("type", "not-reserved")).removeprefix(PROBLEM_TYPE_PREFIX),
        errors=errors or None,
    )


async def release_reservation(participants: Participants, reservation_id: str) -> None:
    """Give back what an order that was not placed had reserved. Should inventory not answer,
    the reservation lapses by itself at the end of its time to live."""
    try:
        response = await participants.call(
            participants.inventory, "DELETE", f"/v1/reservations/{reservation_id}"
        )
    except CallFailed as exc:
        log.warning("reservation not released", reservation_id=reservation_id, error=str(exc))
        return
    if response.status_code not in (204, 404):
        log.warning(
            "reservation not released",
            reservation_id=reservation_id,
            status=response.status_code,
        )
