"""What the apps read: a customer's timeline (orders with their payments, parcels and
returns), one order's card, and the notifications sent. A customer token reads only its own;
another customer's looks like no customer at all (404). Staff and support tools use
``customer-sync:read``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from omnistock.customer_sync import repository
from omnistock.customer_sync.view import accounts, order_cards
from omnistock.platform.auth import CUSTOMER_SCOPE, Principal, requires
from omnistock.platform.http import FastJSONResponse
from omnistock.platform.problems import Problem
from omnistock.platform.runtime import ServiceRuntime

router = APIRouter(prefix="/v1", tags=["customer-sync"])
READ, ADMIN = "customer-sync:read", "customer-sync:admin"
REFERENCE = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,99}$"
CustomerPath = Annotated[str, Path(pattern=REFERENCE, description="a customer id")]
OrderPath = Annotated[str, Path(pattern=REFERENCE, description="an order id")]


def _runtime(request: Request) -> ServiceRuntime:
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


def _check(principal: Principal, customer_id: str) -> None:
    if not principal.may_act_for(customer_id, READ):
        raise Problem(404, "Customer not found", f"no customer {customer_id}", type_="not-found")


async def _cards(request: Request, customer_id: str) -> list[dict[str, Any]]:
    async with _runtime(request).pool.acquire() as conn:
        return order_cards(await repository.timeline(conn, customer_id))


@router.get("/customers/{customer_id}/timeline")
async def timeline(
    customer_id: CustomerPath,
    request: Request,
    principal: Annotated[Principal, requires(READ, CUSTOMER_SCOPE)],
) -> FastJSONResponse:
    """The customer's orders, newest first, each with its status and version, its payments,
    shipments (with what they carry), parcels at stores and lockers (place, collect-by date and
    pickup code) and returns; and the customer's loyalty accounts (balance, held, tier)."""
    _check(principal, customer_id)
    async with _runtime(request).pool.acquire() as conn:
        entries = await repository.timeline(conn, customer_id)
    return FastJSONResponse(
        {
            "customer_id": customer_id,
            "orders": order_cards(entries),
            "loyalty": accounts(entries),
        }
    )


@router.get("/customers/{customer_id}/orders/{order_id}")
async def order_card(
    customer_id: CustomerPath,
    order_id: OrderPath,
    request: Request,
    principal: Annotated[Principal, requires(READ, CUSTOMER_SCOPE)],
) -> FastJSONResponse:
    _check(principal, customer_id)
    for card in await _cards(request, customer_id):
        if card["order_id"] == order_id:
            return FastJSONResponse(card)
    raise Problem(404, "Order not found", f"no order {order_id}", type_="not-found")


@router.get("/customers/{customer_id}/notifications")
async def notifications(
    customer_id: CustomerPath,
    request: Request,
    principal: Annotated[Principal, requires(READ, CUSTOMER_SCOPE)],
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> FastJSONResponse:
    """The push notifications recorded for the customer, newest first, with when they were
    sent (null: not yet)."""
    _check(principal, customer_id)
    async with _runtime(request).pool.acquire() as conn:
        rows = await repository.notifications_of(conn, customer_id, limit)
    return FastJSONResponse(
        {
            "customer_id": customer_id,
            "notifications": [
                {
                    **dict(row),
                    "due_at": row["due_at"].isoformat(),
                    "sent_at": row["sent_at"].isoformat() if row["sent_at"] else None,
                }
                for row in rows
            ],
        }
    )


@router.get("/digest")
async def digest(
    request: Request, _principal: Annotated[Principal, requires(ADMIN)]
) -> FastJSONResponse:
    """A fingerprint of the whole view: after a replay from the start of the topics it is the
    same as before."""
    async with _runtime(request).pool.acquire() as conn:
        value, entries = await repository.digest(conn)
    return FastJSONResponse({"digest": value, "entries": entries})
