"""After confirmation over HTTP: the carrier, the store and the returns desk (scope
``orders:fulfil``) report deliveries, pickups and received returns; the customer (or staff
with ``orders:write``) answers a trial and asks for returns. Shipments themselves come from
inventory's events: the warehouse ships allocations there.

Every write takes an ``Idempotency-Key``; a customer reaches only its own orders (another's is
a 404)."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Header, Path, Request
from pydantic import BaseModel, Field, model_validator

from omnistock.contracts.identifiers import SKU_PATTERN
from omnistock.orders import lifecycle, repository, service
from omnistock.orders.api.routes import READ, WRITE, State, check_access, not_found
from omnistock.orders.api.schemas import REFERENCE, UUID_PATTERN, OrderPath
from omnistock.orders.domain import Decision
from omnistock.platform import idempotency
from omnistock.platform.auth import CUSTOMER_SCOPE, Principal, requires
from omnistock.platform.http import FastJSONResponse
from omnistock.platform.problems import Problem

router = APIRouter(prefix="/v1", tags=["orders: after confirmation"])
FULFIL = "orders:fulfil"
ShipmentPath = Annotated[str, Path(pattern=REFERENCE, description="inventory's shipment id")]
ReturnPath = Annotated[str, Path(pattern=UUID_PATTERN, description="a return id")]
MAX_LINES = 200


class PickupIn(BaseModel):
    pickup_code: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9]{4,32}$",
        description="the locker's or store's own code; left out, one is made",
    )


class CollectIn(BaseModel):
    pickup_code: str = Field(pattern=r"^[A-Za-z0-9]{4,32}$")


class DecisionIn(BaseModel):
    sku: str = Field(pattern=SKU_PATTERN)
    decision: Decision


class DecisionsIn(BaseModel):
    lines: list[DecisionIn] = Field(min_length=1, max_length=MAX_LINES)

    @model_validator(mode="after")
    def _once_per_sku(self) -> DecisionsIn:
        _unique([x.sku for x in self.lines])
        return self


class ReturnLineIn(BaseModel):
    sku: str = Field(pattern=SKU_PATTERN)
    quantity: int = Field(strict=True, ge=1, le=1_000)


class ReturnIn(BaseModel):
    lines: list[ReturnLineIn] = Field(min_length=1, max_length=MAX_LINES)
    reason: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _once_per_sku(self) -> ReturnIn:
        _unique([x.sku for x in self.lines])
        return self


class ReceivedIn(BaseModel):
    location_id: str = Field(pattern=REFERENCE, description="where the goods arrived")
    sellable: bool = Field(description="false: restocked as damaged, not for sale")


def _unique(skus: list[str]) -> None:
    if len(set(skus)) != len(skus):
        raise ValueError("each SKU at most once")


def _problem(exc: lifecycle.NotFound | lifecycle.Refused, order_id: str) -> Problem:
    if isinstance(exc, lifecycle.NotFound):
        if exc.what == "order":
            return not_found(order_id)
        return Problem(404, f"{exc.what.capitalize()} not found", str(exc), type_="not-found")
    return Problem(
        409,
        "Not possible now",
        exc.detail,
        type_="invalid-transition",
        errors=[{"field": exc.field, "message": exc.detail}],
    )


async def _write(
    request: Request,
    principal: Principal,
    key: str | None,
    body: BaseModel | None,
    order_id: str,
    staff_scope: str,
    change: Any,
    status: int = 200,
) -> FastJSONResponse:
    """``change(conn)`` once per Idempotency-Key, for an order the principal may act on; the
    answer is the order as it is then (or what ``change`` returns)."""
    state = State(request)

    async def effect(conn: asyncpg.Connection) -> tuple[int, Any]:
        await check_access(conn, principal, order_id, staff_scope)
        try:
            answer = await change(conn)
        except (lifecycle.NotFound, lifecycle.Refused) as exc:
            raise _problem(exc, order_id) from None
        return status, answer if answer is not None else await service.order_view(conn, order_id)

    response = await idempotency.respond_once(
        request, state.runtime.pool, principal.subject, key, body, effect
    )
    state.worker.wakeup.set()
    return response


@router.post("/orders/{order_id}/shipments/{shipment_id}/delivered")
async def shipment_delivered(
    order_id: OrderPath,
    shipment_id: ShipmentPath,
    request: Request,
    principal: Annotated[Principal, requires(FULFIL)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    """The carrier delivered a parcel. With every parcel delivered the order is
    ``delivered``: its payment is settled (or, for try before you buy, its trial begins)."""
    state = State(request)
    windows = state.own.windows()
    return await _write(
        request,
        principal,
        idempotency_key,
        None,
        order_id,
        FULFIL,
        lambda conn: lifecycle.deliver(conn, state.clock, order_id, shipment_id, windows),
    )


@router.post("/orders/{order_id}/ready-for-pickup")
async def ready_for_pickup(
    order_id: OrderPath,
    body: PickupIn,
    request: Request,
    principal: Annotated[Principal, requires(FULFIL)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    """The parcel reached the store or locker; the answer carries the pickup code the
    customer shows (also in the customer's view of the order)."""
    state = State(request)

    async def change(conn: asyncpg.Connection) -> None:
        await lifecycle.ready_for_pickup(conn, state.clock, order_id, body.pickup_code)

    return await _write(request, principal, idempotency_key, body, order_id, FULFIL, change)


@router.post("/orders/{order_id}/collect")
async def collect(
    order_id: OrderPath,
    body: CollectIn,
    request: Request,
    principal: Annotated[Principal, requires(FULFIL)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    """The customer collected the parcel with its pickup code (a wrong code: 409 naming
    ``pickup_code``, and nothing changes)."""
    state = State(request)
    windows = state.own.windows()
    return await _write(
        request,
        principal,
        idempotency_key,
        body,
        order_id,
        FULFIL,
        lambda conn: lifecycle.collect(conn, state.clock, order_id, body.pickup_code, windows),
    )


@router.post("/orders/{order_id}/trial-decisions")
async def trial_decisions(
    order_id: OrderPath,
    body: DecisionsIn,
    request: Request,
    principal: Annotated[Principal, requires(WRITE, CUSTOMER_SCOPE)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    """Try before you buy: keep or send back lines during the trial. Once every line is
    answered (or the window closes: what is unanswered is kept), only the kept lines are
    charged. A line sent back becomes a return, restocked when it arrives."""
    state = State(request)
    decisions = {x.sku: x.decision for x in body.lines}
    return await _write(
        request,
        principal,
        idempotency_key,
        body,
        order_id,
        WRITE,
        lambda conn: lifecycle.decide(conn, state.clock, order_id, decisions),
    )


@router.post("/orders/{order_id}/returns", status_code=201)
async def request_return(
    order_id: OrderPath,
    body: ReturnIn,
    request: Request,
    principal: Annotated[Principal, requires(WRITE, CUSTOMER_SCOPE)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    """Return units of a completed order within the return window (RMA). They are refunded at
    the price paid once the returns desk receives them."""
    state = State(request)
    wanted = {x.sku: x.quantity for x in body.lines}
    windows = state.own.windows()

    async def change(conn: asyncpg.Connection) -> dict[str, Any]:
        return_id = await lifecycle.request_return(
            conn, state.clock, order_id, wanted, body.reason, windows
        )
        found = [x for x in await repository.returns(conn, order_id) if x["return_id"] == return_id]
        return {"order_id": order_id, **service.instants(found[0])}

    return await _write(request, principal, idempotency_key, body, order_id, WRITE, change, 201)


@router.post("/orders/{order_id}/returns/{return_id}/receive")
async def receive_return(
    order_id: OrderPath,
    return_id: ReturnPath,
    body: ReceivedIn,
    request: Request,
    principal: Annotated[Principal, requires(FULFIL)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    """The returned goods arrived at ``location_id``: they are restocked there (as sellable or
    damaged) and, for an RMA, refunded, in the background."""
    state = State(request)
    return await _write(
        request,
        principal,
        idempotency_key,
        body,
        order_id,
        FULFIL,
        lambda conn: lifecycle.receive_return(
            conn, state.clock, order_id, return_id, body.location_id, body.sellable
        ),
    )


@router.get("/orders/{order_id}/history")
async def order_history(
    order_id: OrderPath,
    request: Request,
    principal: Annotated[Principal, requires(READ, CUSTOMER_SCOPE)],
) -> FastJSONResponse:
    """Every version of the order: one row per change, the same as its events."""
    state = State(request)
    async with state.runtime.pool.acquire() as conn:
        await check_access(conn, principal, order_id, READ)
        history = await repository.history(conn, order_id)
    return FastJSONResponse(
        {"order_id": order_id, "history": [service.instants(dict(h)) for h in history]}
    )
