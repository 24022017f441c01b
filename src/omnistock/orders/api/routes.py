"""Orders over HTTP: place (once per Idempotency-Key), read, cancel.

A customer token places, reads and cancels only its own orders: another customer's order does
not exist for it (404, so ids cannot be probed). Staff and services use ``orders:write`` and
``orders:read``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Header, Query, Request

from omnistock.orders import domain, service
from omnistock.orders.api import intake
from omnistock.orders.api.schemas import REFERENCE, OrderIn, OrderPath
from omnistock.orders.participants import Participants
from omnistock.orders.settings import OrdersSettings
from omnistock.orders.worker import SagaWorker
from omnistock.platform import idempotency
from omnistock.platform.auth import CUSTOMER_SCOPE, Principal, requires
from omnistock.platform.clock import Clock
from omnistock.platform.http import FastJSONResponse
from omnistock.platform.problems import Problem, field_problem
from omnistock.platform.ratelimit import ConcurrencyLimit
from omnistock.platform.runtime import ServiceRuntime

router = APIRouter(prefix="/v1", tags=["orders"])
WRITE, READ = "orders:write", "orders:read"


class State:
    def __init__(self, request: Request) -> None:
        state = request.app.state
        self.runtime: ServiceRuntime = state.runtime
        self.clock: Clock = state.clock
        self.own: OrdersSettings = state.orders_settings
        self.participants: Participants = state.participants
        self.worker: SagaWorker = state.worker
        self.placing: ConcurrencyLimit = state.placing


def not_found(order_id: str) -> Problem:
    return Problem(404, "Order not found", f"no order {order_id}", type_="not-found")


def customer_of(principal: Principal, named: str | None) -> str:
    """A customer orders for itself; staff and platforms name the customer."""
    if principal.is_customer and WRITE not in principal.scopes:
        if named not in (None, principal.subject):
            raise Problem(
                403,
                "Forbidden",
                "a customer orders only for itself",
                type_="forbidden",
                errors=[{"field": "customer_id", "message": "not yours"}],
            )
        return principal.subject
    if named is None:
        raise field_problem("customer_id", "required")
    return named


async def check_access(
    conn: asyncpg.Connection, principal: Principal, order_id: str, staff_scope: str
) -> None:
    owner = await service.owner_of(conn, order_id)
    if owner is None or not principal.may_act_for(owner, staff_scope):
        raise not_found(order_id)


@dataclass(frozen=True, slots=True)
class Placement:
    """One request to place an order: who asks, for which customer, under which key."""

    state: State
    body: OrderIn
    subject: str
    customer_id: str
    key: str
    fingerprint: str

    async def stored(self) -> idempotency.StoredAnswer | None:
        return await idempotency.stored_answer(
            self.state.runtime.pool, self.subject, self.key, self.fingerprint
        )


@router.post("/orders", status_code=201)
async def place_order(
    body: OrderIn,
    request: Request,
    principal: Annotated[Principal, requires(WRITE, CUSTOMER_SCOPE)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    """Place an order against its checkout reservation, or, without one, against a
    reservation of its lines that it makes itself (all or nothing: a shortfall is a 409 naming
    the lines). Prices are checked against pricing (beyond the tolerance: 409 naming the lines)
    and a given reservation against the lines; the order and OrderPlaced commit together and
    the reply comes at once, status ``placed``. The saga carries on in the background; read
    the order (or its events) for the rest. With too many orders being placed already, 503
    with Retry-After: nothing was done."""
    state = State(request)
    key = idempotency.checked_key(idempotency_key)
    assert key is not None
    placement = Placement(
        state,
        body,
        principal.subject,
        customer_of(principal, body.customer_id),
        key,
        idempotency.request_fingerprint("POST", "/v1/orders", body.model_dump(mode="json")),
    )
    if not state.placing.try_enter():
        raise Problem(
            503,
            "Busy",
            "too many orders are being placed right now: try again",
            type_="busy",
            headers={"Retry-After": "1"},
        )
    try:
        return await place(placement)
    finally:
        state.placing.leave()


async def place(placement: Placement) -> FastJSONResponse:
    state, body = placement.state, placement.body
    if body.reservation_id is None:
        # A repeat gets the first answer before it could reserve anything again.
        stored = await placement.stored()
        if stored is None:
            stored = await place_reserving(placement)
    else:
        try:
            await intake.check_prices_and_reservation(
                state.participants,
                body,
                body.reservation_id,
                placement.customer_id,
                state.own.price_tolerance_bp,
            )
        except Problem:
            # A repeat gets the first answer, whatever prices and its reservation (now the
            # order's) have done since; a first request is refused. Looked for only then, as
            # the write finds a repeat's answer itself: most requests are first ones.
            if (stored_first := await placement.stored()) is None:
                raise
            stored = stored_first
        else:
            stored = await write_order(placement, body.reservation_id)
    if not stored.replayed:
        state.worker.wakeup.set()
    headers = {"Idempotent-Replayed": "true"} if stored.replayed else {}
    return FastJSONResponse(stored.body, status_code=stored.status, headers=headers)


async def place_reserving(placement: Placement) -> idempotency.StoredAnswer:
    """Prices first, then the reservation (never stock held for an order refused on price),
    then the order on it; the reservation is released if the order was not written."""
    participants, body = placement.state.participants, placement.body
    await intake.check_prices(participants, body, placement.state.own.price_tolerance_bp)
    reservation_id = await intake.reserve_lines(
        participants,
        body,
        placement.customer_id,
        intake.reservation_key(placement.subject, placement.key, placement.fingerprint),
    )
    try:
        return await write_order(placement, reservation_id)
    except Problem:
        # Refused as another request's: the reservation is a repeat's order's, or (the key
        # taken meanwhile for another body) nobody's, and then it lapses with its time to live.
        raise
    except Exception:
        if await not_written(placement):
            await intake.release_reservation(participants, reservation_id)
        raise


async def not_written(placement: Placement) -> bool:
    """Whether the order certainly was not written (its answer is stored in its transaction).
    When the database cannot tell, it may have been: its reservation is then left to lapse
    rather than taken from an order that would be cancelled for the want of it."""
    try:
        return await placement.stored() is None
    except Exception:
        return False


async def write_order(placement: Placement, reservation_id: str) -> idempotency.StoredAnswer:
    """The order and OrderPlaced in one transaction, once per Idempotency-Key."""
    state, body = placement.state, placement.body

    async def effect(conn: asyncpg.Connection) -> tuple[int, Any]:
        order = {
            "customer_id": placement.customer_id,
            "channel_id": body.channel_id,
            "platform": body.platform,
            "currency": body.currency,
            "reservation_id": reservation_id,
            "lines": [line.model_dump() for line in body.lines],
            "delivery": body.delivery.model_dump(mode="json"),
            "payment_method": body.payment.method,
            "payment_token": body.payment.token,
            "loyalty_points": body.loyalty_points,
        }
        return 201, await service.placed_order(conn, state.clock, order, state.own.confirm_within())

    try:
        return await idempotency.run_once(
            state.runtime.pool, placement.subject, placement.key, placement.fingerprint, effect
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name != "orders_reservation_id_key":
            raise
        # The same request under the same key may have won the race: its answer stands.
        stored = await placement.stored()
        if stored is None:
            raise Problem(
                409,
                "Reservation already used",
                f"reservation {reservation_id} belongs to another order",
                type_="reservation-used",
                errors=[{"field": "reservation_id", "message": "used by another order"}],
            ) from None
        return stored


@router.get("/orders")
async def list_orders(
    request: Request,
    principal: Annotated[Principal, requires(READ, CUSTOMER_SCOPE)],
    customer_id: Annotated[str | None, Query(pattern=REFERENCE)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=200)] = None,
) -> FastJSONResponse:
    """A customer's orders, newest first, a page at a time (a customer: only its own,
    ``customer_id`` may be left out). ``next`` is the ``after`` of the following page, null
    on the last."""
    wanted = principal.customer_to_list(customer_id, READ, "orders")
    state = State(request)
    async with state.runtime.pool.acquire() as conn:
        try:
            found, following = await service.orders_of(conn, wanted, limit, after)
        except service.BadCursor:
            raise field_problem("after", "not a cursor of this list: pass a page's next") from None
    return FastJSONResponse({"customer_id": wanted, "orders": found, "next": following})


@router.get("/orders/{order_id}")
async def get_order(
    order_id: OrderPath,
    request: Request,
    principal: Annotated[Principal, requires(READ, CUSTOMER_SCOPE)],
) -> FastJSONResponse:
    """The order, its lines, its status and version, and its history (every version)."""
    state = State(request)
    async with state.runtime.pool.acquire() as conn:
        await check_access(conn, principal, order_id, READ)
        view = await service.order_view(conn, order_id)
    if view is None:
        raise not_found(order_id)
    return FastJSONResponse(view)


@router.post("/orders/{order_id}/cancel")
async def cancel_order(
    order_id: OrderPath,
    request: Request,
    principal: Annotated[Principal, requires(WRITE, CUSTOMER_SCOPE)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    """Cancel before shipment: the order becomes ``cancelling`` at once, its stock is
    released and its payment voided in the background, then it is ``cancelled``. Cancelling
    a cancelled order changes nothing; a shipped one is a 409."""
    state = State(request)
    reason = (
        domain.CancelReason.BY_STAFF
        if WRITE in principal.scopes
        else domain.CancelReason.BY_CUSTOMER
    )

    async def effect(conn: asyncpg.Connection) -> tuple[int, Any]:
        await check_access(conn, principal, order_id, WRITE)
        try:
            await service.cancel_order(conn, state.clock, order_id, reason)
        except service.NotFound:
            raise not_found(order_id) from None
        except service.NotCancellable as exc:
            raise Problem(
                409,
                "Too late to cancel",
                str(exc),
                type_="invalid-transition",
                errors=[{"field": "status", "message": f"is {exc.status}"}],
            ) from None
        return 200, await service.order_view(conn, order_id)

    response = await idempotency.respond_once(
        request, state.runtime.pool, principal.subject, idempotency_key, None, effect
    )
    state.worker.wakeup.set()
    return response
