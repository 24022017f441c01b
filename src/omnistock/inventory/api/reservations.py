"""Reservations, and what becomes of them: allocations, shipments, returns."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any

import asyncpg
from fastapi import Header, Request

from omnistock.inventory import fulfilment, repository, service
from omnistock.inventory.api.common import (
    as_problem,
    router,
    run_once_if_keyed,
    run_once_per_key,
    state_of,
    with_connection,
)
from omnistock.inventory.api.schemas import (
    Cancellation,
    Commitment,
    Extension,
    ReservationRequest,
    Return,
    Shipment,
)
from omnistock.inventory.reserving import (
    REFUSALS,
    ReservationBatcher,
    ReserveStock,
    ServiceStopping,
)
from omnistock.platform import idempotency
from omnistock.platform.auth import Principal, requires
from omnistock.platform.http import FastJSONResponse
from omnistock.platform.problems import Problem
from omnistock.platform.ratelimit import RateLimiter


@router.post("/reservations", status_code=201)
async def create_reservation(
    body: ReservationRequest,
    request: Request,
    principal: Annotated[Principal, requires("inventory:reserve")],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    limiter: RateLimiter = request.app.state.rate_limiter
    if not limiter.allow(principal.subject):
        raise Problem(
            429,
            "Too many reservations",
            "slow down: this client's reservation rate is limited",
            type_="rate-limited",
            headers={"Retry-After": "1"},
        )

    key = idempotency.checked_key(idempotency_key)
    assert key is not None
    command = ReserveStock(
        channel_id=body.channel_id,
        lines=tuple((line.sku, line.quantity) for line in body.lines),
        client_id=principal.subject,
        customer_id=_customer_of(principal, body.customer_id),
        ttl=timedelta(seconds=body.ttl_seconds),
        all_or_nothing=body.mode == "all_or_nothing",
        pickup_location=body.pickup_location,
    )
    fingerprint = idempotency.request_fingerprint("POST", "/v1/reservations", body.model_dump())
    batcher: ReservationBatcher = request.app.state.batcher
    try:
        answer = await batcher.submit(command, principal.subject, key, fingerprint)
    except REFUSALS as exc:
        raise as_problem(exc) from None
    except ServiceStopping:
        raise Problem(
            503,
            "Stopping",
            "this replica is shutting down: try again",
            type_="unavailable",
            headers={"Retry-After": "1"},
        ) from None
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else {}
    return FastJSONResponse(answer.body, status_code=answer.status, headers=headers)


@router.get("/reservations/{reservation_id}")
async def get_reservation(
    reservation_id: str,
    request: Request,
    principal: Annotated[Principal, requires("inventory:reserve", "inventory:read")],
) -> dict[str, Any]:
    found = await with_connection(
        request, lambda conn: repository.reservation(conn, _uuid(reservation_id))
    )
    _check_owner_of(principal, reservation_id, found[0] if found else None)
    row, lines = found
    return {
        "reservation_id": reservation_id,
        "channel_id": row["channel_id"],
        "status": row["status"],
        "expires_at": row["expires_at"].isoformat(),
        "order_id": row["order_id"],
        "customer_id": row["customer_id"],
        "lines": [dict(line) for line in lines],
    }


STAFF_SCOPE = "inventory:admin"
# The order system commits reservations into orders: it may read and release them too.
ORDERS_SCOPE = "inventory:allocate"


def _customer_of(principal: Principal, named: str | None) -> str | None:
    """A customer reserves for itself, whatever the body says; platforms name the customer."""
    if not principal.is_customer:
        return named
    if named not in (None, principal.subject):
        raise Problem(
            403,
            "Forbidden",
            "a customer reserves only for itself",
            type_="forbidden",
            errors=[{"field": "customer_id", "message": "not yours"}],
        )
    return principal.subject


async def _check_owner(request: Request, principal: Principal, reservation_id: str) -> None:
    """A reservation is the business of the client that made it, of its customer, of the order
    system and of staff; to anyone else it does not exist (404, so ids cannot be probed)."""
    row = await with_connection(  # one statement: no transaction to open and close
        request,
        lambda conn: conn.fetchrow(
            "SELECT client_id, customer_id FROM reservations WHERE reservation_id = $1",
            _uuid(reservation_id),
        ),
    )
    _check_owner_of(principal, reservation_id, row)


def _check_owner_of(principal: Principal, reservation_id: str, row: Any) -> None:
    """``_check_owner`` of a reservation read already (None: there is none)."""
    owner = row is not None and (
        STAFF_SCOPE in principal.scopes
        or (ORDERS_SCOPE in principal.scopes and not principal.is_customer)
        or row["client_id"] == principal.subject
        or (principal.is_customer and row["customer_id"] == principal.subject)
    )
    if not owner:
        raise Problem(
            404, "Reservation not found", f"no reservation {reservation_id}", type_="not-found"
        )


def _uuid(value: str) -> str:

    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise Problem(
            422,
            "Invalid request",
            "path.reservation_id: not a UUID",
            type_="validation-error",
            errors=[{"field": "path.reservation_id", "message": "not a UUID"}],
        ) from None


# Each of these is safe to repeat by its nature; an Idempotency-Key makes a repeat get the
# first answer (see ``run_once_if_keyed``).
IdempotencyKey = Annotated[
    str | None, Header(description="Optional: a repeat with it gets the first answer")
]


@router.post("/reservations/{reservation_id}/extend")
async def extend_reservation(
    reservation_id: str,
    body: Extension,
    request: Request,
    principal: Annotated[Principal, requires("inventory:reserve")],
    idempotency_key: IdempotencyKey = None,
) -> FastJSONResponse:
    await _check_owner(request, principal, reservation_id)
    _, clock = state_of(request)

    async def work(conn: asyncpg.Connection) -> tuple[int, Any]:
        ttl = timedelta(seconds=body.ttl_seconds)
        return 200, await service.extend(conn, clock, _uuid(reservation_id), ttl)

    return await run_once_if_keyed(request, principal, idempotency_key, body, work)


@router.delete("/reservations/{reservation_id}", status_code=204)
async def release_reservation(
    reservation_id: str,
    request: Request,
    principal: Annotated[Principal, requires("inventory:reserve")],
    idempotency_key: IdempotencyKey = None,
) -> FastJSONResponse:
    await _check_owner(request, principal, reservation_id)
    _, clock = state_of(request)

    async def work(conn: asyncpg.Connection) -> tuple[int, Any]:
        await service.release(conn, clock, _uuid(reservation_id))
        return 204, None

    return await run_once_if_keyed(request, principal, idempotency_key, None, work)


@router.post("/reservations/{reservation_id}/commit")
async def commit_reservation(
    reservation_id: str,
    body: Commitment,
    request: Request,
    principal: Annotated[Principal, requires("inventory:allocate")],
    idempotency_key: IdempotencyKey = None,
) -> FastJSONResponse:
    _, clock = state_of(request)

    async def work(conn: asyncpg.Connection) -> tuple[int, Any]:
        allocations = await fulfilment.commit(conn, clock, _uuid(reservation_id), body.order_id)
        return 200, {"order_id": body.order_id, "allocations": allocations}

    return await run_once_if_keyed(request, principal, idempotency_key, body, work)


@router.post("/orders/{order_id}/allocations/{allocation_id}/ship")
async def ship_allocation(
    order_id: str,
    allocation_id: str,
    body: Shipment,
    request: Request,
    principal: Annotated[Principal, requires("inventory:fulfil")],
    idempotency_key: IdempotencyKey = None,
) -> FastJSONResponse:
    _, clock = state_of(request)

    async def work(conn: asyncpg.Connection) -> tuple[int, Any]:
        await fulfilment.ship(conn, clock, order_id, _uuid(allocation_id), body.shipment_id)
        return 200, {"order_id": order_id, "allocation_id": allocation_id, "status": "shipped"}

    return await run_once_if_keyed(request, principal, idempotency_key, body, work)


@router.post("/orders/{order_id}/cancel")
async def cancel_order_allocations(
    order_id: str,
    body: Cancellation,
    request: Request,
    principal: Annotated[Principal, requires("inventory:allocate")],
    idempotency_key: IdempotencyKey = None,
) -> FastJSONResponse:
    _, clock = state_of(request)

    async def work(conn: asyncpg.Connection) -> tuple[int, Any]:
        released = await fulfilment.cancel_allocations(conn, clock, order_id, body.reason)
        return 200, {"order_id": order_id, "released": released}

    return await run_once_if_keyed(request, principal, idempotency_key, body, work)


@router.post("/returns", status_code=201)
async def restock_return(
    body: Return,
    request: Request,
    # The order system restocks the returns of its orders.
    principal: Annotated[Principal, requires("inventory:write", "inventory:allocate")],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    _, clock = state_of(request)

    async def work(conn: asyncpg.Connection) -> tuple[int, Any]:
        await fulfilment.restock_return(
            conn,
            clock,
            sku=body.sku,
            location_id=body.location_id,
            quantity=body.quantity,
            sellable=body.sellable,
            reference=body.reference,
        )
        return 201, body.model_dump()

    return await run_once_per_key(request, principal, idempotency_key, body, work)
